/**
 * The work queue between the informers and the reconcile workers, with client-go's workqueue
 * semantics (rate-limited, delaying, deduplicating).
 *
 * Why a queue of keys and not of events: reconciles are level-triggered. A worker reads the
 * latest state of the object by its key, so ten changes to one object while it waits are one
 * reconcile, not ten. Three sets make that work:
 *
 * - `waiting`: keys ready to be handed out, in arrival order, each at most once;
 * - `dirty`: keys that need a reconcile (every waiting key, plus keys re-added while being
 *   processed);
 * - `processing`: keys a worker holds right now.
 *
 * A key in `processing` is never handed out again until its worker calls `done`: two workers
 * reconciling one object at once would race on its writes. If the key was added meanwhile it
 * stays dirty, and `done` puts it back in line, so the change is not lost.
 *
 * One deliberate difference from client-go: after `shutDown`, `get` resolves `undefined` at
 * once even if keys are still waiting. On SIGTERM we want the workers to finish what they hold
 * and stop; whatever waits is reconciled by the next leader, which relists everything anyway.
 */
import { defaultControllerRateLimiter, type RateLimiter } from "./rate-limiter.js";

/** What the queue reports, so that it stays free of any metrics library. */
export interface QueueMetrics {
  added(): void;
  depth(waitingKeys: number): void;
  /** Seconds a key waited between `add` and `get`. */
  queueLatency(seconds: number): void;
  /** Seconds a key was held between `get` and `done`. */
  workDuration(seconds: number): void;
  retried(): void;
}

const noMetrics: QueueMetrics = {
  added: () => {},
  depth: () => {},
  queueLatency: () => {},
  workDuration: () => {},
  retried: () => {},
};

export interface WorkQueueOptions {
  rateLimiter?: RateLimiter;
  metrics?: QueueMetrics;
  /** Clock in ms, for delays and latencies. Date.now, so that fake timers drive it in tests. */
  now?: () => number;
}

interface DelayedAdd {
  readyAt: number;
  timer: NodeJS.Timeout;
}

type Getter = (key: string | undefined) => void;

export class WorkQueue {
  private readonly waiting: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly delayed = new Map<string, DelayedAdd>();
  /** When each dirty key was first added, for the queue latency metric. */
  private readonly addedAt = new Map<string, number>();
  /** When each processing key was handed out, for the work duration metric. */
  private readonly handedOutAt = new Map<string, number>();
  /** Workers blocked in `get` because nothing was waiting, oldest first. */
  private readonly idleGetters: Getter[] = [];
  private readonly drainWaiters: Array<() => void> = [];
  private readonly rateLimiter: RateLimiter;
  private readonly metrics: QueueMetrics;
  private readonly now: () => number;
  private shuttingDown = false;

  constructor(options: WorkQueueOptions = {}) {
    this.rateLimiter = options.rateLimiter ?? defaultControllerRateLimiter();
    this.metrics = options.metrics ?? noMetrics;
    this.now = options.now ?? Date.now;
  }

  /** Marks `key` as needing a reconcile. Adding a key that already waits does nothing. */
  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.metrics.added();
    this.dirty.add(key);
    this.addedAt.set(key, this.now());
    // A worker holds it: `done` will put it back in line, never two workers at once.
    if (this.processing.has(key)) return;
    this.makeReady(key);
  }

  /**
   * Adds `key` once `delayMs` has passed. If the key is already scheduled, the earlier of the
   * two times wins: "reconcile in 10 s" must not postpone an earlier "reconcile in 1 s".
   */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const readyAt = this.now() + delayMs;
    const scheduled = this.delayed.get(key);
    if (scheduled && scheduled.readyAt <= readyAt) return;
    if (scheduled) clearTimeout(scheduled.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    // A pending retry alone must not keep a stopping process alive.
    timer.unref();
    this.delayed.set(key, { readyAt, timer });
  }

  /** Adds `key` after the delay its rate limiter gives (backoff after a failure). */
  addRateLimited(key: string): void {
    if (this.shuttingDown) return;
    this.metrics.retried();
    this.addAfter(key, this.rateLimiter.when(key));
  }

  /** Clears the failure history of `key`: its next failure backs off from the start again. */
  forget(key: string): void {
    this.rateLimiter.forget(key);
  }

  numRequeues(key: string): number {
    return this.rateLimiter.numRequeues(key);
  }

  /**
   * The next key to reconcile; the caller owns it until it calls `done(key)`. Resolves
   * `undefined` once the queue is shut down: that is the worker's signal to exit.
   */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.waiting.shift();
    if (key === undefined) return new Promise((resolve) => this.idleGetters.push(resolve));
    this.metrics.depth(this.waiting.length);
    return Promise.resolve(this.handOut(key));
  }

  /** The worker finished with `key`. If it was added meanwhile, it goes back in line. */
  done(key: string): void {
    if (!this.processing.delete(key)) return;
    this.observeWorkDuration(key);
    if (this.dirty.has(key) && !this.shuttingDown) this.makeReady(key);
    if (this.processing.size === 0) this.resolveDrainWaiters();
  }

  /** Stops handing out keys; blocked and later `get` calls resolve `undefined`. */
  shutDown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    for (const getter of this.idleGetters.splice(0)) getter(undefined);
    if (this.processing.size === 0) this.resolveDrainWaiters();
  }

  /** Shuts down, then resolves once every key handed out has been marked done. */
  shutDownWithDrain(): Promise<void> {
    const drained = new Promise<void>((resolve) => {
      if (this.processing.size === 0) resolve();
      else this.drainWaiters.push(resolve);
    });
    this.shutDown();
    return drained;
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** How many keys wait to be handed out (not counting delayed or processing ones). */
  len(): number {
    return this.waiting.length;
  }

  /** Puts a key in line, or straight into the hands of a worker blocked in `get`. */
  private makeReady(key: string): void {
    const idleGetter = this.idleGetters.shift();
    if (idleGetter) {
      // Handed out synchronously: the key is in `processing` before any other code runs.
      idleGetter(this.handOut(key));
      return;
    }
    this.waiting.push(key);
    this.metrics.depth(this.waiting.length);
  }

  private handOut(key: string): string {
    this.dirty.delete(key);
    this.processing.add(key);
    const now = this.now();
    const addedAt = this.addedAt.get(key);
    this.addedAt.delete(key);
    if (addedAt !== undefined) this.metrics.queueLatency((now - addedAt) / 1000);
    this.handedOutAt.set(key, now);
    return key;
  }

  private observeWorkDuration(key: string): void {
    const handedOutAt = this.handedOutAt.get(key);
    this.handedOutAt.delete(key);
    if (handedOutAt !== undefined) this.metrics.workDuration((this.now() - handedOutAt) / 1000);
  }

  private resolveDrainWaiters(): void {
    for (const resolve of this.drainWaiters.splice(0)) resolve();
  }
}
