/**
 * The real control plane in a lab's controller namespace, as the real-control-plane tests start it: at
 * the seed's controller address, pod CIDRs from the lab's cluster CIDR, every process recorded with the
 * lab (so `labDown` ends it whatever happens), its progress and start-up time on stderr.
 */
import { join } from "node:path";
import { addLabProcess, type LabState } from "../../src/lab/lab.js";
import { startControlPlane, type ControlPlane } from "../../src/lab/kubernetes/control-plane.js";

export async function labControlPlane(state: LabState, dir: string): Promise<ControlPlane> {
  const started = performance.now();
  const plane = await startControlPlane({
    netns: state.controllerNetns!,
    address: state.controllerIP,
    stateDir: join(dir, "control-plane"),
    clusterCIDR: state.clusterCIDR,
    progress: (line) => process.stderr.write(`# ${line}\n`),
    onStarted: (p) => addLabProcess(state.name, { netns: state.controllerNetns!, pid: p.pid, what: p.what, program: p.program }),
  });
  process.stderr.write(`# real control plane ${plane.binaries.release} ready in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  return plane;
}
