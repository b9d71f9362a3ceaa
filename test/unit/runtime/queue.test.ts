import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { WorkQueue } from "../../../src/runtime/queue.js";
import {
  ExponentialFailureRateLimiter,
  MaxOfRateLimiter,
  TokenBucketRateLimiter,
} from "../../../src/runtime/rate-limiter.js";

/** Whether a promise has settled, checked without waiting for it. */
async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

afterEach(() => {
  vi.useRealTimers();
});

describe("WorkQueue: deduplication and hand-out", () => {
  it("keeps one copy of a key while it waits, in arrival order", async () => {
    const queue = new WorkQueue();
    queue.add("a");
    queue.add("b");
    queue.add("a");
    expect(queue.len()).toBe(2);
    expect(await queue.get()).toBe("a");
    expect(await queue.get()).toBe("b");
    expect(queue.len()).toBe(0);
  });

  it("never hands out a key that a worker holds, even when re-added", async () => {
    const queue = new WorkQueue();
    queue.add("a");
    expect(await queue.get()).toBe("a");

    queue.add("a");
    expect(queue.len()).toBe(0);
    const second = queue.get();
    expect(await isSettled(second)).toBe(false);

    queue.done("a");
    expect(await second).toBe("a");
  });

  it("re-queues a key added while processing exactly once, after done", async () => {
    const queue = new WorkQueue();
    queue.add("a");
    await queue.get();
    queue.add("a");
    queue.add("a");
    queue.add("a");
    queue.done("a");
    expect(queue.len()).toBe(1);
    expect(await queue.get()).toBe("a");
    queue.done("a");
    expect(queue.len()).toBe(0);
  });

  it("does not re-queue a key that was not added again while processing", async () => {
    const queue = new WorkQueue();
    queue.add("a");
    await queue.get();
    queue.done("a");
    expect(queue.len()).toBe(0);
  });

  it("hands a key straight to a worker that was waiting", async () => {
    const queue = new WorkQueue();
    const waiting = queue.get();
    queue.add("a");
    expect(await waiting).toBe("a");
  });

  it("keeps its invariants under any sequence of adds, gets and dones", async () => {
    type Op = { kind: "add"; key: string } | { kind: "get" } | { kind: "done"; index: number };
    const op = fc.oneof(
      fc.record({ kind: fc.constant("add" as const), key: fc.constantFrom("a", "b", "c") }),
      fc.record({ kind: fc.constant("get" as const) }),
      fc.record({ kind: fc.constant("done" as const), index: fc.nat(5) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops: Op[]) => {
        const queue = new WorkQueue();
        const held = new Set<string>();
        /** Keys added since they were last handed out: each must come out again. */
        const owed = new Set<string>();
        for (const step of ops) {
          if (step.kind === "add") {
            queue.add(step.key);
            owed.add(step.key);
          } else if (step.kind === "get") {
            if (queue.len() === 0) continue;
            const key = (await queue.get())!;
            expect(held.has(key)).toBe(false);
            held.add(key);
            owed.delete(key);
          } else {
            const key = [...held][step.index % Math.max(1, held.size)];
            if (key === undefined) continue;
            held.delete(key);
            queue.done(key);
          }
        }
        for (const key of held) queue.done(key);
        // Drain: everything owed comes out, once.
        const drained: string[] = [];
        while (queue.len() > 0) {
          const key = (await queue.get())!;
          drained.push(key);
          queue.done(key);
        }
        expect(new Set(drained).size).toBe(drained.length);
        expect(new Set(drained)).toEqual(owed);
      }),
      { numRuns: 200 },
    );
  });
});

describe("WorkQueue: delayed adds", () => {
  it("adds keys when their delay passes, shortest delay first", async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue();
    queue.addAfter("slow", 1_000);
    queue.addAfter("fast", 100);
    expect(queue.len()).toBe(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(queue.len()).toBe(1);
    expect(await queue.get()).toBe("fast");
    await vi.advanceTimersByTimeAsync(900);
    expect(await queue.get()).toBe("slow");
  });

  it("lets an earlier delay for the same key win over a later one", async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue();
    queue.addAfter("a", 10_000);
    queue.addAfter("a", 100);
    await vi.advanceTimersByTimeAsync(100);
    expect(queue.len()).toBe(1);
  });

  it("ignores a later delay for a key already scheduled earlier", async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue();
    queue.addAfter("a", 100);
    queue.addAfter("a", 10_000);
    await vi.advanceTimersByTimeAsync(100);
    expect(await queue.get()).toBe("a");
    queue.done("a");
    await vi.advanceTimersByTimeAsync(10_000);
    expect(queue.len()).toBe(0);
  });

  it("adds at once when the delay is zero or negative", () => {
    const queue = new WorkQueue();
    queue.addAfter("a", 0);
    queue.addAfter("b", -5);
    expect(queue.len()).toBe(2);
  });

  it("retries with the rate limiter's growing delay and starts over after forget", async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue({ rateLimiter: new ExponentialFailureRateLimiter(100, 10_000) });
    const readyAfter = async (): Promise<number> => {
      let waited = 0;
      while (queue.len() === 0) {
        await vi.advanceTimersByTimeAsync(10);
        waited += 10;
      }
      const key = (await queue.get())!;
      queue.done(key);
      return waited;
    };
    queue.addRateLimited("a");
    expect(await readyAfter()).toBe(100);
    queue.addRateLimited("a");
    expect(await readyAfter()).toBe(200);
    queue.addRateLimited("a");
    expect(await readyAfter()).toBe(400);
    expect(queue.numRequeues("a")).toBe(3);
    queue.forget("a");
    expect(queue.numRequeues("a")).toBe(0);
    queue.addRateLimited("a");
    expect(await readyAfter()).toBe(100);
  });
});

describe("WorkQueue: shutdown", () => {
  it("wakes blocked workers with undefined and hands out nothing more", async () => {
    const queue = new WorkQueue();
    const blocked = queue.get();
    queue.shutDown();
    expect(await blocked).toBeUndefined();
    queue.add("a");
    expect(queue.len()).toBe(0);
    expect(await queue.get()).toBeUndefined();
  });

  it("cancels delayed adds", async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue();
    queue.addAfter("a", 100);
    queue.shutDown();
    await vi.advanceTimersByTimeAsync(200);
    expect(queue.len()).toBe(0);
  });

  it("shutDownWithDrain resolves only once held keys are done", async () => {
    const queue = new WorkQueue();
    queue.add("a");
    await queue.get();
    const drained = queue.shutDownWithDrain();
    expect(await isSettled(drained)).toBe(false);
    queue.done("a");
    await drained;
    expect(queue.isShuttingDown).toBe(true);
  });
});

describe("rate limiters", () => {
  it("backs off exponentially per key from 5 ms, capped at 1000 s", () => {
    const limiter = new ExponentialFailureRateLimiter();
    const delays = Array.from({ length: 20 }, () => limiter.when("a"));
    expect(delays.slice(0, 5)).toEqual([5, 10, 20, 40, 80]);
    expect(delays.every((delay, i) => i === 0 || delay >= delays[i - 1]!)).toBe(true);
    expect(Math.max(...delays)).toBe(1_000_000);
    // Hundreds of failures later it is still the cap, not Infinity.
    for (let i = 0; i < 2_000; i++) limiter.when("a");
    expect(limiter.when("a")).toBe(1_000_000);
    expect(limiter.when("b")).toBe(5);
  });

  it("forgets a key's history", () => {
    const limiter = new ExponentialFailureRateLimiter();
    limiter.when("a");
    limiter.when("a");
    expect(limiter.numRequeues("a")).toBe(2);
    limiter.forget("a");
    expect(limiter.numRequeues("a")).toBe(0);
    expect(limiter.when("a")).toBe(5);
  });

  it("token bucket: the burst passes at once, then one token per 1/qps", () => {
    let clock = 0;
    const bucket = new TokenBucketRateLimiter(10, 100, () => clock);
    const burst = Array.from({ length: 100 }, () => bucket.when());
    expect(burst.every((delay) => delay === 0)).toBe(true);
    expect(bucket.when()).toBeCloseTo(100);
    expect(bucket.when()).toBeCloseTo(200);
    clock += 10_000; // ten seconds refill up to the burst, not beyond it
    const afterRefill = Array.from({ length: 98 }, () => bucket.when());
    expect(afterRefill.every((delay) => delay === 0)).toBe(true);
  });

  it("max-of takes the strictest limiter", () => {
    const clock = 0;
    const limiter = new MaxOfRateLimiter(
      new ExponentialFailureRateLimiter(5, 1_000_000),
      new TokenBucketRateLimiter(1, 1, () => clock),
    );
    expect(limiter.when("a")).toBe(5); // bucket had its one token
    expect(limiter.when("b")).toBeCloseTo(1_000); // bucket empty: wait a second
    expect(limiter.numRequeues("a")).toBe(1);
    limiter.forget("a");
    expect(limiter.numRequeues("a")).toBe(0);
  });
});
