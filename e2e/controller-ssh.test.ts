/**
 * `podroutes controller --target ssh` in the SSH lab (vultr-seed, a real OpenSSH server on every worker):
 * the Kubernetes API test server and the controller both run on the lab's control-plane machine (its
 * network namespace), the controller reaching every worker over SSH with the lab's key and known_hosts.
 * Every worker's kernel table holds the other workers' pod routes, proven with packets between pods (the
 * lab's verify: pings and traceroutes across workers); a Node leaving and coming back is followed on
 * every worker. Needs root (runs in CI); processes are stopped by PID and the lab removed in `after`.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { addLabProcess, labDown, loadLab, removeLabProcess, type LabState } from "../src/lab/lab.js";
import { labSsh } from "../src/lab/sshd.js";
import { run } from "../src/process.js";
import { admin, getIn, nodeObject, startKubeServerProcess, startLogged, writeKubeconfig, type KubeServerProcess, type Started } from "../testkit/agent-lab.js";
import { BIN, runCli } from "../testkit/cli.js";
import { eventually, FAST_ELECTION } from "../testkit/controller.js";
import type { KubeObject } from "../testkit/kube-server.js";
import { needsRoot } from "../testkit/root.js";

const gate = needsRoot();
const LAB = `ctlssh${process.pid % 100000}`;
const TOKEN = "controller-token";

describe("podroutes controller --target ssh in the SSH lab", { ...gate, timeout: 180_000 }, () => {
  let state: LabState;
  let dir: string;
  let server: KubeServerProcess | undefined;
  let controller: Started | undefined;

  const nodes = (): KubeObject[] => state.workers.map((w) => nodeObject(w.name, w.internalIP, w.podCIDR));
  const api = () => admin(server!);
  /** `DEST via GW` of the routes podroutes owns on a worker. */
  const owned = async (netns: string) => {
    const result = await run("ip", ["-n", netns, "-N", "-json", "route", "show", "proto", "150"]);
    return (JSON.parse(result.stdout || "[]") as { dst: string; gateway?: string; nhid?: number }[]).map((r) => r.dst).sort();
  };
  /** The pod CIDRs of every other worker: what `worker`'s table should hold. */
  const expected = (worker: string) =>
    state.workers
      .filter((w) => w.name !== worker)
      .map((w) => w.podCIDR)
      .sort();
  const everyWorkerHolds = async () => {
    for (const w of state.workers) if (JSON.stringify(await owned(w.netns)) !== JSON.stringify(expected(w.name))) return false;
    return true;
  };
  /** The lab's packet checks: every pod pings every other, traceroutes cross exactly the right worker. */
  const packets = () => runCli(["verify", "--nodes", "lab", "--target", "lab", "--lab", LAB]);
  const log = () => `\n--- controller ---\n${controller?.log().split("\n").slice(-20).join("\n")}`;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-controller-ssh-"));
    const up = await runCli(["lab", "up", "--ssh", "--lab", LAB, "--topology", "vultr-seed"]);
    assert.equal(up.code, 0, up.stderr);
    state = (await loadLab(LAB))!;
    server = await startKubeServerProcess({ netns: state.controllerNetns!, listen: `${state.controllerIP}:6443`, stateDir: dir, tokens: [TOKEN], nodes: nodes() });
    await addLabProcess(LAB, { netns: state.controllerNetns!, pid: server.pid, what: "Kubernetes API test server" });
  });

  after(async () => {
    if (controller) {
      await controller.stop();
      await removeLabProcess(LAB, controller.pid).catch(() => {});
    }
    if (server) {
      await server.stop();
      await removeLabProcess(LAB, server.pid).catch(() => {});
    }
    await labDown(LAB);
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps every worker's routes to the other workers' pods (packets prove it), follows a Node leaving and coming back, and stops on SIGTERM", async () => {
    const before = await packets();
    assert.equal(before.code, 1, "no routes yet: pods on different workers cannot talk");
    const ssh = labSsh(state)!;
    const kubeconfig = await writeKubeconfig(join(dir, "kubeconfig"), server!, TOKEN);
    controller = startLogged(
      [
        "ip", "netns", "exec", state.controllerNetns!,
        process.execPath, "--enable-source-maps", BIN, "controller",
        "--target=ssh",
        `--ssh-key=${ssh.clientKey}`,
        `--known-hosts=${ssh.knownHosts}`,
        `--kubeconfig=${kubeconfig}`,
        "--identity=ssh-controller",
        `--lease-duration=${FAST_ELECTION.leaseDurationMs}ms`,
        `--renew-deadline=${FAST_ELECTION.renewDeadlineMs}ms`,
        `--retry-period=${FAST_ELECTION.retryPeriodMs}ms`,
        "--resync=10m",
        "--listen=127.0.0.1:9466",
        "--log-format=json",
      ],
      join(dir, "controller.log"),
      "podroutes controller --target ssh",
      { ...process.env, SSH_AUTH_SOCK: "" },
    );
    await addLabProcess(LAB, { netns: state.controllerNetns!, pid: controller.pid, what: "podroutes controller" });

    await eventually(`every worker routes to the others${log()}`, everyWorkerHolds, 60_000);
    for (const w of state.workers) assert.deepEqual(await owned(w.netns), expected(w.name), w.name);
    const verify = await packets();
    assert.equal(verify.code, 0, `${verify.stdout}\n${verify.stderr}`);
    await eventually("conditions False", async () => (await api().nodes()).every((n) => JSON.stringify(n.status).includes('"reason":"RouteCreated"')));
    const ready = await getIn(state.controllerNetns!, "http://127.0.0.1:9466/readyz");
    assert.equal(ready.status, 200, ready.body);
    const metrics = await getIn(state.controllerNetns!, "http://127.0.0.1:9466/metrics");
    assert.match(metrics.body, /^podroutes_leader 1$/m);
    assert.match(metrics.body, /^podroutes_api_calls_total\{api="target",method="ssh\.connect",result="ok"\} 3$/m, "one connection per worker");

    // worker-2's Node goes: the others drop their route to its pods; it comes back: they route to it again.
    const gone = state.workers[2]!;
    await api().remove(gone.name);
    const others = state.workers.filter((w) => w.name !== gone.name);
    await eventually(`no route to ${gone.name}'s pods${log()}`, async () => {
      for (const w of others) if ((await owned(w.netns)).includes(gone.podCIDR)) return false;
      return true;
    });
    await api().put(nodeObject(gone.name, gone.internalIP, gone.podCIDR));
    await eventually(`routes to ${gone.name}'s pods again${log()}`, everyWorkerHolds, 30_000);
    const again = await packets();
    assert.equal(again.code, 0, `${again.stdout}\n${again.stderr}`);

    assert.equal(await controller.stop(), 0, log());
    await removeLabProcess(LAB, controller.pid);
    assert.match(controller.log(), /released the lease/);
    controller = undefined;
  });
});
