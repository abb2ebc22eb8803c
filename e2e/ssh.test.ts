/**
 * `--target ssh` end to end, as on Vultr: the vultr-seed lab with a real OpenSSH server on every worker
 * (`lab up --ssh`), podroutes running INSIDE the lab's jumpbox namespace (never from the root
 * namespace), real packets between pods. Covers host-key checks, partial failure and re-runs,
 * permission and auth errors, the jump host, persistence across a simulated reboot, and `--nodes vultr`
 * against the local Vultr API server. Needs root (runs in CI); the lab is torn down in `after`.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { labDown, loadLab, type LabState } from "../src/lab/lab.js";
import { labSsh, nodeEtcPath, startSshd, stopSshd, type LabSsh } from "../src/lab/sshd.js";
import { lockPath } from "../src/targets/linux/runner.js";
import { run } from "../src/process.js";
import { fingerprint } from "../src/targets/ssh/known-hosts.js";
import { BATCH_FILE, execStartOf, UNIT_FILE, UNIT_LINK } from "../src/targets/ssh/persist.js";
import { jsonOf, runCli, startCli, type CliResult } from "../testkit/cli.js";
import { holdLock } from "../testkit/netns.js";
import { needsRoot } from "../testkit/root.js";
import { vultrInstance } from "../testkit/vultr-server.js";

const gate = needsRoot();
const LAB = `ssh${process.pid % 100000}`;

async function ownedRoutes(netns: string): Promise<string[]> {
  const result = await run("ip", ["-n", netns, "-N", "-json", "route", "show", "table", "main", "proto", "150"]);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout || "[]") as { dst: string; gateway?: string }[]).map((r) => `${r.dst} via ${r.gateway}`).sort();
}

const output = (r: CliResult) => `${r.stdout}\n${r.stderr}`;

describe("ssh target on the vultr-seed lab", { ...gate, timeout: 120_000 }, () => {
  let state: LabState;
  let ssh: LabSsh;
  let dir: string;
  const ns = (worker: number) => state.workers[worker]!.netns;

  /** podroutes inside the jumpbox, over SSH, with the lab's key and known_hosts unless overridden. */
  const podroutes = (command: string, extra: string[] = [], options: { knownHosts?: string; key?: string } = {}) =>
    runCli(
      [
        ...command.split(" "),
        "--nodes",
        "lab",
        "--lab",
        LAB,
        "--target",
        "ssh",
        "--ssh-key",
        options.key ?? ssh.clientKey,
        "--known-hosts",
        options.knownHosts ?? ssh.knownHosts,
        ...extra,
      ],
      { netns: state.jumpboxNetns, env: { SSH_AUTH_SOCK: "" } },
    );

  /** Real packets: every pod reaches every other over the right next hop (the lab target's verify). */
  const packetsFlow = async () => {
    const verify = await runCli(["verify", "--nodes", "lab", "--target", "lab", "--lab", LAB]);
    assert.equal(verify.code, 0, output(verify));
  };

  const expected = (worker: number) =>
    state.workers
      .filter((_, i) => i !== worker)
      .map((w) => `${w.podCIDR} via ${w.internalIP}`)
      .sort();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-ssh-e2e-"));
    const up = await runCli(["lab", "up", "--ssh", "--lab", LAB, "--topology", "vultr-seed", "-o", "json"]);
    assert.equal(up.code, 0, up.stderr);
    state = (await loadLab(LAB))!;
    ssh = labSsh(state)!;
    assert.ok(ssh, "lab up --ssh records its keys");
    assert.deepEqual(jsonOf(up).extra.ssh.clientKey, ssh.clientKey);
  });

  after(async () => {
    await labDown(LAB);
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses an unknown host with its fingerprint, and trusts it on first use only with --accept-new", async () => {
    const knownHosts = join(dir, "known_hosts");
    await writeFile(knownHosts, "");
    const refused = await podroutes("plan", [], { knownHosts });
    assert.equal(refused.code, 1, output(refused));
    const worker0Key = Buffer.from((await readFile(`${ssh.nodes.find((n) => n.name === "worker-0")!.hostKey}.pub`, "utf8")).split(" ")[1]!, "base64");
    assert.match(output(refused), new RegExp(`worker-0: host key: 10\\.240\\.0\\.6 is not in .*fingerprint is ${fingerprint(worker0Key).replace(/[+/]/g, "\\$&")}.*--accept-new`));
    assert.equal(await readFile(knownHosts, "utf8"), "", "nothing recorded without --accept-new");

    const accepted = await podroutes("plan", ["--accept-new"], { knownHosts });
    assert.equal(accepted.code, 0, output(accepted));
    const recorded = (await readFile(knownHosts, "utf8")).trim().split("\n").sort();
    assert.deepEqual(recorded.map((l) => l.split(" ")[0]), ["10.240.0.6", "10.240.0.7", "10.240.0.8"]);
    const again = await podroutes("plan", [], { knownHosts });
    assert.equal(again.code, 0, output(again));
  });

  it("applies the seed's routes on every worker (pods reach each other); a second run changes nothing", async () => {
    const before = await runCli(["verify", "--nodes", "lab", "--target", "lab", "--lab", LAB]);
    assert.equal(before.code, 1, "no route yet: pods on different workers cannot talk");
    const applied = await podroutes("apply --yes", ["--persist"]);
    assert.equal(applied.code, 0, output(applied));
    assert.match(applied.stdout, /Apply complete: 6 added/);
    for (const [i] of state.workers.entries()) assert.deepEqual(await ownedRoutes(ns(i)), expected(i));
    await packetsFlow();

    const second = await podroutes("apply --yes", ["--persist"]);
    assert.equal(second.code, 0, output(second));
    assert.match(second.stdout, /No changes\. 6 routes already match/);
    const plan = await podroutes("plan --detailed-exitcode", ["--persist"]);
    assert.equal(plan.code, 0, output(plan));
  });

  it("persists the routes: after a simulated reboot, exactly the unit's command brings them back", async () => {
    const sshd = state.processes!.find((p) => p.what === "sshd worker-1")!;
    const unit = await readFile(nodeEtcPath(state, "worker-1", UNIT_FILE), "utf8");
    assert.ok(existsSync(nodeEtcPath(state, "worker-1", UNIT_LINK)), "the unit is enabled");
    const batch = await readFile(nodeEtcPath(state, "worker-1", BATCH_FILE), "utf8");
    assert.match(batch, /^route replace 10\.200\.0\.0\/24 via 10\.240\.0\.6 proto 150$/m);

    // The reboot: the kernel's nexthop objects and routes are gone (deleting a nexthop object deletes
    // the routes using it; `route flush` refuses routes with nexthop objects, so it comes second).
    assert.equal((await run("ip", ["-n", ns(1), "nexthop", "flush"])).code, 0);
    await run("ip", ["-n", ns(1), "route", "flush", "proto", "150"]);
    assert.deepEqual(await ownedRoutes(ns(1)), []);
    const stale = await podroutes("plan --detailed-exitcode");
    assert.equal(stale.code, 2, output(stale));

    // What systemd would run at boot, in the node's own view (its network and its /etc): the sshd's namespaces.
    const command = execStartOf(unit);
    const boot = await run("nsenter", ["-t", String(sshd.pid), "-m", "-n", "--", ...command]);
    assert.equal(boot.code, 0, boot.stderr);
    assert.deepEqual(await ownedRoutes(ns(1)), expected(1));
    const plan = await podroutes("plan --detailed-exitcode", ["--persist"]);
    assert.equal(plan.code, 0, output(plan));
    await packetsFlow();
  });

  it("delete removes the routes and the unit", async () => {
    const removed = await podroutes("delete --yes");
    assert.equal(removed.code, 0, output(removed));
    for (const [i, w] of state.workers.entries()) {
      assert.deepEqual(await ownedRoutes(ns(i)), []);
      assert.equal(existsSync(nodeEtcPath(state, w.name, UNIT_FILE)), false, `${w.name}: unit removed`);
      assert.equal(existsSync(nodeEtcPath(state, w.name, BATCH_FILE)), false, `${w.name}: route file removed`);
    }
  });

  it("names permission and auth failures clearly, and changes nothing", async () => {
    const user = await podroutes("apply --yes", ["--ssh-user", "podroutes"]);
    assert.equal(user.code, 1, output(user));
    assert.match(user.stdout, /✗ worker-0: nothing changed: ssh worker-0: permission: podroutes may not change routes: .*(Operation not permitted|Permission denied).*--sudo/);
    const sudo = await podroutes("apply --yes", ["--ssh-user", "podroutes", "--sudo"]);
    assert.equal(sudo.code, 1, output(sudo));
    assert.match(output(sudo), /ssh worker-\d: permission: sudo -n failed for podroutes/);
    const wrongKey = await podroutes("apply --yes", [], { key: ssh.wrongKey });
    assert.equal(wrongKey.code, 1, output(wrongKey));
    assert.match(output(wrongKey), /ssh worker-0: auth: root@10\.240\.0\.6: All configured authentication methods failed/);
    for (const [i] of state.workers.entries()) assert.deepEqual(await ownedRoutes(ns(i)), []);
  });

  it("one worker's sshd stopped: the others converge, the exit code and summary name it, a re-run completes", async () => {
    await stopSshd(state, "worker-1");
    try {
      const partial = await podroutes("apply --yes", ["--persist"]);
      assert.equal(partial.code, 1, output(partial));
      assert.match(partial.stdout, /✗ worker-1: nothing changed: ssh worker-1: unreachable: root@10\.240\.0\.7: connect ECONNREFUSED/);
      assert.match(partial.stdout, /✓ worker-0: 2\/2 changes done/);
      assert.match(partial.stdout, /✓ worker-2: 2\/2 changes done/);
      assert.deepEqual(await ownedRoutes(ns(0)), expected(0));
      assert.deepEqual(await ownedRoutes(ns(2)), expected(2));
      assert.deepEqual(await ownedRoutes(ns(1)), []);
    } finally {
      await startSshd(state, "worker-1");
    }
    const rerun = await podroutes("apply --yes", ["--persist"]);
    assert.equal(rerun.code, 0, output(rerun));
    assert.match(rerun.stdout, /Apply complete: 2 added/);
    await packetsFlow();
  });

  it("reaches the workers through a jump host", async () => {
    const jumpLog = join(ssh.nodes.find((n) => n.name === "jumpbox")!.dir, "sshd.log");
    const plan = await podroutes("plan --detailed-exitcode", ["--jump", `root@${state.jumpboxIP}`]);
    assert.equal(plan.code, 0, output(plan));
    assert.match(await readFile(jumpLog, "utf8"), /Accepted publickey for root from 10\.240\.0\.2/);
  });

  it("over SSH the node's own table lock is taken: a run waits for another holder, and --lock-timeout gives up on that node only (issue 8 item 1)", async () => {
    // The lock file of worker-0's network namespace: the one `--target lab` and `--target local` there take too.
    const holder = await holdLock(await lockPath(ns(0)), (pid) => `pid ${pid} since the test began\n`);
    try {
      for (const i of [0, 1]) {
        assert.equal((await run("ip", ["-n", ns(i), "nexthop", "flush"])).code, 0);
        await run("ip", ["-n", ns(i), "route", "flush", "proto", "150"]);
      }
      const impatient = await podroutes("apply --yes", ["--lock-timeout", "0"]);
      assert.equal(impatient.code, 1, output(impatient));
      assert.match(impatient.stdout, /✗ worker-0: nothing changed: ssh worker-0: another podroutes run holds the lock on root@10\.240\.0\.6/);
      assert.match(impatient.stdout, /✓ worker-1: 2\/2 changes done/);
      assert.deepEqual(await ownedRoutes(ns(0)), []);
      assert.deepEqual(await ownedRoutes(ns(1)), expected(1));

      const patient = startCli(
        ["apply", "--yes", "--nodes", "lab", "--lab", LAB, "--target", "ssh", "--ssh-key", ssh.clientKey, "--known-hosts", ssh.knownHosts],
        { netns: state.jumpboxNetns, env: { SSH_AUTH_SOCK: "" } },
      );
      await patient.stderrMatches(new RegExp(`ssh worker-0: waiting for another podroutes run to finish with root@10\\.240\\.0\\.6 \\(lock held by pid ${holder.pid} since the test began\\)`));
      holder.release();
      const done = await patient.result;
      assert.equal(done.code, 0, output(done));
      assert.deepEqual(await ownedRoutes(ns(0)), expected(0));
    } finally {
      holder.release();
    }
  });

  it("takes nodes from the Vultr API (--nodes vultr): main_ip for SSH, internal_ip as next hop; a bad key fails clearly", async () => {
    const instances = state.workers.map((w) =>
      vultrInstance({ label: w.name, main_ip: w.internalIP, internal_ip: w.internalIP, tags: ["kubernetes-the-hard-way", `pod-cidr=${w.podCIDR}`] }),
    );
    const file = join(dir, "instances.json");
    await writeFile(file, JSON.stringify(instances));
    // The API server runs in the jumpbox namespace too, on its loopback, next to podroutes.
    const server: ChildProcess = spawn("ip", ["netns", "exec", state.jumpboxNetns, process.execPath, fileURLToPath(new URL("../testkit/vultr-server.js", import.meta.url)), file, "e2e-key"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const endpoint = await new Promise<string>((resolve, reject) => {
        server.stdout!.once("data", (chunk: Buffer) => resolve(chunk.toString().trim()));
        server.once("exit", (code) => reject(new Error(`vultr server exited ${code}`)));
      });
      const vultr = (key: string) =>
        runCli(
          ["plan", "--detailed-exitcode", "--cluster", state.cluster, "--nodes", "vultr", "--vultr-tag", "kubernetes-the-hard-way", "--vultr-endpoint", endpoint, "--target", "ssh", "--ssh-key", ssh.clientKey, "--known-hosts", ssh.knownHosts],
          { netns: state.jumpboxNetns, env: { VULTR_API_KEY: key, SSH_AUTH_SOCK: "" } },
        );
      const plan = await vultr("e2e-key");
      assert.equal(plan.code, 0, output(plan));
      assert.match(plan.stdout, /No changes\. 6 routes already match/);
      const refused = await vultr("wrong");
      assert.equal(refused.code, 1, output(refused));
      assert.match(refused.stderr, /vultr: the API refused the key \(401 Invalid API token\.\)/);
    } finally {
      server.kill("SIGTERM");
    }
  });

  it("refuses a changed host key, even with --accept-new; the other workers are still read", async () => {
    await startSshd(state, "worker-2", { newHostKey: true });
    for (const flags of [[], ["--accept-new"]]) {
      const plan = await podroutes("plan", flags);
      assert.equal(plan.code, 1, output(plan));
      assert.match(plan.stdout, /✗ cannot read: ssh worker-2: host key: REMOTE HOST KEY CHANGED for 10\.240\.0\.8/);
      assert.doesNotMatch(plan.stdout, /worker-[01].*cannot read/);
    }
  });
});
