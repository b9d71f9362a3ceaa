/**
 * Gives V8's pooled heap pages back to the system once a peak of work has passed.
 *
 * Why: after a peak (200 policies converging on one server, a first sync of 1,000 Deployments),
 * the operator's live heap falls back to about 50 MiB, but its RSS stayed at 348–466 MiB
 * (bench/findings.md, scenario 7): 260 MiB sat in 256 KiB anonymous mappings, V8's heap pages.
 * V8 keeps the pages a collection empties, committed in its spaces or pooled for reuse, and
 * returns them only on a memory-reducing collection: its memory reducer runs one when it sees a
 * low allocation rate some seconds after a peak (8 s at the earliest), or a last-resort GC under
 * memory pressure. Regular full GCs keep them. Measured on Node 24.21 (test/unit/fixtures/
 * heap-peak.ts: a 150 MiB peak of small objects, dropped, two full GCs): RSS 229 MiB with 10 MiB
 * of heap used; an idle process got back to 91 MiB 10 s later, when the reducer ran; after a
 * last-resort GC it is back at once, in about 35 ms. An operator is never idle for long (watch
 * events, the stats refresh, passes), and in a Pod the pages it keeps are what the memory limit
 * counts: it asks for the memory-reducing collection itself instead of waiting on a heuristic.
 *
 * The rule (`decide`): sample the process every `sampleMs`; what V8 keeps shows as RSS above the
 * heap in use (`rss - heapUsed`). When that gap has grown by at least `growthBytes` since the last
 * give-back (or start), and the last give-back is at least `minIntervalMs` ago, run one
 * last-resort collection. The gap right after it becomes the new baseline, so growth that is not
 * V8's (the C heap, mapped code) triggers at most one collection per `growthBytes` of it, never
 * one per sample. A gap that moves with the young generation's garbage (tens of MiB between two
 * collections) stays under `growthBytes`. The cost is one full collection of the live heap (tens
 * of ms at 50 MiB) at most once per `minIntervalMs`, only after a peak.
 */
import v8 from "node:v8";
import vm from "node:vm";
import { Counter } from "prom-client";
import type { Logger } from "../log.js";
import { registry } from "./metrics.js";

const giveBacks = new Counter({
  name: "poolpolicy_operator_heap_give_backs_total",
  help: "Memory-reducing collections run to give V8's pooled heap pages back after a peak of work.",
  registers: [registry],
});
const givenBack = new Counter({
  name: "poolpolicy_operator_heap_given_back_bytes_total",
  help: "Bytes of resident memory those collections returned to the system.",
  registers: [registry],
});

export interface HeapPagesOptions {
  sampleMs: number;
  growthBytes: number;
  minIntervalMs: number;
}

export const HEAP_PAGES_DEFAULTS: HeapPagesOptions = {
  sampleMs: 15_000,
  // A quarter of the chart's request: well above the gap's noise between samples (a few MiB).
  growthBytes: 64 * 1024 * 1024,
  minIntervalMs: 60_000,
};

export interface MemorySample {
  rss: number;
  heapUsed: number;
}

export interface GiveBackState {
  /** `rss - heapUsed` right after the last give-back, or at start. */
  baselineGap: number;
  /** When the last give-back ran (ms, the sampler's clock), or -Infinity. */
  lastAt: number;
}

/** Whether to give the pooled pages back now (the rule above). Pure: the unit tests drive it. */
export function decide(sample: MemorySample, state: GiveBackState, now: number, opts: HeapPagesOptions): boolean {
  const gap = sample.rss - sample.heapUsed;
  return gap - state.baselineGap >= opts.growthBytes && now - state.lastAt >= opts.minIntervalMs;
}

/** V8's `gc` function, without --expose-gc on the command line (the Dockerfile's CMD stays plain). */
function exposedGc(): (options: object) => void {
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as (options: object) => void;
}

export interface HeapPagesDeps {
  sample: () => MemorySample;
  /** Runs a memory-reducing collection (V8's last-resort GC). */
  collect: () => void;
  now: () => number;
}

export class HeapPagesGiveBack {
  private timer?: NodeJS.Timeout;
  private state: GiveBackState;
  /** Give-backs run and bytes of RSS they returned, for /metrics and the tests. */
  readonly totals = { runs: 0, bytes: 0 };

  constructor(
    private readonly log: Logger,
    private readonly opts: HeapPagesOptions = HEAP_PAGES_DEFAULTS,
    private readonly deps: HeapPagesDeps = processDeps(),
  ) {
    const first = deps.sample();
    this.state = { baselineGap: first.rss - first.heapUsed, lastAt: Number.NEGATIVE_INFINITY };
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), this.opts.sampleMs);
    // The sampler must never keep the process alive on its own.
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One sample; gives the pages back if `decide` says so. Public for the tests. */
  tick(): void {
    const before = this.deps.sample();
    const now = this.deps.now();
    if (!decide(before, this.state, now, this.opts)) return;
    const started = this.deps.now();
    this.deps.collect();
    const after = this.deps.sample();
    this.state = { baselineGap: after.rss - after.heapUsed, lastAt: now };
    const returned = Math.max(0, before.rss - after.rss);
    this.totals.runs += 1;
    this.totals.bytes += returned;
    giveBacks.inc();
    givenBack.inc(returned);
    const mib = (n: number) => Math.round(n / 1048576);
    this.log.info(
      {
        rssBeforeMiB: mib(before.rss),
        rssAfterMiB: mib(after.rss),
        heapUsedMiB: mib(after.heapUsed),
        ms: Math.round(this.deps.now() - started),
      },
      "gave pooled heap pages back to the system after a peak of work",
    );
  }
}

function processDeps(): HeapPagesDeps {
  const gc = exposedGc();
  return {
    sample: () => {
      const { rss, heapUsed } = process.memoryUsage();
      return { rss, heapUsed };
    },
    collect: () => gc({ type: "major", execution: "sync", flavor: "last-resort" }),
    now: () => performance.now(),
  };
}
