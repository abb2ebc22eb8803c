import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { KernelEvent } from "./kernel-events.js";
import { KernelMonitor } from "./kernel-monitor.js";

describe("kernel monitor process", () => {
  it("parses what the monitor prints, line by line, and starts it again when it dies", async () => {
    const events: KernelEvent[] = [];
    const restarts: string[] = [];
    // Stands in for `ip monitor`: prints two lines (one split across writes) and dies.
    const script = "process.stdout.write('Deleted 10.200.1.0/24 via 10.240.0.21 dev eth0 proto 150\\n3: eth0@peer0: <BROADCAST> mtu 1500'); setTimeout(() => { process.stdout.write(' state DOWN\\n    link/[1] aa\\n'); process.exit(3); }, 20);";
    let restarted!: () => void;
    const twice = new Promise<void>((resolve) => (restarted = resolve));
    const monitor = new KernelMonitor({
      onEvent: (event) => events.push(event),
      onRestart: (why) => {
        restarts.push(why);
        restarted();
      },
      command: { program: process.execPath, args: ["-e", script] },
    });
    monitor.start();
    await twice;
    await monitor.stop();
    assert.match(restarts[0]!, /ip monitor exited \(code 3\)/);
    assert.equal(monitor.restarts, 1);
    assert.deepEqual(events.slice(0, 2), [
      { object: "route", deleted: true, destination: "10.200.1.0/24", protocol: "150", gateway: "10.240.0.21", dev: "eth0" },
      { object: "link", deleted: false, index: 3, name: "eth0" },
    ]);
  });

  it("stop ends the process it started and no restart follows", async () => {
    const restarts: string[] = [];
    const monitor = new KernelMonitor({ onEvent: () => {}, onRestart: (why) => restarts.push(why), command: { program: process.execPath, args: ["-e", "setInterval(() => {}, 1000)"] } });
    monitor.start();
    const pid = monitor.pid!;
    await monitor.stop();
    assert.throws(() => process.kill(pid, 0), /ESRCH/);
    await new Promise((resolve) => setTimeout(resolve, 700));
    assert.deepEqual(restarts, []);
  });
});
