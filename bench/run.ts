/**
 * `make bench` / `npm run bench`: runs the benchmark scenarios of issue 7 one after another, each
 * on a control plane, PostgreSQL and operator of its own, and writes docs/benchmarks.md.
 *
 *   BENCH_SCALE=full|small|smoke   sizes (default full, about 30 min on 2 cores; small about 10 min)
 *   BENCH_ONLY=fanout,steady,…     a subset: fanout, steady, memory, reaper, storm, restart, many, backends, pooler
 *   BENCH_OUT=path                 where the report goes (default docs/benchmarks.md)
 *   BENCH_LOG_DIR=dir              operator logs, profiles and results.json (default: a temp dir)
 *   BENCH_PROFILE=1                add an uncounted, CPU-profiled operator run to the fan-out;
 *                                  profile both sides of "many" (their figures then carry its cost)
 *   BENCH_RENDER=results.json      measure nothing: render the report again from a run's raw
 *                                  results (after editing bench/findings.md)
 *   single sizes: see bench/lib/settings.ts (BENCH_FANOUT_N=100,1000, BENCH_STEADY_SECONDS=600, …)
 *
 * Exit status: 0 when every scenario ran (a missed goal is a result, reported as such), 1 when a
 * scenario failed to run.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { repoRoot } from "../test/harness/tools.js";
import { machineInfo, renderMarkdown, type MachineInfo, type ScenarioResult } from "./lib/report.js";
import { loadSettings, type Ctx, type ScaleName, type Settings } from "./lib/settings.js";
import { fanout } from "./scenarios/fanout.js";
import { steady } from "./scenarios/steady.js";
import { memory } from "./scenarios/memory.js";
import { reaper } from "./scenarios/reaper.js";
import { storm } from "./scenarios/storm.js";
import { restart } from "./scenarios/restart.js";
import { many } from "./scenarios/many.js";
import { backends } from "./scenarios/backends.js";
import { pooler } from "./scenarios/pooler.js";

export const scenarios: Record<string, { title: string; run: (ctx: Ctx) => Promise<ScenarioResult> }> = {
  fanout: { title: "1. Fan-out", run: fanout },
  steady: { title: "2. Steady state", run: steady },
  memory: { title: "3. Memory", run: memory },
  reaper: { title: "4. Reaper", run: reaper },
  storm: { title: "5. Event storm", run: storm },
  restart: { title: "6. Restart", run: restart },
  many: { title: "7. Many policies on one server", run: many },
  backends: { title: "8. Backend memory", run: backends },
  pooler: { title: "9. Pooler", run: pooler },
};

export interface BenchRun {
  settings: Settings;
  results: ScenarioResult[];
  markdown: string;
}

export async function runBench(options: { scale?: ScaleName; out?: string } = {}): Promise<BenchRun> {
  const settings = loadSettings(process.env, options.scale);
  if (options.out) settings.out = options.out;
  mkdirSync(settings.logDir, { recursive: true });
  const started = performance.now();
  const machine = machineInfo();
  const log = (message: string) =>
    console.log(`[bench ${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}`);
  log(`scale ${settings.scale}; logs, profiles and results.json in ${settings.logDir}`);
  const selected = Object.entries(scenarios).filter(([id]) => !settings.only || settings.only.includes(id));
  const results: ScenarioResult[] = [];
  for (const [id, scenario] of selected) {
    const t0 = performance.now();
    log(`${scenario.title}: start`);
    try {
      const result = await scenario.run({ settings, log: (m) => log(`${id}: ${m}`) });
      results.push(result);
      for (const c of result.checks)
        log(
          `${id}: ${c.what}: ${c.measured} vs ${c.baseline} → ${c.ratio} (goal ${c.goal}: ${c.met === null ? "—" : c.met ? "met" : "MISSED"})`,
        );
    } catch (err) {
      const error = (err as Error).stack ?? String(err);
      log(`${scenario.title}: FAILED: ${error}`);
      results.push({
        id,
        title: scenario.title,
        method: [],
        checks: [],
        tables: [],
        notes: [],
        durationMs: performance.now() - t0,
        error,
      });
    }
  }
  machine.loadAverageEnd = loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  const sizes = sizesOf(settings);

  const totalMs = performance.now() - started;
  const markdown = renderMarkdown(machine, results, sizes, totalMs);
  const out = resolve(repoRoot, settings.out);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, markdown);
  writeFileSync(
    join(settings.logDir, "results.json"),
    JSON.stringify({ machine, settings, totalMs, results }, null, 2),
  );
  log(`wrote ${out} (raw results: ${join(settings.logDir, "results.json")})`);
  return { settings, results, markdown };
}

/** The sizes a run used, for the report's header. */
function sizesOf(settings: Settings): Record<string, string> {
  return {
    BENCH_SCALE: settings.scale,
    fanoutN: settings.fanoutN.join("/"),
    steady: `${settings.steadyPolicies} policies/${settings.steadyDeployments} Deployments/${settings.steadySeconds} s`,
    memoryN: settings.memoryN.join("/"),
    reaperN: settings.reaperN.join("/"),
    storm: `${settings.stormRatePerSecond}/s × ${settings.stormSeconds} s over ${settings.stormPolicies} policies`,
    manyPolicies: `${settings.manyPolicies.join("/")} × 5 Deployments`,
    // Absent from the results of runs made before scenario 8 existed.
    backendsN: settings.backendsN?.join("/") ?? "(not in this run)",
    pooler: settings.pooler
      ? `pgbench scale ${settings.pooler.scale}, ${settings.pooler.seconds} s a run`
      : "(not in this run)",
    replicas: String(settings.replicas),
    WORKERS: String(settings.workers),
  };
}

/** Renders the report again from a run's results.json, measuring nothing. */
function renderAgain(resultsFile: string, outFile: string): void {
  const saved = JSON.parse(readFileSync(resultsFile, "utf8")) as {
    machine: MachineInfo;
    settings: Settings;
    totalMs?: number;
    results: ScenarioResult[];
  };
  const totalMs = saved.totalMs ?? saved.results.reduce((sum, r) => sum + r.durationMs, 0);
  const out = resolve(repoRoot, outFile);
  writeFileSync(out, renderMarkdown(saved.machine, saved.results, sizesOf(saved.settings), totalMs));
  console.log(`wrote ${out} from ${resultsFile}`);
}

// Ctrl-C or SIGTERM: exit through process.exit, so that the harness's exit hook
// (test/harness/processes.ts) kills every control plane, PostgreSQL and operator we started.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

if (process.argv[1] && resolve(process.argv[1]) === resolve(repoRoot, "bench/run.ts") && process.env.BENCH_RENDER) {
  renderAgain(process.env.BENCH_RENDER, process.env.BENCH_OUT ?? "docs/benchmarks.md");
} else if (process.argv[1] && resolve(process.argv[1]) === resolve(repoRoot, "bench/run.ts")) {
  runBench().then(
    (run) => process.exit(run.results.some((r) => r.error) ? 1 : 0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
