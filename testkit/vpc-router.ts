/**
 * A cloud VPC's implicit router, in the lab: a namespace on the lab's VPC bridge whose kernel table is
 * kept in step with the route table a cloud test server holds, so pod packets travel by the routes
 * podroutes wrote through the cloud's API, not by routes in the workers' kernels. Each worker gets one
 * route, `<clusterCIDR> via <router>`, as a VM's default gateway in the VPC is; the router forwards by
 * the cloud's table, blackholes a route whose next hop is gone (as GCP and AWS do), and answers
 * "unreachable" for a destination it has no route to.
 *
 * Only lab namespaces are touched (`ip -n NAME`), never the root namespace. The router's routes carry a
 * protocol number of their own, so each poll changes only what it added. `stop()` removes the namespace
 * (its veth goes with it) and the workers' routes, whatever state it is in.
 */
import { DescribeInstancesCommand, DescribeNetworkInterfacesCommand, DescribeRouteTablesCommand, type EC2Client } from "@aws-sdk/client-ec2";
import { joinVpc, loadLab, saveLab, type LabState } from "../src/lab/lab.js";
import { cidr, cidrContains, parseCidr, type Cidr } from "../src/model.js";
import { run } from "../src/process.js";
import type { GceServer } from "./gce-server.js";
import type { ExtraRoute } from "./openstack-server.js";
import type { HetznerRoute } from "./hetzner-server.js";

/** One route of the cloud's table: `nextHopIp` absent means the cloud drops the packets (a blackhole). */
export interface VpcRoute {
  destination: string;
  nextHopIp?: string;
}

/** Reads the cloud test server's table as it is now (its in-memory state, or its API). */
export type VpcRouteSource = () => VpcRoute[] | Promise<VpcRoute[]>;

export interface VpcRouter {
  netns: string;
  address: string;
  /** Resolves once a whole poll that started after this call has been applied to the router's table. */
  synced(): Promise<void>;
  /** The router's own routes as `DEST via IP` / `blackhole DEST` / `unreachable DEST`, sorted. */
  routes(): Promise<string[]>;
  /** The last poll's error, if it failed (the next one tries again). */
  lastError(): Error | undefined;
  stop(): Promise<void>;
}

/** The protocol number the router's routes carry (not podroutes' 150, nor the kernel's own). */
export const ROUTER_PROTO = 199;
/** A VPC address no lab topology uses (jumpbox .2, controllers .3/.10, workers from .6 or .20). */
export const ROUTER_IP = "10.240.0.1";
const POLL_MS = 100;

/** The `ip route` arguments for one cloud route: via an address on the VPC, else dropped. */
export function routerRoute(route: VpcRoute, vpc: Cidr): string[] {
  if (route.nextHopIp === undefined) return ["blackhole", route.destination];
  const hop = parseCidr(`${route.nextHopIp}/32`);
  // A next hop off the VPC's subnet cannot be reached at L2: the cloud would not deliver either.
  if (!hop.ok || !cidrContains(vpc, hop.cidr)) return ["unreachable", route.destination];
  return [route.destination, "via", route.nextHopIp];
}

/** The routes inside the cluster CIDR, one per destination (the first given wins, as a lower priority does). */
export function routerTable(routes: VpcRoute[], clusterCIDR: string, vpc: Cidr): Map<string, string[]> {
  const cluster = cidr(clusterCIDR);
  const table = new Map<string, string[]>();
  for (const route of routes) {
    const destination = parseCidr(route.destination);
    if (!destination.ok || !cidrContains(cluster, destination.cidr) || table.has(destination.cidr.text)) continue;
    table.set(destination.cidr.text, routerRoute({ ...route, destination: destination.cidr.text }, vpc));
  }
  return table;
}

async function ip(netns: string, args: string[]): Promise<string> {
  if (!netns) throw new Error("vpc router: no namespace given (the root namespace is never changed)");
  const result = await run("ip", ["-n", netns, ...args]);
  if (result.code !== 0) throw new Error(`vpc router: ip -n ${netns} ${args.join(" ")}: ${result.stderr.trim()}`);
  return result.stdout;
}

/** The router's table as `ip` shows it, keyed by destination: `DEST via IP`, `blackhole DEST`, ... */
async function currentRoutes(netns: string): Promise<Map<string, string>> {
  const listed = JSON.parse((await ip(netns, ["-j", "route", "show", "proto", String(ROUTER_PROTO)])) || "[]") as { dst: string; type?: string; gateway?: string }[];
  return new Map(
    listed.map((r) => {
      // `ip` prints a host route without its /32.
      const dst = r.dst.includes("/") ? r.dst : `${r.dst}/32`;
      return [dst, describe(r.type && r.type !== "unicast" ? [r.type, dst] : [dst, "via", r.gateway!])];
    }),
  );
}

const describe = (args: string[]) => args.join(" ");

async function namespaceExists(netns: string): Promise<boolean> {
  const listed = await run("ip", ["netns", "list"]);
  return listed.stdout.split("\n").some((line) => line.split(" ")[0] === netns);
}

/**
 * Starts the router on the lab's VPC at ROUTER_IP and routes every worker's cluster traffic to it;
 * `source` is polled every 100 ms and the router's table made to match it.
 */
export async function startVpcRouter(state: LabState, source: VpcRouteSource, options: { address?: string } = {}): Promise<VpcRouter> {
  const netns = `${state.name}-router`;
  const address = options.address ?? ROUTER_IP;
  const vpc = cidr(`${address.split(".").slice(0, 3).join(".")}.0/${state.vpcPrefixLength}`);
  const taken = [state.jumpboxIP, state.controllerIP, ...state.workers.map((w) => w.internalIP)];
  if (taken.includes(address)) throw new Error(`vpc router: ${address} is taken in lab ${state.name}`);

  let stopped = false;
  let lastError: Error | undefined;
  let polls = 0;
  let waiters: { after: number; resolve: () => void }[] = [];
  let loop: Promise<void> = Promise.resolve();

  const poll = async () => {
    const desired = routerTable(await source(), state.clusterCIDR, vpc);
    const current = await currentRoutes(netns);
    for (const [destination, args] of desired) {
      if (current.get(destination) !== describe(args)) await ip(netns, ["route", "replace", ...args, "proto", String(ROUTER_PROTO)]);
    }
    for (const destination of current.keys()) {
      if (!desired.has(destination)) await ip(netns, ["route", "del", destination, "proto", String(ROUTER_PROTO)]);
    }
  };

  const router: VpcRouter = {
    netns,
    address,
    synced() {
      // Two polls on: the one running now may have read the source before the caller's change.
      return new Promise((resolve) => waiters.push({ after: polls + 2, resolve }));
    },
    async routes() {
      return [...(await currentRoutes(netns)).values()].sort();
    },
    lastError: () => lastError,
    async stop() {
      stopped = true;
      await loop;
      for (const worker of state.workers) {
        // Ours by its protocol number; the worker may be gone already (lab down ran first).
        await run("ip", ["-n", worker.netns, "route", "del", state.clusterCIDR, "via", address, "proto", String(ROUTER_PROTO)]);
      }
      if (await namespaceExists(netns)) await run("ip", ["netns", "del", netns]);
      const saved = await loadLab(state.name);
      if (saved?.vpcRouter) {
        delete saved.vpcRouter;
        await saveLab(saved);
      }
      for (const waiter of waiters) waiter.resolve();
      waiters = [];
    },
  };

  try {
    // A killed run of the same lab may have left it: ours by name (the lab's name prefixes it).
    if (await namespaceExists(netns)) await run("ip", ["netns", "del", netns]);
    await joinVpc(state, netns, "vrouter", address);
    // Forward, answer every traceroute probe, and never tell a worker to go around the router: the VPC's
    // router does not send redirects.
    const sysctl = await run("ip", [
      "netns", "exec", netns, "sysctl", "-q", "-w",
      "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0",
    ]);
    if (sysctl.code !== 0) throw new Error(`vpc router: sysctls in ${netns}: ${sysctl.stderr.trim()}`);
    for (const worker of state.workers) await ip(worker.netns, ["route", "replace", state.clusterCIDR, "via", address, "proto", String(ROUTER_PROTO)]);
    await poll();
  } catch (error) {
    await router.stop();
    throw error;
  }

  // Recorded with the lab: `verify --nodes lab` sends the pods' packets through it, `lab down` removes it.
  await saveLab({ ...((await loadLab(state.name)) ?? state), vpcRouter: { netns, address } });
  loop = (async () => {
    while (!stopped) {
      try {
        await poll();
        lastError = undefined;
      } catch (error) {
        lastError = error as Error;
      }
      polls++;
      waiters = waiters.filter((w) => (w.after <= polls ? (w.resolve(), false) : true));
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  })();
  return router;
}

/** The GCE test server's routes on `network`: next hop by IP, or an instance's address on that network. */
export function gceRouteSource(server: GceServer, network: string): VpcRouteSource {
  return () =>
    [...server.routes.values()]
      .filter((route) => route.network.endsWith(`/networks/${network}`))
      .sort((a, b) => a.priority - b.priority)
      .map((route): VpcRoute => {
        if (route.nextHopIp) return { destination: route.destRange, nextHopIp: route.nextHopIp };
        if (route.nextHopInstance) {
          const instance = server.instances.find((i) => route.nextHopInstance!.endsWith(`/zones/${i.zone}/instances/${i.name}`));
          const nic = instance?.nics?.find((n) => n.network === network || n.network.endsWith(`/networks/${network}`));
          const nextHopIp = nic?.networkIP ?? instance?.networkIP;
          // A deleted instance leaves its route in place, dropping packets: GCP's behaviour.
          return nextHopIp ? { destination: route.destRange, nextHopIp } : { destination: route.destRange };
        }
        return { destination: route.destRange };
      });
}

/**
 * An AWS route table read from moto through EC2's API: a route's ENI or instance mapped to its private
 * IP; a `blackhole` route (its target gone) drops packets.
 */
export function awsRouteSource(client: EC2Client, routeTableId: string): VpcRouteSource {
  return async () => {
    const tables = await client.send(new DescribeRouteTablesCommand({ RouteTableIds: [routeTableId] }));
    const routes = tables.RouteTables?.[0]?.Routes ?? [];
    const eniIds = [...new Set(routes.flatMap((r) => (r.NetworkInterfaceId ? [r.NetworkInterfaceId] : [])))];
    const instanceIds = [...new Set(routes.flatMap((r) => (!r.NetworkInterfaceId && r.InstanceId ? [r.InstanceId] : [])))];
    const eniIp = new Map<string, string>();
    if (eniIds.length) {
      const enis = await client.send(new DescribeNetworkInterfacesCommand({ NetworkInterfaceIds: eniIds }));
      for (const eni of enis.NetworkInterfaces ?? []) if (eni.PrivateIpAddress) eniIp.set(eni.NetworkInterfaceId!, eni.PrivateIpAddress);
    }
    const instanceIp = new Map<string, string>();
    if (instanceIds.length) {
      const reservations = await client.send(new DescribeInstancesCommand({ InstanceIds: instanceIds }));
      for (const instance of (reservations.Reservations ?? []).flatMap((r) => r.Instances ?? [])) {
        if (instance.PrivateIpAddress) instanceIp.set(instance.InstanceId!, instance.PrivateIpAddress);
      }
    }
    return routes.flatMap((route): VpcRoute[] => {
      if (!route.DestinationCidrBlock) return [];
      const nextHopIp = route.State === "blackhole" ? undefined : route.NetworkInterfaceId ? eniIp.get(route.NetworkInterfaceId) : route.InstanceId ? instanceIp.get(route.InstanceId) : undefined;
      return [nextHopIp ? { destination: route.DestinationCidrBlock, nextHopIp } : { destination: route.DestinationCidrBlock }];
    });
  };
}

/** An OpenStack router's extra routes (test server state). */
export function openstackRouteSource(router: { routes: ExtraRoute[] }): VpcRouteSource {
  return () => router.routes.map((r) => ({ destination: r.destination, nextHopIp: r.nexthop }));
}

/** A Hetzner network's routes (test server state). */
export function hetznerRouteSource(network: { routes: HetznerRoute[] }): VpcRouteSource {
  return () => network.routes.map((r) => ({ destination: r.destination, nextHopIp: r.gateway }));
}

/** An Azure route table's routes (test server state): a VirtualAppliance route forwards to its address, `None` drops. */
export function azureRouteSource(server: { routeTable(rg: string, name: string): { properties: { routes: { properties: { addressPrefix: string; nextHopType?: string; nextHopIpAddress?: string } }[] } } | undefined }, resourceGroup: string, table: string): VpcRouteSource {
  return () =>
    (server.routeTable(resourceGroup, table)?.properties.routes ?? []).map((r) => ({
      destination: r.properties.addressPrefix,
      ...(r.properties.nextHopType === "VirtualAppliance" && r.properties.nextHopIpAddress ? { nextHopIp: r.properties.nextHopIpAddress } : {}),
    }));
}
