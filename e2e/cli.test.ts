/**
 * The CLI as a newcomer meets it (issue 11), through the built command: cloud commands that need no
 * inventory run without one and never ask for a lab; every bad flag exits 3 naming the flag before any
 * API call; help shows the chosen target's and source's flags and lists the others one line each.
 * Cloud endpoints are the local Compute Engine server on 127.0.0.1, which counts every request it gets.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import pLimit from "p-limit";
import { nodeSources } from "../src/sources/registry.js";
import { run } from "../src/process.js";
import { ownershipMarker } from "../src/targets/gcp/target.js";
import { targets } from "../src/targets/registry.js";
import { BIN, runCli, type CliResult } from "../testkit/cli.js";
import { spawn } from "node:child_process";
import { startGceServer, type GceServer } from "../testkit/gce-server.js";

const NETWORK = "kubernetes-the-hard-way";
const dir = mkdtempSync(join(tmpdir(), "podroutes-cli-"));
const tokenFile = join(dir, "token");
writeFileSync(tokenFile, "test-token\n");
const nodesFile = join(dir, "nodes.txt");
writeFileSync(nodesFile, "10.240.0.20 10.200.0.0/24 worker-0\n10.240.0.21 10.200.1.0/24 worker-1\n10.240.0.22 10.200.2.0/24 worker-2\n");
/** A lab name no other test or engineer uses: a bad-flag run must not create it. */
const LAB = `clibad${process.pid % 100000}`;

let server: GceServer;
before(async () => {
  server = await startGceServer();
});
after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Everything offline: GCP and AWS credentials are dummies, metadata lookups off, regions and projects unset. */
function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    GCE_METADATA_HOST: "127.0.0.1:9",
    METADATA_SERVER_DETECTION: "none",
    CLOUDSDK_CORE_PROJECT: "",
    CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: server.endpoint,
    CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile,
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_REGION: "",
    AWS_DEFAULT_REGION: "",
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: "/nonexistent/podroutes-test/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/podroutes-test/aws-credentials",
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
    VULTR_API_KEY: "test",
    ...extra,
  };
}

const gcp = () => ["--target", "gcp", "--project", server.project, "--network", NETWORK];

describe("cloud commands need no lab", () => {
  beforeEach(() => {
    server.reset();
    server.addRoute({ name: "default-route-236a40a8bc992b5b", network: NETWORK, destRange: "0.0.0.0/0", nextHopGateway: `${server.endpoint}projects/${server.project}/global/gateways/default-internet-gateway` });
    for (const i of [0, 1, 2]) {
      server.addRoute({ name: `kubernetes-route-10-200-${i}-0-24`, network: NETWORK, destRange: `10.200.${i}.0/24`, nextHopIp: `10.240.0.2${i}`, description: `${ownershipMarker("kubernetes")}; node=worker-${i}` });
    }
    server.addRoute({ name: "by-hand", network: NETWORK, destRange: "10.200.9.0/24", nextHopIp: "10.240.0.29" });
  });

  it("list --target gcp without --nodes prints the network's routes, as the README promises", async () => {
    const listed = await runCli(["list", ...gcp()], { env: env() });
    assert.equal(listed.code, 0, listed.stderr);
    assert.doesNotMatch(listed.stderr, /lab/);
    assert.deepEqual(
      listed.stdout.trim().split("\n").map((line) => line.trim().split(/\s{2,}/)[0]),
      ["NAME", "by-hand", "default-route-236a40a8bc992b5b", "kubernetes-route-10-200-0-0-24", "kubernetes-route-10-200-1-0-24", "kubernetes-route-10-200-2-0-24"],
    );
  });

  it("delete --target gcp without --nodes removes the routes carrying the cluster's marker, and nothing else", async () => {
    const deleted = await runCli(["delete", "--yes", ...gcp()], { env: env() });
    assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    assert.deepEqual([...server.routes.keys()].sort(), ["by-hand", "default-route-236a40a8bc992b5b"]);
  });

  it("plan --target gcp reads the nodes from the project's instances (the target's own node source)", async () => {
    for (const i of [0, 1, 2]) server.addInstance({ name: `worker-${i}`, zone: "us-west1-c", networkIP: `10.240.0.2${i}`, network: NETWORK, podCidr: `10.200.${i}.0/24`, tags: ["worker"], canIpForward: true });
    const planned = await runCli(["plan", "--detailed-exitcode", "--gcp-tag", "worker", ...gcp()], { env: env() });
    assert.equal(planned.code, 0, planned.stdout + planned.stderr);
    assert.match(planned.stdout, /No changes/);
  });

  for (const target of ["ssh", "local"]) {
    it(`plan --target ${target} without --nodes says to pass --nodes (no lab is assumed)`, async () => {
      const result = await runCli(["plan", "--target", target], { env: env() });
      assert.equal(result.code, 3, result.stderr);
      assert.match(result.stderr, /--nodes/);
      assert.doesNotMatch(result.stderr, /no lab named/);
    });
  }
});

/** [arguments, the flag the error must name, extra environment]; each must exit 3 with no API call. */
const BAD_FLAGS: [string[], string, Record<string, string>?][] = [
  [["list", "--target", "gcp", "--network", NETWORK], "--project"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "Bad_Project", "--network", NETWORK], "--project"],
  [["apply", "--yes", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project"], "--network"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", "Net!"], "--network"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--priority", "70000"], "--priority"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--next-hop", "eni"], "--next-hop"],
  [["apply", "--yes", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--max-in-flight", "0"], "--max-in-flight"],
  [["apply", "--yes", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--compute-batch", "1001"], "--compute-batch"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--compute-endpoint", "not a url"], "--compute-endpoint"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--access-token-file", join(dir, "missing")], "--access-token-file"],
  [["plan", "--nodes", "gcp", "--target", "gcp", "--project", "my-project", "--network", NETWORK], "--gcp-name-prefix"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--cluster-cidr", "10.200.0.1/16"], "--cluster-cidr"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--cluster", "Bad_Name"], "--cluster"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--ssh-user", "x"], "--ssh-user"],
  [["plan", "--nodes", nodesFile, "--target", "gcp", "--project", "my-project", "--network", NETWORK, "--parallel", "0"], "--parallel"],
  [["plan", "--nodes", nodesFile, "--target", "aws", "--region", "eu-west-1"], "--cluster-cidr"],
  [["delete", "--yes", "--target", "aws", "--region", "eu-west-1"], "--cluster-cidr"],
  [["list", "--target", "aws", "--cluster-cidr", "10.200.0.0/16"], "--region"],
  [["plan", "--nodes", "aws", "--target", "aws", "--region", "eu-west-1", "--cluster-cidr", "10.200.0.0/16", "--route-table", "table-1"], "--route-table"],
  [["plan", "--nodes", "aws", "--target", "aws", "--region", "eu-west-1", "--cluster-cidr", "10.200.0.0/16", "--route-limit", "0"], "--route-limit"],
  [["plan", "--nodes", "aws", "--target", "aws", "--region", "eu-west-1", "--cluster-cidr", "10.200.0.0/16", "--aws-filter", "tag:Role"], "--aws-filter"],
  [["plan", "--nodes", "aws", "--target", "aws", "--region", "eu-west-1", "--cluster-cidr", "10.200.0.0/16", "--endpoint", "ftp://x"], "--endpoint"],
  [["plan", "--nodes", "vultr", "--target", "ssh", "--vultr-endpoint", "nowhere"], "--vultr-endpoint"],
  [["plan", "--nodes", nodesFile, "--target", "lab", "--proto", "3"], "--proto"],
  [["plan", "--target", "lab", "--lab", "Bad"], "--lab"],
  [["apply", "--yes", "--nodes", nodesFile, "--target", "local", "--proto", "256"], "--proto"],
  [["apply", "--yes", "--nodes", nodesFile, "--target", "ssh", "--ssh-port", "0"], "--ssh-port"],
  [["plan", "--nodes", nodesFile, "--target", "ssh", "--ssh-user", "bad user"], "--ssh-user"],
  [["plan", "--nodes", nodesFile, "--target", "ssh", "--jump", "a@@b"], "--jump"],
  [["plan", "--nodes", nodesFile, "--target", "ssh", "--ssh-key", join(dir, "missing")], "--ssh-key"],
  [["plan", "--nodes", nodesFile, "--target", "ssh", "--ssh-key", nodesFile], "--ssh-key"],
  [["plan", "--nodes", nodesFile, "--target", "local", "--node", "unknown"], "--node"],
  [["plan", "--nodes", nodesFile, "--target", "lab", "--lock-timeout", "soon"], "--lock-timeout"],
  [["plan", "--nodes", nodesFile, "--target", "ssh", "--lock-timeout", "-1s"], "--lock-timeout"],
  [["plan", "--nodes", nodesFile, "--target", "ssh", "--accept-new", "--insecure-ignore-host-keys"], "--accept-new"],
  [["plan", "--nodes", nodesFile, "--target", "nowhere"], "--target"],
  [["list", "--target", "gcp", "-o", "xml"], "--output"],
  [["lab", "up", "--lab", "Bad"], "--lab"],
  [["lab", "up", "--lab", LAB, "--workers", "0"], "--workers"],
];

describe("bad flags: exit 3, the flag named, before any API call or change", () => {
  const results = new Map<string, CliResult>();
  before(async () => {
    server.reset();
    // Every endpoint points at the counting server: any call at all would show in its stats.
    const endpoints = { CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: server.endpoint, AWS_ENDPOINT_URL: server.origin };
    const limit = pLimit(4);
    await Promise.all(
      BAD_FLAGS.map(([args, , extra]) =>
        limit(async () => {
          const withEndpoints = args.includes("--nodes") && args[args.indexOf("--nodes") + 1] === "vultr" && !args.includes("--vultr-endpoint") ? [...args, "--vultr-endpoint", server.origin] : args;
          results.set(args.join(" "), await runCli(withEndpoints, { env: env({ ...endpoints, ...extra }) }));
        }),
      ),
    );
  });

  for (const [args, flag] of BAD_FLAGS) {
    it(`${args.join(" ")} → exit 3 naming ${flag}`, () => {
      const result = results.get(args.join(" "))!;
      assert.equal(result.code, 3, `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
      assert.ok(result.stderr.includes(flag), `stderr does not name ${flag}:\n${result.stderr}`);
      assert.doesNotMatch(result.stderr, /no lab named/);
    });
  }

  it("no run made a single API call", () => {
    assert.equal(server.stats.requests, 0, JSON.stringify(server.stats.byMethod));
  });

  it("no run created a lab", async () => {
    const namespaces = await run("ip", ["netns", "list"]);
    assert.doesNotMatch(namespaces.stdout, new RegExp(`^${LAB}-`, "m"));
  });
});

describe("help", () => {
  const help = async (args: string[]) => {
    const result = await runCli(args);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout;
  };
  /** The long flags help lists. */
  const flagsIn = (text: string) => new Set([...text.matchAll(/^\s+(?:-\w, )?(--[a-z-]+)/gm)].map((m) => m[1]!));

  it("--help with a target that does not exist says so and lists the targets, exit 3, as without --help", async () => {
    const known = targets.map((t) => t.name).join(", ");
    for (const argv of [["plan", "--target", "nosuch-cloud", "--help"], ["apply", "-h", "--target", "nosuch"], ["delete", "--target=nosuch", "--help"]]) {
      const result = await runCli(argv);
      assert.equal(result.code, 3, `${argv.join(" ")}: ${result.stdout}${result.stderr}`);
      assert.match(result.stderr, new RegExp(`--target "(nosuch-cloud|nosuch)": must be one of ${known}`));
      assert.equal(result.stdout, "", "no help of another target");
    }
    const controller = await runCli(["controller", "--target", "local", "--help"]);
    assert.equal(controller.code, 3, controller.stdout + controller.stderr);
    assert.match(controller.stderr, /--target "local": must be one of gcp, aws, azure, hetzner, openstack, ssh/);
  });

  it("a reader that goes away (podroutes ... | head) ends podroutes quietly, without a stack trace", async () => {
    const child = spawn(process.execPath, [BIN, "plan", "--target", "gcp", "--help"], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.destroy();
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    assert.doesNotMatch(stderr, /EPIPE|Unhandled|at /, stderr);
    assert.notEqual(code, 0, "the output was not all written");
  });

  it("plan --target gcp --help shows the common flags and gcp's, and no other target's or source's", async () => {
    const flags = flagsIn(await help(["plan", "--target", "gcp", "--help"]));
    for (const flag of ["--nodes", "--target", "--cluster", "--cluster-cidr", "--output", "--parallel", "--detailed-exitcode", "--project", "--network", "--priority", "--next-hop", "--max-in-flight", "--compute-batch", "--compute-endpoint", "--access-token-file", "--gcp-tag", "--gcp-label", "--gcp-name-prefix"]) {
      assert.ok(flags.has(flag), `missing ${flag}`);
    }
    for (const flag of ["--ssh-user", "--route-table", "--vultr-tag", "--proto", "--region", "--aws-filter", "--lab", "--route-limit"]) assert.ok(!flags.has(flag), `shows ${flag}`);
  });

  it("with --nodes, the source's flags are the ones shown: ssh with vultr nodes", async () => {
    const flags = flagsIn(await help(["apply", "--target", "ssh", "--nodes", "vultr", "--help"]));
    for (const flag of ["--ssh-user", "--ssh-key", "--proto", "--persist", "--vultr-tag", "--vultr-label", "--pod-cidrs", "--yes", "--dry-run"]) assert.ok(flags.has(flag), `missing ${flag}`);
    for (const flag of ["--project", "--network", "--route-table", "--gcp-tag", "--aws-filter", "--lab"]) assert.ok(!flags.has(flag), `shows ${flag}`);
  });

  it("list --target gcp --help needs no node source, so shows none of a source's flags", async () => {
    const flags = flagsIn(await help(["list", "--target", "gcp", "--help"]));
    assert.ok(flags.has("--network"));
    assert.ok(!flags.has("--gcp-tag"));
  });

  for (const args of [["--help"], ["plan", "--help"]]) {
    it(`podroutes ${args.join(" ")} lists every target and node source on one line and says how to see a target's flags`, async () => {
      const text = await help(args);
      for (const { name, description } of [...targets, ...nodeSources]) {
        const line = new RegExp(`^\\s+${name}\\s+${description.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "m");
        assert.match(text, line, `no line for ${name}: ${description}`);
      }
      assert.match(text, /--target NAME --help/);
    });
  }
});

describe("the Node it runs on", () => {
  // Nothing listens on 127.0.0.1:9: the command fails after the SDK client was built, which is when the
  // AWS SDK prints its nine-line NodeVersionSupportWarning under Node < 22.
  const awsList = (stateHome: string) =>
    runCli(["list", "--target", "aws", "--route-table", "rtb-0123456789abcdef0", "--region", "us-east-1", "--endpoint", "http://127.0.0.1:9", "--cluster-cidr", "10.200.0.0/16"], {
      env: { XDG_STATE_HOME: stateHome, AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test", AWS_EC2_METADATA_DISABLED: "true", AWS_CONFIG_FILE: "/dev/null", AWS_SHARED_CREDENTIALS_FILE: "/dev/null", AWS_MAX_ATTEMPTS: "1" },
    });

  it("no third-party warning on any run; on an unsupported Node one plain line, the first time only", async () => {
    const stateHome = mkdtempSync(join(tmpdir(), "podroutes-state-"));
    try {
      const first = await awsList(stateHome);
      const second = await awsList(stateHome);
      for (const result of [first, second]) {
        assert.equal(result.code, 1, result.stderr);
        assert.match(result.stderr, /cannot describe route tables rtb-0123456789abcdef0/);
        assert.doesNotMatch(result.stderr, /NodeVersionSupportWarning|AWS SDK for JavaScript|trace-warnings/);
      }
      const notice = /^Warning: Node v[\d.]+ is past its end of life.*$/gm;
      const unsupported = Number(process.versions.node.split(".")[0]) < 22;
      assert.equal(first.stderr.match(notice)?.length ?? 0, unsupported ? 1 : 0, first.stderr);
      assert.equal(second.stderr.match(notice)?.length ?? 0, 0, second.stderr);
    } finally {
      rmSync(stateHome, { recursive: true, force: true });
    }
  });
});
