/**
 * The real peers podroutes is compared with (issue 21): flanneld, kube-router and Kubernetes' route
 * controller, built from the Go module pinned in testkit/peers/go into the cache beside the control
 * plane's (~/.cache/podroutes/peers/), by the same builder (src/lab/kubernetes/binaries.ts). Never
 * committed as source or binaries.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildGoPrograms, type GoPrograms } from "../../src/lab/kubernetes/binaries.js";
import { needsRoot } from "../root.js";

export const PEERS = ["flannel", "kube-router", "route-controller"] as const;
export type Peer = (typeof PEERS)[number];

export interface PeerBinaries {
  dir: string;
  path: Record<Peer, string>;
  /** Each peer's pinned version (the route controller's: its k8s.io/cloud-provider). */
  version: Record<Peer, string>;
}

export const PEERS_MODULE = fileURLToPath(new URL("../../../testkit/peers/go/", import.meta.url));

/** The versions go.mod pins. */
export function peerVersions(moduleDir = PEERS_MODULE): Record<Peer, string> {
  const goMod = readFileSync(join(moduleDir, "go.mod"), "utf8");
  const pin = (module: string) => {
    const version = goMod.match(new RegExp(`^\\s*${module.replace(/[.\/]/g, "\\$&")} (v\\S+)`, "m"))?.[1];
    if (!version) throw new Error(`${moduleDir}go.mod requires no ${module}`);
    return version;
  };
  return { flannel: pin("github.com/flannel-io/flannel"), "kube-router": pin("github.com/cloudnativelabs/kube-router/v2"), "route-controller": pin("k8s.io/cloud-provider") };
}

export function peerPrograms(moduleDir = PEERS_MODULE): GoPrograms {
  const version = peerVersions(moduleDir);
  return {
    what: "peers (flannel, kube-router, route controller)",
    moduleDir,
    cacheName: "peers",
    release: `flannel-${version.flannel}-kube-router-${version["kube-router"]}`,
    sources: ["tools.go", "route-controller/main.go"],
    packages: ["github.com/flannel-io/flannel", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router", "./route-controller"],
    programs: PEERS,
    ldflags: [`-X github.com/flannel-io/flannel/pkg/version.Version=${version.flannel}`, `-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=${version["kube-router"]}`],
    // flannel's udp backend is cgo: without it the flannel main package does not compile.
    cgo: true,
  };
}

/** The peers' binaries, built first when the cache lacks them (minutes, cold, on 2 cores). */
export async function peerBinaries(progress: (line: string) => void = () => {}): Promise<PeerBinaries> {
  const spec = peerPrograms();
  const dir = await buildGoPrograms(spec, progress);
  return { dir, path: Object.fromEntries(PEERS.map((p) => [p, join(dir, p)])) as Record<Peer, string>, version: peerVersions() };
}

/**
 * The gate of tests that run the peers: root, Go and a C compiler (flannel is cgo). In CI a missing one
 * fails loudly; elsewhere the tests skip, saying why.
 */
export function peersGate(): { skip?: string } {
  const root = needsRoot();
  if (root.skip) return root;
  for (const [tool, args] of [["go", ["version"]], ["gcc", ["--version"]]] as const) {
    try {
      execFileSync(tool, [...args], { stdio: "pipe" });
    } catch {
      if (process.env.CI) throw new Error(`CI=true but ${tool} is not on PATH: the real peers (flannel, kube-router, route controller) are built with it`);
      const reason = `SKIPPED: needs ${tool} to build the real peers (flannel, kube-router, route controller); CI runs these`;
      process.stderr.write(`\n*** ${reason} ***\n`);
      return { skip: reason };
    }
  }
  return {};
}
