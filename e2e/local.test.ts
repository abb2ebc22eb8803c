/**
 * `--target local` as a user runs it on a node: podroutes started inside the node's network namespace,
 * with a dual-stack inventory, so IPv6 routes take the same path as IPv4 ones. Needs root.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { jsonOf, runCli } from "../testkit/cli.js";
import { nodeNamespace, type NodeNamespace } from "../testkit/netns.js";
import { needsRoot } from "../testkit/root.js";

const gate = needsRoot();
const NS = `prlocal${process.pid % 100000}`;
let node: NodeNamespace;
const ip = (args: string[]) => node.ip(args);

const nodes = `cluster: dual
clusterCIDR: 10.200.0.0/16,fd00:10:200::/56
nodes:
  - {name: node-0, internalIP: [10.240.0.20, "fd00::20"], podCIDRs: [10.200.0.0/24, "fd00:10:200::/64"]}
  - {name: node-1, internalIP: [10.240.0.21, "fd00::21"], podCIDRs: [10.200.1.0/24, "fd00:10:200:1::/64"]}
  - {name: node-2, internalIP: [10.240.0.22, "fd00::22"], podCIDRs: [10.200.2.0/24, "fd00:10:200:2::/64"]}
  - {name: node-3, internalIP: [10.99.0.23], podCIDRs: [10.200.3.0/24]}
`;

describe("local target inside a node's namespace (dual stack)", { ...gate, timeout: 60_000 }, () => {
  let dir: string;
  let file: string;
  const cli = (args: string[]) => runCli([...args, "--nodes", file, "--target", "local"], { netns: NS });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-local-"));
    file = join(dir, "nodes.yaml");
    await writeFile(file, nodes);
    node = await nodeNamespace(NS, "10.240.0.20/24", "fd00::20/64");
  });

  after(async () => {
    await node?.remove();
    await rm(dir, { recursive: true, force: true });
  });

  it("finds itself as node-0, writes both families, refuses the off-link next hop by name", async () => {
    const result = await cli(["apply", "--yes"]);
    assert.equal(result.code, 1, "node-3's next hop is off-link: apply reports it");
    assert.match(result.stdout, /next hop 10\.99\.0\.23 of node node-3 is not on-link here/);
    assert.match(result.stdout, /4 added/);
    const v4 = await ip(["-4", "route", "show", "proto", "150"]);
    const v6 = await ip(["-6", "route", "show", "proto", "150"]);
    assert.match(v4, /10\.200\.1\.0\/24 nhid \d+ via 10\.240\.0\.21 dev eth0/);
    assert.match(v4, /10\.200\.2\.0\/24 nhid \d+ via 10\.240\.0\.22 dev eth0/);
    assert.match(v6, /fd00:10:200:1::\/64 nhid \d+ via fd00::21 dev eth0/);
    assert.match(v6, /fd00:10:200:2::\/64 nhid \d+ via fd00::22 dev eth0/);
    assert.doesNotMatch(v4 + v6, /10\.200\.0\.0|fd00:10:200::\/64|10\.200\.3\.0/);
  });

  it("plans only the refused route again, and delete removes every route and nexthop it owns", async () => {
    const planned = jsonOf(await cli(["plan", "-o", "json"]));
    assert.deepEqual(planned.tables.map((t: any) => t.table.node), ["node-0"]);
    assert.deepEqual(planned.tables[0].changes.map((c: any) => `${c.action} ${c.destination}`), ["create 10.200.3.0/24"]);
    assert.equal(planned.summary.unchanged, 4);
    const deleted = await cli(["delete", "--yes"]);
    assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    assert.equal((await ip(["route", "show", "proto", "150"])) + (await ip(["-6", "route", "show", "proto", "150"])), "");
    assert.equal(await ip(["nexthop", "show"]), "");
  });

  it("refuses to guess which node it is when none of its addresses is a node's", async () => {
    await writeFile(join(dir, "other.txt"), "10.240.0.31 10.200.1.0/24 a\n10.240.0.32 10.200.2.0/24 b\n");
    const result = await runCli(["plan", "--nodes", join(dir, "other.txt"), "--target", "local"], { netns: NS });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /none of this host's addresses \(.*10\.240\.0\.20.*\) is a node's internal IP .* --node NAME/);
  });

  it("list and delete need no --nodes: the protocol number tells this host's podroutes routes", async () => {
    await cli(["apply", "--yes"]);
    const alone = (args: string[]) => runCli([...args, "--target", "local"], { netns: NS });
    const listed = await alone(["list", "-o", "json"]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      jsonOf<{ destination: string; owned: boolean }[]>(listed).map((r) => `${r.destination} ${r.owned}`).sort(),
      ["10.200.1.0/24 true", "10.200.2.0/24 true", "fd00:10:200:1::/64 true", "fd00:10:200:2::/64 true"],
    );
    const deleted = await alone(["delete", "--yes"]);
    assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    assert.equal((await ip(["route", "show", "proto", "150"])) + (await ip(["-6", "route", "show", "proto", "150"])), "");
    assert.equal(await ip(["nexthop", "show"]), "", "podroutes' nexthop objects go with their routes");
    assert.match(await ip(["-4", "route", "show"]), /10\.240\.0\.0\/24 dev eth0/, "the host's own routes stay");
  });
});

describe("a next hop that is a broadcast address of the host's network", { ...gate, timeout: 60_000 }, () => {
  const NS2 = `prbcast${process.pid % 100000}`;
  let dir: string;
  let file: string;
  let host: NodeNamespace;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-bcast-"));
    file = join(dir, "nodes.txt");
    // The seeds' routing table; node-b's address is the broadcast of the host's 10.240.0.0/16.
    await writeFile(file, "10.240.0.20 10.200.0.0/24 node-0\n10.240.255.255 10.200.1.0/24 node-b\n10.240.0.22 10.200.2.0/24 node-2\n");
    host = await nodeNamespace(NS2, "10.240.0.20/16");
  });
  after(async () => {
    await host?.remove();
    await rm(dir, { recursive: true, force: true });
  });

  it("is refused in the plan, naming the node and the address; the rest is written, and the kernel never sees it", async () => {
    const cli = (args: string[]) => runCli([...args, "--nodes", file, "--target", "local", "--cluster-cidr", "10.200.0.0/16"], { netns: NS2 });
    const planned = await cli(["plan"]);
    assert.match(planned.stdout + planned.stderr, /next hop 10\.240\.255\.255 of node node-b is the broadcast address of 10\.240\.0\.0\/16/);
    const applied = await cli(["apply", "--yes"]);
    assert.equal(applied.code, 1, applied.stdout + applied.stderr);
    assert.match(applied.stdout, /next hop 10\.240\.255\.255 of node node-b is the broadcast address of 10\.240\.0\.0\/16/);
    assert.doesNotMatch(applied.stdout + applied.stderr, /Nexthop has invalid gateway/);
    const routes = await host.ip(["-4", "route", "show", "proto", "150"]);
    assert.match(routes, /10\.200\.2\.0\/24 nhid \d+ via 10\.240\.0\.22 dev eth0/);
    assert.doesNotMatch(routes, /10\.200\.1\.0/);
  });
});
