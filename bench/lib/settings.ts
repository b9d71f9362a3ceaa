/**
 * Benchmark sizes. BENCH_SCALE picks a preset (full: the sizes, about 30 minutes on
 * 2 cores; small: the same scenarios scaled down, about 10 minutes; smoke: tiny, about 2
 * minutes, for checking that every scenario still runs); single BENCH_* variables override it.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";

export type ScaleName = "full" | "small" | "smoke";

export interface Settings {
  scale: ScaleName;
  /** Deployments selected by one policy, one fan-out measurement each. */
  fanoutN: number[];
  /** Operator runs per N (each between two baseline runs); above 300 Deployments, `fanoutRoundsLarge`. */
  fanoutRounds: number;
  fanoutRoundsLarge: number;
  steadyPolicies: number;
  steadyDeployments: number;
  steadySeconds: number;
  /** Deployments in the cluster for each memory measurement (a fifth of them selected). */
  memoryN: number[];
  memoryPolicies: number;
  /** Backends for each reaper measurement. */
  reaperN: number[];
  /** Timed dry-run repetitions of the reap statement per N. */
  reaperRepetitions: number;
  /** Sessions in the promptness comparison (each side). */
  reaperPromptnessSessions: number;
  stormPolicies: number;
  stormRatePerSecond: number;
  stormSeconds: number;
  restartChanges: number;
  /** PoolPolicies on one server, 5 Deployments each, one measurement per size (scenario "many"). */
  manyPolicies: number[];
  /** Connections opened for each backend-memory measurement (scenario "backends"). */
  backendsN: number[];
  /** pgbench direct vs through PgBouncer (scenario "pooler"): seconds a run, pgbench's scale. */
  pooler: { seconds: number; scale: number };
  /** The reaper's idle-in-transaction timeout in the kill passes (each pass waits that long). */
  reaperIdleTimeoutMs: number;
  /** Comparisons beyond the goals (client-node as shipped, the raw client at WORKERS in flight, a mass kill). */
  extras: boolean;
  /** Replicas of every benchmark Deployment (0: no pods, see docs/benchmarks.md). */
  replicas: number;
  /** The operator's WORKERS. */
  workers: number;
  /** Take a CPU profile of an extra, uncounted fan-out run at the largest N. */
  profile: boolean;
  only: string[] | undefined;
  out: string;
  logDir: string;
}

const presets: Record<
  ScaleName,
  Omit<Settings, "scale" | "only" | "out" | "logDir" | "profile" | "replicas" | "workers" | "extras">
> = {
  full: {
    fanoutN: [100, 1000],
    fanoutRounds: 2,
    fanoutRoundsLarge: 1,
    steadyPolicies: 50,
    steadyDeployments: 1000,
    steadySeconds: 600,
    memoryN: [100, 1000, 5000],
    memoryPolicies: 10,
    reaperN: [1000, 5000],
    reaperRepetitions: 50,
    reaperPromptnessSessions: 40,
    stormPolicies: 10,
    stormRatePerSecond: 10,
    stormSeconds: 60,
    restartChanges: 2,
    manyPolicies: [200, 1000],
    backendsN: [50, 200],
    pooler: { seconds: 30, scale: 10 },
    reaperIdleTimeoutMs: 10_000,
  },
  small: {
    fanoutN: [100, 300],
    fanoutRounds: 2,
    fanoutRoundsLarge: 1,
    steadyPolicies: 10,
    steadyDeployments: 200,
    steadySeconds: 120,
    memoryN: [100, 500, 1000],
    memoryPolicies: 10,
    reaperN: [500, 1000],
    reaperRepetitions: 30,
    reaperPromptnessSessions: 20,
    stormPolicies: 10,
    stormRatePerSecond: 10,
    stormSeconds: 30,
    restartChanges: 1,
    manyPolicies: [200],
    backendsN: [50, 100],
    pooler: { seconds: 15, scale: 5 },
    reaperIdleTimeoutMs: 10_000,
  },
  smoke: {
    fanoutN: [20],
    fanoutRounds: 1,
    fanoutRoundsLarge: 1,
    steadyPolicies: 3,
    steadyDeployments: 30,
    steadySeconds: 15,
    memoryN: [100],
    memoryPolicies: 5,
    reaperN: [100],
    reaperRepetitions: 10,
    reaperPromptnessSessions: 6,
    stormPolicies: 3,
    stormRatePerSecond: 5,
    stormSeconds: 8,
    restartChanges: 1,
    manyPolicies: [10],
    backendsN: [10],
    pooler: { seconds: 3, scale: 1 },
    reaperIdleTimeoutMs: 2_000,
  },
};

const numbers = (v: string | undefined) =>
  v
    ? v
        .split(",")
        .map((x) => Number(x.trim()))
        .filter((n) => Number.isFinite(n) && n > 0)
    : undefined;
const number = (v: string | undefined) =>
  v !== undefined && v !== "" && Number.isFinite(Number(v)) ? Number(v) : undefined;

export function loadSettings(env: NodeJS.ProcessEnv = process.env, forced?: ScaleName): Settings {
  const scale = (forced ?? env.BENCH_SCALE ?? "full") as ScaleName;
  if (!(scale in presets)) throw new Error(`BENCH_SCALE must be full, small or smoke, not ${scale}`);
  const p = presets[scale];
  return {
    scale,
    fanoutN: numbers(env.BENCH_FANOUT_N) ?? p.fanoutN,
    fanoutRounds: number(env.BENCH_FANOUT_ROUNDS) ?? p.fanoutRounds,
    fanoutRoundsLarge: number(env.BENCH_FANOUT_ROUNDS) ?? p.fanoutRoundsLarge,
    steadyPolicies: number(env.BENCH_STEADY_POLICIES) ?? p.steadyPolicies,
    steadyDeployments: number(env.BENCH_STEADY_DEPLOYMENTS) ?? p.steadyDeployments,
    steadySeconds: number(env.BENCH_STEADY_SECONDS) ?? p.steadySeconds,
    memoryN: numbers(env.BENCH_MEMORY_N) ?? p.memoryN,
    memoryPolicies: number(env.BENCH_MEMORY_POLICIES) ?? p.memoryPolicies,
    reaperN: numbers(env.BENCH_REAPER_N) ?? p.reaperN,
    reaperRepetitions: number(env.BENCH_REAPER_REPETITIONS) ?? p.reaperRepetitions,
    reaperPromptnessSessions: number(env.BENCH_REAPER_PROMPTNESS_SESSIONS) ?? p.reaperPromptnessSessions,
    stormPolicies: number(env.BENCH_STORM_POLICIES) ?? p.stormPolicies,
    stormRatePerSecond: number(env.BENCH_STORM_RATE) ?? p.stormRatePerSecond,
    stormSeconds: number(env.BENCH_STORM_SECONDS) ?? p.stormSeconds,
    restartChanges: number(env.BENCH_RESTART_CHANGES) ?? p.restartChanges,
    manyPolicies: numbers(env.BENCH_MANY_POLICIES) ?? p.manyPolicies,
    backendsN: numbers(env.BENCH_BACKENDS_N) ?? p.backendsN,
    pooler: { seconds: number(env.BENCH_POOLER_SECONDS) ?? p.pooler.seconds, scale: p.pooler.scale },
    reaperIdleTimeoutMs: number(env.BENCH_REAPER_TIMEOUT_MS) ?? p.reaperIdleTimeoutMs,
    extras: env.BENCH_EXTRAS ? env.BENCH_EXTRAS === "1" : scale !== "smoke",
    replicas: number(env.BENCH_REPLICAS) ?? 0,
    workers: number(env.BENCH_WORKERS) ?? 4,
    profile: env.BENCH_PROFILE === "1",
    only: env.BENCH_ONLY ? env.BENCH_ONLY.split(",").map((s) => s.trim()) : undefined,
    out: env.BENCH_OUT ?? "docs/benchmarks.md",
    logDir: env.BENCH_LOG_DIR ?? join(tmpdir(), `poolpolicy-bench-${Date.now()}`),
  };
}

export interface Ctx {
  settings: Settings;
  log(message: string): void;
}
