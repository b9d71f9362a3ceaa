/**
 * Waiting between retries: an exponential backoff with jitter, and a sleep that a stop can cut
 * short.
 *
 * Why jitter: when the API server restarts, every watch of every operator replica breaks at
 * the same instant. Without jitter they would all come back at the same instants too, and
 * hammer the server in lockstep while it warms up its caches.
 */

export interface BackoffOptions {
  /** First delay. */
  initialMs?: number;
  /** Delays never exceed this. */
  maxMs?: number;
  /** Random source in [0, 1); injectable so that tests are deterministic. */
  random?: () => number;
}

export class Backoff {
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;
  private attempt = 0;

  constructor({ initialMs = 200, maxMs = 30_000, random = Math.random }: BackoffOptions = {}) {
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.random = random;
  }

  /**
   * The next delay: initial·2^attempt capped at max, then drawn uniformly from its upper half
   * ("equal jitter"), so the delay still grows but two clients rarely pick the same one.
   */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return ceiling / 2 + this.random() * (ceiling / 2);
  }

  /** Called after a success: the next failure starts from the initial delay again. */
  reset(): void {
    this.attempt = 0;
  }
}

/**
 * Resolves after `ms`, or as soon as `signal` aborts (it never rejects: the caller checks
 * whether it was stopped).
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
