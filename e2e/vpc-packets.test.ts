/**
 * Real packets over a cloud target's routes: the lab's workers send cluster traffic to a VPC router
 * namespace whose table follows the cloud test server's (testkit/vpc-router.ts), so a route podroutes
 * writes through the cloud's API is the route the pods' packets take, and a wrong next hop in the
 * cloud's table fails the pair it breaks. No pod route is put in any worker's kernel. Needs root (runs
 * in CI); each cloud's lab and router are removed in `after`, even when a test fails.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ReplaceRouteCommand, type EC2Client } from "@aws-sdk/client-ec2";
import { labDown, labUp, type LabState } from "../src/lab/lab.js";
import { checkPodPaths } from "../src/lab/paths.js";
import { podCidrLabelValue } from "../src/sources/hetzner.js";
import type { Check } from "../src/targets/target.js";
import { runCli } from "../testkit/cli.js";
import { startGceServer, type GceServer } from "../testkit/gce-server.js";
import { buildCluster, offlineAwsEnv, SEED_CLUSTER_CIDR, startMoto, type CloudFixture, type Moto } from "../testkit/moto.js";
import { needsRoot } from "../testkit/root.js";
import { startHetznerServer, type HetznerServerApi } from "../testkit/hetzner-server.js";
import { startAzureServer, type AzureServerApi } from "../testkit/azure-server.js";
import { startOpenStackServer, type OpenStackServerApi } from "../testkit/openstack-server.js";
import { cidr } from "../src/model.js";
import { awsRouteSource, azureRouteSource, gceRouteSource, hetznerRouteSource, openstackRouteSource, routerTable, startVpcRouter, type VpcRouter, type VpcRouteSource } from "../testkit/vpc-router.js";

const gate = needsRoot();

describe("the VPC router's table (pure, no root)", () => {
  const vpc = cidr("10.240.0.0/24");
  it("copies only the cluster CIDR's routes: via a next hop on the subnet, unreachable off it, blackhole without one", () => {
    const table = routerTable(
      [
        { destination: "10.200.0.0/24", nextHopIp: "10.240.0.20" },
        { destination: "10.200.1.0/24", nextHopIp: "10.250.0.21" },
        { destination: "10.200.2.0/24" },
        { destination: "10.200.3.7/32", nextHopIp: "10.240.0.23" },
        { destination: "0.0.0.0/0" },
        { destination: "10.240.0.0/24" },
        { destination: "192.168.0.0/16", nextHopIp: "10.240.0.20" },
      ],
      "10.200.0.0/16",
      vpc,
    );
    assert.deepEqual(Object.fromEntries(table), {
      "10.200.0.0/24": ["10.200.0.0/24", "via", "10.240.0.20"],
      "10.200.1.0/24": ["unreachable", "10.200.1.0/24"],
      "10.200.2.0/24": ["blackhole", "10.200.2.0/24"],
      "10.200.3.7/32": ["10.200.3.7/32", "via", "10.240.0.23"],
    });
  });

  it("keeps the first route of a destination (the sources give the preferred one first) and skips what is no CIDR", () => {
    const table = routerTable(
      [
        { destination: "10.200.0.0/24", nextHopIp: "10.240.0.20" },
        { destination: "10.200.0.0/24", nextHopIp: "10.240.0.21" },
        { destination: "10.200.0.1/24", nextHopIp: "10.240.0.21" },
        { destination: "not-a-cidr", nextHopIp: "10.240.0.21" },
      ],
      "10.200.0.0/16",
      vpc,
    );
    assert.deepEqual(Object.fromEntries(table), { "10.200.0.0/24": ["10.200.0.0/24", "via", "10.240.0.20"] });
  });
});

describe("gceRouteSource (pure, no root)", () => {
  it("orders by priority, maps an instance next hop to its address on the network, and a deleted instance to a blackhole", async () => {
    const server = await startGceServer();
    try {
      server.addInstance({ name: "worker-1", zone: "us-west1-c", network: "net", networkIP: "10.240.0.21" });
      const instanceUrl = (name: string) => `${server.endpoint}projects/${server.project}/zones/us-west1-c/instances/${name}`;
      server.addRoute({ name: "low", network: "net", destRange: "10.200.0.0/24", nextHopIp: "10.240.0.22", priority: 2000 });
      server.addRoute({ name: "high", network: "net", destRange: "10.200.0.0/24", nextHopIp: "10.240.0.20", priority: 100 });
      server.addRoute({ name: "by-instance", network: "net", destRange: "10.200.1.0/24", nextHopInstance: instanceUrl("worker-1") });
      server.addRoute({ name: "gone", network: "net", destRange: "10.200.2.0/24", nextHopInstance: instanceUrl("worker-2") });
      server.addRoute({ name: "other-network", network: "other", destRange: "10.200.3.0/24", nextHopIp: "10.240.0.23" });
      const routes = await gceRouteSource(server, "net")();
      assert.deepEqual(Object.fromEntries(routerTable(routes, "10.200.0.0/16", cidr("10.240.0.0/24"))), {
        "10.200.0.0/24": ["10.200.0.0/24", "via", "10.240.0.20"],
        "10.200.1.0/24": ["10.200.1.0/24", "via", "10.240.0.21"],
        "10.200.2.0/24": ["blackhole", "10.200.2.0/24"],
      });
    } finally {
      await server.stop();
    }
  });
});

interface Cloud {
  /** podroutes' flags for this cloud, the lab's nodes included. */
  flags: string[];
  env: Record<string, string | undefined>;
  source: VpcRouteSource;
  /** Points the cloud's route to worker-1's pods at worker-2, as a stale or mistaken writer would. */
  misroute(): Promise<void>;
}

/** `destination worker → ok` for every pair, so a failure names the pairs. */
function verdicts(checks: Check[]): string[] {
  return checks.map((c) => `${c.message.split(":")[0]} ${c.ok ? "ok" : "FAIL"}`).sort();
}

/**
 * The same story for every cloud: unreachable before apply, every pair through the router after it,
 * the misrouted pair failing (and only it), apply repairing it, delete leaving the pods unreachable.
 */
function packetStory(cloudName: string, labName: string, setup: (state: LabState) => Promise<Cloud>, teardown: () => Promise<void>) {
  describe(`${cloudName}: pod to pod through the VPC router`, { ...gate, timeout: 240_000 }, () => {
    let state: LabState;
    let router: VpcRouter | undefined;
    let cloud: Cloud;
    const podroutes = async (args: string[]) => {
      const result = await runCli([...args, ...cloud.flags], { env: cloud.env });
      assert.equal(result.code, 0, `podroutes ${args.join(" ")}: ${result.stdout}${result.stderr}`);
    };
    /** `podroutes verify -o json` on the lab's nodes: the table against the plan, then the pods' packets. */
    const verify = async () => {
      await router!.synced();
      const result = await runCli(["verify", "-o", "json", ...cloud.flags, "--nodes", "lab", "--lab", labName], { env: cloud.env });
      assert.ok(result.stdout.trim(), `podroutes verify (exit ${result.code}): ${result.stderr}`);
      const checks = (JSON.parse(result.stdout) as { checks: Check[] }).checks;
      return { code: result.code, checks, text: result.stdout + result.stderr };
    };
    const paths = async () => {
      await router!.synced();
      assert.equal(router!.lastError(), undefined);
      return checkPodPaths(state, { via: router!.address });
    };

    before(async () => {
      // A lab half-built by a killed run of the same pid is ours by name.
      await labDown(labName);
      state = (await labUp({ name: labName })).state;
      cloud = await setup(state);
      router = await startVpcRouter(state, cloud.source);
    });
    after(async () => {
      try {
        await router?.stop();
      } finally {
        try {
          await labDown(labName);
        } finally {
          await teardown();
        }
      }
    });

    it("before apply, no pod reaches a pod on another worker: the router has no route", async () => {
      assert.deepEqual(await router!.routes(), []);
      const checks = await paths();
      assert.equal(checks.length, 6);
      for (const check of checks) assert.match(check.message, /unreachable/, check.message);
    });

    it("after `podroutes apply`, every pod reaches every other through the router and the right worker", async () => {
      await podroutes(["apply", "--yes"]);
      const checks = await paths();
      assert.deepEqual(await router!.routes(), state.workers.map((w) => `${w.podCIDR} via ${w.internalIP}`).sort());
      for (const check of checks) assert.ok(check.ok, check.message);
      assert.equal(checks.length, 6);
      assert.match(checks[0]!.message, /ok via 10\.240\.0\.1 → 10\.240\.0\.2\d/);
      // `podroutes verify` with the lab's nodes proves the same with packets, through the router it recorded.
      const verified = await verify();
      assert.equal(verified.code, 0, verified.text);
      const packets = verified.checks.filter((c) => c.message.startsWith("pod "));
      assert.equal(packets.length, 6, verified.text);
      for (const check of packets) assert.match(check.message, /ok via 10\.240\.0\.1 → 10\.240\.0\.2\d/);
      // The hops are checked, not only the replies: a path that skips the expected router fails.
      const elsewhere = await checkPodPaths(state, { via: "10.240.0.99" });
      for (const check of elsewhere) assert.match(check.message, /reached, but over 10\.200\.\d\.1 → 10\.240\.0\.1 → /, check.message);
    });

    it("a next hop changed to the wrong worker in the cloud fails the pairs with worker-1's pod, and only those", async () => {
      await cloud.misroute();
      const checks = await paths();
      const worker1 = state.workers[1]!;
      for (const check of checks) {
        // Packets to worker-1's pod loop between the router and worker-2; so do its pod's replies.
        const toWorker1 = check.message.includes(`→ pod worker-1 (${worker1.podIP})`);
        const fromWorker1 = check.message.startsWith(`pod worker-1 (${worker1.podIP})`);
        assert.equal(check.ok, !toWorker1 && !fromWorker1, check.message);
        if (toWorker1) assert.match(check.message, /loops, wrong next hop\? \(From 10\.240\.0\.\d+ .*Time to live exceeded\)/, check.message);
      }
      assert.equal(checks.filter((c) => !c.ok).length, 4, verdicts(checks).join("\n"));
      const verified = await verify();
      assert.equal(verified.code, 1, verified.text);
      assert.equal(verified.checks.filter((c) => c.message.startsWith("pod ") && !c.ok).length, 4, verified.text);
    });

    it("`podroutes apply` repairs the route, and the packets take it", async () => {
      await podroutes(["apply", "--yes"]);
      const checks = await paths();
      for (const check of checks) assert.ok(check.ok, check.message);
    });

    it("after `podroutes delete`, the router drops cluster traffic again", async () => {
      await podroutes(["delete", "--yes"]);
      const checks = await paths();
      assert.deepEqual(await router!.routes(), []);
      for (const check of checks) assert.match(check.message, /unreachable/, check.message);
    });
  });
}

const LAB_SUFFIX = process.pid % 100000;

// GCP: the local Compute Engine server, routes by next-hop IP, the lab's nodes (`--nodes lab`).
{
  const NETWORK = "kubernetes-the-hard-way";
  let server: GceServer | undefined;
  const dir = mkdtempSync(join(tmpdir(), "podroutes-vpc-gcp-"));
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, "test-token\n");
  const labName = `vpg${LAB_SUFFIX}`;
  packetStory(
    "gcp (local Compute Engine server)",
    labName,
    async (state) => {
      server = await startGceServer();
      const gce = server;
      gce.addRoute({ name: "default-route-vpc", network: NETWORK, destRange: "10.240.0.0/24" });
      for (const worker of state.workers) gce.addInstance({ name: worker.name, zone: "us-west1-c", networkIP: worker.internalIP, network: NETWORK, canIpForward: true });
      return {
        flags: ["--nodes", "lab", "--lab", labName, "--target", "gcp", "--network", NETWORK],
        env: {
          PATH: process.env.PATH,
          GCE_METADATA_HOST: "127.0.0.1:9",
          METADATA_SERVER_DETECTION: "none",
          CLOUDSDK_CORE_PROJECT: gce.project,
          CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: gce.endpoint,
          CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile,
        },
        source: gceRouteSource(gce, NETWORK),
        async misroute() {
          const route = [...gce.routes.values()].find((r) => r.destRange === state.workers[1]!.podCIDR);
          assert.ok(route, "podroutes wrote the route to worker-1's pods");
          route.nextHopIp = state.workers[2]!.internalIP;
        },
      };
    },
    async () => {
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  );
}

// AWS: moto's EC2, the seeds' cluster (instances at the lab's addresses), routes to the nodes' ENIs.
{
  let moto: Moto | undefined;
  let client: EC2Client | undefined;
  packetStory(
    "aws (moto)",
    `vpa${LAB_SUFFIX}`,
    async (state) => {
      moto = await startMoto();
      const ec2 = (client = moto.client());
      const fixture: CloudFixture = await buildCluster(ec2, { tables: 1, nodes: state.workers.map((w) => ({ name: w.name, ip: w.internalIP, podCIDR: w.podCIDR })) });
      return {
        flags: ["--nodes", "aws", "--target", "aws", "--endpoint", moto.endpoint, "--cluster-cidr", SEED_CLUSTER_CIDR, "--route-table", fixture.tableIds[0]!],
        env: offlineAwsEnv(moto.endpoint),
        source: awsRouteSource(ec2, fixture.tableIds[0]!),
        async misroute() {
          await ec2.send(
            new ReplaceRouteCommand({ RouteTableId: fixture.tableIds[0]!, DestinationCidrBlock: state.workers[1]!.podCIDR, NetworkInterfaceId: fixture.instances[2]!.eniId }),
          );
        },
      };
    },
    async () => {
      client?.destroy();
      await moto?.stop();
    },
  );
}

// OpenStack: the local Neutron/Nova server, a router's extra routes, the nodes from the servers' metadata.
{
  let server: OpenStackServerApi | undefined;
  packetStory(
    "openstack (local Neutron server)",
    `vpo${LAB_SUFFIX}`,
    async (state) => {
      const neutron = (server = await startOpenStackServer());
      const { subnet } = neutron.addNetwork({ name: "k8s", cidr: "10.240.0.0/24" });
      const router = neutron.addRouter({ name: "k8s-router", subnets: [subnet] });
      for (const worker of state.workers) {
        neutron.addServer({ name: worker.name, subnet, ip: worker.internalIP, metadata: { "kubernetes.io/cluster/kubernetes": "owned", "pod-cidr": worker.podCIDR } });
      }
      return {
        flags: ["--target", "openstack", "--router", "k8s-router", "--cluster-cidr", state.clusterCIDR],
        env: { ...neutron.env(), HOME: "/nonexistent" },
        source: openstackRouteSource(router),
        async misroute() {
          const [, worker1, worker2] = state.workers;
          assert.ok(router.routes.some((r) => r.destination === worker1!.podCIDR), "podroutes wrote the route to worker-1's pods");
          neutron.setRoutes(router, router.routes.map((r) => (r.destination === worker1!.podCIDR ? { ...r, nexthop: worker2!.internalIP } : r)));
        },
      };
    },
    async () => {
      await server?.stop();
    },
  );
}

// Hetzner: the local Hetzner Cloud server, the network's routes, the nodes from the servers' labels.
{
  let server: HetznerServerApi | undefined;
  packetStory(
    "hetzner (local Hetzner Cloud server)",
    `vph${LAB_SUFFIX}`,
    async (state) => {
      const hetzner = (server = await startHetznerServer({ actionDelayMs: 5 }));
      const network = hetzner.addNetwork({ name: "k8s", ipRange: "10.240.0.0/16", subnets: ["10.240.0.0/24"] });
      for (const worker of state.workers) {
        hetzner.addServer({
          name: worker.name,
          labels: { "podroutes.io/cluster": "kubernetes", "podroutes.io/pod-cidr": podCidrLabelValue(worker.podCIDR) },
          privateNet: [{ network: network.id, ip: worker.internalIP }],
        });
      }
      return {
        flags: ["--target", "hetzner", "--network", "k8s", "--cluster-cidr", state.clusterCIDR, "--poll-interval", "10ms"],
        env: { HCLOUD_TOKEN: hetzner.token, HCLOUD_ENDPOINT: hetzner.endpoint },
        source: hetznerRouteSource(network),
        async misroute() {
          const route = network.routes.find((r) => r.destination === state.workers[1]!.podCIDR);
          assert.ok(route, "podroutes wrote the route to worker-1's pods");
          route.gateway = state.workers[2]!.internalIP;
        },
      };
    },
    async () => {
      await server?.stop();
    },
  );
}

// Azure: the local ARM server (TLS, its test CA), a route table's VirtualAppliance routes, the nodes from the VMs' tags.
{
  let server: AzureServerApi | undefined;
  packetStory(
    "azure (local ARM server)",
    `vpz${LAB_SUFFIX}`,
    async (state) => {
      const arm = (server = await startAzureServer({ operationDelayMs: 0, retryAfterSeconds: 0 }));
      arm.addRouteTable("k8s", "pods");
      for (const worker of state.workers) arm.addVirtualMachine("k8s", worker.name, { addresses: [worker.internalIP], tags: { "k8s-azure-cluster-name": "kubernetes", "pod-cidr": worker.podCIDR } });
      return {
        flags: ["--target", "azure", "--subscription", arm.subscriptionId, "--resource-group", "k8s", "--route-table", "pods", "--arm-endpoint", arm.endpoint, "--azure-credential", "client-secret", "--cluster-cidr", state.clusterCIDR],
        env: { AZURE_TENANT_ID: arm.tenantId, AZURE_CLIENT_ID: arm.clientId, AZURE_CLIENT_SECRET: arm.clientSecret, AZURE_AUTHORITY_HOST: arm.authorityHost, NODE_EXTRA_CA_CERTS: arm.caFile },
        source: azureRouteSource(arm, "k8s", "pods"),
        async misroute() {
          const route = arm.routeTable("k8s", "pods")!.properties.routes.find((r) => r.properties.addressPrefix === state.workers[1]!.podCIDR);
          assert.ok(route, "podroutes wrote the route to worker-1's pods");
          route.properties.nextHopIpAddress = state.workers[2]!.internalIP;
        },
      };
    },
    async () => {
      await server?.stop();
    },
  );
}
