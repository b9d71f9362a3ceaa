/**
 * `make demo` is the README's first command: run it end to end (DEMO_EXIT=1 makes it stop by
 * itself) and check that it tells the whole story and leaves nothing behind. DEMO=kwok: the form
 * on simulated pods, which every machine runs; the real-pod form is made of the steps that
 * test/e2e/story.test.ts checks.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { repoRoot } from "../harness/tools.js";

it("tells the story and cleans up after itself", () => {
  const run = spawnSync(process.execPath, ["--import", "tsx", join(repoRoot, "test/harness/demo.ts")], {
    cwd: repoRoot,
    env: { ...process.env, DEMO: "kwok", DEMO_EXIT: "1" },
    encoding: "utf8",
    timeout: 300_000,
  });
  const out = run.stdout + run.stderr;
  expect(run.status, out).toBe(0);
  expect(out).toContain("max_connections before: 100");
  expect(out).toContain("max_connections after: 200 (PostgreSQL restarted 1 time(s) by the rollout)");
  expect(out).toMatch(/governance\s+True\s+Converged\s+200\s+\d+\/200 \(\d+%\)\s+3\/3/);
  expect(out).toMatch(/api\s+LOG_LEVEL,DB_POSTGRES_MIN_CONN,DB_POSTGRES_MAX_CONN\s+info,5,25/);
  expect(out).toMatch(/session \d+ was terminated by the reaper/);
  expect(out).toContain("Ready=True (Converged)");
  const kubeconfig = out.match(/export KUBECONFIG=(\S+)/)?.[1];
  expect(kubeconfig).toBeDefined();
  expect(existsSync(kubeconfig!)).toBe(false); // the control plane's temp dir is gone
});
