/**
 * The gate of the tests that run the real Kubernetes control plane (src/lab/kubernetes).
 */
import { execFileSync } from "node:child_process";
import { needsRoot } from "../root.js";

/**
 * Options for a `describe` that runs the real control plane: it needs root (namespaces) and Go (to build
 * it). In CI a missing Go fails loudly; elsewhere the tests skip, saying why.
 */
export function realControlPlaneGate(): { skip?: string } {
  const root = needsRoot();
  if (root.skip || process.env.PODROUTES_KUBERNETES_BIN_DIR) return root;
  try {
    execFileSync("go", ["version"], { stdio: "pipe" });
    return {};
  } catch {
    if (process.env.CI) throw new Error("CI=true but Go is not on PATH: the real kube-apiserver, etcd and kube-controller-manager are built with it (polyglot machines have Go 1.26)");
    const reason = "SKIPPED: needs Go to build the real kube-apiserver, etcd and kube-controller-manager (or PODROUTES_KUBERNETES_BIN_DIR); CI runs these";
    process.stderr.write(`\n*** ${reason} ***\n`);
    return { skip: reason };
  }
}
