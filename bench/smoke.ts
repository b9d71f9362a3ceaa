/**
 * `npm run bench:smoke`: every benchmark scenario at a tiny size (BENCH_SCALE=smoke, about two
 * minutes), so that a change that breaks a scenario is caught without the full 30-minute run.
 * The report goes next to the logs (BENCH_LOG_DIR, default a new temp folder), never to
 * docs/benchmarks.md.
 *
 * It fails when a scenario does not run, or when a goal that does not depend on timing is
 * missed: zero writes in the steady state, exact reaper kills, no two reconciles of one key at
 * once. Timing goals are printed, not enforced: at this size and on a shared machine they say
 * little.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runBench } from "./run.js";

const EXACT = [
  /steady state: API writes/,
  /steady state: SQL/,
  /exactly the right sessions/,
  /reconciles of one key in flight/,
  /server connections of the pooled runs/,
];

// One folder for the logs and the report, so that whoever runs this removes one thing.
process.env.BENCH_LOG_DIR ??= join(tmpdir(), `poolpolicy-bench-smoke-${Date.now()}`);
const out = join(process.env.BENCH_LOG_DIR, "report.md");
const run = await runBench({ scale: "smoke", out });
const problems: string[] = [];
for (const r of run.results) {
  if (r.error) problems.push(`${r.title} did not run: ${r.error.split("\n")[0]}`);
  for (const c of r.checks)
    if (c.met === false && EXACT.some((re) => re.test(c.what))) problems.push(`${c.what}: ${c.measured}`);
}
console.log(`smoke report: ${out}`);
if (problems.length > 0) {
  console.error(`bench smoke FAILED:\n- ${problems.join("\n- ")}`);
  process.exit(1);
}
console.log(`bench smoke: ${run.results.length} scenarios ran`);
process.exit(0);
