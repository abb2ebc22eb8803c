/**
 * `lab up --ssh`: a real OpenSSH server (Debian's openssh-server) on every lab worker and on the
 * jumpbox, so the SSH target is tested against what it meets on a real node. Keys are generated per lab
 * under the lab's state directory: one host key per node, one authorized client key, one key that is
 * not authorized (for auth-failure tests), and a known_hosts file with every node's key.
 *
 * Lab nodes are namespaces on one machine and share its filesystem; a real node has its own /etc. Each
 * sshd therefore runs in a mount namespace of its own with an overlay on /etc whose writes land in the
 * node's directory (`etc-upper`): what podroutes installs on a node (the persistence unit) stays on
 * that node, never in the machine's /etc. The same overlay gives each node an unprivileged user,
 * `podroutes`, for permission tests. Each sshd gets its node's hostname (UTS namespace) too.
 */
import { spawn } from "node:child_process";
import { existsSync, openSync, closeSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { run } from "../process.js";
import { saveLab, type LabState } from "./lab.js";

/** The unprivileged user each node has (in its /etc overlay only). */
export const LAB_UNPRIVILEGED_USER = "podroutes";
const UNPRIVILEGED_UID = 4711;

export interface LabSshNode {
  name: string;
  netns: string;
  address: string;
  dir: string;
  hostKey: string;
  /** The node's own /etc changes (overlay upper dir): where its persistence files land. */
  etcUpper: string;
}

/** What `lab up --ssh` records in `state.extra.ssh`. */
export interface LabSsh {
  dir: string;
  /** Authorized for root and for the unprivileged user. */
  clientKey: string;
  /** A key no node accepts. */
  wrongKey: string;
  knownHosts: string;
  nodes: LabSshNode[];
}

export function labSsh(state: LabState): LabSsh | undefined {
  return state.extra?.ssh as LabSsh | undefined;
}

/** Where a file the node sees at `path` (under /etc) lives on this machine, if the node wrote it. */
export function nodeEtcPath(state: LabState, node: string, path: string): string {
  const entry = labSsh(state)?.nodes.find((n) => n.name === node);
  if (!entry || !path.startsWith("/etc/")) throw new Error(`lab: no ssh node ${node}, or ${path} is not under /etc`);
  return join(entry.etcUpper, path.slice("/etc/".length));
}

async function must(command: string, args: string[], what: string): Promise<string> {
  const result = await run(command, args);
  if (result.code !== 0) throw new Error(`lab: ${what} failed: ${command} ${args.join(" ")}: ${(result.stderr || result.stdout).trim()}`);
  return result.stdout;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function keygen(path: string, comment: string): Promise<void> {
  await rm(path, { force: true });
  await rm(`${path}.pub`, { force: true });
  await must("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path], "generating a key (is openssh-client installed?)");
}

function sshdConfig(node: LabSshNode, authorizedKeys: string): string {
  return [
    "Port 22",
    `ListenAddress ${node.address}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${node.hostKey}`,
    `PidFile ${join(node.dir, "sshd.pid")}`,
    `AuthorizedKeysFile ${authorizedKeys}`,
    "UsePAM no",
    // Keys live under the lab's state directory, not in home directories with sshd's expected modes.
    "StrictModes no",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin prohibit-password",
    "AllowTcpForwarding yes",
    "PrintMotd no",
    "LogLevel INFO",
    "",
  ].join("\n");
}

/** Gives the node's /etc (through its overlay) an unprivileged user: passwd and shadow entries. */
async function addUnprivilegedUser(node: LabSshNode): Promise<void> {
  const passwd = await readFile("/etc/passwd", "utf8");
  const shadow = await readFile("/etc/shadow", "utf8").catch(() => "");
  const user = LAB_UNPRIVILEGED_USER;
  if (passwd.split("\n").some((line) => line.startsWith(`${user}:`))) return;
  // root's home on the node is its own empty directory, as on a fresh node: the machine's /root
  // (shell start-up files, keys) is not the node's.
  const rootHome = join(node.dir, "root");
  await mkdir(rootHome, { recursive: true, mode: 0o700 });
  const lines = passwd.trimEnd().split("\n").map((line) => (line.startsWith("root:") ? line.split(":").map((field, i) => (i === 5 ? rootHome : field)).join(":") : line));
  await writeFile(join(node.etcUpper, "passwd"), `${lines.join("\n")}\n${user}:x:${UNPRIVILEGED_UID}:${UNPRIVILEGED_UID}:podroutes lab user:/tmp:/bin/sh\n`, { mode: 0o644 });
  await writeFile(join(node.etcUpper, "shadow"), `${shadow.trimEnd()}\n${user}:*:19000:0:99999:7:::\n`, { mode: 0o640 });
}

/**
 * Starts (or restarts) one node's sshd: `ip netns exec NS unshare --mount --uts sh -c ... exec sshd -D`,
 * every step an exec, so the pid spawn returns is sshd's. `newHostKey` gives the node a new host key
 * (known_hosts keeps the old one: the "host reinstalled or impostor" case).
 */
export async function startSshd(state: LabState, name: string, options: { newHostKey?: boolean } = {}): Promise<number> {
  const ssh = labSsh(state);
  const node = ssh?.nodes.find((n) => n.name === name);
  if (!ssh || !node) throw new Error(`lab: ${state.name} has no ssh node ${name} (run lab up --ssh)`);
  await stopSshd(state, name);
  if (options.newHostKey) await keygen(node.hostKey, `podroutes-lab-${state.name}-${name}-new`);
  await mkdir("/run/sshd", { recursive: true });
  const logPath = join(node.dir, "sshd.log");
  await writeFile(logPath, "");
  const logFd = openSync(logPath, "a");
  const work = join(node.dir, "etc-work");
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  // The script is a constant; the node name and paths are positional arguments.
  const script = 'hostname "$0" && mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && exec /usr/sbin/sshd -D -e -f "$3"';
  const child = spawn(
    "ip",
    ["netns", "exec", node.netns, "unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script, name, node.etcUpper, work, join(node.dir, "sshd_config")],
    { detached: true, stdio: ["ignore", logFd, logFd] },
  );
  closeSync(logFd);
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error(`lab: could not start sshd for ${name}`);
  state.processes = [...(state.processes ?? []).filter((p) => p.what !== `sshd ${name}`), { netns: node.netns, pid, what: `sshd ${name}` }];
  await saveLab(state);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const log = await readFile(logPath, "utf8");
    if (log.includes(`Server listening on ${node.address} port 22`)) return pid;
    if (!alive(pid) || Date.now() > deadline) {
      throw new Error(`lab: sshd for ${name} did not start (is openssh-server installed?): ${log.trim() || "no output"}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Stops one node's sshd (by the pid the lab recorded); new connections to it are then refused. */
export async function stopSshd(state: LabState, name: string): Promise<void> {
  const entry = state.processes?.find((p) => p.what === `sshd ${name}`);
  if (!entry) return;
  if (alive(entry.pid)) {
    process.kill(entry.pid, "SIGTERM");
    for (let i = 0; i < 250 && alive(entry.pid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  state.processes = state.processes!.filter((p) => p !== entry);
  await saveLab(state);
}

/** Starts sshd on every worker and the jumpbox; a second call restarts only those not running. */
export async function labSshUp(state: LabState, log: (line: string) => void = () => {}): Promise<LabSsh> {
  const dir = join(state.stateDir, "ssh");
  let ssh = labSsh(state);
  if (!ssh) {
    // Readable by the unprivileged user, who needs authorized_keys; private keys stay 0600 (ssh-keygen).
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const clientKey = join(dir, "id_ed25519");
    const wrongKey = join(dir, "wrong_ed25519");
    await keygen(clientKey, `podroutes-lab-${state.name}`);
    await keygen(wrongKey, `podroutes-lab-${state.name}-not-authorized`);
    const authorizedKeys = join(dir, "authorized_keys");
    await writeFile(authorizedKeys, await readFile(`${clientKey}.pub`, "utf8"), { mode: 0o644 });
    const hosts = [
      { name: "jumpbox", netns: state.jumpboxNetns, address: state.jumpboxIP },
      ...state.workers.map((w) => ({ name: w.name, netns: w.netns, address: w.internalIP })),
    ];
    const nodes: LabSshNode[] = [];
    for (const host of hosts) {
      const nodeDir = join(dir, host.name);
      const node: LabSshNode = { ...host, dir: nodeDir, hostKey: join(nodeDir, "ssh_host_ed25519_key"), etcUpper: join(nodeDir, "etc-upper") };
      await mkdir(node.etcUpper, { recursive: true });
      await keygen(node.hostKey, `podroutes-lab-${state.name}-${host.name}`);
      await writeFile(join(nodeDir, "sshd_config"), sshdConfig(node, authorizedKeys));
      await addUnprivilegedUser(node);
      nodes.push(node);
    }
    const knownHosts = join(dir, "known_hosts");
    const lines = await Promise.all(
      nodes.map(async (node) => {
        const [type, key] = (await readFile(`${node.hostKey}.pub`, "utf8")).trim().split(/\s+/);
        return `${node.address} ${type} ${key}\n`;
      }),
    );
    await writeFile(knownHosts, lines.join(""), { mode: 0o644 });
    ssh = { dir, clientKey, wrongKey, knownHosts, nodes };
    state.extra = { ...(state.extra ?? {}), ssh };
    await saveLab(state);
  }
  for (const node of ssh.nodes) {
    const running = state.processes?.find((p) => p.what === `sshd ${node.name}`);
    if (running && alive(running.pid)) continue;
    const pid = await startSshd(state, node.name);
    log(`sshd on ${node.name} ${node.address}:22 (pid ${pid})`);
  }
  log(`ssh: key ${ssh.clientKey}, known_hosts ${ssh.knownHosts}; run podroutes inside the jumpbox: ip netns exec ${state.jumpboxNetns} podroutes ... --target ssh --ssh-key ${ssh.clientKey} --known-hosts ${ssh.knownHosts}`);
  return ssh;
}

export function sshdRunning(state: LabState, name: string): boolean {
  const entry = state.processes?.find((p) => p.what === `sshd ${name}`);
  return !!entry && alive(entry.pid) && existsSync(join(labSsh(state)!.dir, name));
}
