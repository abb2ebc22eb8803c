/**
 * An offline EC2 for tests: moto's server on 127.0.0.1 (the preinstalled Python package), a builder for
 * the seeds' cluster in it (VPC, subnet, cluster-tagged route tables, instances at 10.240.0.20-22 with
 * `pod-cidr` tags), the real aws CLI pointed at it, and a proxy that answers RequestLimitExceeded.
 *
 * moto accepts input real EC2 rejects (see TESTBED.md), so nothing here relies on moto to refuse bad
 * input. Every process started here is stopped by its PID; credentials are dummies and instance
 * metadata lookups are off, so nothing ever reaches a real AWS endpoint.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { promisify } from "node:util";
import { EC2Client, CreateInternetGatewayCommand, AttachInternetGatewayCommand, CreateRouteCommand, CreateRouteTableCommand, CreateSubnetCommand, CreateVpcCommand, RunInstancesCommand, type Tag } from "@aws-sdk/client-ec2";

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
}

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
 */
export async function buildCluster(
  ec2: EC2Client,
  options: { cluster?: string; tables?: number; nodes?: { name: string; ip: string; podCIDR?: string }[] } = {},
): Promise<CloudFixture> {
  const cluster = options.cluster ?? "kubernetes";
  const clusterTag = { [`kubernetes.io/cluster/${cluster}`]: "owned" };
  const vpcId = (await ec2.send(new CreateVpcCommand({ CidrBlock: "10.240.0.0/16" }))).Vpc!.VpcId!;
  const subnetId = (await ec2.send(new CreateSubnetCommand({ VpcId: vpcId, CidrBlock: "10.240.0.0/24" }))).Subnet!.SubnetId!;
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
  for (const node of options.nodes ?? SEED_NODES) instances.push(await launchInstance(ec2, subnetId, node, clusterTag));
  return { vpcId, subnetId, igwId, tableIds, instances };
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

export interface ThrottlingProxy {
  endpoint: string;
  /** How many requests were answered with RequestLimitExceeded, by EC2 action. */
  throttled: Map<string, number>;
  close(): Promise<void>;
}

/**
 * An HTTP proxy in front of moto that answers the first `times` attempts of each call of the chosen
 * actions (same action and parameters) with EC2's throttling error, HTTP 503 RequestLimitExceeded,
 * then lets the call through. The SDK under test sees exactly what a throttled EC2 sends.
 */
export async function startThrottlingProxy(upstream: string, options: { actions: string[]; times: number }): Promise<ThrottlingProxy> {
  const target = new URL(upstream);
  const attempts = new Map<string, number>();
  const throttled = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const body: Buffer[] = [];
    req.on("data", (chunk: Buffer) => body.push(chunk));
    req.on("end", () => {
      const payload = Buffer.concat(body);
      const params = new URLSearchParams(payload.toString("utf8"));
      const action = params.get("Action") ?? "";
      if (options.actions.includes(action)) {
        params.delete("Version");
        const key = [...params.entries()].sort().join("&");
        const seen = attempts.get(key) ?? 0;
        attempts.set(key, seen + 1);
        if (seen < options.times) {
          throttled.set(action, (throttled.get(action) ?? 0) + 1);
          res.writeHead(503, { "content-type": "text/xml" });
          res.end(
            `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>podroutes-test-${seen}</RequestID></Response>`,
          );
          return;
        }
      }
      const forward = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
        (upstreamRes) => {
          res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
          upstreamRes.pipe(res);
        },
      );
      forward.on("error", (error) => {
        res.writeHead(502);
        res.end(String(error));
      });
      forward.end(payload);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    throttled,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close").catch(() => {});
    },
  };
}
