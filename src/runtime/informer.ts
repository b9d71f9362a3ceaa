/**
 * A list-then-watch cache of one kind of object that never gives up.
 *
 * Why not client-node's `makeInformer`: it relists only on 410 Gone and stops for good on any
 * other error, asks for no bookmarks, has no resync, and an exception in a handler becomes an
 * unhandled rejection that kills the process. Its Watch's only client-side timeout is a private
 * 30 s inactivity timer (`requestTimeoutMs`), which on a quiet collection (bookmarks come about
 * once a minute) cuts healthy watches; see `leaveSilenceToOurWatchdog` below. This informer keeps the same idea (client-go's Reflector + Indexer) and
 * adds what a production operator needs:
 *
 * - one loop: list (when needed), watch until the watch ends, wait a jittered backoff
 *   (200 ms → 30 s), go again. Any error or end of the watch goes round the loop; only `stop`
 *   leaves it;
 * - after a plain error or a server-side close, the watch resumes from the last
 *   resourceVersion it saw (no relist, no event lost); after 410 Gone (that version is too old
 *   for the server) or a watchdog timeout, it lists again;
 * - a relist is diffed against the cache: objects that vanished meanwhile get `onDelete`,
 *   changed ones `onUpdate`, new ones `onAdd`, so a change made while we were blind still
 *   reaches the handlers;
 * - bookmarks (`allowWatchBookmarks`) keep the resourceVersion fresh on quiet collections, so
 *   a restart rarely needs a relist, and they prove the connection is alive;
 * - a server-side `timeoutSeconds` drawn between 5 and 10 minutes, so the watches of many
 *   clients do not all end at the same moment;
 * - a watchdog: if nothing at all (event or bookmark) arrives for `watchdogMs` (90 s by
 *   default; bookmarks come about once a minute), the connection is presumed dead, abandoned,
 *   and the cache relisted;
 * - a periodic resync that hands every cached object to `onResync` (or `onUpdate`), so that
 *   drift outside Kubernetes (a database setting changed by hand) is corrected even when no
 *   object changes;
 * - handlers are expected only to enqueue keys; whatever they throw is caught and logged.
 */
import { Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from "@kubernetes/client-node";
import { log as rootLog, type Logger } from "../log.js";
import { Backoff, sleep, type BackoffOptions } from "./backoff.js";
import { describeError, statusCodeOf, type ErrorSummary } from "../kube/errors.js";
import { keyOf, objectKey } from "../kube/keys.js";
import { informerRelists, informerRestarts, informerSynced } from "./metrics.js";

export interface InformerHandlers<T> {
  onAdd?(obj: T): void | Promise<void>;
  onUpdate?(oldObj: T, newObj: T): void | Promise<void>;
  onDelete?(obj: T): void | Promise<void>;
  /** Called for every cached object every `resyncMs`; defaults to `onUpdate(obj, obj)`. */
  onResync?(obj: T): void | Promise<void>;
}

export interface ListRequest {
  labelSelector?: string;
  fieldSelector?: string;
  /**
   * "0" for the first list: the API server answers from its watch cache as it is, without first
   * waiting until that cache has caught up with etcd (which took up to 60 ms of a new policy's
   * first pass in the fan-out benchmark); the watch that follows brings whatever is newer, as
   * with client-go's reflector. Undefined for a relist (after 410 Gone or a silent watch): a
   * consistent read, so the cache never goes back in time.
   */
  resourceVersion?: string;
  /** Aborts when the list takes too long or the informer stops; pass it on with `abortableRequest`. */
  signal: AbortSignal;
}

/** Lists the collection, e.g. `({ labelSelector, resourceVersion, signal }) => core.listNamespacedConfigMap({ namespace, labelSelector, resourceVersion }, abortableRequest(signal))`. */
export type ListFunction<T extends KubernetesObject> = (request: ListRequest) => Promise<KubernetesListObject<T>>;

export interface InformerOptions<T> extends InformerHandlers<T> {
  labelSelector?: string;
  fieldSelector?: string;
  /**
   * Relist when nothing arrives on the watch for this long. Default 90 s, above the roughly
   * one-minute bookmark interval. (A server that sends no bookmarks would make a quiet
   * collection relist at this interval: cheap, and still correct.)
   */
  watchdogMs?: number;
  /** Hand every cached object to `onResync` this often; 0 (the default) turns it off. */
  resyncMs?: number;
  /** A list that takes longer is abandoned and retried. Default 60 s. */
  listTimeoutMs?: number;
  /** Delay between restarts. Default 200 ms doubling up to 30 s, jittered. */
  backoff?: BackoffOptions;
  /**
   * Applied to every object before it is cached and handed to the handlers, to keep only what
   * the operator reads (client-go's TransformFunc): e.g. dropping metadata.managedFields.
   */
  transform?(obj: T): T;
  /** For logs and metrics. Default: the API path. */
  name?: string;
  logger?: Logger;
}

export interface InformerStats {
  /** Lists, the initial one included. */
  lists: number;
  /** Lists after the initial one (410 Gone, watchdog). */
  relists: number;
  /** Lists that failed (the API server, a missing permission), retried with backoff. */
  listFailures: number;
  /** Times the loop went round after a watch ended or a list failed. */
  restarts: number;
  watchdogTimeouts: number;
  /** Watch events received, bookmarks included. */
  events: number;
}

/** Why a watch ended; decides whether the next round lists again. */
type WatchEnd =
  | { kind: "stopped" }
  | { kind: "closed"; receivedAnything: boolean }
  | { kind: "gone"; receivedAnything: boolean }
  | { kind: "silent"; receivedAnything: boolean }
  | { kind: "failed"; error: ErrorSummary; receivedAnything: boolean };

type WatchOutcome = Exclude<WatchEnd, { kind: "stopped" }>;

const defaultWatchdogMs = 90_000;
const defaultListTimeoutMs = 60_000;
const minWatchTimeoutSeconds = 5 * 60;
const maxWatchTimeoutSeconds = 10 * 60;
const httpGone = 410;

export class ResilientInformer<T extends KubernetesObject> {
  private readonly cache = new Map<string, T>();
  private readonly watcher: Watch;
  private readonly handlers: InformerHandlers<T>;
  private readonly watchdogMs: number;
  private readonly resyncMs: number;
  private readonly listTimeoutMs: number;
  private readonly backoff: Backoff;
  private readonly name: string;
  private readonly log: Logger;
  private readonly counters: InformerStats = {
    lists: 0,
    relists: 0,
    listFailures: 0,
    restarts: 0,
    watchdogTimeouts: 0,
    events: 0,
  };
  private resourceVersion: string | undefined;
  private synced = false;
  private syncWaiters: Array<() => void> = [];
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  /** Ends the watch in progress, if any (used by `stop`). */
  private endCurrentWatch: ((end: WatchEnd) => void) | undefined;

  constructor(
    kubeConfig: KubeConfig,
    private readonly path: string,
    private readonly listFn: ListFunction<T>,
    private readonly options: InformerOptions<T> = {},
  ) {
    this.handlers = options;
    this.watchdogMs = options.watchdogMs ?? defaultWatchdogMs;
    this.resyncMs = options.resyncMs ?? 0;
    this.listTimeoutMs = options.listTimeoutMs ?? defaultListTimeoutMs;
    this.backoff = new Backoff({ initialMs: 200, maxMs: 30_000, ...options.backoff });
    this.name = options.name ?? path;
    this.log = (options.logger ?? rootLog).child({ informer: this.name });
    this.watcher = new Watch(kubeConfig);
    leaveSilenceToOurWatchdog(this.watcher, this.watchdogMs);
  }

  /** Starts listing and watching in the background. A stopped informer cannot be restarted. */
  start(): void {
    if (this.loop) return;
    this.loop = this.run();
    if (this.resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.resync(), this.resyncMs);
      this.resyncTimer.unref();
    }
  }

  /** Ends the watch and the loop; resolves once the loop has exited. */
  async stop(): Promise<void> {
    this.stopping.abort();
    this.endCurrentWatch?.({ kind: "stopped" });
    clearInterval(this.resyncTimer);
    await this.loop;
    informerSynced.set({ resource: this.name }, 0);
  }

  /** True once the cache holds a complete list (it stays true across relists). */
  hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves true once synced, false if `timeoutMs` passes first. */
  waitForSync(timeoutMs: number): Promise<boolean> {
    if (this.synced) return Promise.resolve(true);
    return new Promise((resolve) => {
      const onSynced = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.syncWaiters = this.syncWaiters.filter((waiter) => waiter !== onSynced);
        resolve(false);
      }, timeoutMs);
      this.syncWaiters.push(onSynced);
    });
  }

  /**
   * As `waitForSync`, but false at once when not synced and a list has already failed (say, a
   * missing permission): a reader that can fall back to a request of its own should not wait.
   */
  waitForSyncUnlessFailing(timeoutMs: number): Promise<boolean> {
    if (!this.synced && this.counters.listFailures > 0) return Promise.resolve(false);
    return this.waitForSync(timeoutMs);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  /** The cached object; `namespace` undefined for cluster-scoped kinds. */
  get(namespace: string | undefined, name: string): T | undefined {
    return this.cache.get(keyOf(namespace, name));
  }

  getByKey(key: string): T | undefined {
    return this.cache.get(key);
  }

  /** A snapshot of the counters, for tests and diagnostics. */
  stats(): InformerStats {
    return { ...this.counters };
  }

  private get stopped(): boolean {
    return this.stopping.signal.aborted;
  }

  private async run(): Promise<void> {
    let mustList = true;
    while (!this.stopped) {
      try {
        if (mustList) {
          await this.listAndReplace();
          mustList = false;
        }
        const end = await this.watchUntilEnd();
        if (end.kind === "stopped") return;
        if (end.receivedAnything) this.backoff.reset();
        mustList = end.kind === "gone" || end.kind === "silent";
        this.logWatchEnd(end);
      } catch (err) {
        if (this.stopped) return;
        this.counters.listFailures += 1;
        this.log.warn({ error: describeError(err) }, "list failed; will retry");
      }
      if (this.stopped) return;
      this.counters.restarts += 1;
      informerRestarts.inc({ resource: this.name });
      await sleep(this.backoff.next(), this.stopping.signal);
    }
  }

  // ---- list ---------------------------------------------------------------------------------

  /** Lists everything and makes the cache equal to it, telling the handlers what changed. */
  private async listAndReplace(): Promise<void> {
    const list = await this.listWithTimeout();
    const fresh = new Map<string, T>();
    for (const item of list.items) {
      const obj = this.transform(withKind(item, list));
      fresh.set(objectKey(obj), obj);
    }
    this.forgetVanished(fresh);
    for (const [key, obj] of fresh) this.storeListed(key, obj);
    this.resourceVersion = list.metadata?.resourceVersion;
    this.countList();
    this.markSynced();
  }

  private async listWithTimeout(): Promise<KubernetesListObject<T>> {
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.listTimeoutMs)]);
    const request = {
      labelSelector: this.options.labelSelector,
      fieldSelector: this.options.fieldSelector,
      resourceVersion: this.counters.lists === 0 ? "0" : undefined,
      signal,
    };
    // Raced against the signal too, in case the list function does not pass the signal on.
    return untilAborted(this.listFn(request), signal);
  }

  /** Objects deleted while we were not watching: their DELETED event is lost, synthesize it. */
  private forgetVanished(fresh: Map<string, T>): void {
    for (const [key, cached] of this.cache) {
      if (fresh.has(key)) continue;
      this.cache.delete(key);
      this.notify("onDelete", () => this.handlers.onDelete?.(cached));
    }
  }

  private transform(obj: T): T {
    return this.options.transform ? this.options.transform(obj) : obj;
  }

  private storeListed(key: string, obj: T): void {
    const cached = this.cache.get(key);
    this.cache.set(key, obj);
    if (!cached) {
      this.notify("onAdd", () => this.handlers.onAdd?.(obj));
    } else if (cached.metadata?.resourceVersion !== obj.metadata?.resourceVersion) {
      this.notify("onUpdate", () => this.handlers.onUpdate?.(cached, obj));
    }
  }

  private countList(): void {
    this.counters.lists += 1;
    if (this.counters.lists > 1) {
      this.counters.relists += 1;
      informerRelists.inc({ resource: this.name });
    }
  }

  private markSynced(): void {
    if (this.synced) return;
    this.synced = true;
    informerSynced.set({ resource: this.name }, 1);
    this.log.info({ objects: this.cache.size }, "cache synced");
    for (const waiter of this.syncWaiters.splice(0)) waiter();
  }

  // ---- watch --------------------------------------------------------------------------------

  /**
   * Watches from the last resourceVersion until the watch ends, for whatever reason, and says
   * why. Never rejects. Events that straggle in after the end are ignored.
   */
  private watchUntilEnd(): Promise<WatchEnd> {
    return new Promise((resolve) => {
      let ended = false;
      let receivedAnything = false;
      let connection: AbortController | undefined;
      let watchdog: NodeJS.Timeout | undefined;

      const end = (outcome: WatchEnd) => {
        if (ended) return;
        ended = true;
        clearTimeout(watchdog);
        this.endCurrentWatch = undefined;
        connection?.abort();
        resolve(outcome.kind === "stopped" ? outcome : { ...outcome, receivedAnything });
      };
      const rearmWatchdog = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => end({ kind: "silent", receivedAnything }), this.watchdogMs);
      };
      const onEvent = (type: string, obj: unknown) => {
        if (ended) return;
        receivedAnything = true;
        this.counters.events += 1;
        rearmWatchdog();
        const outcome = this.applyWatchEvent(type, obj);
        if (outcome) end(outcome);
      };
      const onDone = (err: unknown) => end(err ? failureOf(err) : { kind: "closed", receivedAnything });

      this.endCurrentWatch = end;
      if (this.stopped) return end({ kind: "stopped" });
      // Armed before connecting: a server that accepts the connection and then says nothing
      // (frozen, half-open) is caught the same way as a silent stream.
      rearmWatchdog();
      this.watcher.watch(this.path, this.watchParams(), onEvent, onDone).then(
        (controller) => {
          connection = controller;
          if (ended) controller.abort();
        },
        (err: unknown) => end(failureOf(err)),
      );
    });
  }

  private watchParams(): Record<string, string | number | boolean | undefined> {
    return {
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds: randomInt(minWatchTimeoutSeconds, maxWatchTimeoutSeconds),
      labelSelector: this.options.labelSelector,
      fieldSelector: this.options.fieldSelector,
    };
  }

  /** Applies one watch event to the cache; returns how the watch ends if the event ends it. */
  private applyWatchEvent(type: string, obj: unknown): WatchOutcome | undefined {
    if (type === "ERROR") return errorEventOutcome(obj);
    const object = obj as T;
    const resourceVersion = object?.metadata?.resourceVersion;
    if (resourceVersion) this.resourceVersion = resourceVersion;
    if (type === "ADDED" || type === "MODIFIED") this.storeWatched(this.transform(object));
    else if (type === "DELETED") this.removeWatched(object);
    // BOOKMARK: only the resourceVersion, already taken.
    return undefined;
  }

  private storeWatched(obj: T): void {
    const key = objectKey(obj);
    const cached = this.cache.get(key);
    this.cache.set(key, obj);
    if (cached) this.notify("onUpdate", () => this.handlers.onUpdate?.(cached, obj));
    else this.notify("onAdd", () => this.handlers.onAdd?.(obj));
  }

  private removeWatched(obj: T): void {
    this.cache.delete(objectKey(obj));
    this.notify("onDelete", () => this.handlers.onDelete?.(obj));
  }

  private logWatchEnd(end: WatchOutcome): void {
    switch (end.kind) {
      case "closed":
        this.log.debug("watch closed by the server; resuming");
        break;
      case "gone":
        this.log.info({ resourceVersion: this.resourceVersion }, "resourceVersion too old (410 Gone); relisting");
        break;
      case "silent":
        this.counters.watchdogTimeouts += 1;
        this.log.warn({ silentMs: this.watchdogMs }, "watch silent for too long; relisting");
        break;
      case "failed":
        this.log.warn({ error: end.error }, "watch failed; restarting");
        break;
    }
  }

  // ---- resync and handlers ------------------------------------------------------------------

  private resync(): void {
    if (!this.synced || this.stopped) return;
    for (const obj of this.cache.values()) {
      if (this.handlers.onResync) this.notify("onResync", () => this.handlers.onResync?.(obj));
      else this.notify("onUpdate", () => this.handlers.onUpdate?.(obj, obj));
    }
  }

  /** Calls a handler; whatever it throws or rejects with is logged, never propagated. */
  private notify(handler: string, call: () => void | Promise<void> | undefined): void {
    const logFailure = (err: unknown) =>
      this.log.error({ handler, error: describeError(err) }, "informer handler failed");
    try {
      const result = call();
      if (result instanceof Promise) result.catch(logFailure);
    } catch (err) {
      logFailure(err);
    }
  }
}

/**
 * client-node's Watch aborts a connection after 30 s without data (a private
 * `requestTimeoutMs`). Bookmarks come about once a minute, so on a quiet collection that
 * would break a healthy watch twice a minute. Our watchdog decides when silence means death;
 * the library's timer stays as a backstop, beyond ours.
 */
function leaveSilenceToOurWatchdog(watcher: Watch, watchdogMs: number): void {
  (watcher as unknown as { requestTimeoutMs: number }).requestTimeoutMs = watchdogMs + 30_000;
}

function failureOf(err: unknown): WatchOutcome {
  if (statusCodeOf(err) === httpGone) return { kind: "gone", receivedAnything: false };
  return { kind: "failed", error: describeError(err), receivedAnything: false };
}

/** An ERROR event carries a Status object; code 410 means our resourceVersion is too old. */
function errorEventOutcome(obj: unknown): WatchOutcome {
  const status = (obj ?? {}) as { code?: unknown; reason?: unknown; message?: unknown };
  if (status.code === httpGone) return { kind: "gone", receivedAnything: true };
  const message = typeof status.message === "string" ? status.message : "watch ERROR event";
  const reason = typeof status.reason === "string" ? status.reason : undefined;
  const code = typeof status.code === "number" ? status.code : undefined;
  return { kind: "failed", error: { message, reason, status: code }, receivedAnything: true };
}

/** Items of a typed list come without kind and apiVersion; the list says what they are. */
function withKind<T extends KubernetesObject>(item: T, list: KubernetesListObject<T>): T {
  if (item.kind && item.apiVersion) return item;
  const kind = item.kind ?? list.kind?.replace(/List$/, "");
  return Object.assign(item, { kind, apiVersion: item.apiVersion ?? list.apiVersion });
}

/** Rejects as soon as `signal` aborts, whether or not `promise` listens to it. */
function untilAborted<R>(promise: Promise<R>, signal: AbortSignal): Promise<R> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function randomInt(min: number, max: number): number {
  return min + Math.floor(Math.random() * (max - min + 1));
}
