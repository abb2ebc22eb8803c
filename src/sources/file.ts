/**
 * Nodes from a file (or stdin), in whichever format people already have, detected from the text:
 * - the seeds' routing table: `INTERNAL_IP POD_CIDR [NAME]` per line;
 * - Kubernetes the Hard Way's `machines.txt`: `IPV4_ADDRESS FQDN HOSTNAME [POD_SUBNET]`;
 * - YAML or JSON: `{cluster, clusterCIDR, nodes: [{name, internalIP, podCIDRs, sshAddress, labels}]}`;
 * - a Kubernetes NodeList, or the `kind: List` that `kubectl get nodes -o json|yaml` prints (read by
 *   kube/nodes.ts, the one mapping of Node objects).
 * Pure: text in, RawInventory out, with a line number on every node for error messages.
 */
import type { Document, Node as YamlNode } from "yaml";
import { InputError, type Problem, type RawInventory, type RawNode } from "../inventory.js";
import { readKubeNode, type FieldPath } from "../kube/nodes.js";
import { yaml } from "../yaml.js";

export type FileFormat = "routing-table" | "machines.txt" | "yaml" | "json" | "kubernetes-nodelist";

const YAML_START = /^(---|[A-Za-z_][\w-]*:(\s|$)|-\s)/;

function dataLines(text: string): { line: number; tokens: string[] }[] {
  return text
    .split("\n")
    .map((raw, index) => ({ line: index + 1, text: raw.replace(/#.*$/, "").trim() }))
    .filter((l) => l.text !== "")
    .map((l) => ({ line: l.line, tokens: l.text.split(/\s+/) }));
}

export function detectFormat(text: string): FileFormat {
  const first = text.split("\n").find((line) => line.replace(/#.*$/, "").trim() !== "")?.trim() ?? "";
  // `kubectl get nodes -o json|yaml` prints `kind: List`; the API itself answers `kind: NodeList`.
  if (first.startsWith("{") || first.startsWith("[")) return /"kind"\s*:\s*"(Node)?List"/.test(text) ? "kubernetes-nodelist" : "json";
  if (YAML_START.test(first)) return /^kind:\s*["']?(Node)?List["']?\s*$/m.test(text) ? "kubernetes-nodelist" : "yaml";
  const tokens = first.split(/\s+/);
  return tokens[1]?.includes("/") ? "routing-table" : "machines.txt";
}

/** Parses a nodes file; `file` names it in errors (`-` for stdin). */
export function parseNodesFile(text: string, file: string): RawInventory & { format: FileFormat } {
  const format = detectFormat(text);
  switch (format) {
    case "routing-table":
    case "machines.txt":
      return { ...parseColumns(text, file, format), format };
    default:
      return { ...parseStructured(text, file, format), format };
  }
}

function parseColumns(text: string, file: string, format: "routing-table" | "machines.txt"): RawInventory {
  const nodes: RawNode[] = [];
  const problems: Problem[] = [];
  for (const { line, tokens } of dataLines(text)) {
    const origin = { file, line };
    const looksLikeTable = tokens[1]?.includes("/") ?? false;
    if (looksLikeTable !== (format === "routing-table")) {
      problems.push({
        where: origin,
        value: tokens.join(" "),
        message: `this line is in ${looksLikeTable ? "routing-table" : "machines.txt"} form, but the file started as ${format}`,
      });
      continue;
    }
    if (format === "routing-table") {
      if (tokens.length < 2 || tokens.length > 3) {
        problems.push({ where: origin, value: tokens.join(" "), message: "expected INTERNAL_IP POD_CIDR [NAME]" });
        continue;
      }
      const [ip, podCIDR, name] = tokens as [string, string, string | undefined];
      // The seeds' table has no names; the internal IP is the one thing that identifies the node.
      nodes.push({ name: name ?? ip.replace(/:/g, "-"), internalIPs: [ip], podCIDRs: [podCIDR], origin });
    } else {
      if (tokens.length < 3 || tokens.length > 4) {
        problems.push({ where: origin, value: tokens.join(" "), message: "expected IPV4_ADDRESS FQDN HOSTNAME [POD_SUBNET]" });
        continue;
      }
      const [ip, fqdn, hostname, podSubnet] = tokens as [string, string, string, string | undefined];
      nodes.push({ name: hostname, fqdn, internalIPs: [ip], podCIDRs: podSubnet ? [podSubnet] : [], origin });
    }
  }
  if (problems.length) throw new InputError(problems, `cannot read ${file}`);
  return { nodes, source: file };
}

function parseStructured(text: string, file: string, format: FileFormat): RawInventory {
  const { isMap, isSeq, LineCounter, parseDocument } = yaml();
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    throw new InputError(
      doc.errors.map((e) => ({ where: { file, line: e.linePos?.[0]?.line ?? 1 }, message: e.message.split("\n")[0]! })),
      `cannot read ${file} as ${format === "json" ? "JSON" : "YAML"}`,
    );
  }
  const lineOf = (node: YamlNode | null | undefined, fallback = 1) =>
    node?.range ? lineCounter.linePos(node.range[0]).line : fallback;
  const problems: Problem[] = [];
  const nodes: RawNode[] = [];
  let root: Record<string, unknown> | null;
  try {
    root = doc.toJS({ maxAliasCount: MAX_ALIASES }) as Record<string, unknown> | null;
  } catch (error) {
    // yaml refuses to expand an alias bomb (a billion laughs): bad input, not a crash.
    throw new InputError([{ where: { file, line: 1 }, message: (error as Error).message }], `cannot read ${file}`);
  }
  if (!root || typeof root !== "object" || Array.isArray(root)) {
    throw new InputError([{ where: { file, line: 1 }, message: "expected a mapping with a `nodes` list" }], `cannot read ${file}`);
  }
  if (format !== "kubernetes-nodelist") checkTopLevel(doc.contents, root, file, lineOf);
  const seqNode = doc.get(format === "kubernetes-nodelist" ? "items" : "nodes", true) as YamlNode | undefined;
  if (!isSeq(seqNode)) {
    throw new InputError([{ where: { file, line: lineOf(doc.contents) }, message: `expected a \`${format === "kubernetes-nodelist" ? "items" : "nodes"}\` list` }], `cannot read ${file}`);
  }
  const items = (format === "kubernetes-nodelist" ? root.items : root.nodes) as unknown[];
  seqNode.items.forEach((itemNode, index) => {
    const origin = { file, line: lineOf(itemNode as YamlNode) };
    const item = items[index];
    if (!isMap(itemNode) || typeof item !== "object" || item === null) {
      problems.push({ where: origin, message: "each node must be a mapping" });
      return;
    }
    if (format === "kubernetes-nodelist") {
      const reading = readKubeNode(item);
      for (const problem of reading.problems) {
        problems.push({ where: { file, line: lineOf(deepestNode(doc, ["items", index, ...problem.path]), origin.line) }, ...(reading.name ? { node: reading.name } : {}), message: problem.message });
      }
      if (reading.node) nodes.push({ ...reading.node, origin });
      return;
    }
    const parsed = fromPlainNode(item as Record<string, unknown>);
    if (typeof parsed === "string") problems.push({ where: origin, message: parsed });
    else nodes.push({ ...parsed, origin });
  });
  if (problems.length) throw new InputError(problems, `cannot read ${file}`);
  const cluster = root.cluster ?? root.clusterName;
  const clusterCIDR = root.clusterCIDR ?? root.clusterCidr;
  return {
    ...(typeof cluster === "string" ? { cluster } : {}),
    ...(typeof clusterCIDR === "string" ? { clusterCIDR } : {}),
    nodes,
    source: file,
  };
}

/** Aliases yaml expands before it calls the input an attack (its own default). */
const MAX_ALIASES = 100;

/** The top-level keys of a plain inventory and the type each must have. */
const TOP_LEVEL_KEYS: Record<string, "string" | "list"> = { cluster: "string", clusterName: "string", clusterCIDR: "string", clusterCidr: "string", nodes: "list" };

/**
 * Unknown or ill-typed top-level keys are errors, as unknown node keys are: a typo (`clustercidr:`) or a
 * list (`clusterCIDR: [10.200.0.0/16]`) would otherwise switch the cluster-CIDR guard off in silence.
 */
function checkTopLevel(contents: YamlNode | null, root: Record<string, unknown>, file: string, lineOf: (node: YamlNode | null | undefined) => number): void {
  const problems: Problem[] = [];
  const keyLine = (key: string) => {
    const pair = contents && yaml().isMap(contents) ? contents.items.find((item) => (item.key as { value?: unknown } | null)?.value === key) : undefined;
    return lineOf(pair?.key as YamlNode | undefined);
  };
  for (const [key, value] of Object.entries(root)) {
    const type = TOP_LEVEL_KEYS[key];
    const where = { file, line: keyLine(key) };
    if (!type) {
      problems.push({ where, value: key, message: `unknown top-level field (known: ${Object.keys(TOP_LEVEL_KEYS).join(", ")})` });
    } else if (type === "string" && typeof value !== "string") {
      problems.push({
        where,
        value: key,
        message: `must be a string${key.startsWith("clusterC") ? " (dual stack: one range per family, comma-separated, `10.200.0.0/16,fd00:10:200::/56`)" : ""}`,
      });
    }
  }
  if (problems.length) throw new InputError(problems, `cannot read ${file}`);
}

const KNOWN_NODE_KEYS = new Set(["name", "internalIP", "internalIPs", "podCIDR", "podCIDRs", "sshAddress", "labels", "fqdn"]);

function stringList(value: unknown, key: string): string[] | string {
  if (value === undefined || value === null) return [];
  if (typeof value === "string") return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value;
  return `${key} must be a string or a list of strings`;
}

function fromPlainNode(item: Record<string, unknown>): RawNode | string {
  const unknown = Object.keys(item).filter((key) => !KNOWN_NODE_KEYS.has(key));
  if (unknown.length) return `unknown field ${unknown.map((k) => JSON.stringify(k)).join(", ")} (known: ${[...KNOWN_NODE_KEYS].join(", ")})`;
  const internalIPs = stringList(item.internalIPs ?? item.internalIP, "internalIP");
  const podCIDRs = stringList(item.podCIDRs ?? item.podCIDR, "podCIDRs");
  if (typeof internalIPs === "string") return internalIPs;
  if (typeof podCIDRs === "string") return podCIDRs;
  if (item.name !== undefined && typeof item.name !== "string") return "name must be a string";
  if (item.sshAddress !== undefined && typeof item.sshAddress !== "string") return "sshAddress must be a string";
  const labels = item.labels;
  if (labels !== undefined && (typeof labels !== "object" || labels === null || Array.isArray(labels))) return "labels must be a mapping";
  return {
    ...(item.name !== undefined ? { name: item.name as string } : {}),
    internalIPs,
    podCIDRs,
    ...(item.sshAddress ? { sshAddress: item.sshAddress as string } : {}),
    ...(typeof item.fqdn === "string" ? { fqdn: item.fqdn } : {}),
    ...(labels ? { labels: Object.fromEntries(Object.entries(labels).map(([k, v]) => [k, String(v)])) } : {}),
  };
}

/** The YAML node at `path`, or the deepest one that exists on the way (for the line of a bad field). */
function deepestNode(doc: Document, path: FieldPath): YamlNode | undefined {
  const { isNode } = yaml();
  for (let length = path.length; length > 0; length--) {
    const found = doc.getIn(path.slice(0, length), true) as YamlNode | undefined;
    if (found && isNode(found)) return found;
  }
  return undefined;
}
