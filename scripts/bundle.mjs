// Bundles the compiled CLI (dist/src, from `tsc -p .`) into one file, dist/podroutes.mjs, which
// bin/podroutes.js runs. Why: Node pays per module it resolves and loads (package.json lookups, realpath,
// the CommonJS lexer for commander and ipaddr.js), and one file starts a cold `podroutes` measurably
// sooner (issue 11 item 5: about 60 ms of `--help`'s 150 ms, 35 ms of a 5,000-route no-op apply's 350).
//
// Only what every run loads goes in: our modules and the packages they import statically. A package
// reached by `import()` (ssh2, the AWS SDK, google-auth-library) stays in node_modules and is still loaded
// only when its target is used, as is yaml (required on first use by src/yaml.ts).
// esbuild (a dev dependency) is the bundler: fast, and it keeps tsc's source maps through the bundle.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

/** Packages loaded by `import()` are left to node_modules; statically imported ones are bundled. */
const lazyPackagesStayExternal = {
  name: "lazy-packages-stay-external",
  setup(bundle) {
    bundle.onResolve({ filter: /^[^./]/ }, (args) => (args.kind === "dynamic-import" ? { path: args.path, external: true } : undefined));
  },
};

await build({
  absWorkingDir: root,
  entryPoints: ["dist/src/cli/main.js"],
  outfile: "dist/podroutes.mjs",
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: true,
  logLevel: "warning",
  plugins: [lazyPackagesStayExternal],
  // The bundled CommonJS packages (commander, ipaddr.js) call require() for Node's own modules, which an
  // ES module does not have: give the bundle one.
  banner: { js: 'import { createRequire as podroutesCreateRequire } from "node:module";\nconst require = podroutesCreateRequire(import.meta.url);' },
});
