/**
 * The README and every page under docs/ as a newcomer follows them: every relative link leads to a file
 * that exists (and its `#anchor` to a heading of that file, as GitHub makes anchors), every `podroutes`
 * command line shown (in code blocks and inline code) names a command the CLI has and only flags that
 * command offers for its target and node source, and commands work as printed on a machine where the
 * user is root (no `sudo`, which may not exist there). The CLI is consulted as the program it builds for
 * each command line (`programFor`, commander's own parse, actions replaced), so the check is pure and
 * the docs cannot drift from the flags the targets and sources declare.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { CommanderError, type Command } from "commander";
import { CONTROLLER_TARGETS } from "../src/cli/controller-command.js";
import { programFor } from "../src/cli/main.js";
import { nodeSources } from "../src/sources/registry.js";
import { targetFactory, targets } from "../src/targets/registry.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** README.md and docs/**\/*.md, as paths relative to the repository. */
function markdownFiles(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) => (entry.isDirectory() ? walk(join(dir, entry.name)) : entry.name.endsWith(".md") ? [join(dir, entry.name)] : []));
  return ["README.md", ...(existsSync(join(ROOT, "docs")) ? walk("docs").sort() : [])];
}

/** A line of a markdown file, numbered from 1, and whether it lies inside a fenced code block. */
interface Line {
  number: number;
  text: string;
  fenced: boolean;
}

function linesOf(markdown: string): Line[] {
  let fenced = false;
  return markdown.split("\n").flatMap((text, i) => {
    if (/^\s*```/.test(text)) {
      fenced = !fenced;
      return [];
    }
    return [{ number: i + 1, text, fenced }];
  });
}

/** The anchor GitHub gives a heading (github-slugger): markup dropped, lowercase, punctuation gone, spaces to '-'. */
export function slug(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
    .replace(/[`*]/g, "")
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, "")
    .replace(/ /g, "-");
}

/** The anchors of a markdown text's headings; a repeated one gets -1, -2, … as on GitHub. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const line of linesOf(markdown)) {
    const heading = line.fenced ? undefined : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line.text)?.[1];
    if (heading === undefined) continue;
    const base = slug(heading);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count ? `${base}-${count}` : base);
  }
  return result;
}

/** The prose of a markdown text: its paragraphs outside code blocks, each with the number of its first line. */
function paragraphs(markdown: string): { number: number; text: string }[] {
  const result: { number: number; text: string }[] = [];
  let lines: Line[] = [];
  const flush = () => {
    if (lines.length) result.push({ number: lines[0]!.number, text: lines.map((line) => line.text).join("\n") });
    lines = [];
  };
  for (const line of linesOf(markdown)) {
    if (line.fenced || !line.text.trim()) flush();
    else lines.push(line);
  }
  flush();
  return result;
}

/** Inline code spans `...` (which may wrap across lines) and what is left around them; `at` finds an offset's line. */
const INLINE_CODE = /(`+)([\s\S]+?)\1/g;
const lineAt = (paragraph: { number: number; text: string }, offset: number) => paragraph.number + (paragraph.text.slice(0, offset).match(/\n/g)?.length ?? 0);

/**
 * Problems with the relative links of one markdown file (`file` relative to the repository, `read` its
 * neighbours' text): a path that does not exist, an anchor that is no heading of its file.
 */
export function linkProblems(file: string, markdown: string, read: (path: string) => string | undefined): string[] {
  const problems: string[] = [];
  for (const paragraph of paragraphs(markdown)) {
    // Code is not a link: blanked out, newlines kept, so offsets still find their line.
    const prose = paragraph.text.replace(INLINE_CODE, (code) => code.replace(/[^\n]/g, " "));
    const links = [...prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g), ...prose.matchAll(/^\s*\[[^\]]+\]:\s*(\S+)/gm)];
    for (const match of links) {
      const link = match[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue; // https:, mailto:: not ours to check
      const [path, anchor] = link.split("#", 2) as [string, string | undefined];
      const target = path === "" ? file : join(dirname(file), decodeURIComponent(path));
      const text = read(target);
      const where = `${file}:${lineAt(paragraph, match.index)}: ${link}`;
      if (text === undefined) problems.push(`${where}: ${target} does not exist`);
      else if (anchor !== undefined && !anchors(text).has(anchor.toLowerCase())) problems.push(`${where}: ${target} has no heading with the anchor #${anchor}`);
    }
  }
  return problems;
}

/** Shell words of a command line: spaces split, quotes group (enough for the docs' commands). */
function words(text: string): string[] {
  return [...text.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

/**
 * The podroutes command lines in one piece of shell (a code block's line or an inline code span): each
 * command of a pipeline or list that runs `podroutes` (or `node bin/podroutes.js`), as its argv after the
 * program's name, comments and leading VAR=value assignments dropped.
 */
export function podroutesCommands(shell: string): string[][] {
  return shell
    .replace(/(^|\s)#.*$/, "")
    .split(/\|\||&&|[|;]/)
    .map((part) => words(part.trim()))
    .map((argv) => argv.slice(argv.findIndex((word) => !/^[A-Za-z_][A-Za-z0-9_]*=/.test(word))))
    .flatMap((argv) => (argv[0] === "podroutes" ? [argv.slice(1)] : argv[0] === "node" && argv[1] === "bin/podroutes.js" ? [argv.slice(2)] : []));
}

/**
 * What is wrong with one podroutes command line, by the CLI's own parse: an unknown command or flag, a
 * flag without its value, an unknown target (or one the controller does not take), too many arguments.
 * A command run on a lab node (`lab exec NODE -- podroutes ...`) is checked as well. Pure.
 */
export async function commandProblems(argv: string[]): Promise<string[]> {
  if (argv.length === 0) return [];
  const problems: string[] = [];
  const end = argv.indexOf("--");
  const own = end < 0 ? argv : argv.slice(0, end);
  const targetAt = own.indexOf("--target");
  const target = targetAt < 0 ? own.find((word) => word.startsWith("--target="))?.slice("--target=".length) : own[targetAt + 1];
  if (target !== undefined && !targetFactory(target)) problems.push(`--target ${target}: no such target (${targets.map((t) => t.name).join(", ")})`);
  else if (target !== undefined && own[0] === "controller" && !(CONTROLLER_TARGETS as readonly string[]).includes(target)) problems.push(`controller --target ${target}: the controller takes ${CONTROLLER_TARGETS.join(", ")}`);
  let said = "";
  try {
    await programFor(argv, (text) => (said += text)).parseAsync(argv, { from: "user" });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    if (error.code !== "commander.helpDisplayed") problems.push(said.split("\n")[0]!.trim() || error.message);
  }
  if (end >= 0 && own[0] === "lab" && own[1] === "exec") {
    const inner = argv.slice(end + 1);
    if (inner[0] === "podroutes") problems.push(...(await commandProblems(inner.slice(1))));
  }
  return problems;
}

/** Every podroutes command line of a markdown file (code blocks' lines, inline code), with where it is. */
function commandLines(file: string, markdown: string): { where: string; argv: string[] }[] {
  const inBlocks = linesOf(markdown)
    .filter((line) => line.fenced)
    .flatMap((line) => podroutesCommands(line.text).map((argv) => ({ where: `${file}:${line.number}`, argv })));
  const inline = paragraphs(markdown).flatMap((paragraph) =>
    [...paragraph.text.matchAll(INLINE_CODE)].flatMap((match) =>
      podroutesCommands(match[2]!.replace(/\s+/g, " ").trim().replace(/\\\|/g, "|")).map((argv) => ({ where: `${file}:${lineAt(paragraph, match.index)}`, argv })),
    ),
  );
  return [...inBlocks, ...inline];
}

/** Every flag the CLI has: of every command, with every target's and every node source's flags. Pure. */
export function everyFlag(): Set<string> {
  const flags = new Set(["--help", "-h"]);
  const everyCommand = (command: Command): Command[] => [command, ...command.commands.flatMap(everyCommand)];
  const lines = [[], ...targets.flatMap((t) => [["plan", "--target", t.name], ["controller", "--target", t.name]]), ...nodeSources.map((s) => ["plan", "--nodes", s.name])];
  for (const argv of lines) {
    for (const command of everyCommand(programFor(argv))) {
      for (const option of command.options) for (const flag of [option.long, option.short]) if (flag) flags.add(flag);
    }
  }
  return flags;
}

/** The commands a span of inline code may start with and still be about podroutes' flags (`apply --yes`). */
const PODROUTES_WORDS = new Set(["podroutes", "plan", "apply", "delete", "list", "verify", "demo", "lab", "agent", "controller"]);

/**
 * Flags named in a file's inline code that podroutes does not have: in spans about podroutes, those that
 * start with a flag (`--ssh-user`, `--nodes gcp --network N`) or with one of its commands (`lab up --ssh`);
 * another program's command line (`npm run build --silent`, `NODE_OPTIONS=--max-semi-space-size=4`) is not
 * podroutes'.
 */
export function proseFlagProblems(file: string, markdown: string, known: Set<string>): string[] {
  return paragraphs(markdown).flatMap((paragraph) =>
    [...paragraph.text.matchAll(INLINE_CODE)].flatMap((match) => {
      const code = match[2]!.replace(/\s+/g, " ").trim().replace(/\[|\]/g, " ");
      const first = code.split(" ")[0]!;
      if (!first.startsWith("-") && !PODROUTES_WORDS.has(first)) return [];
      const unknown = [...code.matchAll(/(?:^|[\s(|])(--?[a-zA-Z][a-zA-Z0-9-]*)/g)].map((m) => m[1]!).filter((flag) => !known.has(flag));
      return unknown.map((flag) => `${file}:${lineAt(paragraph, match.index)}: \`${code}\`: podroutes has no flag ${flag}`);
    }),
  );
}

/** The lines of a markdown text's code blocks, comments dropped. */
function shellLines(markdown: string): string[] {
  return linesOf(markdown)
    .filter((line) => line.fenced)
    .map((line) => line.text.replace(/\s+#.*$/, "").trim())
    .filter(Boolean);
}

const read = (path: string): string | undefined => {
  const full = resolve(ROOT, path);
  if (!existsSync(full)) return undefined;
  return statSync(full).isDirectory() ? "" : readFileSync(full, "utf8");
};
const FILES = markdownFiles();
const FLAGS = everyFlag();
const README = read("README.md")!;

describe("README and docs/", () => {
  it("finds the README and the docs pages", () => {
    assert.ok(FILES.length > 1, `docs/ has pages: ${FILES.join(", ")}`);
  });

  for (const file of FILES) {
    const markdown = read(file)!;
    it(`${file}: every relative link leads to an existing file, and every #anchor to a heading of it`, () => {
      assert.deepEqual(linkProblems(file, markdown, read), []);
    });

    it(`${file}: every podroutes command line names a command and only flags it offers (for its target and node source)`, async () => {
      const problems: string[] = [];
      for (const { where, argv } of commandLines(file, markdown)) {
        for (const problem of await commandProblems(argv)) problems.push(`${where}: podroutes ${argv.join(" ")}: ${problem}`);
      }
      assert.deepEqual(problems, []);
    });

    it(`${file}: every flag its inline code names is one podroutes has`, () => {
      assert.deepEqual(proseFlagProblems(file, markdown, FLAGS), []);
    });

    it(`${file}: every code block is closed`, () => {
      const fences = markdown.split("\n").filter((line) => /^\s*```/.test(line)).length;
      assert.equal(fences % 2, 0, `${file} has ${fences} code fences: one is never closed, and what follows it reads as code`);
    });

    it(`${file}: runs its commands as root (or with sudo): none starts with sudo`, () => {
      assert.deepEqual(shellLines(markdown).filter((line) => /^sudo\b/.test(line)), []);
    });
  }

  it("the README introduces its commands as root (or with sudo), and shows the test command CI runs", () => {
    assert.match(README, /as root \(or with sudo\)/);
    const ci = readFileSync(join(ROOT, ".ci/run"), "utf8").split("\n").map((line) => line.trim()).filter((line) => line && !line.startsWith("#"));
    assert.equal(ci.at(-1), "npm test", ".ci/run ends by running npm test");
    assert.ok(shellLines(README).includes("npm test"));
    assert.match(README, /`\.ci\/run` runs `npm test`/);
  });

  it("the README and docs/agent.md show `podroutes agent`; the README and docs/controller.md show `podroutes controller`", () => {
    for (const [file, command] of [["README.md", "agent"], ["docs/agent.md", "agent"], ["README.md", "controller"], ["docs/controller.md", "controller"]] as const) {
      assert.ok(shellLines(read(file)!).some((line) => line.startsWith(`podroutes ${command} `)), `${file} shows podroutes ${command}`);
    }
  });

  it("the README links every docs page", () => {
    const linked = new Set([...README.matchAll(/\]\((docs\/[^)#\s]+)/g)].map((m) => m[1]!));
    assert.deepEqual(FILES.filter((file) => file !== "README.md" && !linked.has(relative(ROOT, join(ROOT, file)))), []);
  });
});

describe("the docs checks themselves", () => {
  const pages: Record<string, string> = {
    "docs/a.md": "# Page A\n\n## Nodes in: `--nodes SOURCE`\n\n## Repeat\n\n## Repeat\n",
    "docs/b.md": "[ok](a.md#nodes-in---nodes-source) [again](a.md#repeat-1) [self](#b) [web](https://example.com/x.md)\n# B\n",
  };
  const readPage = (path: string) => pages[path];

  it("GitHub's anchors: code and punctuation dropped, repeats numbered", () => {
    assert.deepEqual([...anchors(pages["docs/a.md"]!)], ["page-a", "nodes-in---nodes-source", "repeat", "repeat-1"]);
    assert.equal(slug("Linux host routes (`lab`, `local`, `ssh`)"), "linux-host-routes-lab-local-ssh");
  });

  it("accepts good links and reports a missing file and a missing anchor, with file:line", () => {
    assert.deepEqual(linkProblems("docs/b.md", pages["docs/b.md"]!, readPage), []);
    assert.deepEqual(linkProblems("docs/c.md", "text\n[gone](missing.md) and [no heading](a.md#nowhere)\n`[not a link](x.md)` and [a link that\nwraps](gone.md)\n", readPage), [
      "docs/c.md:2: missing.md: docs/missing.md does not exist",
      "docs/c.md:2: a.md#nowhere: docs/a.md has no heading with the anchor #nowhere",
      "docs/c.md:4: gone.md: docs/gone.md does not exist",
    ]);
  });

  it("finds command lines in code blocks and in inline code that wraps across lines, each with its line", () => {
    const markdown = "Run `podroutes plan\n--target gcp` first.\n\n```sh\npodroutes list # a comment\n```\nNot `podroutes_ready`.\n";
    assert.deepEqual(commandLines("x.md", markdown), [
      { where: "x.md:5", argv: ["list"] },
      { where: "x.md:1", argv: ["plan", "--target", "gcp"] },
    ]);
  });

  it("knows every flag of the CLI, and reports a flag podroutes lacks in inline code about podroutes only", () => {
    for (const flag of ["--target", "--ssh-user", "--gcp-tag", "--lease-name", "--resync", "--ssh", "--yes", "-y", "-o"]) assert.ok(FLAGS.has(flag), flag);
    const markdown = "Use `--ssh-usr` and `apply --yess`, or `lab up --ssh`;\nnot `npm run build --silent` nor `NODE_OPTIONS=--max-semi-space-size=4`.";
    assert.deepEqual(proseFlagProblems("x.md", markdown, FLAGS), ["x.md:1: `--ssh-usr`: podroutes has no flag --ssh-usr", "x.md:1: `apply --yess`: podroutes has no flag --yess"]);
  });

  it("finds podroutes in pipelines, lists and after environment assignments, and nothing else", () => {
    assert.deepEqual(podroutesCommands("kubectl get nodes -o json | podroutes plan --nodes - # comment"), [["plan", "--nodes", "-"]]);
    assert.deepEqual(podroutesCommands("X=1 node bin/podroutes.js lab down && echo done"), [["lab", "down"]]);
    assert.deepEqual(podroutesCommands("podroutes apply --selector 'zone in (a,b)' --target ssh --nodes kubernetes"), [["apply", "--selector", "zone in (a,b)", "--target", "ssh", "--nodes", "kubernetes"]]);
    assert.deepEqual(podroutesCommands("podroutes_ready"), []);
  });

  it("accepts the CLI's commands and flags, and reports an unknown command, flag, target or a flag of another target", async () => {
    assert.deepEqual(await commandProblems(["plan", "--nodes", "kubernetes", "--target", "gcp", "--project", "P", "--selector", "a=b"]), []);
    assert.deepEqual(await commandProblems(["plan", "--target", "gcp", "--help"]), []);
    assert.deepEqual(await commandProblems(["lab", "exec", "worker-0", "--", "podroutes", "plan", "--nodes", "lab", "--target", "local"]), []);
    assert.match((await commandProblems(["plna"])).join(), /unknown command 'plna'/);
    assert.match((await commandProblems(["apply", "--target", "lab", "--ssh-user", "root"])).join(), /unknown option '--ssh-user'/);
    assert.match((await commandProblems(["plan", "--target", "nosuch-cloud"])).join(), /--target nosuch-cloud: no such target/);
    assert.match((await commandProblems(["controller", "--target", "local"])).join(), /the controller takes gcp, aws, azure, hetzner, openstack, ssh/);
    assert.match((await commandProblems(["agent", "--target", "gcp"])).join(), /unknown option '--target'/);
    assert.match((await commandProblems(["lab", "exec", "worker-0", "--", "podroutes", "plan", "--vultr-tag", "k8s"])).join(), /unknown option '--vultr-tag'/);
  });
});
