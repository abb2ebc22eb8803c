/**
 * This host's kernel table as the agent's two cheap paths see it, beside the full plan-and-apply of the
 * engine (which startup, kernel drift and a resync that found a difference still go through):
 *
 * - `holds`: a resync with nothing changed reads the routes once and compares them with what the last
 *   reconcile left there: no inventory mapped, no desired routes built, no plan; and the same text as
 *   the last one that held (by its digest) is not even parsed again.
 * - `write`: one Node changed. Its destinations (old and new) are read again under the table's lock
 *   (`ip route show table all exact DEST` for each, not the whole table), planned from that read with
 *   the planner's diff (the same ownership rules: only routes carrying the protocol number are touched,
 *   a foreign route is a conflict, never overwritten) and written in one batch, all under the one lock
 *   every podroutes run on this network namespace takes (runner.ts).
 *
 * What the batch needs of the rest of the table — the connected networks (is the next hop on-link?), the
 * host's addresses, the nexthop objects (reuse one to the same next hop; new ids avoid taken ones) — comes
 * from `facts`, the last full read. Why trusting them cannot break the safety rules: a next hop that went
 * off-link or a connected network that changed is a link or address event, and any such event, or an
 * owned nexthop object changing, sends the agent through the full path, which reads everything again; an
 * id taken by someone meanwhile makes `nexthop add` fail (it never takes over an object) and the change
 * fails, which also sends the agent through the full path. The one thing the per-change write does not do
 * is remove nexthop objects left unused: proving nothing uses one needs the whole table, so that waits for
 * the next full reconcile, which the next resync after such a write is (reconciler.ts).
 */
import { createHash } from "node:crypto";
import { changeDestination, diffTable, type TableDiff } from "../plan/plan.js";
import type { Route } from "../model.js";
import {
  BATCH_END,
  batchFailures,
  batchResults,
  buildWriteBatch,
  observedRoutes,
  parseHostReads,
  sameHostRoute,
  type HostState,
  type KernelNexthop,
  type KernelRoute,
  type WriteBatch,
} from "../targets/linux/iproute.js";
import { lockLocal, localRunner, type IpRunner } from "../targets/linux/runner.js";
import { IpReader } from "./ip-reader.js";
import { TargetError, type ChangeResult, type TableRef } from "../targets/target.js";

/** What the per-change write takes from the last full read: everything but the routes to nodes. */
export interface HostFacts {
  /** Connected routes (main table, a device and no gateway): the on-link networks. */
  connected: KernelRoute[];
  /** podroutes' own plain nexthop objects, by the gateway the kernel prints. */
  ownedByGateway: Map<string, KernelNexthop>;
  /** Every other nexthop object, by id alone: a new object's id must avoid them. */
  others: { id: number }[];
  nexthopObjects: boolean;
  addresses: string[];
}

export function factsOf(state: HostState, proto: number): HostFacts {
  const ownedByGateway = new Map<string, KernelNexthop>();
  const others: { id: number }[] = [];
  for (const nexthop of state.nexthops) {
    if (nexthop.protocol === String(proto) && nexthop.gateway && !nexthop.group) ownedByGateway.set(nexthop.gateway, nexthop);
    else others.push({ id: nexthop.id });
  }
  return {
    connected: state.routes.filter((route) => !route.gateway && route.dev && !route.nexthops && route.nhid === undefined),
    ownedByGateway,
    others,
    nexthopObjects: state.nexthopObjects,
    addresses: state.addresses,
  };
}

/**
 * The nexthop objects a batch for these routes needs to see: podroutes' objects to their next hops
 * (reused), and every other object's id (taken); not 5,000 objects to parse per change.
 */
function nexthopsFor(facts: HostFacts, nextHops: Iterable<string>): KernelNexthop[] {
  const relevant = new Set<KernelNexthop>();
  for (const nextHop of nextHops) {
    const owned = facts.ownedByGateway.get(nextHop);
    if (owned) relevant.add(owned);
  }
  const ids: KernelNexthop[] = facts.others.map(({ id }) => ({ id }));
  for (const nexthop of facts.ownedByGateway.values()) if (!relevant.has(nexthop)) ids.push({ id: nexthop.id });
  return [...relevant, ...ids];
}

/** The routes of `route show` lines (each a JSON array). */
function routesOf(lines: Buffer[]): KernelRoute[] {
  const routes: KernelRoute[] = [];
  for (const line of lines) for (const route of JSON.parse(line.toString("utf8")) as KernelRoute[]) routes.push(route);
  return routes;
}

export interface HostWrite {
  diff: TableDiff;
  results: ChangeResult[];
}

/**
 * Whether `routes` (a read of every table) hold exactly `expected` as podroutes writes them: each owned
 * route in the main table at the default metric, unicast, to the expected next hop, one per expected
 * destination, nothing else owned, and no foreign main-table route on an expected destination. Compares
 * the kernel's own text: anything spelt otherwise (a host route without its /32, say) reads as a
 * difference, which only costs a full plan. Pure.
 */
export function holdsExactly(routes: KernelRoute[], expected: ReadonlyMap<string, string>, proto: number): boolean {
  const mark = String(proto);
  let owned = 0;
  for (const route of routes) {
    const main = route.table === undefined || route.table === "254" || route.table === "main";
    if (route.protocol !== mark) {
      if (main && route.dst !== undefined && expected.has(route.dst)) return false;
      continue;
    }
    const v6 = route.dst?.includes(":") ?? false;
    const unicast = route.type === undefined || route.type === "1" || route.type === "unicast";
    if (!main || !unicast || route.nexthops || (route.metric ?? (v6 ? 1024 : 0)) !== (v6 ? 1024 : 0)) return false;
    if (route.dst === undefined || route.gateway === undefined || expected.get(route.dst) !== route.gateway) return false;
    owned++;
  }
  return owned === expected.size;
}

/** Every table's routes. */
const ROUTES_COMMAND = "route show table all";

/** The last ExpectedRoutes revision handed out in this process. */
let lastRevision = 0;

/**
 * What the table should hold of podroutes' (destination → next hop), as a Map whose `revision` changes
 * with every change to it and is unique among all of them in this process: `holds` keeps its verdict for
 * one revision only.
 */
export class ExpectedRoutes extends Map<string, string> {
  revision = ++lastRevision;

  override set(destination: string, nextHop: string): this {
    this.revision = ++lastRevision;
    return super.set(destination, nextHop);
  }

  override delete(destination: string): boolean {
    this.revision = ++lastRevision;
    return super.delete(destination);
  }

  override clear(): void {
    this.revision = ++lastRevision;
    super.clear();
  }
}

/** The kernel's text, by its SHA-256: equal digests are taken for equal bytes (no two texts are known to share a SHA-256). */
const digestOf = (text: Buffer): Buffer => createHash("sha256").update(text).digest();

/** The batch without its `nexthop del` lines (no change of the batch depends on them). */
function withoutCleanup(batch: WriteBatch): WriteBatch {
  const lines = batch.lines.filter((line) => line.changes.length > 0);
  return { ...batch, lines, script: lines.length ? `${lines.map((line) => `${line.text}\n`).join("")}${BATCH_END}\n` : "" };
}

export interface HostTableOptions {
  proto: number;
  /** The network namespace (tests and benchmarks); undefined: this process's own, as in the DaemonSet. */
  netns?: string;
  /** Messages for the log: waiting for another run's lock. */
  warn(message: string): void;
}

export class HostTable {
  /** The digest of the last text `holds` found to hold `expected`, and that revision of it. */
  private verified: { revision: number; digest: Buffer } | undefined;
  /** The last full read's facts; undefined until one is given, or after a write that made them stale. */
  private facts: HostFacts | undefined;
  private readonly runner: IpRunner;
  private readonly reader: IpReader;

  constructor(private readonly options: HostTableOptions) {
    this.runner = localRunner(options.netns);
    this.reader = new IpReader(options.netns);
  }

  /** Remembers what a full read of the table showed. */
  remember(state: HostState): void {
    this.facts = factsOf(state, this.options.proto);
  }

  /** Forgets the facts: the next write reads the whole table once first. */
  forget(): void {
    this.facts = undefined;
  }

  /**
   * One read of every table's routes, compared with `expected` (see holdsExactly). The kernel's text is
   * the same from one resync to the next while nothing changes, so a text whose digest was found to hold
   * this very revision of `expected` holds it again, without being decoded, parsed or compared: most of
   * a no-op resync's garbage (a string of half a megabyte, 5,000 route objects) is never made. Only a
   * verdict of true is kept; any other text is compared in full.
   */
  async holds(expected: ExpectedRoutes): Promise<boolean> {
    const [text] = await this.readLines([ROUTES_COMMAND]);
    const digest = digestOf(text!);
    const verified = this.verified;
    if (verified && verified.revision === expected.revision && verified.digest.equals(digest)) return true;
    const held = holdsExactly(routesOf([text!]), expected, this.options.proto);
    this.verified = held ? { revision: expected.revision, digest } : undefined;
    return held;
  }

  /** Lines printed by `route show` commands, through the long-lived reader. */
  private async readLines(commands: string[]): Promise<Buffer[]> {
    try {
      return await this.reader.read(commands);
    } catch (error) {
      throw new TargetError("agent", `cannot read routes on ${this.runner.where}: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Ends the reader process. */
  close(): Promise<void> {
    return this.reader.close();
  }

  /**
   * Makes `destinations` hold what `desired` says (routes on other destinations are not looked at),
   * under the table's lock, from a read of those destinations alone. `cluster` is recorded as the owner
   * of the protocol number, as every write does; undefined is returned, nothing written, when the
   * protocol number belongs to another cluster here (the full path says why).
   */
  async write(table: TableRef, desired: Route[], destinations: ReadonlySet<string>, context: { cluster: string; clusterCIDR?: string; nodeOfNextHop(ip: string): string }): Promise<HostWrite | undefined> {
    const { proto, netns } = this.options;
    const facts = this.facts ?? (await this.readFacts());
    // The lock alone (no read of the whole table under it): the destinations are read just after.
    const host = await lockLocal(
      netns,
      { proto, cluster: context.cluster, waiting: (holder) => this.options.warn(`waiting for another podroutes run to finish with ${this.runner.where}${holder ? ` (lock held by ${holder})` : ""}`) },
      "nothing",
    );
    try {
      if (host.owner !== undefined && host.owner !== context.cluster) return undefined;
      const routes = routesOf(await this.readLines([...destinations].map((destination) => `route show table all exact ${destination}`)));
      const nexthops = nexthopsFor(facts, desired.map((route) => route.nextHop));
      const state: HostState = { routes: [...facts.connected, ...routes], nexthops, nexthopObjects: facts.nexthopObjects, addresses: facts.addresses };
      const observed = observedRoutes(state, proto).filter((route) => destinations.has(route.destination));
      const diff = diffTable(table, desired, observed, { ...(context.clusterCIDR !== undefined ? { clusterCIDR: context.clusterCIDR } : {}), sameRoute: sameHostRoute });
      if (!diff.changes.length) return { diff, results: [] };
      const batch = withoutCleanup(buildWriteBatch(state, diff.changes, { proto, nodeOfNextHop: context.nodeOfNextHop }));
      // New nexthop objects: the facts no longer list every object; read them again before the next write.
      if (batch.lines.some((line) => line.text.startsWith("nexthop add"))) this.facts = undefined;
      if (!batch.script) return { diff, results: batchResults(batch, diff.changes, "") };
      const result = await host.write(batch.script);
      // `ip -force -batch` exits 1 when lines failed, each named; anything else means it did not finish,
      // and only a full read can tell what it did.
      if (result.code !== 0 && !(result.code === 1 && batchFailures(result.stderr).size > 0)) {
        this.facts = undefined;
        throw new TargetError("agent", `ip stopped before the end of the batch for ${diff.changes.map(changeDestination).join(", ")}: ${result.stderr.trim() || `exit ${result.code}`}`);
      }
      return { diff, results: batchResults(batch, diff.changes, result.stderr) };
    } finally {
      await host.release();
    }
  }

  private async readFacts(): Promise<HostFacts> {
    const reads = await this.runner.read();
    if (!reads.every((read) => read.stdout.trim().startsWith("["))) throw new TargetError("agent", `cannot read routes on ${this.runner.where}: ${reads.map((read) => read.stderr.trim()).join(" ") || "ip printed nothing"}`);
    this.facts = factsOf(parseHostReads(reads), this.options.proto);
    return this.facts;
  }
}
