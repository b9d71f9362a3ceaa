/**
 * How long a failed key waits before it is retried. The same three pieces as client-go's
 * workqueue rate limiters, and the same defaults as controller-runtime's
 * DefaultTypedControllerRateLimiter:
 *
 * - per key, an exponential backoff (5 ms · 2^failures, capped at 1000 s), so that one broken
 *   object retries quickly at first and then stops costing anything;
 * - overall, a token bucket (10 per second, burst 100), so that a thousand objects failing at
 *   once (say the database is down) do not turn into a thousand retries per second;
 * - the delay of a key is the larger of the two.
 *
 * `forget` is what a successful reconcile calls: the next failure starts from 5 ms again.
 */

export interface RateLimiter {
  /** Records one more failure of `key` and returns how long it should wait, in ms. */
  when(key: string): number;
  /** Clears the failure history of `key`. */
  forget(key: string): void;
  /** How many times `key` failed since it was last forgotten. */
  numRequeues(key: string): number;
}

export class ExponentialFailureRateLimiter implements RateLimiter {
  private readonly failures = new Map<string, number>();

  constructor(
    private readonly baseDelayMs = 5,
    private readonly maxDelayMs = 1_000_000,
  ) {}

  when(key: string): number {
    const failuresSoFar = this.failures.get(key) ?? 0;
    this.failures.set(key, failuresSoFar + 1);
    // 2^failures overflows to Infinity long after it passed the cap; min() keeps it finite.
    return Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** failuresSoFar);
  }

  forget(key: string): void {
    this.failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }
}

/**
 * A token bucket that never refuses: a request that finds the bucket empty reserves the next
 * token and is told how long until it exists (like golang.org/x/time/rate's Reserve). Tokens
 * can therefore go negative; each negative token is 1/qps seconds of waiting.
 */
export class TokenBucketRateLimiter implements RateLimiter {
  private tokens: number;
  private lastRefill: number;

  constructor(
    private readonly qps = 10,
    private readonly burst = 100,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.lastRefill = now();
  }

  when(): number {
    this.refill();
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.qps) * 1000;
  }

  /** The bucket is shared by every key: one key's success gives nothing back. */
  forget(): void {}

  numRequeues(): number {
    return 0;
  }

  private refill(): void {
    const now = this.now();
    const elapsedSeconds = (now - this.lastRefill) / 1000;
    this.lastRefill = now;
    this.tokens = Math.min(this.burst, this.tokens + elapsedSeconds * this.qps);
  }
}

/** Waits as long as the strictest of its limiters says. */
export class MaxOfRateLimiter implements RateLimiter {
  private readonly limiters: RateLimiter[];

  constructor(...limiters: RateLimiter[]) {
    this.limiters = limiters;
  }

  when(key: string): number {
    // Every limiter must record the failure, so no short-circuit.
    return Math.max(0, ...this.limiters.map((limiter) => limiter.when(key)));
  }

  forget(key: string): void {
    for (const limiter of this.limiters) limiter.forget(key);
  }

  numRequeues(key: string): number {
    return Math.max(0, ...this.limiters.map((limiter) => limiter.numRequeues(key)));
  }
}

export interface ControllerRateLimiterOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
  qps?: number;
  burst?: number;
}

/** controller-runtime's default: max(per-key 5 ms → 1000 s, overall 10 qps burst 100). */
export function defaultControllerRateLimiter(options: ControllerRateLimiterOptions = {}): RateLimiter {
  return new MaxOfRateLimiter(
    new ExponentialFailureRateLimiter(options.baseDelayMs ?? 5, options.maxDelayMs ?? 1_000_000),
    new TokenBucketRateLimiter(options.qps ?? 10, options.burst ?? 100),
  );
}
