/**
 * What the benches against the REAL control plane share: a client of its API server that runs inside
 * the lab's namespace (bench/api-loader.ts, by id over a pipe), and 5,000 kubelet-sized Nodes created
 * through it as kubelets make them.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { nodeObject } from "../testkit/agent-lab.js";
import { asTheKubeletMakesIt } from "./agent.js";

const LOADER = fileURLToPath(new URL("./api-loader.js", import.meta.url));

export const nodeIp = (i: number) => `10.240.${(i + 2) >> 8}.${(i + 2) & 255}`;
export const podCidr = (i: number) => `10.${100 + (i >> 8)}.${i & 255}.0/24`;

export interface Answer {
  status: number;
  error?: string;
}
export type ApiLoader = ReturnType<typeof apiLoader>;

/** The API loader in namespace `netns`: requests in, answers out, by id; up to `parallel` on the wire. */
export function apiLoader(netns: string, url: string, caFile: string, token: string, parallel: number) {
  const child = spawn("ip", ["netns", "exec", netns, process.execPath, LOADER, url, caFile, token, String(parallel)], { stdio: ["pipe", "pipe", "inherit"] });
  const waiting = new Map<number, (answer: Answer) => void>();
  createInterface({ input: child.stdout!, crlfDelay: Infinity }).on("line", (line) => {
    const answer = JSON.parse(line) as Answer & { id: number };
    waiting.get(answer.id)?.(answer);
    waiting.delete(answer.id);
  });
  let next = 0;
  return {
    send(method: string, path: string, body?: unknown, contentType?: string): Promise<Answer> {
      const id = next++;
      const answered = new Promise<Answer>((resolve) => waiting.set(id, resolve));
      child.stdin!.write(`${JSON.stringify({ id, method, path, body, contentType })}\n`);
      return answered;
    },
    stop: () => child.kill(),
  };
}

/** `count` Nodes node-0… as kubelets make them (without managedFields: the server writes its own). */
export async function createKubeletNodes(api: ApiLoader, count: number, from = 0): Promise<void> {
  const answers = await Promise.all(
    Array.from({ length: count }, (_, k) => {
      const i = from + k;
      const kubelets = asTheKubeletMakesIt(nodeObject(`node-${i}`, nodeIp(i), podCidr(i)), i);
      const { managedFields: _drop, ...metadata } = kubelets.metadata as Record<string, unknown>;
      return api.send("POST", "/api/v1/nodes", { ...kubelets, metadata });
    }),
  );
  const failed = answers.filter((a) => a.status !== 201);
  if (failed.length) throw new Error(`${failed.length} Node creates failed, e.g. ${failed[0]!.status} ${failed[0]!.error}`);
}
