/**
 * The README as a newcomer follows it: its commands work as printed on a machine where the user is root
 * (no `sudo`, which may not exist there), and every `podroutes` command it shows uses only flags that
 * command offers for its target and node source.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { chooseNodes, commonOptions, DEFAULT_TARGET, pluginOptions, scanArgv, type RouteCommand } from "../src/cli/args.js";
import { agentOptions } from "../src/cli/agent-command.js";
import { clusterOptions, controllerOptions, targetOptions } from "../src/cli/controller-command.js";
import { longFlag } from "../src/options.js";
import { targetFactory } from "../src/targets/registry.js";

const README = readFileSync(fileURLToPath(new URL("../../README.md", import.meta.url)), "utf8");
/** The lines of the README's ```sh blocks, comments dropped. */
const shellLines = [...README.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) => m[1]!.split("\n")).map((line) => line.replace(/\s+#.*$/, "").trim()).filter(Boolean);
/** Flags a route command has besides the common ones and its target's and source's. */
const COMMAND_FLAGS: Record<RouteCommand, string[]> = { plan: ["--detailed-exitcode"], apply: ["--yes", "--dry-run"], delete: ["--yes", "--dry-run"], list: [], verify: [] };

describe("README", () => {
  it("runs its commands as root (or with sudo): none starts with sudo", () => {
    assert.ok(shellLines.length > 0);
    assert.deepEqual(shellLines.filter((line) => /^sudo\b/.test(line)), []);
    assert.match(README, /as root \(or with sudo\)/);
  });

  const commands = shellLines.filter((line) => line.startsWith("podroutes ") && !line.startsWith("podroutes agent ") && !line.startsWith("podroutes controller "));
  for (const line of commands) {
    it(`${line}: every flag is one the command offers`, () => {
      const argv = line.split(/\s+/).slice(1);
      const scan = scanArgv(argv);
      const command = scan.command as RouteCommand;
      assert.ok(command in COMMAND_FLAGS, `not a route command: ${scan.command}`);
      const target = targetFactory(scan.target ?? DEFAULT_TARGET)!;
      const plugin = pluginOptions(target, chooseNodes(command, target, scan.nodes));
      const offered = new Set([...[...commonOptions, ...plugin.target, ...plugin.source].map(longFlag), ...COMMAND_FLAGS[command]]);
      const used = argv.filter((arg) => arg.startsWith("--")).map((arg) => arg.split("=")[0]!);
      assert.deepEqual(used.filter((flag) => !offered.has(flag)), []);
    });
  }

  it("shows `podroutes controller`, and its commands use only the controller's and the chosen target's flags", () => {
    const lines = shellLines.filter((line) => line.startsWith("podroutes controller "));
    assert.ok(lines.length > 0);
    for (const line of lines) {
      const argv = line.split(/\s+/).slice(1);
      const target = targetFactory(scanArgv(argv).target ?? "")!;
      assert.ok(target, `${line}: names a target`);
      const offered = new Set([...controllerOptions, ...clusterOptions, ...targetOptions(target)].map(longFlag));
      const used = argv.filter((arg) => arg.startsWith("--")).map((arg) => arg.split("=")[0]!);
      assert.deepEqual(used.filter((flag) => !offered.has(flag)), [], line);
    }
  });

  it("shows `podroutes agent`, and its commands use only the agent's flags", () => {
    const agentLines = shellLines.filter((line) => line.startsWith("podroutes agent "));
    assert.ok(agentLines.length > 0);
    const offered = new Set(agentOptions.map(longFlag));
    for (const line of agentLines) {
      const used = line.split(/\s+/).filter((arg) => arg.startsWith("--")).map((arg) => arg.split("=")[0]!);
      assert.deepEqual(used.filter((flag) => !offered.has(flag)), [], line);
    }
  });
});
