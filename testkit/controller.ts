/**
 * `podroutes controller` in the test's own process, against the test servers: a kubeconfig with a token
 * (its permissions are the test's choice, deploy/'s RBAC by default), the target's flag values, short
 * election timings, logs captured, and a fake clock for resyncs when a test wants to reach "the next
 * resync" without waiting for it. Processes are for what needs a process (killing a leader): see
 * e2e/controller.test.ts.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startController, type RunningController } from "../src/controller/controller.js";
import { createLogger } from "../src/observe/log.js";
import type { TargetFactory } from "../src/targets/registry.js";
import type { FakeClock } from "./fake-clock.js";
import { kubeconfigYaml, type KubeApiServer } from "./kube-server.js";
import { serviceAccountRules } from "./rbac.js";

export const CONTROLLER_RBAC = fileURLToPath(new URL("../../deploy/controller/rbac.yaml", import.meta.url));
export const LEASE = { namespace: "podroutes", name: "podroutes-controller" };
/** Scaled down from client-go's 15 s / 10 s / 2 s, keeping their ratios' order. */
export const FAST_ELECTION = { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 250 };

/** Registers `token` with exactly the controller's RBAC (deploy/controller/rbac.yaml) and writes a kubeconfig for it. */
export async function controllerKubeconfig(kube: KubeApiServer, dir: string, token: string): Promise<string> {
  kube.setToken(token, { user: `system:serviceaccount:podroutes:podroutes-controller:${token}`, rules: serviceAccountRules(CONTROLLER_RBAC, { namespace: "podroutes", name: "podroutes-controller" }) });
  const path = join(dir, `kubeconfig-${token}`);
  await writeFile(path, kubeconfigYaml({ server: kube.url, caFile: kube.caFile, token }));
  return path;
}

export interface InProcessController {
  controller: RunningController;
  /** The JSON log lines it wrote, parsed. */
  logs: Record<string, unknown>[];
  stop(): Promise<void>;
}

export async function startInProcessController(options: {
  target: TargetFactory;
  /** The target's flags by option key (`project`, `network`, ...), as the CLI would pass them. */
  values: Record<string, unknown>;
  kubeconfig: string;
  identity: string;
  cluster?: string;
  clusterCIDR?: string;
  resyncMs?: number;
  resyncClock?: FakeClock;
  eventRepeatIntervalMs?: number;
  env?: NodeJS.ProcessEnv;
}): Promise<InProcessController> {
  const logs: Record<string, unknown>[] = [];
  const log = createLogger({ format: "json", level: "debug", write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  const controller = await startController({
    target: options.target,
    targetOptions: {
      ...options.values,
      cluster: options.cluster ?? "kubernetes",
      ...(options.clusterCIDR ? { clusterCIDR: options.clusterCIDR } : {}),
      parallel: 10,
      env: options.env ?? {},
      warn: (message) => log.warn(message),
      interactive: false,
    },
    kubeconfig: options.kubeconfig,
    election: { ...LEASE, identity: options.identity, ...FAST_ELECTION },
    resyncMs: options.resyncMs ?? 600_000,
    ...(options.resyncClock ? { resyncClock: options.resyncClock } : {}),
    ...(options.eventRepeatIntervalMs !== undefined ? { eventRepeatIntervalMs: options.eventRepeatIntervalMs } : {}),
    listen: { host: "127.0.0.1", port: 0 },
    log,
    env: options.env ?? {},
  });
  return { controller, logs, stop: () => controller.stop() };
}

/** Resolves once `check` holds; fails with `what` after `limitMs` (a safety limit, not a timing assertion). */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, limitMs = 20_000): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > limitMs) throw new Error(`not within ${limitMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The NetworkUnavailable condition of a stored Node as `status/reason`, and its message. */
export function networkCondition(kube: KubeApiServer, node: string): { state: string; message: string } | undefined {
  const conditions = ((kube.object("nodes", node)?.status as { conditions?: { type: string; status: string; reason?: string; message?: string }[] } | undefined)?.conditions ?? []);
  const found = conditions.find((c) => c.type === "NetworkUnavailable");
  return found && { state: `${found.status}/${found.reason}`, message: found.message ?? "" };
}
