/**
 * AWS route tables against moto: podroutes' full apply and no-op apply of 45 nodes' routes (close to the
 * 49 a default quota of 50 IPv4 routes takes next to the gateway route) versus the seeds' way, a sequential
 * loop of `aws ec2 create-route` and `aws ec2 modify-instance-attribute --no-source-dest-check`, one
 * CLI process per call. Each side writes its own route table of the same VPC. moto answers in
 * milliseconds where EC2 takes tens to hundreds, so the gap from concurrency is larger on real AWS;
 * process start-up dominates the CLI loop either way.
 */
import { performance } from "node:perf_hooks";
import { CreateRouteTableCommand } from "@aws-sdk/client-ec2";
import { apply, plan } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import { createEc2 } from "../src/targets/aws/ec2.js";
import { AwsTarget } from "../src/targets/aws/target.js";
import { runCli } from "../testkit/cli.js";
import { awsCli, buildCluster, offlineAwsEnv, REGION, startMoto } from "../testkit/moto.js";

const NODES = 45;

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

export async function run(): Promise<void> {
  const moto = await startMoto();
  const client = moto.client();
  try {
    const nodes = Array.from({ length: NODES }, (_, i) => ({ name: `worker-${i}`, ip: `10.240.0.${20 + i}`, podCIDR: `10.200.${i}.0/24` }));
    const cloud = await buildCluster(client, { tables: 1, nodes });
    const extraTable = async () => (await client.send(new CreateRouteTableCommand({ VpcId: cloud.vpcId }))).RouteTable!.RouteTableId!;
    const [cliTable, podroutesTable, podroutesCliTable] = [cloud.tableIds[0]!, await extraTable(), await extraTable()];

    // The seeds' way: one aws CLI process per route and per instance, one after the other.
    let start = performance.now();
    for (const node of cloud.instances) {
      await awsCli(moto.endpoint, ["ec2", "create-route", "--route-table-id", cliTable, "--destination-cidr-block", node.podCIDR!, "--instance-id", node.instanceId]);
      await awsCli(moto.endpoint, ["ec2", "modify-instance-attribute", "--instance-id", node.instanceId, "--no-source-dest-check"]);
    }
    const loop = performance.now() - start;

    const inventory = validateInventory(
      { source: "bench", nodes: nodes.map((n) => ({ name: n.name, internalIPs: [n.ip], podCIDRs: [n.podCIDR] })) },
      { clusterCIDR: "10.200.0.0/16" },
    );
    const ec2 = await createEc2({ region: REGION, endpoint: moto.endpoint, credentials: { accessKeyId: "test", secretAccessKey: "test" } });
    const target = new AwsTarget(ec2, { cluster: "kubernetes", clusterCIDR: "10.200.0.0/16", routeTables: [podroutesTable], nextHop: "eni", routeLimit: 50, parallel: 10 });
    start = performance.now();
    const report = await apply(target, await plan(target, inventory, { parallel: 10 }), inventory, { parallel: 10 });
    const full = performance.now() - start;
    if (!report.ok || report.counts.created !== NODES) throw new Error(`bench: podroutes apply failed: ${JSON.stringify(report.counts)}`);
    start = performance.now();
    const again = await plan(target, inventory, { parallel: 10 });
    await apply(target, again, inventory, { parallel: 10 });
    const noop = performance.now() - start;
    if (again.summary.unchanged !== NODES) throw new Error("bench: the second plan was not a no-op");
    await target.close();

    // The same through the podroutes command, process start-up and node lookup (--nodes aws) included.
    start = performance.now();
    const cli = await runCli(["apply", "--yes", "--nodes", "aws", "--target", "aws", "--route-table", podroutesCliTable, "--endpoint", moto.endpoint, "--cluster-cidr", "10.200.0.0/16"], {
      env: offlineAwsEnv(moto.endpoint),
    });
    const cliFull = performance.now() - start;
    if (cli.code !== 0) throw new Error(`bench: podroutes apply (CLI) failed: ${cli.stderr}`);

    console.log(`${NODES} routes + ${NODES} source/dest checks into one route table (moto on 127.0.0.1, one run each):`);
    console.log(`  seeds' way, sequential aws CLI calls (${NODES * 2} processes): ${seconds(loop)}`);
    console.log(`  podroutes apply, in process, 10 concurrent calls:      ${seconds(full)}  (${(loop / full).toFixed(0)}x faster)`);
    console.log(`  podroutes apply, as a command (--nodes aws):           ${seconds(cliFull)}  (${(loop / cliFull).toFixed(0)}x faster)`);
    console.log(`  podroutes apply again, nothing to do:                  ${seconds(noop)}`);
  } finally {
    client.destroy();
    await moto.stop();
  }
}
