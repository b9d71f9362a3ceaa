/**
 * The results table of the reliability suite, docs/reliability.md, written by the suite itself.
 *
 * How, with vitest running test files in parallel and no global teardown of ours:
 * - every scenario, when it ends (pass or fail), writes its row to a JSON file of its own test
 *   file in the run's folder: a folder every test file of one vitest run shares and the next run
 *   does not, inside the shared control plane's temp dir (runDir), so that it goes when the
 *   control plane is torn down;
 * - every test file, in its afterAll, renders the whole table: the catalogue below, the rows of
 *   this run found in the run dir, and for scenarios that did not run this time the rows of the
 *   previous table (kept as JSON at the end of the Markdown file). Writes go through a temp
 *   file and a rename, so a reader never sees half a file, and the last file to finish writes
 *   a table that holds every row of the run.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { cpus, hostname, totalmem, type as osType, release as osRelease } from "node:os";
import { dirname, join } from "node:path";
import { repoRoot } from "./tools.js";

export type Outcome = "pass" | "fail";

export interface ScenarioRow {
  id: string;
  title: string;
  promise: string;
  outcome: Outcome;
  /** The numbers the scenario measured (restarts, seconds, writes per minute…), or the failure. */
  details: string;
  /** The test file, relative to the repository. */
  file: string;
  seconds: number;
  /** ISO time the scenario ended. */
  at: string;
  /** Secrets found in the operator's logs, Events and statuses after the scenario (item 11). */
  secretHits?: number;
  machine: string;
}

export interface CatalogueEntry {
  id: string;
  title: string;
  promise: string;
  /** Set for promises kept by another test file: the table points there. */
  coveredBy?: string;
}

/**
 * Every promise of issue 6, in the order of the table. Scenarios of the fault suite add rows
 * with these ids (or sub-ids like "1a"); entries with `coveredBy` are proven elsewhere.
 */
export const CATALOGUE: CatalogueEntry[] = [
  {
    id: "1a",
    title: "SIGKILL after ALTER SYSTEM",
    promise: "max_connections converges with exactly one PostgreSQL restart, env and status right",
  },
  { id: "1b", title: "SIGKILL after the restart is requested", promise: "no second restart; status catches up" },
  {
    id: "1c",
    title: "SIGKILL mid-rollout (old pod gone, PostgreSQL down)",
    promise: "the restart completes once; verified after it",
  },
  { id: "1d", title: "SIGKILL before the status write", promise: "the verified result is written, no restart" },
  {
    id: "1e",
    title: "Events survive a crash after an action",
    promise: "every action taken before a crash has its Event",
  },
  {
    id: "1x",
    title: "SIGKILL after restart request (operator test)",
    promise: "exactly one restart",
    coveredBy: "test/integration/operator/max-connections.test.ts",
  },
  {
    id: "2a",
    title: "Two operators, leader election",
    promise: "only the Lease holder reconciles, writes status and Events",
  },
  {
    id: "2b",
    title: "Leader SIGKILLed",
    promise: "the standby takes over within the lease duration + a few seconds, and acts",
  },
  { id: "2c", title: "Leader stopped gracefully", promise: "releases the Lease: hand-over within a retry period" },
  {
    id: "3a",
    title: "kube-apiserver SIGKILLed and restarted (etcd kept)",
    promise: "informers recover; a change made meanwhile (through another apiserver) is applied",
  },
  {
    id: "3b",
    title: "kube-apiserver SIGSTOPped longer than the watch watchdog",
    promise: "the watchdog relists; a change made meanwhile is applied",
  },
  {
    id: "3x",
    title: "Informer recovery at the runtime level",
    promise: "restart and watchdog relist",
    coveredBy: "test/integration/runtime/informer-recovery.test.ts",
  },
  {
    id: "4a",
    title: "Another field manager changes the injected env",
    promise:
      "the operator's two entries restored, the other manager's edits kept; a rival that keeps forcing its value gets it back at most 3 times, then ConflictingManager and quiet",
  },
  {
    id: "4b",
    title: "a policy edited ten times a second while its status is written",
    promise: "no lost update, no status write refused with 409, writes per minute bounded, quiet once converged",
  },
  {
    id: "5a",
    title: "PostgreSQL down during reconciles",
    promise: "condition with reason, bounded retries, recovery, no crash",
  },
  {
    id: "5b",
    title: "Wrong password, then a rotated Secret",
    promise: "AuthenticationFailed, bounded login attempts, recovery, no crash",
  },
  { id: "5c", title: "Redis down (required)", promise: "Ready=False RedisUnavailable, recovery" },
  {
    id: "5x",
    title: "Missing Secret, wrong password, Redis down",
    promise: "conditions and recovery",
    coveredBy: "test/integration/operator/failures.test.ts",
  },
  {
    id: "6",
    title: "Every connection slot taken",
    promise: "the operator still connects (reserved slot) and reaps the idle-in-transaction sessions",
  },
  { id: "7", title: "Reaper race under load", promise: "zero wrong kills; every over-long idle transaction killed" },
  { id: "8a", title: "Fuzzed specs at admission (dry run)", promise: "rejected with 400/422 or admitted, never a 5xx" },
  {
    id: "8b",
    title: "Fuzzed specs through the operator",
    promise: "admitted-but-invalid → InvalidSpec and no SQL; valid → handled; the operator never crashes",
  },
  {
    id: "8x",
    title: "Admission vs zod agreement",
    promise: "the CRD and zod agree",
    coveredBy: "test/integration/api/admission-agreement.test.ts",
  },
  {
    id: "9a",
    title: "Operator as the chart's ServiceAccount",
    promise: "the story converges with the chart's RBAC (and every fault scenario runs with it)",
  },
  {
    id: "9b",
    title: "A missing permission",
    promise: "fails loudly: condition, Warning Event or log saying forbidden; recovers when granted",
  },
  { id: "9c", title: "Installed RBAC rules", promise: "no wildcard in the installed (Cluster)Roles" },
  {
    id: "9x",
    title: "RBAC by SubjectAccessReview; no wildcard in the rendered chart",
    promise: "allowed what it does, denied anything more",
    coveredBy: "test/integration/chart/install.test.ts, test/unit/chart/chart.test.ts",
  },
  {
    id: "10",
    title: "Pod Security 'restricted'",
    promise: "the chart's workload is admitted; weakened copies are rejected",
    coveredBy: "test/integration/chart/install.test.ts",
  },
  {
    id: "11",
    title: "Secrets never leak",
    promise:
      "after every fault scenario, the operator's logs, all Events and all statuses hold no test password or token",
  },
];

const REPORT_PATH = join(repoRoot, "docs/reliability.md");
const DATA_BEGIN = "<!-- reliability-data:begin -->";
const DATA_END = "<!-- reliability-data:end -->";

export function machineDescription(): string {
  const gib = (totalmem() / 2 ** 30).toFixed(1);
  return `${hostname()}: ${cpus().length} CPUs, ${gib} GiB, ${osType()} ${osRelease()}, Node ${process.versions.node}`;
}

/**
 * The folder where the test files of one vitest run leave their rows: next to the shared control
 * plane's kubeconfig, in its temp dir, which the global teardown removes.
 */
export function runDir(kubeconfigPath: string): string {
  return join(dirname(kubeconfigPath), "reliability-rows");
}

/** Adds or replaces this row in the test file's JSON in the run dir. */
export function recordRow(dir: string, row: ScenarioRow): void {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${row.file.replace(/[^A-Za-z0-9.-]/g, "_")}.json`);
  const rows = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as ScenarioRow[]) : [];
  const next = [...rows.filter((r) => r.id !== row.id), row];
  atomicWrite(file, JSON.stringify(next, null, 1));
}

export function rowsOfRun(dir: string): ScenarioRow[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .flatMap((f) => {
      try {
        return JSON.parse(readFileSync(join(dir, f), "utf8")) as ScenarioRow[];
      } catch {
        return []; // being replaced right now: the next render has it
      }
    });
}

/** The rows kept in the JSON block at the end of a previously written table. */
export function previousRows(markdown: string): ScenarioRow[] {
  const begin = markdown.indexOf(DATA_BEGIN);
  const end = markdown.indexOf(DATA_END);
  if (begin < 0 || end < begin) return [];
  const block = markdown
    .slice(begin + DATA_BEGIN.length, end)
    .replace(/^\s*```json\s*/, "")
    .replace(/\s*```\s*$/, "");
  try {
    return JSON.parse(block) as ScenarioRow[];
  } catch {
    return [];
  }
}

/** Rows of this run win over rows of earlier runs, per id. */
export function mergeRows(previous: ScenarioRow[], current: ScenarioRow[]): ScenarioRow[] {
  const byId = new Map<string, ScenarioRow>();
  for (const r of previous) byId.set(r.id, r);
  for (const r of current) byId.set(r.id, r);
  return [...byId.values()];
}

const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\r?\n/g, " ").trim();

/** The Markdown of the table for these rows; `now` and `machine` describe the writing run. */
export function renderMarkdown(rows: ScenarioRow[], now: Date, machine: string): string {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const lines: string[] = [];
  lines.push("# Reliability: fault injection, fuzzing, least privilege");
  lines.push("");
  lines.push(
    "**Written by the test suite** (`test/integration/faults/`, `test/harness/reliability-report.ts`): do not edit by hand,",
  );
  lines.push(
    "run `PATH=$PWD/node_modules/.bin:$PATH npx vitest run --project integration test/integration/faults` (or `make test`).",
  );
  lines.push(
    "Each scenario runs against a real kube-apiserver + etcd, a real PostgreSQL and Redis and the operator as its own",
  );
  lines.push(
    "process (with the chart's ServiceAccount token), breaks a real process or a real write, and asserts something that can fail.",
  );
  lines.push("");
  lines.push("How the faults are made, and what referees them:");
  lines.push(
    "- every fault test file starts a **private control plane** (etcd, kube-apiserver, controller-manager, scheduler, kwok) and",
  );
  lines.push(
    "  `helm install`s the chart into it; the operator runs with a **TokenRequest token of the chart's ServiceAccount**, so",
  );
  lines.push("  its RBAC is the chart's, and no operator of another test file can do (or hide) its work;");
  lines.push(
    "- a step boundary is hit exactly with a **ValidatingAdmissionPolicy** that refuses the operator's next write (the",
  );
  lines.push("  restart request, or its status write): it can do everything up to that write, then it is SIGKILLed;");
  lines.push(
    "- processes are really broken: the operator (SIGKILL, SIGTERM), the kube-apiserver (SIGKILL, SIGSTOP; a second",
  );
  lines.push(
    "  kube-apiserver on the same etcd makes changes meanwhile), PostgreSQL (shut down under a reconcile that waits on a",
  );
  lines.push(
    "  lock), Redis (stopped), credentials (wrong, rotated), RBAC rules (removed), connection slots (all taken);",
  );
  lines.push(
    "- the referees are outside the operator: PostgreSQL's own log (starts, ALTER SYSTEM statements, terminations with",
  );
  lines.push(
    "  epoch times, failed logins), `pg_postmaster_start_time()`, the kube-apiserver's `apiserver_request_total` (403/409",
  );
  lines.push(
    "  answers), Lease objects, Events' `reportingInstance`, the operator's `/metrics` (reconciles, status writes, process",
  );
  lines.push("  start time), and the clients themselves (a terminated session gets FATAL 57P01).");
  lines.push("");
  lines.push(
    "Knobs for longer local runs: `REAPER_RACE_SECONDS` (default 45), `FUZZ_RUNS` (default 3000), `FUZZ_SEED`.",
  );
  lines.push("");
  lines.push(`Last written: ${now.toISOString()} on ${machine}.`);
  lines.push(
    "A row keeps the result of the last run that executed it (its own date and machine are in the data block below).",
  );
  lines.push("");
  lines.push("| # | Scenario | Promise | Result | Measured | Test | Last run |");
  lines.push("|---|---|---|---|---|---|---|");
  const shown = new Set<string>();
  for (const entry of CATALOGUE) {
    if (entry.id === "11") {
      lines.push(secretsRow(entry, rows));
      shown.add(entry.id);
      continue;
    }
    if (entry.coveredBy) {
      lines.push(
        `| ${entry.id} | ${cell(entry.title)} | ${cell(entry.promise)} | covered elsewhere | — | ${entry.coveredBy
          .split(", ")
          .map((f) => `[${f}](../${f})`)
          .join(", ")} | — |`,
      );
      shown.add(entry.id);
      continue;
    }
    const row = byId.get(entry.id);
    shown.add(entry.id);
    if (!row) {
      lines.push(`| ${entry.id} | ${cell(entry.title)} | ${cell(entry.promise)} | not run yet | — | — | — |`);
      continue;
    }
    lines.push(rowLine(row));
  }
  for (const row of rows.filter((r) => !shown.has(r.id)).sort((a, b) => a.id.localeCompare(b.id)))
    lines.push(rowLine(row));
  lines.push("");
  const failed = rows.filter((r) => r.outcome === "fail");
  lines.push(
    failed.length === 0
      ? "All scenarios passed in their last run."
      : `**${failed.length} scenario(s) failed in their last run:** ${failed.map((r) => r.id).join(", ")}. See the report of the run for the fix needed.`,
  );
  lines.push("");
  lines.push("<details><summary>Data of the rows (read back by the next run)</summary>");
  lines.push("");
  lines.push(DATA_BEGIN);
  lines.push("```json");
  lines.push(
    JSON.stringify(
      [...rows].sort((a, b) => a.id.localeCompare(b.id)),
      null,
      1,
    ),
  );
  lines.push("```");
  lines.push(DATA_END);
  lines.push("");
  lines.push("</details>");
  lines.push("");
  return lines.join("\n");
}

function rowLine(row: ScenarioRow): string {
  const result = row.outcome === "pass" ? "✅ pass" : "❌ **FAIL**";
  return `| ${row.id} | ${cell(row.title)} | ${cell(row.promise)} | ${result} | ${cell(row.details)} (${row.seconds} s) | [${row.file.split("/").pop()}](../${row.file}) | ${row.at.slice(0, 16).replace("T", " ")} |`;
}

function secretsRow(entry: CatalogueEntry, rows: ScenarioRow[]): string {
  const scanned = rows.filter((r) => r.secretHits !== undefined);
  if (scanned.length === 0)
    return `| ${entry.id} | ${cell(entry.title)} | ${cell(entry.promise)} | not run yet | — | — | — |`;
  const hits = scanned.reduce((n, r) => n + (r.secretHits ?? 0), 0);
  const leaking = scanned.filter((r) => (r.secretHits ?? 0) > 0).map((r) => r.id);
  const result = hits === 0 ? "✅ pass" : "❌ **FAIL**";
  const latest = scanned
    .map((r) => r.at)
    .sort()
    .at(-1)!;
  const details = hits === 0 ? `${scanned.length} scenarios scanned, 0 hits` : `hits after ${leaking.join(", ")}`;
  return `| ${entry.id} | ${cell(entry.title)} | ${cell(entry.promise)} | ${result} | ${details} | every fault scenario (test/harness/faults.ts findSecrets) | ${latest.slice(0, 16).replace("T", " ")} |`;
}

/** Renders docs/reliability.md from the previous table and this run's rows. */
export function writeReport(dir: string, path = REPORT_PATH): void {
  const previous = existsSync(path) ? previousRows(readFileSync(path, "utf8")) : [];
  const rows = mergeRows(previous, rowsOfRun(dir));
  atomicWrite(path, renderMarkdown(rows, new Date(), machineDescription()));
}

function atomicWrite(path: string, content: string): void {
  const temp = `${path}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(temp, content);
  renameSync(temp, path);
}
