#!/usr/bin/env node
// The compiled CLI; `npm run build` (run by `npm test`, `npm run bench` and `npm run demo`) produces it:
// dist/podroutes.mjs, the CLI in one file (scripts/bundle.mjs: a cold process starts sooner), bundled
// from dist/src. A bare `tsc -p .` rewrites every file of dist/src but not the bundle, so a bundle older
// than dist/src is not the code just built: then the modules of dist/src run instead.
import { statSync } from "node:fs";

// A reader that went away (`podroutes list | head`): stop quietly with the status of a process ended by
// SIGPIPE (128 + 13), as git and kubectl do, instead of an unhandled EPIPE and its stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error) => {
    if (error.code === "EPIPE") process.exit(141);
    throw error;
  });
}

const bundle = new URL("../dist/podroutes.mjs", import.meta.url);
const modules = new URL("../dist/src/cli/main.js", import.meta.url);
const modifiedMs = (url) => statSync(url, { throwIfNoEntry: false })?.mtimeMs ?? -Infinity;
const { main } = await import(modifiedMs(bundle) >= modifiedMs(modules) ? bundle.href : modules.href);
process.exitCode = await main(process.argv.slice(2));
