/**
 * The real Kubernetes programs the lab runs (etcd, kube-apiserver, kube-controller-manager), built from
 * the Go module pinned in testkit/kubernetes/go (go.mod and go.sum: one Kubernetes release for every
 * k8s.io module) into a cache outside the repository, once per machine and again only when the pins
 * change. A user who already has the binaries (Kubernetes the Hard Way downloads them) names their
 * directory with PODROUTES_KUBERNETES_BIN_DIR and nothing is built.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { PodroutesError, type ErrorKind } from "../../errors.js";
import { packagePath } from "../../package-path.js";

/** go build's flags besides -ldflags (static, reproducible paths, no VCS stamp). */
const BUILD_FLAGS = ["-trimpath", "-buildvcs=false"];

export const PROGRAMS = ["etcd", "kube-apiserver", "kube-controller-manager"] as const;
export type Program = (typeof PROGRAMS)[number];

/** Where each program is, and which Kubernetes release it is. */
export interface KubernetesBinaries {
  dir: string;
  release: string;
  path: Record<Program, string>;
}

/** The programs cannot be had: Go missing, the module proxy unreachable, a compile error. */
export class KubernetesBuildError extends PodroutesError {
  readonly kind: ErrorKind = "target";
  constructor(message: string) {
    super(message);
    this.name = "KubernetesBuildError";
  }
}

/** testkit/kubernetes/go, from src/lab/kubernetes (sources) or dist/src/lab/kubernetes (the build). */
export function goModuleDir(): string {
  const goMod = packagePath(join("testkit", "kubernetes", "go", "go.mod"));
  if (goMod) return dirname(goMod);
  throw new KubernetesBuildError("testkit/kubernetes/go/go.mod not found: the real Kubernetes programs are built from a podroutes source checkout");
}

/** The release the module pins (`v1.37.2`). */
export function pinnedRelease(moduleDir = goModuleDir()): string {
  const release = readFileSync(join(moduleDir, "go.mod"), "utf8").match(/^\s*k8s\.io\/kubernetes (v\S+)/m)?.[1];
  if (!release) throw new KubernetesBuildError(`${moduleDir}/go.mod requires no k8s.io/kubernetes version`);
  return release;
}

/** The cache directory for these pins: a digest of everything that decides the binaries. */
export function cacheDir(moduleDir = goModuleDir()): string {
  return goCacheDir(kubernetesPrograms(moduleDir));
}

/**
 * Go programs built from a module of ours (pinned by its go.mod and go.sum) into a cache outside the
 * repository: the control plane's (below) and the peers' the benchmarks compare podroutes with
 * (testkit/peers). One builder for both, so both get the lock, the stamp and the progress lines.
 */
export interface GoPrograms {
  /** What is built, for messages: "Kubernetes programs". */
  what: string;
  moduleDir: string;
  /** The cache's subdirectory: "kubernetes", "peers". */
  cacheName: string;
  /** The pinned release that names the cache directory (`v1.37.2`). */
  release: string;
  /** Files of the module, besides go.mod and go.sum, that decide the binaries (mains of ours). */
  sources: string[];
  /** `go build` package arguments. */
  packages: string[];
  /** The binaries the build leaves (each package's last path element). */
  programs: readonly string[];
  /** -X flags (versions); -s -w are added. */
  ldflags: string[];
  /** cgo on (flannel's udp backend needs it); off builds static binaries. */
  cgo?: boolean;
}

/** The cache directory of a set of programs: a digest of the pins, our sources and how they are built. */
export function goCacheDir(spec: GoPrograms): string {
  const digest = createHash("sha256");
  for (const file of ["go.mod", "go.sum", ...spec.sources]) digest.update(`${file}\0`).update(readFileSync(join(spec.moduleDir, file)));
  // How they are built decides them too.
  digest.update(`${BUILD_FLAGS.join(" ")}\0${spec.ldflags.join(" ")}`);
  if (spec.cgo) digest.update("\0cgo");
  const base = process.env.PODROUTES_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "podroutes");
  return join(base, spec.cacheName, `${spec.release}-${digest.digest("hex").slice(0, 12)}`);
}

function kubernetesPrograms(moduleDir: string): GoPrograms {
  const release = pinnedRelease(moduleDir);
  return {
    what: "Kubernetes programs",
    moduleDir,
    cacheName: "kubernetes",
    release,
    sources: ["etcd/main.go"],
    packages: ["./etcd", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager"],
    programs: PROGRAMS,
    ldflags: versionLdflags(release),
  };
}

function located(dir: string, release: string): KubernetesBinaries {
  return { dir, release, path: Object.fromEntries(PROGRAMS.map((p) => [p, join(dir, p)])) as Record<Program, string> };
}

/** The -X flags that make the programs report the real release (`kubectl version`), not v0.0.0-master. */
export function versionLdflags(release: string): string[] {
  const [major, minor] = release.slice(1).split(".");
  const flags: string[] = [];
  for (const pkg of ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"]) {
    flags.push(`-X ${pkg}.gitVersion=${release}`, `-X ${pkg}.gitMajor=${major}`, `-X ${pkg}.gitMinor=${minor}`, `-X ${pkg}.gitTreeState=clean`);
  }
  return flags;
}

/**
 * The binaries, built first if the cache lacks them. `progress` hears each package as `go build -v`
 * names it (about 2,000 in a cold build, minutes on 2 cores). Two runs at once build once: the second
 * waits on the first's lock.
 */
export async function kubernetesBinaries(progress: (line: string) => void = () => {}): Promise<KubernetesBinaries> {
  const given = process.env.PODROUTES_KUBERNETES_BIN_DIR;
  if (given) {
    const missing = PROGRAMS.filter((p) => !existsSync(join(given, p)));
    if (missing.length) throw new KubernetesBuildError(`PODROUTES_KUBERNETES_BIN_DIR=${given} has no ${missing.join(", ")}`);
    return located(given, "(given)");
  }
  const spec = kubernetesPrograms(goModuleDir());
  return located(await buildGoPrograms(spec, progress), spec.release);
}

/** Builds `spec`'s programs unless its cache directory has them; resolves to the directory holding them. */
export async function buildGoPrograms(spec: GoPrograms, progress: (line: string) => void = () => {}): Promise<string> {
  const dir = goCacheDir(spec);
  const done = join(dir, "bin", ".complete");
  if (existsSync(done)) return join(dir, "bin");
  await mkdir(dir, { recursive: true });
  // flock(1) serializes builders of the same pins; the loser finds the stamp and returns.
  const staging = join(dir, `bin.${process.pid}`);
  const script = [
    `[ -e ${JSON.stringify(done)} ] && exit 0`,
    `rm -rf ${JSON.stringify(staging)} && mkdir -p ${JSON.stringify(staging)}`,
    `exec go build -v ${BUILD_FLAGS.join(" ")} -ldflags "$LDFLAGS" -o ${JSON.stringify(staging + "/")} ${spec.packages.join(" ")}`,
  ].join("\n");
  const ldflags = ["-s", "-w", ...spec.ldflags].join(" ");
  const env = { ...process.env, CGO_ENABLED: spec.cgo ? "1" : "0", LDFLAGS: ldflags };
  const output = await goBuild(["flock", join(dir, ".lock"), "sh", "-c", script], spec.moduleDir, env, spec.what, progress);
  if (!existsSync(done)) {
    if (!spec.programs.every((p) => existsSync(join(staging, p)))) throw new KubernetesBuildError(`building the ${spec.what} (${spec.release}) left no binaries:\n${output}`);
    await rm(join(dir, "bin"), { recursive: true, force: true });
    await rename(staging, join(dir, "bin"));
    await writeFile(done, `${spec.release}\n`);
  }
  return join(dir, "bin");
}

function goBuild(argv: string[], cwd: string, env: NodeJS.ProcessEnv, what: string, progress: (line: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    const errors: string[] = [];
    let packages = 0;
    let rest = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        // go build -v names each package as it builds it; everything else is an error or a download.
        if (/^[\w.-]+(\/[\w.@~+-]+)*$/.test(line)) {
          // About 2,000 packages: a line every 100 is progress enough.
          if (++packages % 100 === 0) progress(`building ${what}: ${packages} packages compiled`);
        }
        else if (line.trim()) {
          errors.push(line);
          progress(line);
        }
      }
    });
    child.stdout.resume();
    child.once("error", (error) => reject(new KubernetesBuildError(`${argv[0]}: ${error.message} (is Go installed? the ${what} are built with it)`)));
    child.once("exit", (code) => {
      if (code === 0) return resolve(errors.join("\n"));
      resolve(Promise.reject(new KubernetesBuildError(buildFailure(errors, what))));
    });
  });
}

/** The operator's words for a failed build: the module the proxy would not serve, else go's own lines. */
export function buildFailure(lines: string[], what = "Kubernetes programs"): string {
  const fetch = lines.find((line) => /reading https?:\/\/\S+: \d{3}|dial tcp|proxyconnect|no such host|unrecognized import path|verifying .*: checksum mismatch/.test(line));
  // The proxy's URL names the module it failed to serve (https://HOST/MODULE/@v/VERSION.mod); the
  // line's first module@version is only the one that required it.
  const fromUrl = fetch?.match(/https?:\/\/[^/\s]+\/(\S+?)\/@v\/(v[^/\s]+?)\.(?:mod|zip|info)\b/);
  const module = fromUrl ?? fetch?.match(/(?:go: )?([\w.-]+\.[\w.-]+(?:\/[\w.~-]+)+)@(v[\w.+-]+)/);
  if (fetch) return `building the real ${what}: the Go module proxy did not serve ${module ? `${module[1]}@${module[2]}` : "a module"}: ${fetch.trim()}`;
  if (lines.some((line) => /go: command not found|executable file not found/.test(line))) return `building the real ${what} needs Go (go not found on PATH)`;
  return `building the real ${what} failed:\n${lines.slice(-20).join("\n")}`;
}
