/**
 * The SSH target: the Linux host-route target (one `ip` batch to read a node, one to write its whole
 * diff) over one SSH connection per node, plus what only SSH needs: the persistence unit kept in step
 * with the routes, and failures classified per node.
 *
 * Persistence is kept in step whenever the unit is installed on a node (so an apply without
 * `--persist` does not leave a stale route file behind); `--persist` installs it where it is missing.
 * After a write, the route file is rebuilt from what the node then holds, so a partly failed write
 * persists only what is really there. A node left with no podroutes route (`delete`) loses the unit.
 */
import type { Inventory } from "../../model.js";
import type { ActionResult, CallOptions, ExtraAction, OpenOptions, OpenTable, TableDiff, TableRef, WriteContext } from "../target.js";
import { HostRoutesTarget, type HostRoutesOptions } from "../linux/host-routes.js";
import { observedRoutes } from "../linux/iproute.js";
import type { IpResult, IpRunner } from "../linux/runner.js";
import { checkPermission, remoteScript, SshError } from "./connection.js";
import { INSTALL_SCRIPT, REMOVE_SCRIPT, renderBatch, STATUS_SCRIPT, UNIT_NAME } from "./persist.js";

/** An IpRunner that can also run podroutes' fixed scripts (the persistence unit). */
export interface SshRunner extends IpRunner {
  exec(command: string, stdin?: string, options?: CallOptions): Promise<IpResult>;
}

export interface SshTargetOptions extends HostRoutesOptions {
  persist: boolean;
  sudo: boolean;
  user: string;
  cluster: string;
  /** Closes what the connections share (the jump host's connection). */
  release?: () => Promise<void>;
}

export const PERSIST_ACTION = "persist";

export class SshTarget extends HostRoutesTarget {
  constructor(private readonly ssh: SshTargetOptions) {
    super(ssh);
  }

  private async sshRunner(table: TableRef, inventory: Inventory): Promise<SshRunner> {
    return (await this.runner(table, inventory)) as SshRunner;
  }

  private async script(table: TableRef, inventory: Inventory, script: string, stdin?: string, options: CallOptions = {}): Promise<IpResult> {
    const runner = await this.sshRunner(table, inventory);
    const result = await runner.exec(remoteScript(script, this.ssh.sudo), stdin, options);
    checkPermission(result, table.id, this.ssh.user, this.ssh.sudo);
    if (result.code !== 0) throw new SshError("permission", table.id, `the persistence step failed on ${runner.where}: ${result.stderr.trim() || `exit ${result.code}`}`);
    return result;
  }

  /**
   * The host-route table, plus the node's persistence: its route file read beside the routes, the persist
   * action in review, and the file rebuilt after the write from what the node then holds.
   */
  override async open(table: TableRef, inventory: Inventory, options: OpenOptions): Promise<OpenTable> {
    const [opened, status] = await Promise.allSettled([super.open(table, inventory, options), this.script(table, inventory, STATUS_SCRIPT, undefined, options)]);
    if (opened.status === "rejected") throw opened.reason;
    if (status.status === "rejected") {
      await opened.value.release();
      throw status.reason;
    }
    const hostTable = opened.value;
    const persisted = status.value.stdout;
    return {
      routes: hostTable.routes,
      review: async (diff) => {
        const review = (await hostTable.review?.(diff)) ?? { warnings: [], refusals: [], actions: [] };
        const persist = this.persistReview(diff, persisted);
        return { ...review, warnings: [...review.warnings, ...persist.warnings], actions: [...review.actions, ...persist.actions] };
      },
      write: async (changes, actions, context) => {
        const written = await hostTable.write(changes, actions.filter((action) => action.id !== PERSIST_ACTION), context);
        const persistActions = actions.filter((action) => action.id === PERSIST_ACTION);
        if (!persisted && !this.ssh.persist && !persistActions.length) return written;
        // The persist action is done by rebuilding the file from what the node holds after the write.
        const failure = await this.persistWhatIsThere(table, inventory, context, persisted);
        return {
          results: failure ? written.results.map((result) => (result.ok ? { ...result, ok: false, error: failure } : result)) : written.results,
          actions: [...written.actions, ...persistActions.map((action): ActionResult => (failure ? { action, ok: false, error: failure } : { action, ok: true }))],
        };
      },
      release: () => hostTable.release(),
    };
  }

  private render(table: TableRef, routes: { destination: string; nextHop: string }[]): string {
    return renderBatch(routes, { proto: this.ssh.proto, node: table.node ?? table.id, cluster: this.ssh.cluster });
  }

  /** Installs, rewrites or removes the unit so that it holds `content`. */
  private async syncPersist(table: TableRef, inventory: Inventory, content: string, options: CallOptions = {}): Promise<void> {
    if (content) await this.script(table, inventory, INSTALL_SCRIPT, content, options);
    else await this.script(table, inventory, REMOVE_SCRIPT, undefined, options);
  }

  /** The route file a table's plan leaves (`content`) and the action that writes it, if one is needed. */
  private persistReview(diff: TableDiff, current: string): { content: string; actions: ExtraAction[]; warnings: string[] } {
    // What the node will own after the plan: unchanged routes, creates and replaces (conflicts are not written).
    const after = [...diff.unchanged, ...diff.changes.flatMap((c) => (c.action === "delete" ? [] : [c.route]))];
    const content = this.render(diff.table, after);
    const warnings = !this.ssh.persist && !current ? [`routes written over SSH vanish at reboot; pass --persist to install ${UNIT_NAME} on each node`] : [];
    if (diff.error !== undefined || content === current || (!this.ssh.persist && !current)) return { content, actions: [], warnings: diff.error === undefined ? warnings : [] };
    const action: ExtraAction = {
      table: diff.table.id,
      id: PERSIST_ACTION,
      description: content
        ? `${current ? "update" : "install"} ${UNIT_NAME}: re-applies ${after.length} route${after.length === 1 ? "" : "s"} at boot`
        : `remove ${UNIT_NAME}: no podroutes route left to re-apply`,
    };
    return { content, actions: [action], warnings };
  }

  override async close(): Promise<void> {
    await super.close();
    await this.ssh.release?.();
  }

  /**
   * Rebuilds the node's route file from what it holds now, not from what was planned: a failed line must
   * not come back at boot. Returns why it failed, if it did (the routes are written; only their
   * persistence failed, which fails the run).
   */
  private async persistWhatIsThere(table: TableRef, inventory: Inventory, context: WriteContext, current: string): Promise<string | undefined> {
    const owned = observedRoutes(await this.state(table, inventory, context), this.ssh.proto).filter((r) => r.owned && r.nextHop);
    const content = this.render(table, owned.map((r) => ({ destination: r.destination, nextHop: r.nextHop! })));
    if (content === current) return undefined;
    try {
      await this.syncPersist(table, inventory, content, context);
      return undefined;
    } catch (error) {
      return `written, but ${UNIT_NAME} could not be updated, so it would not survive a reboot: ${(error as Error).message}`;
    }
  }
}
