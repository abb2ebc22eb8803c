/** Unit tests of the GCP target's pure parts: the ownership marker, names, labels, observation, filters. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { matchesFilter } from "../../../testkit/gce-server.js";
import { computeErrorFrom, isRetryable, ComputeError, ComputeNetworkError, waitsForCapacity } from "./compute.js";
import { alternateName, GcpTarget, markedCluster, nextHopLabel, ownershipMarker } from "./target.js";

const compute = { project: "p", networkUrl: (n: string) => `https://x/compute/v1/projects/p/global/networks/${n}` } as never;
const target = new GcpTarget(compute, { cluster: "kubernetes", network: "net", nextHop: "ip", priority: 1000, maxInFlight: 4, clusterCIDR: "10.200.0.0/16" });

describe("gcp ownership marker", () => {
  for (const [description, cluster] of [
    [`${ownershipMarker("kubernetes")}; node=worker-0`, "kubernetes"],
    [ownershipMarker("other"), "other"],
    ["managed by podroutes; cluster=kubernetesx; node=a", "kubernetesx"],
    ["made by hand", undefined],
    [undefined, undefined],
    ["not managed by podroutes; cluster=kubernetes", undefined],
  ] as const) {
    it(`${JSON.stringify(description)} → ${cluster}`, () => assert.equal(markedCluster(description), cluster));
  }

  it("only routes marked with this cluster are owned", () => {
    const base = { name: "r", network: "https://x/compute/v1/projects/p/global/networks/net", destRange: "10.200.0.0/24", nextHopIp: "10.240.0.20", priority: 1000 };
    assert.equal(target.observe({ ...base, description: ownershipMarker("kubernetes") }, undefined)!.owned, true);
    assert.equal(target.observe({ ...base, description: ownershipMarker("staging") }, undefined)!.owned, false);
    assert.equal(target.observe(base, undefined)!.owned, false);
  });
});

describe("gcp names and labels", () => {
  it("alternate names stay valid GCP names for the longest IPv6 route name", () => {
    const long = "kubernetes-route-fd00-10-200-ffff-ffff-ffff-ffff-ffff-64";
    const name = alternateName(long, "fd00::1");
    assert.ok(name.length <= 63);
    assert.match(name, /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/);
    assert.notEqual(alternateName("kubernetes-route-10-200-0-0-24", "10.240.0.20"), alternateName("kubernetes-route-10-200-0-0-24", "10.240.0.21"));
  });

  it("NEXT_HOP shows an IP, a zonal instance path or a gateway name, as gcloud does", () => {
    assert.equal(nextHopLabel({ name: "a", network: "n", destRange: "0.0.0.0/0", nextHopIp: "10.0.0.1" }), "10.0.0.1");
    assert.equal(nextHopLabel({ name: "a", network: "n", destRange: "0.0.0.0/0", nextHopInstance: "https://x/compute/v1/projects/p/zones/z/instances/w" }), "zones/z/instances/w");
    assert.equal(nextHopLabel({ name: "a", network: "n", destRange: "0.0.0.0/0", nextHopGateway: "https://x/compute/v1/projects/p/global/gateways/default-internet-gateway" }), "default-internet-gateway");
    assert.equal(nextHopLabel({ name: "a", network: "n", destRange: "10.240.0.0/24" }), "");
  });
});

describe("gcp retries", () => {
  for (const [error, retry] of [
    [new ComputeError(429, "rateLimitExceeded", "x"), true],
    [new ComputeError(403, "rateLimitExceeded", "x"), true],
    [new ComputeError(403, "quotaExceeded", "x"), false],
    [new ComputeError(503, "backendError", "x"), true],
    [new ComputeError(409, "alreadyExists", "x"), false],
    [new ComputeError(404, "notFound", "x"), false],
    [new ComputeError(400, "resourceNotReady", "x"), true],
    [new ComputeError(400, "invalid", "x"), false],
    [new ComputeError(403, "rateLimitExceeded", "x", ["CONCURRENT_OPERATIONS_QUOTA_EXCEEDED"]), true],
    [new ComputeError(403, "quotaExceeded", "x", ["CONCURRENT_OPERATIONS_QUOTA_EXCEEDED"]), true],
    [new ComputeNetworkError("POST /projects/p/global/routes", Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })), true],
    [new DOMException("The operation was aborted due to timeout", "TimeoutError"), true],
    [new TypeError("Cannot read properties of undefined"), false],
  ] as const) {
    it(`${error.message} ${(error as ComputeError).status ?? ""} ${(error as ComputeError).reason ?? ""} → ${retry}`, () => assert.equal(isRetryable(error), retry));
  }
});

describe("gcp error bodies", () => {
  it("reads the ErrorInfo reason of the documented concurrent operations quota error", () => {
    // https://cloud.google.com/compute/operations-quota: 403, errors[].reason rateLimitExceeded, details[] ErrorInfo.
    const body = {
      error: {
        code: 403,
        message: "Rate Limit Exceeded",
        errors: [{ message: "Rate Limit Exceeded", domain: "usageLimits", reason: "rateLimitExceeded" }],
        details: [
          { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "CONCURRENT_OPERATIONS_QUOTA_EXCEEDED", domain: "compute.googleapis.com", metadatas: { containerType: "PROJECT" } },
          { "@type": "type.googleapis.com/google.rpc.Help", links: [] },
        ],
      },
    };
    const error = computeErrorFrom(403, JSON.stringify(body));
    assert.deepEqual([error.status, error.reason, error.message, error.infoReasons], [403, "rateLimitExceeded", "Rate Limit Exceeded", ["CONCURRENT_OPERATIONS_QUOTA_EXCEEDED"]]);
    assert.equal(waitsForCapacity(error), true);
    assert.deepEqual([computeErrorFrom(502, "<html>bad gateway</html>").message, computeErrorFrom(502, "").reason], ["HTTP 502", ""]);
  });
});

describe("test server filter (as gcloud sends it)", () => {
  const route = { network: "http://127.0.0.1:1/compute/v1/projects/p/global/networks/kubernetes-the-hard-way", name: "r1" };
  it("full-match regex with word boundaries", () => {
    assert.equal(matchesFilter('network eq ".*\\bkubernetes-the-hard-way\\b.*"', route), true);
    assert.equal(matchesFilter('network eq ".*\\bkubernetes\\b.*"', { network: "x/networks/kubernetesx" }), false);
    assert.equal(matchesFilter('name eq "r"', route), false, "a partial match is no match");
    assert.equal(matchesFilter('(name eq "r1") (network ne ".*other")', route), true);
  });
});

