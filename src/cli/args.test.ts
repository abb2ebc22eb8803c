/** The route commands' arguments, without I/O: which nodes each target reads, and how flags are checked. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UsageError } from "../errors.js";
import { targetFactory } from "../targets/registry.js";
import { chooseNodes, routeArgs, scanArgv, type RouteCommand } from "./args.js";

describe("scanArgv", () => {
  it("finds the command, the last --target and --nodes, and -o, in either form", () => {
    assert.deepEqual(scanArgv(["plan", "--target", "lab", "--nodes=a.yaml", "--target=gcp", "-o", "json"]), { command: "plan", target: "gcp", nodes: "a.yaml", output: "json" });
  });

  it("stops at --: what follows belongs to another program", () => {
    assert.deepEqual(scanArgv(["lab", "exec", "worker-0", "--", "podroutes", "list", "--target", "local"]), { command: "lab" });
  });
});

describe("which nodes a command reads", () => {
  const rows: [RouteCommand, string, string | undefined, string][] = [
    ["plan", "lab", undefined, "source lab"],
    ["plan", "gcp", undefined, "source gcp"],
    ["apply", "aws", undefined, "source aws"],
    ["verify", "ssh", undefined, "missing"],
    ["plan", "local", undefined, "missing"],
    ["list", "gcp", undefined, "none"],
    ["delete", "aws", undefined, "none"],
    ["list", "local", undefined, "none"],
    ["delete", "lab", undefined, "source lab"],
    ["list", "ssh", undefined, "missing"],
    ["list", "gcp", "nodes.yaml", "file nodes.yaml"],
    ["plan", "ssh", "vultr", "source vultr"],
  ];
  for (const [command, target, given, expected] of rows) {
    it(`${command} --target ${target}${given ? ` --nodes ${given}` : ""} → ${expected}`, () => {
      const nodes = chooseNodes(command, targetFactory(target)!, given);
      const seen = nodes === undefined ? "missing" : nodes.kind === "source" ? `source ${nodes.source.name}` : nodes.kind === "file" ? `file ${nodes.path}` : "none";
      assert.equal(seen, expected);
    });
  }
});

describe("routeArgs", () => {
  const env = { CLOUDSDK_CORE_PROJECT: "my-project" };

  it("fills defaults and environment, and parses values", () => {
    const args = routeArgs("plan", { target: "gcp", nodes: "n.txt", network: "net", priority: "900" }, env);
    assert.equal(args.parallel, 10);
    assert.deepEqual([args.values.project, args.values.priority, args.values.maxInFlight, args.values.nextHop], ["my-project", 900, 200, "ip"]);
  });

  it("names every bad flag at once", () => {
    assert.throws(
      () => routeArgs("plan", { target: "gcp", nodes: "n.txt", network: "Net", priority: "x", parallel: "0" }, env),
      (error: unknown) => error instanceof UsageError && /3 bad flags/.test(error.message) && /--network "Net"/.test(error.message) && /--priority "x"/.test(error.message) && /--parallel "0"/.test(error.message),
    );
  });

  it("asks for --cluster-cidr where a target needs it and no source can give it", () => {
    assert.throws(() => routeArgs("delete", { target: "aws", region: "eu-west-1" }, {}), (error: unknown) => error instanceof UsageError && error.flag === "--cluster-cidr");
    // A nodes file may carry it: checked once the file is read.
    assert.equal(routeArgs("plan", { target: "aws", region: "eu-west-1", nodes: "cluster.yaml" }, {}).nodes.kind, "file");
  });

  it("runs the checks that span flags: --accept-new and --insecure-ignore-host-keys", () => {
    assert.throws(() => routeArgs("apply", { target: "ssh", nodes: "n.txt", acceptNew: true, insecureIgnoreHostKeys: true }, {}), (error: unknown) => error instanceof UsageError && error.flag === "--accept-new");
  });
});
