/**
 * The yaml library, loaded on first use. It is the largest module podroutes reads at start-up (about
 * 70 files, tens of milliseconds), and most runs need none of it: the column file formats, the lab and
 * cloud sources, and table output. Loaded with require so that its callers stay synchronous (yaml ships
 * a CommonJS build for Node, the same one an import would load).
 */
import { createRequire } from "node:module";
import type * as Yaml from "yaml";

let loaded: typeof Yaml | undefined;

export function yaml(): typeof Yaml {
  loaded ??= createRequire(import.meta.url)("yaml") as typeof Yaml;
  return loaded;
}
