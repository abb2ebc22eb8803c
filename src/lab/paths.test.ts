import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { labTopology } from "./topology.js";
import { expectedPath, parseTraceroute } from "./paths.js";
import type { LabWorker } from "./lab.js";

const [from, to] = labTopology("gcp-seed").workers.map((w, i): LabWorker => ({ ...w, netns: `t-${w.name}`, podNetns: `t-${w.name}-pod`, podIP: `10.200.${i}.2` }));

describe("expectedPath", () => {
  it("with the routes in the workers' kernels: the source's gateway, the destination worker, its pod", () => {
    assert.deepEqual(expectedPath(from!, to!), ["10.200.0.1", "10.240.0.21", "10.200.1.2"]);
  });

  it("through a VPC router: the router's hop between the gateway and the destination worker", () => {
    assert.deepEqual(expectedPath(from!, to!, "10.240.0.1"), ["10.200.0.1", "10.240.0.1", "10.240.0.21", "10.200.1.2"]);
  });
});

describe("parseTraceroute", () => {
  it("reads one address per hop and * for a hop that did not answer", () => {
    const output = "traceroute to 10.200.1.2 (10.200.1.2), 6 hops max, 60 byte packets\n 1  10.200.0.1  0.05 ms\n 2  10.240.0.1  0.04 ms\n 3  *\n 4  10.200.1.2  0.1 ms\n";
    assert.deepEqual(parseTraceroute(output), ["10.200.0.1", "10.240.0.1", "*", "10.200.1.2"]);
  });
});
