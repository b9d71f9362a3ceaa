/**
 * `make bench` is not part of `make test` (it takes half an hour), but its code must not rot:
 * every scenario runs here at a tiny size (bench/smoke.ts), and the goals that do not depend on
 * timing must hold: zero writes in the steady state, exactly the right sessions reaped, never
 * two reconciles of one key at once. Timing goals are only printed: at this size, on a shared
 * machine, they say nothing.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it, onTestFinished } from "vitest";
import { repoRoot } from "../harness/tools.js";

it("runs every benchmark scenario and keeps the exact goals", () => {
  // The logs and the report, removed however the test ends.
  const logDir = mkdtempSync(join(tmpdir(), "poolpolicy-bench-smoke-"));
  onTestFinished(() => rmSync(logDir, { recursive: true, force: true }));
  const run = spawnSync(process.execPath, ["--import", "tsx", join(repoRoot, "bench/smoke.ts")], {
    cwd: repoRoot,
    env: { ...process.env, BENCH_LOG_DIR: logDir },
    encoding: "utf8",
    timeout: 900_000,
  });
  const out = run.stdout + run.stderr;
  expect(run.status, out).toBe(0);
  expect(out).toContain("bench smoke: 9 scenarios ran");
  const report = out.match(/smoke report: (\S+)/)?.[1];
  expect(report, out).toBeDefined();
  const markdown = readFileSync(report!, "utf8");
  for (const title of [
    "1. Fan-out",
    "2. Steady state",
    "3. Memory",
    "4. Reaper",
    "5. Event storm",
    "6. Restart",
    "8. Backend memory",
    "9. Pooler",
  ])
    expect(markdown).toContain(`## ${title}`);
  expect(markdown).not.toContain("The scenario failed");
}, 960_000);
