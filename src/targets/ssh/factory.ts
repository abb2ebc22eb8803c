/**
 * `--target ssh`: the routes of every node's own kernel table, written over SSH as the Vultr seed does
 * by hand, but with one connection per node, host keys checked, a node's whole diff in one `ip` batch,
 * nodes in parallel, and (with --persist) a unit that re-applies the routes at boot. Every flag is
 * checked here, before any connection.
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import type { Client } from "ssh2";
import { UsageError } from "../../errors.js";
import { readOption, wholeNumber, type CallObserver, type FlagValues, type OptionSpec, type ResolvedOptions } from "../../options.js";
import type { TargetFactory } from "../registry.js";
import { hostRouteSettings, lockTimeoutOption, protoOption } from "../linux/factories.js";
import { checkHost, checkUser, connectSsh, loadSsh2, parseEndpoint, SshError, sshRunner, type SshSettings } from "./connection.js";
import { KnownHostsStore } from "./known-hosts.js";
import { SshTarget, type SshRunner } from "./target.js";

/** Keys `ssh` tries when none is given, in its order. */
const DEFAULT_KEYS = ["id_ed25519", "id_ecdsa", "id_rsa"];

const userOption: OptionSpec<string> = { flags: "--ssh-user <user>", description: "ssh: user to log in as (non-root users need --sudo)", default: "root", parse: checkUser };
const portOption: OptionSpec<number> = { flags: "--ssh-port <port>", description: "ssh: port of the nodes' sshd", default: "22", parse: wholeNumber(1, 65535) };
const jumpOption: OptionSpec<string> = {
  flags: "--jump <user@host>",
  description: "ssh: reach the nodes through this jump host ([user@]host[:port])",
  parse: (text) => {
    parseEndpoint(text, { user: "root", port: 22 }); // the user may come from --ssh-user: parsed for real in sshSettings
    return text;
  },
};

/** The flags that exclude each other. */
function checkHostKeyFlags(options: FlagValues): void {
  if (options.insecureIgnoreHostKeys === true && options.acceptNew === true) {
    throw new UsageError("--accept-new and --insecure-ignore-host-keys exclude each other", { flag: "--accept-new" });
  }
}

/** Reads and parses --ssh-key: a missing file or one that is no usable key is a usage error, before any connection. */
async function readKey(path: string): Promise<Buffer> {
  let key: Buffer;
  try {
    key = await readFile(path);
  } catch (error) {
    throw new UsageError(`--ssh-key ${path}: cannot read it: ${(error as Error).message}`, { flag: "--ssh-key", cause: error });
  }
  const parsed = (await loadSsh2()).utils.parseKey(key);
  if (parsed instanceof Error) throw new UsageError(`--ssh-key ${path}: not a private key podroutes can use: ${parsed.message}`, { flag: "--ssh-key", cause: parsed });
  return key;
}

/** Reads and checks the flags into connection settings. */
export async function sshSettings(options: ResolvedOptions): Promise<SshSettings> {
  checkHostKeyFlags(options);
  const user = readOption(userOption, options)!;
  const port = readOption(portOption, options)!;
  const jumpText = readOption(jumpOption, options);
  const jump = jumpText === undefined ? undefined : parseEndpoint(jumpText, { user, port: 22 });
  const insecure = options.insecureIgnoreHostKeys === true;
  const acceptNew = options.acceptNew === true;

  const env = options.env;
  const agent = env.SSH_AUTH_SOCK || undefined;
  let privateKey: Buffer | undefined;
  if (options.sshKey) privateKey = await readKey(String(options.sshKey));
  else if (!agent) {
    for (const name of DEFAULT_KEYS) {
      privateKey = await readFile(join(homedir(), ".ssh", name)).catch(() => undefined);
      if (privateKey) break;
    }
    if (!privateKey) throw new UsageError("ssh: no key to log in with: pass --ssh-key FILE (the seed's kubernetes.id_rsa) or start an ssh-agent (SSH_AUTH_SOCK)", { flag: "--ssh-key" });
  }
  if (insecure) {
    options.warn("ssh: --insecure-ignore-host-keys: host keys are NOT checked (the seed's StrictHostKeyChecking=no); anyone on the path can pose as a node and see its routes");
  }
  return {
    user,
    port,
    ...(privateKey ? { privateKey } : {}),
    ...(agent ? { agent } : {}),
    knownHosts: new KnownHostsStore(String(options.knownHosts ?? join(homedir(), ".ssh", "known_hosts"))),
    acceptNew,
    insecure,
    sudo: options.sudo === true,
    ...(jump ? { jump } : {}),
    timeout: 15,
  };
}

export const sshTarget: TargetFactory = {
  name: "ssh",
  description: "every node's own routing table, over SSH (one connection and one ip batch per node)",
  options: [
    protoOption,
    lockTimeoutOption,
    userOption,
    { flags: "--ssh-key <file>", description: "ssh: private key (default: ssh-agent via SSH_AUTH_SOCK, else ~/.ssh/id_*)" },
    portOption,
    { flags: "--sudo", description: "ssh: run ip with `sudo -n` (passwordless sudo)" },
    jumpOption,
    { flags: "--known-hosts <file>", description: "ssh: known_hosts file (default ~/.ssh/known_hosts)" },
    { flags: "--accept-new", description: "ssh: trust and record hosts not yet in known_hosts (a changed key is still refused)" },
    { flags: "--insecure-ignore-host-keys", description: "ssh: do not check host keys at all (the seed's StrictHostKeyChecking=no; unsafe)" },
    { flags: "--persist", description: "ssh: install a systemd unit on each node that re-applies its routes at boot" },
  ],
  check: checkHostKeyFlags,
  async create(options) {
    const hostRoutes = hostRouteSettings(options);
    const settings = await sshSettings(options);
    let jump: Promise<Client> | undefined;
    const viaJump = () => {
      if (!settings.jump) return undefined;
      const { user, host, port } = settings.jump;
      jump ??= connectSsh({ node: `jump host ${host}`, host, port, user }, settings);
      // A failed jump is not kept: the next node tries again.
      jump.catch(() => (jump = undefined));
      return jump;
    };
    const { signal, calls } = options;
    const target = new SshTarget({
      name: "ssh",
      ...hostRoutes,
      persist: options.persist === true,
      sudo: settings.sudo,
      user: settings.user,
      cluster: options.cluster || "kubernetes",
      async tables(inventory) {
        // Every address is checked before any connection, so a bad one fails the whole run up front.
        for (const node of inventory.nodes) checkHost(node.sshAddress ?? node.internalIPs[0] ?? "", node.name);
        return inventory.nodes.map((node) => ({ id: node.name, scope: "host" as const, node: node.name }));
      },
      async connect(table, inventory) {
        signal?.throwIfAborted();
        const node = inventory.nodes.find((n) => n.name === table.node)!;
        const target = { node: node.name, host: checkHost(node.sshAddress ?? node.internalIPs[0]!, node.name), port: settings.port, user: settings.user };
        const via = viaJump();
        const finished = calls?.started("ssh.connect");
        const client = await connectSsh(target, settings, via ? await via : undefined).then(
          (connected) => (finished?.("ok"), connected),
          (error: unknown) => {
            finished?.(error instanceof SshError ? error.failure : "error");
            throw error;
          },
        );
        const runner = sshRunner(client, target, settings, () => {});
        return calls ? observedRunner(runner, calls) : runner;
      },
      async release() {
        if (jump) (await jump.catch(() => undefined))?.end();
      },
    });
    // A controller's leadership ended: close every connection, so no batch starts after it.
    signal?.addEventListener("abort", () => void target.close(), { once: true });
    return target;
  },
};

/** A runner that reports each remote command to `calls` (`ssh.ip`, `ssh.exec`, `ssh.lock`, `ssh.write`) with its outcome. */
function observedRunner(runner: SshRunner, calls: CallObserver): SshRunner {
  const observe = async <T>(method: string, run: () => Promise<T>, outcome: (value: T) => string) => {
    const finished = calls.started(method);
    try {
      const value = await run();
      finished(outcome(value));
      return value;
    } catch (error) {
      finished(error instanceof SshError ? error.failure : "error");
      throw error;
    }
  };
  const exit = (result: { code: number }) => (result.code === 0 ? "ok" : `exit ${result.code}`);
  return {
    where: runner.where,
    ip: (args, stdin, options) => observe("ssh.ip", () => runner.ip(args, stdin, options), exit),
    read: (options) => observe("ssh.ip", () => runner.read(options), () => "ok"),
    exec: (command, stdin, options) => observe("ssh.exec", () => runner.exec(command, stdin, options), exit),
    // The lock's read and the batches written under it are remote commands too.
    lock: async (request) => {
      const locked = await observe("ssh.lock", () => runner.lock(request), () => "ok");
      return {
        get state() {
          return locked.state;
        },
        get owner() {
          return locked.owner;
        },
        write: (script) => observe("ssh.write", () => locked.write(script), exit),
        release: () => locked.release(),
      };
    },
    close: () => runner.close?.() ?? Promise.resolve(),
  };
}
