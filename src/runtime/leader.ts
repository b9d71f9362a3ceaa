/**
 * Leader election on a coordination.k8s.io/v1 Lease, after client-go's leaderelection package.
 *
 * Why: two replicas of the operator must never restart the same PostgreSQL server or resize
 * the same pools at the same time. Only the replica that holds the Lease runs its controllers;
 * the others wait, ready to take over.
 *
 * The protocol, every `retryPeriod` (2 s):
 * - read the Lease; if nobody holds it, we hold it, or its holder stopped renewing it, write
 *   ourselves in as holder with a fresh renewTime. The write carries the resourceVersion we
 *   read, so if another candidate wrote in between, ours fails with 409 and we lost that
 *   round (optimistic concurrency: the API server is the referee).
 * - "stopped renewing" is judged on OUR clock: we note when we last saw the Lease's record
 *   (holder, renewTime, …) change, and consider it expired once `leaseDurationSeconds` have
 *   passed on our monotonic clock since then. The holder's renewTime is another machine's
 *   clock and clocks drift; a change we saw is a fact.
 * - a leader that cannot renew for `renewDeadline` (10 s) stops leading and calls
 *   `onStoppedLeading` (the wiring exits the process: a clean restart is the only safe way to
 *   be sure no reconcile of the old term is still writing). The deadline is shorter than the
 *   lease (15 s), so the old leader stops before any candidate can take over. A leader that
 *   finds someone else in the Lease stops at once.
 * - `release` on graceful shutdown clears the holder and shortens the lease to 1 s, so a
 *   standby takes over within one retry period instead of waiting out the lease.
 *
 * Lease times are `V1MicroTime`: the API insists on microsecond precision (RFC 3339 with six
 * fractional digits), which `V1MicroTime` renders and a plain Date does not. Note that the
 * client deserializes them as plain strings; we only compare and pass them back, never parse.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import {
  CoordinationV1Api,
  V1MicroTime,
  type ConfigurationOptions,
  type KubeConfig,
  type V1Lease,
} from "@kubernetes/client-node";
import { log as rootLog, type Logger } from "../log.js";
import { sleep } from "./backoff.js";
import { describeError, statusCodeOf } from "../kube/errors.js";
import { leaderStatus } from "./metrics.js";
import { requestTimeout } from "./request-options.js";

export interface LeaderElectionOptions {
  /** Namespace and name of the Lease. */
  namespace: string;
  name: string;
  /** Who we are in the Lease. Default: the pod name (POD_NAME or hostname) plus a random suffix. */
  identity?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  onStartedLeading?: () => void | Promise<void>;
  /** Leadership was lost (renewals failed or someone else holds the Lease); not called on `release`. */
  onStoppedLeading?: () => void | Promise<void>;
  logger?: Logger;
}

/** The outcome of one round of the protocol. */
type Attempt = "ours" | "held-by-other" | "failed";

/** client-go's JitterFactor: candidates retry after retryPeriod × [1, 2.2). */
const retryJitter = 1.2;
const httpNotFound = 404;
const httpConflict = 409;

export class LeaderElector {
  readonly identity: string;
  private readonly coordination: CoordinationV1Api;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly log: Logger;
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  private leading = false;
  /** Monotonic time at the start of our last successful write of the Lease. */
  private lastRenewAt = 0;
  /** The Lease record as we last saw it, and when (monotonic) we saw it change. */
  private observedRecord = "";
  private observedAt = 0;
  /** Monotonic time at the start of our last round in which the API server let us read the Lease. */
  private lastLeaseReadAt = Number.NEGATIVE_INFINITY;

  constructor(
    kubeConfig: KubeConfig,
    private readonly options: LeaderElectionOptions,
  ) {
    this.identity = options.identity ?? defaultIdentity();
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2_000;
    validateTimings(this.leaseDurationMs, this.renewDeadlineMs, this.retryPeriodMs);
    this.coordination = kubeConfig.makeApiClient(CoordinationV1Api);
    this.log = (options.logger ?? rootLog).child({
      lease: `${options.namespace}/${options.name}`,
      identity: this.identity,
    });
  }

  /** Starts competing for the Lease in the background. */
  start(): void {
    this.loop ??= this.run();
  }

  /** True while we hold the Lease and renewed it within the renew deadline. */
  isLeader(): boolean {
    return this.leading && now() - this.lastRenewAt < this.renewDeadlineMs;
  }

  /**
   * True if the API server let us read (or create) the Lease within the last lease duration:
   * a standby that cannot even read its Lease could never take over, so it is not ready.
   */
  canReadLease(): boolean {
    return now() - this.lastLeaseReadAt < this.leaseDurationMs;
  }

  /**
   * Stops competing and, if we lead, hands the Lease back so that a standby takes over at its
   * next retry. Call it after the controllers have stopped. Never throws.
   */
  async release(): Promise<void> {
    this.stopping.abort();
    await this.loop;
    if (!this.leading) return;
    this.setLeading(false);
    try {
      await this.giveLeaseBack();
      this.log.info("released the leader lease");
    } catch (err) {
      this.log.warn({ error: describeError(err) }, "could not release the leader lease; it will expire");
    }
  }

  private get stopped(): boolean {
    return this.stopping.signal.aborted;
  }

  private async run(): Promise<void> {
    const acquired = await this.acquire();
    if (!acquired) return;
    this.setLeading(true);
    this.log.info("became leader");
    this.callback("onStartedLeading", this.options.onStartedLeading);
    await this.renewUntilLost();
    if (this.stopped) return; // `release` takes it from here.
    this.setLeading(false);
    this.log.error("lost leadership");
    this.callback("onStoppedLeading", this.options.onStoppedLeading);
  }

  /** Tries every retry period (jittered) until the Lease is ours; false if stopped first. */
  private async acquire(): Promise<boolean> {
    this.log.info("waiting to acquire the leader lease");
    while (!this.stopped) {
      if ((await this.tryAcquireOrRenew(this.renewDeadlineMs)) === "ours") return true;
      await sleep(this.retryPeriodMs * (1 + Math.random() * retryJitter), this.stopping.signal);
    }
    return false;
  }

  /** Renews every retry period; returns when stopped or when leadership is lost. */
  private async renewUntilLost(): Promise<void> {
    while (!this.stopped) {
      await sleep(this.retryPeriodMs, this.stopping.signal);
      if (this.stopped) return;
      const timeLeft = this.lastRenewAt + this.renewDeadlineMs - now();
      if (timeLeft <= 0) return;
      // Every request is bounded by the time left, so a hung server cannot carry us past it.
      const attempt = await this.tryAcquireOrRenew(timeLeft);
      if (attempt === "held-by-other") return;
      if (attempt === "failed" && now() - this.lastRenewAt >= this.renewDeadlineMs) return;
    }
  }

  /** One round of the protocol. Never throws. */
  private async tryAcquireOrRenew(timeoutMs: number): Promise<Attempt> {
    const startedAt = now();
    const options = requestTimeout(Math.max(1, Math.floor(timeoutMs)));
    try {
      const lease = await this.readLease(options);
      if (!lease) {
        await this.createLease(options);
        this.lastLeaseReadAt = startedAt;
      } else {
        this.lastLeaseReadAt = startedAt;
        this.observe(lease, startedAt);
        if (this.heldByAnotherAndValid(lease, startedAt)) return "held-by-other";
        const written = await this.coordination.replaceNamespacedLease(
          { name: this.options.name, namespace: this.options.namespace, body: this.claim(lease) },
          options,
        );
        this.observe(written, startedAt);
      }
      this.lastRenewAt = startedAt;
      return "ours";
    } catch (err) {
      this.logFailedAttempt(err);
      return "failed";
    }
  }

  private async readLease(options: ConfigurationOptions): Promise<V1Lease | undefined> {
    try {
      return await this.coordination.readNamespacedLease(
        { name: this.options.name, namespace: this.options.namespace },
        options,
      );
    } catch (err) {
      if (statusCodeOf(err) === httpNotFound) return undefined;
      throw err;
    }
  }

  private async createLease(options: ConfigurationOptions): Promise<void> {
    const time = new V1MicroTime();
    const body: V1Lease = {
      metadata: { name: this.options.name, namespace: this.options.namespace },
      spec: {
        holderIdentity: this.identity,
        leaseDurationSeconds: this.leaseDurationSeconds(),
        acquireTime: time,
        renewTime: time,
        leaseTransitions: 0,
      },
    };
    const created = await this.coordination.createNamespacedLease({ namespace: this.options.namespace, body }, options);
    this.observe(created, now());
  }

  /** The Lease with us as holder; resourceVersion kept, so a concurrent write makes ours fail. */
  private claim(lease: V1Lease): V1Lease {
    const time = new V1MicroTime();
    const spec = lease.spec ?? {};
    const renewing = spec.holderIdentity === this.identity;
    const transitions = spec.leaseTransitions ?? 0;
    return {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: this.identity,
        leaseDurationSeconds: this.leaseDurationSeconds(),
        renewTime: time,
        acquireTime: renewing ? spec.acquireTime : time,
        leaseTransitions: renewing ? transitions : transitions + 1,
      },
    };
  }

  /** Remembers when the Lease's record last changed, on our clock. */
  private observe(lease: V1Lease, at: number): void {
    const record = leaseRecord(lease);
    if (record === this.observedRecord) return;
    this.observedRecord = record;
    this.observedAt = at;
  }

  private heldByAnotherAndValid(lease: V1Lease, at: number): boolean {
    const holder = lease.spec?.holderIdentity;
    if (!holder || holder === this.identity) return false;
    const durationMs = (lease.spec?.leaseDurationSeconds ?? this.leaseDurationSeconds()) * 1000;
    return at < this.observedAt + durationMs;
  }

  private async giveLeaseBack(): Promise<void> {
    const options = requestTimeout(this.renewDeadlineMs);
    const lease = await this.readLease(options);
    if (!lease || lease.spec?.holderIdentity !== this.identity) return;
    const time = new V1MicroTime();
    const body: V1Lease = {
      ...lease,
      spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: time, acquireTime: time },
    };
    await this.coordination.replaceNamespacedLease(
      { name: this.options.name, namespace: this.options.namespace, body },
      options,
    );
  }

  private leaseDurationSeconds(): number {
    return Math.max(1, Math.ceil(this.leaseDurationMs / 1000));
  }

  private setLeading(leading: boolean): void {
    this.leading = leading;
    leaderStatus.set({ name: this.options.name }, leading ? 1 : 0);
  }

  private logFailedAttempt(err: unknown): void {
    if (statusCodeOf(err) === httpConflict) {
      this.log.debug("lease changed while we wrote it (409); will retry");
      return;
    }
    // Warn on every failed round, standby or leader (as client-go's leaderelection does): a
    // standby that cannot reach the API server (wrong address, no token, RBAC) otherwise looks
    // idle but healthy, and the cause is exactly what the user needs to see.
    this.log.warn(
      { error: describeError(err), leading: this.leading },
      "cannot read or write the leader lease; will retry (check the API server address, credentials and RBAC)",
    );
  }

  /** Runs a callback without awaiting it; what it throws is logged. */
  private callback(name: string, fn: (() => void | Promise<void>) | undefined): void {
    const logFailure = (err: unknown) =>
      this.log.error({ callback: name, error: describeError(err) }, "leader election callback failed");
    try {
      const result = fn?.();
      if (result instanceof Promise) result.catch(logFailure);
    } catch (err) {
      logFailure(err);
    }
  }
}

/** Everything whose change proves the holder is alive (or that the holder changed). */
function leaseRecord(lease: V1Lease): string {
  const spec = lease.spec ?? {};
  return JSON.stringify([
    spec.holderIdentity ?? "",
    timeText(spec.renewTime),
    timeText(spec.acquireTime),
    spec.leaseDurationSeconds ?? 0,
    spec.leaseTransitions ?? 0,
  ]);
}

/** Lease times arrive as strings, or as V1MicroTime when we wrote them ourselves. */
function timeText(time: unknown): string {
  if (time instanceof Date) return time.toISOString();
  return time === undefined || time === null ? "" : String(time);
}

/** Pod name (unique within the namespace) plus a random suffix (unique across restarts). */
function defaultIdentity(): string {
  const podName = process.env.POD_NAME ?? hostname();
  return `${podName}_${randomBytes(4).toString("hex")}`;
}

function validateTimings(leaseDurationMs: number, renewDeadlineMs: number, retryPeriodMs: number): void {
  if (!(leaseDurationMs > renewDeadlineMs)) throw new Error("leaseDuration must be greater than renewDeadline");
  if (!(renewDeadlineMs > retryJitter * retryPeriodMs))
    throw new Error("renewDeadline must be greater than 1.2 × retryPeriod");
}

/** Monotonic milliseconds: immune to the wall clock being set back or forward. */
function now(): number {
  return performance.now();
}
