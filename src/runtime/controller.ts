/**
 * A controller: N workers that take keys from a work queue and reconcile them, after
 * controller-runtime's pkg/internal/controller/controller.go.
 *
 * What a worker does with the outcome of `reconcile(key)`:
 *
 * - success: `forget` the key's failure history; if the result asks for `requeueAfter`, add
 *   the key back after that delay (e.g. "check again when the rollout should be over");
 * - an error that carries `requeueAfter` (see `RequeueError`): the reconcile knows when to look
 *   again, e.g. "the Deployment is still rolling out"; that is not a failure to back off from,
 *   so the history is forgotten and the key comes back at exactly that time;
 * - any other error: log it with the key and retry with the rate limiter's backoff
 *   (5 ms, 10 ms, 20 ms, … up to 1000 s), so a broken object costs less and less.
 *
 * The queue guarantees a key is never held by two workers, so one object is never reconciled
 * twice at the same time, however many workers run. `stop` lets the reconciles in flight
 * finish (a half-done restart sequence is worse than a late exit) and starts no new one.
 */
import { log as rootLog, type Logger } from "../log.js";
import { describeError } from "../kube/errors.js";
import {
  activeWorkers,
  initControllerMetrics,
  queueMetricsFor,
  reconcileErrors,
  reconcileTime,
  reconcileTotal,
} from "./metrics.js";
import type { RateLimiter } from "./rate-limiter.js";
import { WorkQueue } from "./queue.js";

export interface ReconcileResult {
  /** Reconcile this key again after this many ms, even if nothing changes. */
  requeueAfter?: number;
}

export type Reconcile = (key: string) => Promise<ReconcileResult | undefined>;

/** An error that says when to retry, instead of leaving it to the backoff. */
export class RequeueError extends Error {
  override readonly name = "RequeueError";

  constructor(
    message: string,
    readonly requeueAfter: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * The `requeueAfter` an error carries, if any (duck-typed: domain errors may carry it too).
 * Zero or less does not count: "retry immediately, forever" is what the backoff prevents.
 */
export function requeueAfterOf(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const { requeueAfter } = err as { requeueAfter?: unknown };
  return typeof requeueAfter === "number" && requeueAfter > 0 ? requeueAfter : undefined;
}

export interface ControllerOptions {
  /** Names the queue, the log lines and the metrics. */
  name: string;
  reconcile: Reconcile;
  /** Keys reconciled in parallel (never the same key twice). Default 1. */
  workers?: number;
  /** Injected in tests; by default a queue with the default rate limiter and metrics. */
  queue?: WorkQueue;
  rateLimiter?: RateLimiter;
  logger?: Logger;
}

export class Controller {
  readonly name: string;
  readonly queue: WorkQueue;
  private readonly reconcile: Reconcile;
  private readonly workerCount: number;
  private readonly log: Logger;
  private workers: Array<Promise<void>> = [];

  constructor(options: ControllerOptions) {
    this.name = options.name;
    this.reconcile = options.reconcile;
    this.workerCount = Math.max(1, options.workers ?? 1);
    this.queue =
      options.queue ?? new WorkQueue({ rateLimiter: options.rateLimiter, metrics: queueMetricsFor(options.name) });
    this.log = (options.logger ?? rootLog).child({ controller: options.name });
    initControllerMetrics(options.name);
  }

  /** What informer handlers call: cheap, never blocks, deduplicated. */
  enqueue(key: string): void {
    this.queue.add(key);
  }

  /** Starts the workers. Calling it twice does nothing. */
  start(): void {
    if (this.workers.length > 0) return;
    this.log.info({ workers: this.workerCount }, "starting workers");
    for (let i = 0; i < this.workerCount; i++) this.workers.push(this.runWorker());
  }

  /** Stops handing out keys and resolves once every reconcile in flight has finished. */
  async stop(): Promise<void> {
    this.queue.shutDown();
    await Promise.all(this.workers);
    this.log.info("workers stopped");
  }

  private async runWorker(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      await this.processKey(key);
    }
  }

  /** Reconciles one key and decides when it comes back. Never throws. */
  private async processKey(key: string): Promise<void> {
    const started = performance.now();
    activeWorkers.inc({ controller: this.name });
    try {
      const result = await this.reconcile(key);
      this.onSuccess(key, result ?? {});
    } catch (err) {
      this.onError(key, err);
    } finally {
      activeWorkers.dec({ controller: this.name });
      reconcileTime.observe({ controller: this.name }, (performance.now() - started) / 1000);
      this.queue.done(key);
    }
  }

  private onSuccess(key: string, result: ReconcileResult): void {
    this.queue.forget(key);
    if (result.requeueAfter !== undefined && result.requeueAfter > 0) {
      this.queue.addAfter(key, result.requeueAfter);
      this.count("requeue");
    } else {
      this.count("success");
    }
  }

  private onError(key: string, err: unknown): void {
    const requeueAfter = requeueAfterOf(err);
    if (requeueAfter !== undefined) {
      this.queue.forget(key);
      this.queue.addAfter(key, requeueAfter);
      this.count("requeue");
      this.log.info({ key, requeueAfter, reason: describeError(err).message }, "reconcile deferred");
      return;
    }
    this.queue.addRateLimited(key);
    this.count("error");
    reconcileErrors.inc({ controller: this.name });
    // The key and a short description only: the error may carry API bodies or configs.
    this.log.error({ key, error: describeError(err), failures: this.queue.numRequeues(key) }, "reconcile failed");
  }

  private count(result: "success" | "error" | "requeue"): void {
    reconcileTotal.inc({ controller: this.name, result });
  }
}
