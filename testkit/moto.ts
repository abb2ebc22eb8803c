/**
 * An offline EC2 for tests: moto's server on 127.0.0.1 (the preinstalled Python package), a builder for
 * the seeds' cluster in it (VPC, subnet, cluster-tagged route tables, instances at 10.240.0.20-22 with
 * `pod-cidr` tags, next to an overlapping VPC), the real aws CLI pointed at it, and a proxy in front of
 * moto that adds what moto lacks: throttling, lost answers, and EC2's route rules.
 *
 * moto accepts input real EC2 rejects (see TESTBED.md), so nothing here relies on moto to refuse bad
 * input. Every process started here is stopped by its PID; credentials are dummies and instance
 * metadata lookups are off, so nothing ever reaches a real AWS endpoint.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { promisify } from "node:util";
import pLimit from "p-limit";
import {
  EC2Client,
  AttachInternetGatewayCommand,
  CreateInternetGatewayCommand,
  CreateRouteCommand,
  CreateRouteTableCommand,
  CreateSubnetCommand,
  CreateVpcCommand,
  DescribeInstancesCommand,
  DescribeNetworkInterfacesCommand,
  DescribeRouteTablesCommand,
  RunInstancesCommand,
  type Route as Ec2Route,
  type Tag,
} from "@aws-sdk/client-ec2";

export const REGION = "us-east-1";
/** An AMI moto's run-instances accepts. */
export const AMI = "ami-12c6146b";

/** Credentials and switches that keep the SDK and the aws CLI away from real AWS and metadata. */
export function offlineAwsEnv(endpoint: string): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_REGION: REGION,
    AWS_DEFAULT_REGION: REGION,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: "/nonexistent/podroutes-test/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/podroutes-test/aws-credentials",
    AWS_ENDPOINT_URL: endpoint,
    // The SDK's notice that its 2027 releases need Node 22 would fill every test's stderr.
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/tmp",
  };
}

export interface Moto {
  port: number;
  endpoint: string;
  pid: number;
  /** A fresh SDK client with dummy credentials, for fixtures. */
  client(endpoint?: string): EC2Client;
  /** Clears every resource (a default VPC 172.31.0.0/16 comes back). */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, "close");
  return port;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = once(child, "exit");
  process.kill(child.pid, "SIGTERM");
  const timer = setTimeout(() => child.pid !== undefined && child.exitCode === null && process.kill(child.pid, "SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}

/** Starts `moto_server` on a free loopback port and waits until it answers. */
export async function startMoto(): Promise<Moto> {
  const port = await freePort();
  const child = spawn("moto_server", ["-H", "127.0.0.1", "-p", String(port)], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`moto_server exited (${child.exitCode}): ${stderr}`);
      const ok = await fetch(`${endpoint}/moto-api/reset`, { method: "POST" }).then((r) => r.ok, () => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`moto_server did not answer on ${endpoint} within 20 s: ${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (error) {
    await stopChild(child);
    throw error;
  }
  return {
    port,
    endpoint,
    pid: child.pid!,
    client: (url = endpoint) => new EC2Client({ region: REGION, endpoint: url, credentials: { accessKeyId: "test", secretAccessKey: "test" } }),
    async reset() {
      const response = await fetch(`${endpoint}/moto-api/reset`, { method: "POST" });
      if (!response.ok) throw new Error(`moto reset: HTTP ${response.status}`);
    },
    stop: () => stopChild(child),
  };
}

/** The seeds' workers: internal IPs 10.240.0.20-22, pod CIDRs 10.200.0-2.0/24. */
export const SEED_NODES = [0, 1, 2].map((i) => ({ name: `worker-${i}`, ip: `10.240.0.2${i}`, podCIDR: `10.200.${i}.0/24` }));
export const SEED_CLUSTER_CIDR = "10.200.0.0/16";

export interface FixtureInstance {
  name: string;
  ip: string;
  podCIDR?: string;
  instanceId: string;
  eniId: string;
}

export interface CloudFixture {
  vpcId: string;
  subnetId: string;
  igwId: string;
  tableIds: string[];
  instances: FixtureInstance[];
  /** An unrelated instance in another VPC with the same range, at the first node's IP. */
  stranger: FixtureInstance & { vpcId: string };
}

/** Instances per bulk RunInstances call. */
const LAUNCH_BATCH = 500;

const tags = (pairs: Record<string, string>): Tag[] => Object.entries(pairs).map(([Key, Value]) => ({ Key, Value }));

/** Launches one instance at a fixed private IP, tagged; returns its instance and primary ENI ids. */
export async function launchInstance(
  ec2: EC2Client,
  subnetId: string,
  node: { name: string; ip: string; podCIDR?: string },
  extraTags: Record<string, string> = {},
): Promise<FixtureInstance> {
  const out = await ec2.send(
    new RunInstancesCommand({
      ImageId: AMI,
      MinCount: 1,
      MaxCount: 1,
      InstanceType: "t3.micro",
      SubnetId: subnetId,
      PrivateIpAddress: node.ip,
      TagSpecifications: [{ ResourceType: "instance", Tags: tags({ Name: node.name, ...(node.podCIDR ? { "pod-cidr": node.podCIDR } : {}), ...extraTags }) }],
    }),
  );
  const instance = out.Instances![0]!;
  return { ...node, instanceId: instance.InstanceId!, eniId: instance.NetworkInterfaces![0]!.NetworkInterfaceId! };
}

/**
 * The seeds' AWS layout: VPC 10.240.0.0/16, subnet 10.240.0.0/24, an internet gateway, `tables` route
 * tables tagged `kubernetes.io/cluster/<cluster>` (each with a default route to the gateway, a route
 * podroutes must never touch), and one instance per node, tagged Name, pod-cidr and the cluster tag.
 *
 * First, as in any account that has more than one VPC: a second VPC with the same 10.240.0.0/16 range,
 * holding an unrelated instance (`stranger`) at the first node's IP. It is created before the cluster,
 * so an EC2 lookup by IP alone finds the stranger's interface first; only a lookup scoped to the route
 * tables' VPC finds the node's.
 */
export async function buildCluster(
  ec2: EC2Client,
  options: {
    cluster?: string;
    tables?: number;
    nodes?: { name: string; ip: string; podCIDR?: string }[];
    untaggedNodes?: boolean;
    /** The cluster's subnet (default 10.240.0.0/24; 10.240.0.0/16 for thousands of instances). */
    subnetCidr?: string;
    /** That many more instances after `nodes`, launched in bulk (EC2 picks their addresses): named node-0, node-1, ... */
    launched?: number;
  } = {},
): Promise<CloudFixture> {
  const nodes = options.nodes ?? SEED_NODES;
  const strangerVpcId = (await ec2.send(new CreateVpcCommand({ CidrBlock: "10.240.0.0/16" }))).Vpc!.VpcId!;
  const strangerSubnetId = (await ec2.send(new CreateSubnetCommand({ VpcId: strangerVpcId, CidrBlock: "10.240.0.0/24" }))).Subnet!.SubnetId!;
  // Without fixed nodes, the first address EC2 hands out in the fresh subnet (.0-.3 are reserved): the first launched instance's.
  const stranger = { ...(await launchInstance(ec2, strangerSubnetId, { name: "stranger", ip: nodes[0]?.ip ?? "10.240.0.4" })), vpcId: strangerVpcId };

  const cluster = options.cluster ?? "kubernetes";
  const clusterTag = { [`kubernetes.io/cluster/${cluster}`]: "owned" };
  const vpcId = (await ec2.send(new CreateVpcCommand({ CidrBlock: "10.240.0.0/16" }))).Vpc!.VpcId!;
  const subnetId = (await ec2.send(new CreateSubnetCommand({ VpcId: vpcId, CidrBlock: options.subnetCidr ?? "10.240.0.0/24" }))).Subnet!.SubnetId!;
  const igwId = (await ec2.send(new CreateInternetGatewayCommand({}))).InternetGateway!.InternetGatewayId!;
  await ec2.send(new AttachInternetGatewayCommand({ InternetGatewayId: igwId, VpcId: vpcId }));
  const tableIds: string[] = [];
  for (let i = 0; i < (options.tables ?? 1); i++) {
    const table = await ec2.send(
      new CreateRouteTableCommand({ VpcId: vpcId, TagSpecifications: [{ ResourceType: "route-table", Tags: tags({ Name: `kubernetes-${i}`, ...clusterTag }) }] }),
    );
    const id = table.RouteTable!.RouteTableId!;
    await ec2.send(new CreateRouteCommand({ RouteTableId: id, DestinationCidrBlock: "0.0.0.0/0", GatewayId: igwId }));
    tableIds.push(id);
  }
  const instances: FixtureInstance[] = [];
  // untaggedNodes: the table is the cluster's by tag, its instances are not (a cluster built by hand).
  for (const node of nodes) instances.push(await launchInstance(ec2, subnetId, node, options.untaggedNodes ? {} : clusterTag));
  for (let first = 0; first < (options.launched ?? 0); first += LAUNCH_BATCH) {
    const count = Math.min(LAUNCH_BATCH, options.launched! - first);
    const out = await ec2.send(
      new RunInstancesCommand({
        ImageId: AMI,
        MinCount: count,
        MaxCount: count,
        InstanceType: "t3.micro",
        SubnetId: subnetId,
        ...(options.untaggedNodes ? {} : { TagSpecifications: [{ ResourceType: "instance", Tags: tags(clusterTag) }] }),
      }),
    );
    for (const [i, instance] of (out.Instances ?? []).entries()) {
      instances.push({ name: `node-${first + i}`, ip: instance.PrivateIpAddress!, instanceId: instance.InstanceId!, eniId: instance.NetworkInterfaces![0]!.NetworkInterfaceId! });
    }
  }
  return { vpcId, subnetId, igwId, tableIds, instances, stranger };
}

const execFileAsync = promisify(execFile);

/** Runs the real aws CLI (v1) against `endpoint` with dummy credentials; returns its parsed JSON output. */
export async function awsCli(endpoint: string, args: string[]): Promise<any> {
  const { stdout } = await execFileAsync("aws", [...args, "--endpoint-url", endpoint, "--region", REGION, "--output", "json"], {
    env: offlineAwsEnv(endpoint),
    timeout: 60_000,
  });
  return stdout.trim() ? JSON.parse(stdout) : {};
}

export interface Ec2ProxyOptions {
  /** The first `times` attempts of each call of these actions are answered HTTP 503 RequestLimitExceeded. */
  throttle?: { actions: string[]; times: number };
  /**
   * The first attempt of each call of these actions is carried out by moto, then its answer is lost: an
   * HTTP 500 InternalError, or the connection dropped. The SDK retries the same call, which has landed.
   */
  loseAnswers?: { actions: string[]; as: "500" | "drop" };
  /**
   * Every request waits this long before moto sees it: EC2's answer time (tens to hundreds of
   * milliseconds), where moto on loopback answers in a few. The waits overlap, as EC2's do.
   */
  latencyMs?: number;
  /** Enforce EC2's CreateRoute/ReplaceRoute rules that moto skips (see startEc2Proxy). */
  routeRules?: { routeLimit: number };
}

export interface Ec2Proxy {
  endpoint: string;
  /** Requests passed on to moto, by EC2 action. */
  forwarded: Map<string, number>;
  /** How many requests were answered with RequestLimitExceeded, by EC2 action. */
  throttled: Map<string, number>;
  /** Calls moto carried out whose answer was lost, by EC2 action. */
  lost: Map<string, number>;
  /** Calls refused by a modelled EC2 rule, by error code (RouteAlreadyExists, InvalidInstanceID, ...). */
  refused: Map<string, number>;
  /** The parameters of every forwarded call of an action, in order. */
  calls(action: string): URLSearchParams[];
  close(): Promise<void>;
}

function ec2ErrorXml(code: string, message: string, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${code}</Code><Message>${message}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`;
}

const count = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);

/** The routes the quota counts: not the table's local routes, not propagated ones; per family. */
function quotaUse(routes: Ec2Route[], family: "v4" | "v6"): number {
  return routes.filter(
    (r) =>
      r.Origin !== "CreateRouteTable" &&
      r.Origin !== "EnableVgwRoutePropagation" &&
      (family === "v6" ? r.DestinationIpv6CidrBlock !== undefined : r.DestinationCidrBlock !== undefined),
  ).length;
}

/**
 * An HTTP proxy in front of moto that makes it behave more like EC2 where podroutes depends on it.
 * What it models, and why (moto 5.2 gaps, see TESTBED.md):
 * - latency: each request waits `latencyMs` before moto sees it, as EC2 takes its time to answer;
 * - throttling: HTTP 503 RequestLimitExceeded, exactly what a throttled EC2 sends;
 * - lost answers: the call is carried out, its answer lost (500 or a dropped connection), so the SDK's
 *   retry meets the result of its own first attempt (RouteAlreadyExists, InvalidRoute.NotFound);
 * - with `routeRules`, CreateRoute/ReplaceRoute are checked as EC2 checks them and refused with EC2's
 *   error codes: a destination the table already holds (RouteAlreadyExists; moto silently overwrites a
 *   route to an interface), an instance with more than one network interface (InvalidInstanceID; EC2
 *   needs exactly one), an interface in another VPC than the table (InvalidParameterValue), and the
 *   routes-per-table quota (RouteLimitExceeded), counted per family over non-propagated routes other
 *   than the table's local routes. Route writes are then serialized, so the checks cannot race.
 */
export async function startEc2Proxy(upstream: string, options: Ec2ProxyOptions = {}): Promise<Ec2Proxy> {
  const target = new URL(upstream);
  const moto = new EC2Client({ region: REGION, endpoint: upstream, credentials: { accessKeyId: "test", secretAccessKey: "test" } });
  const attempts = new Map<string, number>();
  const state = { forwarded: new Map<string, number>(), throttled: new Map<string, number>(), lost: new Map<string, number>(), refused: new Map<string, number>() };
  const seen = new Map<string, URLSearchParams[]>();
  const routeWrites = pLimit(1);

  /** The error EC2 would answer this route write with, or undefined when it would carry it out. */
  async function routeRuleError(params: URLSearchParams): Promise<{ code: string; message: string } | undefined> {
    const tableId = params.get("RouteTableId") ?? "";
    const destination = params.get("DestinationCidrBlock") ?? params.get("DestinationIpv6CidrBlock") ?? "";
    const table = (await moto.send(new DescribeRouteTablesCommand({ RouteTableIds: [tableId] }))).RouteTables?.[0];
    if (!table) return undefined; // moto's own InvalidRouteTableID.NotFound
    const instanceId = params.get("InstanceId");
    if (instanceId) {
      const instance = (await moto.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }))).Reservations?.[0]?.Instances?.[0];
      if ((instance?.NetworkInterfaces?.length ?? 0) > 1) {
        return { code: "InvalidInstanceID", message: `There are multiple interfaces attached to instance '${instanceId}'. Please specify an interface ID for the operation instead.` };
      }
    }
    const eniId = params.get("NetworkInterfaceId");
    if (eniId) {
      const eni = (await moto.send(new DescribeNetworkInterfacesCommand({ NetworkInterfaceIds: [eniId] }))).NetworkInterfaces?.[0];
      if (eni && eni.VpcId !== table.VpcId) return { code: "InvalidParameterValue", message: `Route table ${tableId} and network interface ${eniId} belong to different networks.` };
    }
    if (params.get("Action") !== "CreateRoute") return undefined;
    const routes = table.Routes ?? [];
    if (routes.some((r) => (r.DestinationCidrBlock ?? r.DestinationIpv6CidrBlock) === destination)) {
      return { code: "RouteAlreadyExists", message: `The route identified by ${destination} already exists.` };
    }
    if (quotaUse(routes, destination.includes(":") ? "v6" : "v4") >= options.routeRules!.routeLimit) {
      return { code: "RouteLimitExceeded", message: `The maximum number of routes has been reached for the specified routing table: ${tableId}` };
    }
    return undefined;
  }

  function forward(req: IncomingMessage, res: ServerResponse, payload: Buffer, lose?: "500" | "drop"): Promise<void> {
    return new Promise((resolve) => {
      const upstreamReq = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
        (upstreamRes) => {
          if (!lose) {
            res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
            upstreamRes.pipe(res);
            upstreamRes.on("end", resolve);
            return;
          }
          // Carried out; the answer never reaches the client.
          upstreamRes.resume();
          upstreamRes.on("end", () => {
            if (lose === "drop") res.socket?.destroy();
            else {
              res.writeHead(500, { "content-type": "text/xml" });
              res.end(ec2ErrorXml("InternalError", "An internal error has occurred", "podroutes-test-lost"));
            }
            resolve();
          });
        },
      );
      upstreamReq.on("error", (error) => {
        res.writeHead(502);
        res.end(String(error));
        resolve();
      });
      upstreamReq.end(payload);
    });
  }

  const server: Server = createServer((req, res) => {
    const body: Buffer[] = [];
    req.on("data", (chunk: Buffer) => body.push(chunk));
    req.on("end", () => {
      const payload = Buffer.concat(body);
      const params = new URLSearchParams(payload.toString("utf8"));
      const action = params.get("Action") ?? "";
      const key = [...params.entries()].filter(([name]) => name !== "Version").sort().join("&");
      const attempt = attempts.get(key) ?? 0;
      attempts.set(key, attempt + 1);
      if (options.throttle?.actions.includes(action) && attempt < options.throttle.times) {
        count(state.throttled, action);
        res.writeHead(503, { "content-type": "text/xml" });
        res.end(ec2ErrorXml("RequestLimitExceeded", "Request limit exceeded.", `podroutes-test-${attempt}`));
        return;
      }
      const throttledTimes = options.throttle?.actions.includes(action) ? options.throttle.times : 0;
      const lose = options.loseAnswers?.actions.includes(action) && attempt === throttledTimes ? options.loseAnswers.as : undefined;
      const pass = async () => {
        if (options.routeRules && (action === "CreateRoute" || action === "ReplaceRoute")) {
          const refusal = await routeRuleError(params);
          if (refusal) {
            count(state.refused, refusal.code);
            res.writeHead(400, { "content-type": "text/xml" });
            res.end(ec2ErrorXml(refusal.code, refusal.message, "podroutes-test-rule"));
            return;
          }
        }
        count(state.forwarded, action);
        seen.set(action, [...(seen.get(action) ?? []), params]);
        if (lose) count(state.lost, action);
        await forward(req, res, payload, lose);
      };
      const isRouteWrite = action === "CreateRoute" || action === "ReplaceRoute" || action === "DeleteRoute";
      const handle = () => void (options.routeRules && isRouteWrite ? routeWrites(pass) : pass());
      if (options.latencyMs) setTimeout(handle, options.latencyMs);
      else handle();
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    ...state,
    calls: (action) => seen.get(action) ?? [],
    close: async () => {
      moto.destroy();
      server.closeAllConnections();
      server.close();
      await once(server, "close").catch(() => {});
    },
  };
}
