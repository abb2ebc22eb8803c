/** `--nodes hetzner` without the API: how a server becomes a node, which servers are left out, and the pod CIDR label. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InputError } from "../inventory.js";
import type { CloudServer } from "../targets/hetzner/api.js";
import { podCidrFromLabel, podCidrLabelValue, serversToInventory } from "./hetzner.js";

const LABEL = "podroutes.io/pod-cidr";
function server(id: number, name: string, fields: Partial<CloudServer> = {}): CloudServer {
  return { id, name, status: "running", labels: { [LABEL]: `10.244.${id}.0-24` }, privateNet: [{ network: 9, ip: `10.1.0.${id}`, aliasIps: [] }, { network: 7, ip: `10.0.0.${id}`, aliasIps: [] }], ...fields };
}
const network = { id: 7, name: "k8s" };

describe("hetzner node source", () => {
  it("reads a pod CIDR from a label value (a / cannot be in one), and writes one", () => {
    assert.equal(podCidrFromLabel("10.244.1.0-24"), "10.244.1.0/24");
    for (const bad of ["10.244.1.0/24", "10.244.1.0", "fd00--64", "x-24"]) assert.equal(podCidrFromLabel(bad), undefined, bad);
    assert.equal(podCidrLabelValue("10.244.1.0/24"), "10.244.1.0-24");
  });

  it("one node per server: its name, its private IP on --network, its pod CIDR label; sorted by name", () => {
    const inventory = serversToInventory([server(2, "node-b"), server(1, "node-a")], { network, podCidrLabel: LABEL, source: "hetzner:x" });
    assert.deepEqual(inventory, {
      source: "hetzner:x",
      nodes: [
        { name: "node-a", internalIPs: ["10.0.0.1"], podCIDRs: ["10.244.1.0/24"], labels: { "podroutes.io/server-id": "1" } },
        { name: "node-b", internalIPs: ["10.0.0.2"], podCIDRs: ["10.244.2.0/24"], labels: { "podroutes.io/server-id": "2" } },
      ],
    });
  });

  it("without --network, the first private network's IP; a server on none is a problem naming it", () => {
    assert.deepEqual(serversToInventory([server(1, "a")], { podCidrLabel: LABEL, source: "s" }).nodes[0]!.internalIPs, ["10.1.0.1"]);
    assert.throws(() => serversToInventory([server(1, "a", { privateNet: [] })], { podCidrLabel: LABEL, source: "s" }), (e: unknown) => e instanceof InputError && /a.*attached to no network/.test(e.message));
  });

  it("leaves out, with a warning, servers not on --network and servers stopping, off or being deleted", () => {
    const warnings: string[] = [];
    const inventory = serversToInventory(
      [server(1, "up"), server(2, "elsewhere", { privateNet: [{ network: 9, ip: "10.1.0.2", aliasIps: [] }] }), server(3, "off", { status: "off" }), server(4, "going", { status: "deleting" }), server(5, "new", { status: "initializing" })],
      { network, podCidrLabel: LABEL, source: "s", warn: (m) => warnings.push(m) },
    );
    assert.deepEqual(inventory.nodes.map((n) => n.name), ["new", "up"]);
    assert.deepEqual(warnings, ["hetzner: server elsewhere (2) is not attached to network k8s: left out", "hetzner: server off (3) is off: left out", "hetzner: server going (4) is deleting: left out"]);
  });

  it("a server without the label runs no pods; a label that is no CIDR is a problem naming the server and the format", () => {
    assert.deepEqual(serversToInventory([server(1, "cp", { labels: {} })], { network, podCidrLabel: LABEL, source: "s" }).nodes[0]!.podCIDRs, []);
    assert.throws(
      () => serversToInventory([server(1, "bad", { labels: { [LABEL]: "10.244.1.0" } })], { network, podCidrLabel: LABEL, source: "s" }),
      (e: unknown) => e instanceof InputError && /bad.*podroutes\.io\/pod-cidr=10\.244\.1\.0 is not a pod CIDR.*10\.244\.1\.0-24/.test(e.message),
    );
  });
});
