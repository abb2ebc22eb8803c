/**
 * List-then-watch of one resource, kept in a local store: our own reflector, following client-go's
 * (tools/cache/reflector.go), because the client library's informer stops for good on errors (issue 9).
 *
 * - LIST with `limit=500` paging (`continue`); when a later page's token has expired (410), one full
 *   list without paging, as client-go's pager does;
 * - WATCH from the list's resourceVersion with `allowWatchBookmarks=true` and a random `timeoutSeconds`
 *   of 5–10 minutes; after a clean close, watch again from the last version seen (bookmarks advance it);
 * - 410 Expired, as the watch's HTTP answer or as an ERROR event in the stream → list again (at once
 *   when the watch had been serving, or when it is the first refusal since a watch last served — the
 *   usual answer of an API server back from a restart; after the backoff when watches keep being refused
 *   at their start, so a server that expires everything is not hammered);
 * - a resourceVersion newer than the server's (its etcd restored from a backup or replaced by an empty
 *   one): 504 "Too large resource version" (cause ResourceVersionTooLarge), as the watch's answer or an
 *   ERROR event → list again, as client-go does. A real kube-apiserver's watch cache does not say so to
 *   a watch, though: it answers 200 and stays silent (no event, no bookmark) until its revision passes
 *   the one asked for, then serves only what came after it, so everything in between would be lost. Only
 *   a list at that version is refused (after a 3 s wait). So before watching again after a failure (an
 *   API server that went away may come back with another store) or after a watch that ended with
 *   nothing at all, not even a bookmark, the reflector asks for one object at its version
 *   (`resourceVersionMatch=NotOlderThan`, `limit=1`); "too large" there means list again (issue 25 item 4);
 * - any other failure → try again after a backoff of 0.8 s doubling to 30 s, plus up to the same again
 *   as jitter (client-go's 800ms/30s/2m/2.0/1.0), reset after 2 minutes without failure; but during the
 *   first minute of a run of failures the delay stops growing at 1.6 s (3.2 s with jitter), so an API
 *   server back after a short outage (a restart, an upgrade) is found within seconds, not after a delay
 *   grown to 13–26 s meanwhile; a watch that closes within a second having delivered nothing counts as a
 *   failure, so a server that closes at once is not hammered;
 * - no bytes for longer than the watch timeout plus a slack → the watch is abandoned and opened again
 *   (Node's HTTP/1.1 has no pings to find a dead connection);
 * - an AbortSignal stops it.
 *
 * A consumer can always tell "a complete, successful list" (the `synced` event, `hasSynced`) from a
 * failure (`error` events): an API error never empties the store, so it never reads as "no nodes".
 */
import { setTimeout as sleep } from "node:timers/promises";
import { errorFromStatus, KubeApiError, type ApiFailure, type KubeClient, type WatchEvent } from "./client.js";
import { parseListPage, type ListPage } from "./list-page.js";

/** The part of every Kubernetes object the reflector reads. */
export interface KubeObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
}

export type ReflectorEvent<T> =
  | { type: "added"; object: T }
  | { type: "modified"; object: T; previous: T }
  | { type: "deleted"; object: T }
  /** A complete list was read and the store replaced by it (after the first list and every relist). */
  | { type: "synced"; resourceVersion: string; objects: number }
  /** Something failed; the store is unchanged, and the reflector tries again after `retryInMs`. */
  | { type: "error"; error: KubeApiError; phase: "list" | "watch"; retryInMs: number };

/** Counters a metrics module reads. */
export interface ReflectorCounters {
  /** Complete lists, the first one included. */
  lists: number;
  /** Lists after the first (410 Expired, or a failure before a watch could resume). */
  relists: number;
  /** Full unpaged lists after a continue token expired. */
  continueExpired: number;
  watches: number;
  /** Watches opened again after one ended (cleanly or not). */
  watchRestarts: number;
  events: number;
  bookmarks: number;
  errors: Partial<Record<ApiFailure, number>>;
}

export interface BackoffSettings {
  initialMs: number;
  maxMs: number;
  /** Added jitter, as a share of the delay (1.0: up to the delay again). */
  jitter: number;
  /** A failure this long after the previous one starts again from `initialMs`. */
  resetAfterMs: number;
  /**
   * While a run of failures is younger than `forMs`, the delay grows no further than `maxMs`: short
   * outages (an API server restarting) are common, and a reconnect should follow their end closely.
   * After that it grows on towards the overall `maxMs`, as client-go's does, so a long outage is not
   * hammered by thousands of agents.
   */
  early?: { maxMs: number; forMs: number };
}

export const DEFAULT_BACKOFF: BackoffSettings = { initialMs: 800, maxMs: 30_000, jitter: 1.0, resetAfterMs: 120_000, early: { maxMs: 1600, forMs: 60_000 } };

/** client-go's exponential backoff manager: the delay before the next try. Pure, clock and random injected. */
export class Backoff {
  private attempt = 0;
  private lastFailureAt: number | undefined;
  /** When the current run of failures began. */
  private streakSince = 0;
  constructor(
    private readonly settings: BackoffSettings = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay after a failure at `now`. */
  next(now: number): number {
    if (this.lastFailureAt === undefined || now - this.lastFailureAt >= this.settings.resetAfterMs) {
      this.attempt = 0;
      this.streakSince = now;
    }
    this.lastFailureAt = now;
    const early = this.settings.early && now - this.streakSince < this.settings.early.forMs ? this.settings.early.maxMs : Infinity;
    const cap = Math.min(this.settings.maxMs, early);
    const base = Math.min(cap, this.settings.initialMs * 2 ** this.attempt);
    if (base < cap) this.attempt++;
    return Math.round(base + this.random() * this.settings.jitter * base);
  }
}

export interface ListOptions<T = unknown> {
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size (`limit`); 0 lists everything at once. */
  pageSize?: number;
  signal?: AbortSignal;
  /**
   * What of each object to keep, applied as each item is parsed (list-page.ts): a Node's whole object is
   * garbage before the next is built, instead of a page's or the whole list's living until the end.
   */
  transform?: (object: T) => T;
}

export interface ListResult<T> {
  items: T[];
  resourceVersion: string;
  pages: number;
  /** True when a continue token expired and the list was read again whole. */
  continueExpired: boolean;
}

/**
 * Lists every object, page by page; throws KubeApiError on any failure (never a partial list). The next
 * page is asked for as soon as a page's text is in, before that page is parsed and transformed (the API
 * server writes the list's metadata, continue token included, before its items): the server makes
 * page N+1 while this process parses page N, instead of each waiting for the other. The token the parse
 * finds decides: a page asked for with any other token is dropped and the right one asked for.
 */
export async function listAll<T>(client: KubeClient, path: string, options: ListOptions<T> = {}): Promise<ListResult<T>> {
  const keep = options.transform ?? ((object: T) => object);
  const base = { labelSelector: options.labelSelector || undefined, fieldSelector: options.fieldSelector || undefined };
  const limit = options.pageSize ?? 500;
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const items: T[] = [];
  let resourceVersion: string | undefined;
  let token: string | undefined;
  let ahead: { token: string; page: Promise<ListPage<T>>; stop: AbortController } | undefined;
  // Each page's items come transformed out of the parse (item by item where the text allows).
  const parse = (text: string): ListPage<T> => {
    const page = parseListPage(text, keep);
    if (page) return page;
    const whole = JSON.parse(text) as ListPage<T>;
    if (Array.isArray(whole?.items)) whole.items = whole.items.map(keep);
    return whole;
  };
  const get = (continueToken: string | undefined, pageSignal: AbortSignal = signal): Promise<ListPage<T>> =>
    client.request<ListPage<T>>("GET", path, {
      query: { ...base, ...(limit ? { limit } : {}), continue: continueToken },
      signal: pageSignal,
      parse,
      beforeParse: (text) => {
        const next = continueTokenIn(text);
        if (next === undefined) return;
        const dropped = new AbortController();
        const page = get(next, AbortSignal.any([signal, dropped.signal]));
        page.catch(() => undefined); // awaited in its turn, or dropped
        ahead = { token: next, page, stop: dropped };
      },
    });
  try {
    let next = get(undefined);
    for (let pages = 1; ; pages++) {
      let page: ListPage<T>;
      try {
        page = await next;
      } catch (error) {
        if (token !== undefined && error instanceof KubeApiError && error.failure === "expired") {
          const whole = checkList(await client.request<ListPage<T>>("GET", path, { query: base, signal, parse }), path);
          return { items: whole.items, resourceVersion: whole.resourceVersion, pages: pages, continueExpired: true };
        }
        throw error;
      }
      const checked = checkList(page, path);
      for (const item of checked.items) items.push(item);
      // Every page is read at the first page's version; the watch starts from it.
      resourceVersion ??= checked.resourceVersion;
      token = page.metadata?.continue || undefined;
      const asked = ahead;
      ahead = undefined;
      if (asked && asked.token !== token) asked.stop.abort();
      if (!token) return { items, resourceVersion, pages, continueExpired: false };
      next = asked?.token === token ? asked.page : get(token);
    }
  } finally {
    stop.abort(); // a page asked for ahead of a failure is not wanted any more
  }
}

/**
 * The continue token of a list answer's text, read from the list's own metadata before its items
 * (undefined when the text does not start that way: the page is then asked for after the parse).
 */
export function continueTokenIn(text: string): string | undefined {
  const items = text.indexOf('"items":');
  if (items < 0) return undefined;
  const found = /^\{(?:"kind":"[^"]*",|"apiVersion":"[^"]*",)*"metadata":\{[^{}]*"continue":"([^"\\]+)"[^{}]*\},"items":$/.exec(text.slice(0, items + 8));
  return found?.[1];
}

function checkList<T>(page: ListPage<T>, path: string): { items: T[]; resourceVersion: string } {
  // A list's answer of another shape (`null`, a string) is a decode failure like any other.
  const items = page?.items ?? [];
  const resourceVersion = page?.metadata?.resourceVersion;
  if (!Array.isArray(items) || typeof resourceVersion !== "string" || resourceVersion === "") {
    throw new KubeApiError(`GET ${path}: the answer is not a list with a resourceVersion`, 200, "Decode", undefined, { failure: "decode" });
  }
  return { items, resourceVersion };
}

export interface ReflectorOptions<T = unknown> {
  client: KubeClient;
  /** The collection, `/api/v1/nodes`. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  pageSize?: number;
  /** Each watch asks the server to close after a random time in this range (seconds). */
  watchTimeoutSeconds?: { min: number; max: number };
  /** How much longer than the watch timeout a silent stream is tolerated. */
  idleSlackMs?: number;
  backoff?: BackoffSettings;
  random?: () => number;
  now?: () => number;
  /**
   * What of each object the store keeps (client-go's transform function): a process that holds
   * thousands of objects keeps only the fields it reads. Applied to every listed object and every
   * watch event's object; the identity when not given.
   */
  transform?: (object: T) => T;
}

/** A watch shorter than this that delivered nothing counts as a failure (client-go's "very short watch"). */
const SHORT_WATCH_MS = 1000;

export class Reflector<T extends KubeObject> {
  /** name (namespace/name for namespaced objects) → the latest object seen. */
  readonly store = new Map<string, T>();
  readonly counters: ReflectorCounters = { lists: 0, relists: 0, continueExpired: 0, watches: 0, watchRestarts: 0, events: 0, bookmarks: 0, errors: {} };
  /** The version the next watch starts from: the last list's, or the last event's or bookmark's. */
  resourceVersion: string | undefined;
  private listeners = new Set<(event: ReflectorEvent<T>) => void>();
  /** A watch was refused as Expired at its start and no watch has served since: the next such refusal waits. */
  private expiredAtStart = false;
  private readonly options: Required<Omit<ReflectorOptions<T>, "labelSelector" | "fieldSelector">> & Pick<ReflectorOptions<T>, "labelSelector" | "fieldSelector">;
  private readonly backoff: Backoff;

  constructor(options: ReflectorOptions<T>) {
    this.options = {
      transform: (object) => object,
      pageSize: 500,
      watchTimeoutSeconds: { min: 300, max: 600 },
      idleSlackMs: 30_000,
      backoff: DEFAULT_BACKOFF,
      random: Math.random,
      now: Date.now,
      ...options,
    };
    this.backoff = new Backoff(this.options.backoff, this.options.random);
  }

  /** True once a complete list has been read. */
  get hasSynced(): boolean {
    return this.counters.lists > 0;
  }

  /** Calls `listener` for every event from now on; returns the unsubscribe function. */
  subscribe(listener: (event: ReflectorEvent<T>) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Lists, then watches, until `signal` is aborted; resolves then. Never rejects for API failures. */
  async run(signal: AbortSignal): Promise<void> {
    let needList = true;
    let watched = false;
    /** The server may not be the one the version is from (it went away, or a watch heard nothing): check before watching. */
    let checkVersion = false;
    while (!signal.aborted) {
      let phase: "list" | "watch" = needList ? "list" : "watch";
      try {
        if (needList) {
          await this.list(signal);
          needList = false;
          checkVersion = false;
        }
        phase = "watch";
        if (checkVersion) {
          await this.checkVersion(signal);
          checkVersion = false;
        }
        if (watched) this.counters.watchRestarts++;
        watched = true;
        const outcome = await this.watch(signal);
        if (outcome === "expired" || outcome === "too-large") needList = true;
        if (outcome === "silent") checkVersion = true;
        if (outcome !== "short") continue;
        throw new KubeApiError(`WATCH ${this.options.path}: the watch closed at once with no event`, 200, "ShortWatch", undefined, { failure: "network" });
      } catch (error) {
        if (signal.aborted) break;
        const failure = error instanceof KubeApiError ? error : new KubeApiError(`${phase} ${this.options.path}: ${(error as Error).message}`, undefined, "Unexpected", undefined, { cause: error, failure: "decode" });
        if (failure.failure === "expired" || failure.failure === "too-large") needList = true;
        else checkVersion = true;
        this.counters.errors[failure.failure] = (this.counters.errors[failure.failure] ?? 0) + 1;
        const refused = failure.failure === "expired" || failure.failure === "too-large";
        const relistNow = refused && !this.expiredAtStart;
        this.expiredAtStart = refused;
        const retryInMs = relistNow ? 0 : this.backoff.next(this.options.now());
        this.emit({ type: "error", error: failure, phase, retryInMs });
        await sleep(retryInMs, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  private async list(signal: AbortSignal): Promise<void> {
    const result = await listAll<T>(this.options.client, this.options.path, {
      ...(this.options.labelSelector ? { labelSelector: this.options.labelSelector } : {}),
      ...(this.options.fieldSelector ? { fieldSelector: this.options.fieldSelector } : {}),
      pageSize: this.options.pageSize,
      signal,
      transform: this.options.transform,
    });
    if (result.continueExpired) this.counters.continueExpired++;
    const fresh = new Map<string, T>();
    for (const object of result.items) {
      const key = keyOf(object);
      if (key !== undefined) fresh.set(key, object);
    }
    // Replace the store as client-go's DeltaFIFO.Replace does: one event per difference, then `synced`.
    for (const [key, old] of this.store) {
      if (!fresh.has(key)) {
        this.store.delete(key);
        this.emit({ type: "deleted", object: old });
      }
    }
    for (const [key, object] of fresh) {
      const previous = this.store.get(key);
      this.store.set(key, object);
      if (!previous) this.emit({ type: "added", object });
      else if (previous.metadata.resourceVersion !== object.metadata.resourceVersion) this.emit({ type: "modified", object, previous });
    }
    this.resourceVersion = result.resourceVersion;
    if (this.counters.lists > 0) this.counters.relists++;
    this.counters.lists++;
    this.emit({ type: "synced", resourceVersion: result.resourceVersion, objects: this.store.size });
  }

  /**
   * Asks for one object at `resourceVersion` or newer: a server whose revision is behind it (etcd
   * restored, or a fresh store) answers 504 "Too large resource version" (KubeApiError "too-large",
   * thrown: list again). A server that cannot answer this (`resourceVersionMatch` unknown: 400/422) says
   * nothing either way, and the watch goes on; any other failure is thrown as one.
   */
  private async checkVersion(signal: AbortSignal): Promise<void> {
    if (!this.resourceVersion) return;
    try {
      await this.options.client.request("GET", this.options.path, {
        query: {
          resourceVersion: this.resourceVersion,
          resourceVersionMatch: "NotOlderThan",
          limit: 1,
          labelSelector: this.options.labelSelector || undefined,
          fieldSelector: this.options.fieldSelector || undefined,
        },
        signal,
      });
    } catch (error) {
      if (error instanceof KubeApiError && error.failure === "invalid") return;
      throw error;
    }
  }

  /** One watch, from `resourceVersion`; how it ended decides what comes next. */
  private async watch(signal: AbortSignal): Promise<"closed" | "silent" | "expired" | "too-large" | "short"> {
    const { min, max } = this.options.watchTimeoutSeconds;
    const timeoutSeconds = Math.floor(min + this.options.random() * (max - min + 1));
    const started = this.options.now();
    let received = 0;
    this.counters.watches++;
    const events = this.options.client.watch<T>(this.options.path, {
      query: {
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds,
        labelSelector: this.options.labelSelector || undefined,
        fieldSelector: this.options.fieldSelector || undefined,
      },
      signal,
      idleTimeoutMs: timeoutSeconds * 1000 + this.options.idleSlackMs,
    });
    for await (const event of events) {
      received++;
      if (event.type === "ERROR") {
        const error = errorFromStatus(event.object, undefined, `WATCH ${this.options.path}`);
        // A watch that had been serving relists at once; one refused at its start (its version was
        // already too old) goes through the backoff, so a server that expires everything is not hammered.
        if (error.failure === "expired" && (received > 1 || this.options.now() - started >= SHORT_WATCH_MS)) return "expired";
        if (error.failure === "too-large" && received > 1) return "too-large";
        throw error;
      }
      this.apply(event);
    }
    if (!signal.aborted && received === 0 && this.options.now() - started < SHORT_WATCH_MS) return "short";
    // Its whole time without an event or a bookmark: the server may be behind this version (see checkVersion).
    return received === 0 ? "silent" : "closed";
  }

  private apply(event: WatchEvent<T>): void {
    const object = event.type === "BOOKMARK" || event.type === "ERROR" ? event.object : this.options.transform(event.object);
    const version = object.metadata?.resourceVersion;
    if (event.type === "BOOKMARK") {
      this.counters.bookmarks++;
      this.expiredAtStart = false;
      if (version) this.resourceVersion = version;
      return;
    }
    const key = keyOf(object);
    if (key === undefined || !version) {
      throw new KubeApiError(`WATCH ${this.options.path}: a ${event.type} event's object has no name or resourceVersion`, 200, "Decode", undefined, { failure: "decode" });
    }
    this.counters.events++;
    this.expiredAtStart = false;
    this.resourceVersion = version;
    const previous = this.store.get(key);
    if (event.type === "DELETED") {
      this.store.delete(key);
      this.emit({ type: "deleted", object });
    } else if (event.type === "ADDED" || event.type === "MODIFIED") {
      this.store.set(key, object);
      this.emit(previous ? { type: "modified", object, previous } : { type: "added", object });
    }
  }

  private emit(event: ReflectorEvent<T>): void {
    for (const listener of this.listeners) listener(event);
  }
}

function keyOf(object: KubeObject): string | undefined {
  const name = object?.metadata?.name;
  if (typeof name !== "string" || name === "") return undefined;
  return object.metadata.namespace ? `${object.metadata.namespace}/${name}` : name;
}
