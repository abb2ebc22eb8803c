/**
 * `podroutes lab up --kubernetes`, `lab status`, `lab down` and `demo --kubernetes` as a user runs them:
 * the real CLI, the real etcd, kube-apiserver and kube-controller-manager, the real kubectl from a lab
 * namespace. Needs root and Go (or PODROUTES_KUBERNETES_BIN_DIR): runs in CI, skips loudly elsewhere.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import { labDown, labProcessAlive, labStatePath, loadLab, type LabProcess } from "../src/lab/lab.js";
import { run } from "../src/process.js";
import { runCli, startCli } from "../testkit/cli.js";
import { realControlPlaneGate } from "../testkit/kubernetes/gate.js";

const LAB = `klab${process.pid % 10000}`;

async function namespacesOf(lab: string): Promise<string[]> {
  const listed = await run("ip", ["netns", "list"]);
  return listed.stdout.split("\n").map((line) => line.split(" ")[0]!).filter((ns) => ns.startsWith(`${lab}-`));
}

/** What `lab down` must leave: no process it recorded, no namespace, no state. */
async function assertGone(lab: string, processes: LabProcess[], stateDir: string | undefined): Promise<void> {
  assert.deepEqual(processes.filter(labProcessAlive).map((p) => `${p.what} (pid ${p.pid})`), []);
  assert.deepEqual(await namespacesOf(lab), []);
  assert.equal(existsSync(labStatePath(lab)), false, "the state file is gone");
  if (stateDir) assert.equal(existsSync(stateDir), false, `${stateDir} is gone`);
}

describe("lab up --kubernetes: the seeds' lab with its real control plane", { ...realControlPlaneGate(), timeout: 900_000 }, () => {
  after(async () => {
    await labDown(LAB).catch(() => undefined);
  });

  const kubectl = async (kubeconfig: string, args: string[]) => {
    const result = await run("ip", ["netns", "exec", `${LAB}-jumpbox`, "kubectl", "--kubeconfig", kubeconfig, ...args]);
    assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };

  it("up: the real kubectl, from a lab namespace, shows the workers with the pod CIDRs kube-controller-manager gave them; status -o json gives the kubeconfig", async () => {
    const up = await runCli(["lab", "up", "--kubernetes", "--lab", LAB]);
    assert.equal(up.code, 0, up.stdout + up.stderr);
    assert.match(up.stdout, /admin kubeconfig: \/\S+admin\.kubeconfig/);
    const status = await runCli(["lab", "status", "--lab", LAB, "-o", "json"]);
    assert.equal(status.code, 0, status.stderr);
    const view = JSON.parse(status.stdout) as { up: boolean; kubeconfig: string; workers: { name: string; internalIP: string; podCIDR: string }[]; kubernetes: { release: string } };
    assert.equal(view.up, true);
    assert.ok(existsSync(view.kubeconfig), view.kubeconfig);
    assert.ok(up.stdout.includes(view.kubeconfig), "lab up printed the same path");
    const nodes = await kubectl(view.kubeconfig, ["get", "nodes", "--no-headers", "-o", "custom-columns=NAME:.metadata.name,IP:.status.addresses[?(@.type==\"InternalIP\")].address,POD_CIDR:.spec.podCIDR,READY:.status.conditions[?(@.type==\"Ready\")].status"]);
    assert.deepEqual(
      nodes.trim().split("\n").map((line) => line.trim().split(/\s+/).join(" ")),
      view.workers.map((w) => `${w.name} ${w.internalIP} ${w.podCIDR} True`),
    );
    const version = JSON.parse(await kubectl(view.kubeconfig, ["version", "-o", "json"])) as { serverVersion: { gitVersion: string } };
    assert.equal(version.serverVersion.gitVersion, view.kubernetes.release === "(given)" ? version.serverVersion.gitVersion : view.kubernetes.release);
  });

  it("the kubelets' Leases in kube-node-lease are renewed, owned by their Nodes", async () => {
    const { kubeconfig } = (await loadLab(LAB))!.kubernetes!;
    const renewals = async () => {
      const leases = JSON.parse(await kubectl(kubeconfig, ["get", "leases", "-n", "kube-node-lease", "-o", "json"])) as { items: { metadata: { name: string; ownerReferences?: { kind: string; name: string }[] }; spec: { renewTime: string; holderIdentity: string } }[] };
      return leases.items;
    };
    const before = await renewals();
    assert.deepEqual(before.map((l) => l.metadata.name).sort(), ["worker-0", "worker-1", "worker-2"]);
    for (const lease of before) {
      assert.equal(lease.spec.holderIdentity, lease.metadata.name);
      assert.deepEqual(lease.metadata.ownerReferences?.map((o) => `${o.kind}/${o.name}`), [`Node/${lease.metadata.name}`]);
    }
    const deadline = performance.now() + 30_000;
    let later = before;
    while (performance.now() < deadline) {
      later = await renewals();
      if (later.every((l) => Date.parse(l.spec.renewTime) > Date.parse(before.find((b) => b.metadata.name === l.metadata.name)!.spec.renewTime))) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    for (const lease of later) {
      const first = before.find((b) => b.metadata.name === lease.metadata.name)!;
      assert.ok(Date.parse(lease.spec.renewTime) > Date.parse(first.spec.renewTime), `${lease.metadata.name}'s Lease not renewed in 30 s (${first.spec.renewTime})`);
    }
  });

  it("a second up, with or without --kubernetes, says so and changes nothing", async () => {
    const stateBefore = readFileSync(labStatePath(LAB), "utf8");
    for (const argv of [["lab", "up", "--kubernetes", "--lab", LAB], ["lab", "up", "--lab", LAB]]) {
      const again = await runCli(argv);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /already up .*Kubernetes v1\.\d+\.\d+ at https:\/\/10\.240\.0\.10:6443.*nothing was changed/);
      assert.equal(readFileSync(labStatePath(LAB), "utf8"), stateBefore, "the state (processes, PIDs) is the same");
    }
    const state = (await loadLab(LAB))!;
    assert.deepEqual(state.processes!.filter((p) => !labProcessAlive(p)), [], "every process still runs");
  });

  it("down stops every process it started (by PID) and removes every namespace and file", async () => {
    const state = (await loadLab(LAB))!;
    const processes = state.processes!;
    assert.deepEqual(processes.map((p) => p.what).slice(0, 4), ["etcd", "kube-apiserver", "kube-controller-manager", "the workers' kubelets (Node registration, Leases, status)"]);
    const down = await runCli(["lab", "down", "--lab", LAB]);
    assert.equal(down.code, 0, down.stderr);
    assert.doesNotMatch(down.stdout, /killed/, "each stopped on SIGTERM, in order");
    await assertGone(LAB, processes, state.stateDir);
  });

  it("a lab up killed half-way (kube-apiserver starting) is removed whole by lab down", async () => {
    const up = startCli(["lab", "up", "--kubernetes", "--lab", LAB]);
    // The state file records each process as it starts: kill lab up once kube-apiserver is on its way.
    const deadline = performance.now() + 60_000;
    let state = await loadLab(LAB);
    while (performance.now() < deadline && !(state?.processes ?? []).some((p) => p.what === "kube-apiserver")) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      state = await loadLab(LAB).catch(() => undefined);
    }
    up.child.kill("SIGKILL");
    await up.result.catch(() => undefined);
    state = (await loadLab(LAB))!;
    assert.equal(state.status, "creating");
    const started = state.processes ?? [];
    assert.ok(started.some((p) => p.what === "kube-apiserver"), "kube-apiserver was recorded before lab up died");
    assert.ok(started.filter(labProcessAlive).length >= 2, "etcd and kube-apiserver outlived the killed lab up");
    const status = await runCli(["lab", "status", "--lab", LAB]);
    assert.equal(status.code, 1, "a half-built lab is reported broken");
    const down = await runCli(["lab", "down", "--lab", LAB]);
    assert.equal(down.code, 0, down.stderr);
    await assertGone(LAB, started, state.stateDir);
  });

  it("demo --kubernetes: agents with their ServiceAccount's token, pods reach each other, a Node joins and is routed, a deleted route comes back", async () => {
    const demo = await runCli(["demo", "--kubernetes", "--lab", LAB]);
    const state = await loadLab(LAB);
    try {
      assert.equal(demo.code, 0, demo.stdout + demo.stderr);
      assert.match(demo.stdout, /\$ podroutes lab up --kubernetes/);
      assert.match(demo.stdout, /serviceaccount\/podroutes-agent serverside-applied/);
      assert.match(demo.stdout, /^worker-0\s+False$/m, "NetworkUnavailable=False as stored");
      assert.equal((demo.stdout.match(/^ok {3}pod /gm) ?? []).length, 6 + 12, "every pod pair, before and after the join");
      assert.doesNotMatch(demo.stdout, /^FAIL/m);
      assert.match(demo.stdout, /Node worker-3 \(10\.240\.0\.23\) registered; kube-controller-manager gave it 10\.200\.3\.0\/24/);
      assert.match(demo.stdout, /every worker routes 10\.200\.3\.0\/24 via 10\.240\.0\.23/);
      assert.match(demo.stdout, /worker-0's agent put 10\.200\.1\.0\/24 via 10\.240\.0\.21 back/);
      assert.ok(state?.processes?.filter((p) => p.what.startsWith("podroutes agent")).length === 4, "an agent per worker, recorded for lab down");
    } finally {
      const down = await runCli(["lab", "down", "--lab", LAB]);
      assert.equal(down.code, 0, down.stderr);
    }
    await assertGone(LAB, state?.processes ?? [], state?.stateDir);
  });
});
