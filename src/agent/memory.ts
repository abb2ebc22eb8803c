/**
 * Gives back the heap the agent's first sync grew. The first sync is its peak: every Node listed, the
 * kernel's table read, the first plan and batch. V8 keeps the pages it grew to until its memory reducer
 * runs, 10–25 s later (measured), and the RSS after the first sync is what a DaemonSet's memory limit and
 * the goal see. Two full collections right after the agent is ready give most of it back at once:
 * at 5,000 kubelet-sized Nodes, RSS 100–105 → 91–92 MB, for about 25 ms of CPU, once (issue 9).
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let collect: (() => void) | undefined;

/**
 * Two full garbage collections: the first frees the sync's garbage, the second the pages the first
 * emptied. V8's `gc` without `--expose-gc` on the command line (NODE_OPTIONS does not take it): the flag
 * set now installs `gc` in contexts made afterwards, as Node's own documentation of setFlagsFromString
 * shows for other flags.
 */
export function releaseHeap(): void {
  if (!collect) {
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as () => void;
  }
  collect();
  collect();
}
