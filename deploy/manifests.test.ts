/**
 * The manifests in deploy/ checked as the API server would check them, without one: every document
 * against Kubernetes' own OpenAPI schemas (kubernetes-models' generated validators: types, enums,
 * required fields), and against its TypeScript types through the compiler's excess-property check, which
 * catches what the schemas let through and a strict API server refuses (an unknown or misspelt field).
 * Then what matters for safety: the agent holds NET_ADMIN and nothing else, its RBAC is exactly the
 * calls it makes, and it runs on every node.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { DEFAULT_ROUTE_SET_SHARDS, ROUTE_SET_LEASE, shardName } from "../src/kube/route-set.js";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { parseAllDocuments } from "yaml";
import { parseAgentArgv } from "../src/cli/agent-command.js";
import { parseControllerArgv } from "../src/cli/controller-command.js";
import { scanArgv } from "../src/cli/args.js";
import { commanderOption } from "../src/cli/main.js";

const DEPLOY = join(dirname(fileURLToPath(import.meta.url)), "../../deploy");

interface Manifest {
  file: string;
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [field: string]: any;
}

/** Every manifest: deploy/*.yaml and the controller's, deploy/controller/*.yaml (one Deployment per target). */
function manifests(): Manifest[] {
  const files = [
    ...readdirSync(DEPLOY).filter((file) => file.endsWith(".yaml")),
    ...readdirSync(join(DEPLOY, "controller"))
      .filter((file) => file.endsWith(".yaml"))
      .map((file) => `controller/${file}`),
  ];
  return files
    .sort()
    .flatMap((file) =>
      parseAllDocuments(readFileSync(join(DEPLOY, file), "utf8")).map((doc) => {
        assert.equal(doc.errors.length, 0, `${file}: ${doc.errors.join("; ")}`);
        return { file, ...(doc.toJS() as Omit<Manifest, "file">) } as Manifest;
      }),
    );
}

/** `apps/v1` + `DaemonSet` → `kubernetes-models/apps/v1/DaemonSet`; the core group is `v1`. */
function modelPath(manifest: Manifest): string {
  return `kubernetes-models/${manifest.apiVersion}/${manifest.kind}`;
}

function withoutFile(manifest: Manifest): Record<string, unknown> {
  const { file: _file, ...object } = manifest;
  return object;
}

const all = manifests();
const find = (kind: string, name: string, file?: string) => {
  const found = all.find((m) => m.kind === kind && m.metadata.name === name && (file === undefined || m.file === file));
  assert.ok(found, `deploy/ has no ${kind} ${name}${file ? ` in ${file}` : ""}`);
  return found;
};

/** `core/nodes:get`, `coordination.k8s.io/leases[podroutes-controller]:update`: a role's grants, one per verb. */
function grantsOf(role: Manifest): string[] {
  return role.rules
    .flatMap((rule: any) =>
      rule.apiGroups.flatMap((group: string) =>
        rule.resources.flatMap((resource: string) => rule.verbs.map((verb: string) => `${group || "core"}/${resource}${rule.resourceNames ? `[${rule.resourceNames.join(",")}]` : ""}:${verb}`)),
      ),
    )
    .sort();
}

const CONTROLLER_DEPLOYMENTS = ["controller/deployment-aws.yaml", "controller/deployment-azure.yaml", "controller/deployment-gcp.yaml", "controller/deployment-hetzner.yaml", "controller/deployment-openstack.yaml", "controller/deployment-ssh.yaml"];

describe("deploy/ manifests", () => {
  it("every document validates against Kubernetes' OpenAPI schema for its kind", async () => {
    assert.ok(all.length >= 15, `expected the namespace, the agent's and the controller's RBAC and workloads, found ${all.length} documents`);
    for (const manifest of all) {
      const module = (await import(modelPath(manifest))) as Record<string, new (data: unknown) => { validate(): void }>;
      const Model = module[manifest.kind];
      assert.ok(Model, `${manifest.file}: no model for ${manifest.apiVersion} ${manifest.kind}`);
      assert.doesNotThrow(() => new Model(withoutFile(manifest)).validate(), `${manifest.file}: ${manifest.kind} ${manifest.metadata.name}`);
    }
  });

  it("the schema check itself refuses a wrong type (so a pass means something)", async () => {
    const daemonSet = structuredClone(find("DaemonSet", "podroutes-agent"));
    daemonSet.spec.template.spec.containers[0].securityContext.capabilities.add = "NET_ADMIN";
    const { DaemonSet } = await import("kubernetes-models/apps/v1/DaemonSet");
    assert.throws(() => new DaemonSet(withoutFile(daemonSet) as any).validate(), /capabilities\/add must be array/);
  });

  it("no document has a field its kind does not define (a strict API server refuses those)", () => {
    const problems = typeCheck(all);
    assert.deepEqual(problems, []);
    // And the check catches a misspelt field.
    const typo = structuredClone(find("DaemonSet", "podroutes-agent"));
    typo.spec.template.spec.tolerations[0].opertor = "Exists";
    assert.match(typeCheck([typo]).join("\n"), /opertor/);
  });

  it("the agent runs on every node in the host network with NET_ADMIN and nothing else", () => {
    const daemonSet = find("DaemonSet", "podroutes-agent");
    const pod = daemonSet.spec.template.spec;
    assert.equal(pod.hostNetwork, true);
    assert.equal(pod.priorityClassName, "system-node-critical");
    assert.deepEqual(pod.tolerations, [{ operator: "Exists" }], "tolerates every taint");
    assert.equal(daemonSet.spec.updateStrategy.type, "RollingUpdate");
    assert.equal(pod.serviceAccountName, "podroutes-agent");
    const [container] = pod.containers;
    assert.deepEqual(container.securityContext.capabilities, { drop: ["ALL"], add: ["NET_ADMIN"] });
    assert.notEqual(container.securityContext.privileged, true);
    assert.equal(container.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(
      container.env.find((e: any) => e.name === "NODE_NAME")?.valueFrom,
      { fieldRef: { fieldPath: "spec.nodeName" } },
      "NODE_NAME from the downward API",
    );
    assert.equal(container.args[0], "agent");
    const listen = container.args.find((a: string) => a.startsWith("--listen="))?.split(":").at(-1);
    assert.equal(String(container.livenessProbe.httpGet.port), listen, "liveness probe on the --listen port");
    assert.equal(container.livenessProbe.httpGet.path, "/livez");
    assert.equal(container.readinessProbe.httpGet.path, "/readyz");
    assert.equal(String(container.readinessProbe.httpGet.port), listen);
  });

  it("the agent's root filesystem is read-only, with a writable /tmp (its ip reader's FIFO) and the shared lock directory", () => {
    const pod = find("DaemonSet", "podroutes-agent").spec.template.spec;
    const [container] = pod.containers;
    assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    const volumeAt = (path: string) => pod.volumes.find((v: any) => v.name === container.volumeMounts.find((m: any) => m.mountPath === path)?.name);
    assert.ok(volumeAt("/tmp")?.emptyDir, "an emptyDir at /tmp: without it the ip reader falls back to the socket pair");
    assert.equal(volumeAt("/run/podroutes")?.hostPath?.path, "/run/podroutes", "the lock a `podroutes apply` on the host takes too");
  });

  it("every flag in the DaemonSet's args is one `podroutes agent` accepts, with a valid value", async () => {
    const [container] = find("DaemonSet", "podroutes-agent").spec.template.spec.containers;
    const env = { NODE_NAME: "worker-0" };
    const args = await parseAgentArgv(container.args, env, (spec) => commanderOption(spec));
    assert.deepEqual(args, {
      node: "worker-0",
      resyncMs: 300_000,
      listen: { host: "0.0.0.0", port: 9465 },
      proto: 150,
      setNodeCondition: true,
      cleanupOnExit: false,
      nodesFrom: "nodes",
      publishRouteSet: false,
      routeSetNamespace: "podroutes",
      routeSetFallbackAfterMs: 180_000,
      logFormat: "json",
      // The DaemonSet leaves the path probes at their defaults (docs/agent.md).
      pathProbes: { addressOffset: 1, eventDelayMs: 2000, failuresToUnreachable: 3, minIntervalMs: 30000, port: 9466, ratePerSecond: 2, readiness: false, timeoutMs: 1000 },
    });
    // And the parse is strict: a flag the agent does not have, or a bad value, is refused.
    await assert.rejects(parseAgentArgv([...container.args, "--resync-period=5m"], env, (spec) => commanderOption(spec)), /unknown option '--resync-period=5m'/);
    await assert.rejects(parseAgentArgv(["agent", "--listen=9465"], env, (spec) => commanderOption(spec)), /--listen "9465": must be HOST:PORT/);
  });

  it("the controller: two replicas on different nodes, host network, probes on --listen, identity from the downward API, no capabilities, not root", () => {
    for (const file of CONTROLLER_DEPLOYMENTS) {
      const deployment = find("Deployment", "podroutes-controller", file);
      assert.equal(deployment.metadata.namespace, "podroutes");
      assert.equal(deployment.spec.replicas, 2, file);
      const pod = deployment.spec.template.spec;
      assert.equal(pod.serviceAccountName, "podroutes-controller");
      const anti = pod.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm;
      assert.equal(anti.topologyKey, "kubernetes.io/hostname");
      assert.deepEqual(anti.labelSelector.matchLabels, deployment.spec.selector.matchLabels, `${file}: anti-affinity against its own replicas`);
      assert.equal(pod.hostNetwork, true, `${file}: it sets up pod networking, so it cannot depend on it`);
      assert.equal(pod.dnsPolicy, "Default", `${file}: the node's DNS, not the cluster's (whose pods need routes)`);
      assert.ok(pod.tolerations.some((t: any) => t.key === "node.kubernetes.io/network-unavailable"), `${file}: schedulable on nodes still without routes`);
      assert.equal(pod.securityContext.runAsNonRoot, true);
      const [container] = pod.containers;
      assert.deepEqual(container.securityContext.capabilities, { drop: ["ALL"] });
      assert.equal(container.securityContext.allowPrivilegeEscalation, false);
      for (const [name, fieldPath] of [["POD_NAME", "metadata.name"], ["POD_NAMESPACE", "metadata.namespace"]]) {
        assert.deepEqual(container.env.find((e: any) => e.name === name)?.valueFrom, { fieldRef: { fieldPath } }, `${file}: ${name} from the downward API`);
      }
      const listen = container.args.find((a: string) => a.startsWith("--listen="))?.split(":").at(-1);
      assert.deepEqual([container.livenessProbe.httpGet.path, String(container.livenessProbe.httpGet.port)], ["/healthz", listen], `${file}: liveness on /healthz, the --listen port`);
      assert.deepEqual([container.readinessProbe.httpGet.path, String(container.readinessProbe.httpGet.port)], ["/readyz", listen]);
    }
    const ssh = find("Deployment", "podroutes-controller", "controller/deployment-ssh.yaml").spec.template.spec;
    assert.deepEqual(ssh.volumes, [{ name: "ssh", secret: { secretName: "podroutes-ssh", defaultMode: 0o440 } }], "the SSH key and known_hosts from a Secret");
  });

  it("every flag in the controller Deployments' args is one `podroutes controller --target T` accepts, with a valid value", async () => {
    const env = { POD_NAME: "podroutes-controller-7d9f-abcde", POD_NAMESPACE: "podroutes" };
    const parse = (args: string[]) => parseControllerArgv(args, env, scanArgv(args), (spec, group) => commanderOption(spec, group));
    const parsed = new Map<string, Awaited<ReturnType<typeof parse>>>();
    for (const file of CONTROLLER_DEPLOYMENTS) parsed.set(file, await parse(find("Deployment", "podroutes-controller", file).spec.template.spec.containers[0].args));
    for (const [file, args] of parsed) {
      assert.equal(args.target.name, /deployment-(\w+)/.exec(file)![1]);
      assert.deepEqual(args.election, { namespace: "podroutes", name: "podroutes-controller", identity: env.POD_NAME, leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 }, `${file}: client-go's election defaults, identity from POD_NAME`);
      assert.deepEqual([args.resyncMs, args.listen, args.logFormat, args.cluster, args.clusterCIDR], [300_000, { host: "0.0.0.0", port: 9466 }, "json", "kubernetes", "10.200.0.0/16"]);
    }
    assert.deepEqual([parsed.get("controller/deployment-gcp.yaml")!.values.project, parsed.get("controller/deployment-gcp.yaml")!.values.network], ["my-project", "kubernetes-the-hard-way"]);
    assert.equal(parsed.get("controller/deployment-aws.yaml")!.values.region, "eu-west-1");
    assert.equal(parsed.get("controller/deployment-hetzner.yaml")!.values.network, "k8s");
    const hetzner = find("Deployment", "podroutes-controller", "controller/deployment-hetzner.yaml").spec.template.spec.containers[0];
    assert.deepEqual(hetzner.env.find((e: any) => e.name === "HCLOUD_TOKEN")?.valueFrom, { secretKeyRef: { name: "hcloud", key: "token" } }, "the API token from a Secret, never in args");
    assert.equal(parsed.get("controller/deployment-openstack.yaml")!.values.router, "k8s-router");
    assert.deepEqual([parsed.get("controller/deployment-azure.yaml")!.values.resourceGroup, parsed.get("controller/deployment-azure.yaml")!.values.routeTable], ["kubernetes", ["kubernetes-pods"]]);
    assert.deepEqual([parsed.get("controller/deployment-ssh.yaml")!.values.sshKey, parsed.get("controller/deployment-ssh.yaml")!.values.knownHosts], ["/etc/podroutes/ssh/id_ed25519", "/etc/podroutes/ssh/known_hosts"]);
    // And the parse is strict: another target's flag, or election timings client-go would refuse.
    const gcp = find("Deployment", "podroutes-controller", "controller/deployment-gcp.yaml").spec.template.spec.containers[0].args;
    await assert.rejects(parse([...gcp, "--region=eu-west-1"]), /unknown option '--region=eu-west-1'/);
    await assert.rejects(parse([...gcp, "--renew-deadline=20s"]), /--renew-deadline 20s must be shorter than --lease-duration 15s/);
    await assert.rejects(parse(["controller", "--target=lab"]), /--target "lab": must be one of gcp, aws, azure, hetzner, openstack, ssh/);
  });

  it("the controller's RBAC is exactly nodes get/list/watch, nodes/status patch, its Lease, and Events on Nodes", () => {
    assert.deepEqual(grantsOf(find("ClusterRole", "podroutes-controller")), ["core/nodes/status:patch", "core/nodes:get", "core/nodes:list", "core/nodes:watch"]);
    const lease = find("Role", "podroutes-controller-lease");
    assert.equal(lease.metadata.namespace, "podroutes", "leases in its own namespace only");
    assert.deepEqual(grantsOf(lease), ["coordination.k8s.io/leases:create", "coordination.k8s.io/leases[podroutes-controller]:get", "coordination.k8s.io/leases[podroutes-controller]:update"]);
    const events = find("Role", "podroutes-controller-events");
    assert.equal(events.metadata.namespace, "default", "Events of Nodes live in default");
    assert.deepEqual(grantsOf(events), ["core/events:create", "core/events:patch"]);
    for (const [kind, name, namespace] of [["ClusterRoleBinding", "podroutes-controller", undefined], ["RoleBinding", "podroutes-controller-lease", "podroutes"], ["RoleBinding", "podroutes-controller-events", "default"]] as const) {
      const binding = find(kind, name);
      assert.equal(binding.metadata.namespace, namespace);
      assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: "podroutes-controller", namespace: "podroutes" }]);
    }
  });

  it("the agent's ClusterRole is exactly nodes get/list/watch, nodes/status patch, events create", () => {
    const role = find("ClusterRole", "podroutes-agent");
    const grants = role.rules.flatMap((rule: any) =>
      rule.apiGroups.flatMap((group: string) => rule.resources.flatMap((resource: string) => rule.verbs.map((verb: string) => `${group || "core"}/${resource}:${verb}`))),
    );
    assert.deepEqual(grants.sort(), ["core/events:create", "core/nodes/status:patch", "core/nodes:get", "core/nodes:list", "core/nodes:watch"]);
    const binding = find("ClusterRoleBinding", "podroutes-agent");
    assert.deepEqual(binding.roleRef, { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "podroutes-agent" });
    assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: "podroutes-agent", namespace: "podroutes" }]);
  });

  it("the route set's Roles: read its shards and its Lease; update exactly the shards the publisher writes, and its own Lease", () => {
    const grants = (name: string) => grantsOf(find("Role", name));
    assert.deepEqual(grants("podroutes-route-set-reader"), [`coordination.k8s.io/leases[${ROUTE_SET_LEASE}]:get`, "core/configmaps:get", "core/configmaps:list", "core/configmaps:watch"]);
    const shards = Array.from({ length: DEFAULT_ROUTE_SET_SHARDS }, (_, i) => shardName(i)).join(",");
    assert.deepEqual(grants("podroutes-route-set-publisher"), [
      "coordination.k8s.io/leases:create",
      `coordination.k8s.io/leases[${ROUTE_SET_LEASE}]:get`,
      `coordination.k8s.io/leases[${ROUTE_SET_LEASE}]:update`,
      "core/configmaps:create",
      `core/configmaps[${shards}]:update`,
    ]);
    for (const name of ["podroutes-route-set-reader", "podroutes-route-set-publisher"]) {
      assert.deepEqual(find("RoleBinding", name).subjects, [{ kind: "ServiceAccount", name: "podroutes-agent", namespace: "podroutes" }]);
    }
  });
});

/**
 * Type-checks each manifest as an object literal of its kind's interface (`IDaemonSet`, ...). TypeScript
 * reports a property an interface does not declare at any depth of a fresh literal: the unknown-field
 * check the OpenAPI schemas cannot make. Returns the diagnostics, naming file and field.
 */
function typeCheck(documents: Manifest[]): string[] {
  const require = createRequire(import.meta.url);
  const source = documents
    .map((manifest, index) => {
      const typeName = `I${manifest.kind}`;
      return `import type { ${typeName} as T${index} } from ${JSON.stringify(modelPath(manifest))};\n// ${manifest.file}\nexport const m${index}: T${index} = ${JSON.stringify(withoutFile(manifest), null, 1)};\n`;
    })
    .join("\n");
  const fileName = join(DEPLOY, "__manifests_check.ts");
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    types: [],
    baseUrl: dirname(require.resolve("kubernetes-models/package.json")),
  };
  const host = ts.createCompilerHost(options);
  const readFile = host.readFile.bind(host);
  host.readFile = (name) => (name === fileName ? source : readFile(name));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === fileName || fileExists(name);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, version) => (name === fileName ? ts.createSourceFile(name, source, version) : getSourceFile(name, version));
  const program = ts.createProgram([fileName], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : 0;
    const manifestFile = source.split("\n").slice(0, line + 1).reverse().find((l) => l.startsWith("// "))?.slice(3) ?? "?";
    return `${manifestFile}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`;
  });
}
