#!/usr/bin/env node
// The compiled CLI; `npm run build` (run by `npm test` and `npm run demo`) produces it.
import { main } from "../dist/src/cli/main.js";
process.exitCode = await main(process.argv.slice(2));
