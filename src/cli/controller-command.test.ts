/**
 * `podroutes controller`'s argument layer: the flags issue 10 names, client-go's election defaults and
 * checks, the identity's fallbacks, and every bad flag a UsageError naming it, before anything starts.
 */
import assert from "node:assert/strict";
import { hostname } from "node:os";
import { describe, it } from "node:test";
import { UsageError } from "../errors.js";
import { controllerArgs } from "./controller-command.js";

const gcp = { target: "gcp", project: "my-project", network: "net" };

describe("controller arguments", () => {
  it("client-go's election defaults, a 5-minute resync, the Lease in podroutes/podroutes-controller, identity from POD_NAME", () => {
    const args = controllerArgs(gcp, { POD_NAME: "podroutes-controller-abc" });
    assert.deepEqual(args.election, { namespace: "podroutes", name: "podroutes-controller", identity: "podroutes-controller-abc", leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 });
    assert.deepEqual([args.resyncMs, args.listen, args.logFormat, args.cluster, args.target.name], [300_000, { host: "0.0.0.0", port: 9466 }, "json", "kubernetes", "gcp"]);
    assert.equal(controllerArgs({ ...gcp, identity: "by-flag" }, { POD_NAME: "x" }).election.identity, "by-flag");
    assert.equal(controllerArgs(gcp, { POD_NAMESPACE: "kube-system" }).election.namespace, "kube-system");
  });

  it("without POD_NAME the identity is the hostname and a random suffix, different per process", () => {
    const a = controllerArgs(gcp, {}).election.identity;
    const b = controllerArgs(gcp, {}).election.identity;
    assert.match(a, new RegExp(`^${hostname().replace(/[.]/g, "\\.")}_[0-9a-f]{8}$`));
    assert.notEqual(a, b);
  });

  it("durations and addresses as Kubernetes spells them", () => {
    const args = controllerArgs({ ...gcp, leaseDuration: "1m", renewDeadline: "40s", retryPeriod: "500ms", resync: "10m", listen: "127.0.0.1:0" }, {});
    assert.deepEqual([args.election.leaseDurationMs, args.election.renewDeadlineMs, args.election.retryPeriodMs, args.resyncMs, args.listen], [60_000, 40_000, 500, 600_000, { host: "127.0.0.1", port: 0 }]);
  });

  for (const [flags, pattern] of [
    [{ project: "p-roject" }, /--target is required: one of gcp, aws, azure, hetzner, openstack, ssh/],
    [{ target: "lab" }, /--target "lab": must be one of gcp, aws, azure, hetzner, openstack, ssh/],
    [{ target: "aws", region: "eu-west-1" }, /--cluster-cidr is required by --target aws/],
    [{ ...gcp, renewDeadline: "15s" }, /--renew-deadline 15s must be shorter than --lease-duration 15s/],
    [{ ...gcp, retryPeriod: "10s" }, /--retry-period 10s must be shorter than --renew-deadline 10s/],
    [{ ...gcp, leaseDuration: "soon" }, /--lease-duration "soon": must be a duration/],
    [{ ...gcp, leaseName: "Bad_Name" }, /--lease-name "Bad_Name": must be a Kubernetes name/],
    [{ ...gcp, listen: "9466" }, /--listen "9466": must be HOST:PORT/],
    [{ target: "gcp" }, /--project is required/],
  ] as const) {
    it(`refuses ${JSON.stringify(flags)} naming the flag`, () => {
      assert.throws(() => controllerArgs(flags as Record<string, unknown>, {}), (error: unknown) => error instanceof UsageError && pattern.test(error.message));
    });
  }
});
