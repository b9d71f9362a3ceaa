/**
 * The pure parts of the reliability suite: the results table that docs/reliability.md is
 * rendered from (rows of this run win over older ones, a failure shows, a leak fails item 11,
 * the data block reads back), and the parsers the fault scenarios assert with (Prometheus
 * text, PostgreSQL's start lines, secrets in clear or encoded).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  CATALOGUE,
  mergeRows,
  previousRows,
  recordRow,
  renderMarkdown,
  rowsOfRun,
  runDir,
  writeReport,
  type ScenarioRow,
} from "../../harness/reliability-report.js";
import { countReadyLines, failedReconciles, findSecrets, metricValue } from "../../harness/faults.js";

const row = (id: string, outcome: ScenarioRow["outcome"], extra: Partial<ScenarioRow> = {}): ScenarioRow => ({
  id,
  title: `title ${id}`,
  promise: `promise ${id}`,
  outcome,
  details: `details ${id}`,
  file: "test/integration/faults/x.test.ts",
  seconds: 3,
  at: "2026-11-26T10:00:00.000Z",
  machine: "test",
  ...extra,
});

describe("the reliability table", () => {
  it("lists every catalogue entry, with results, pointers for covered ones and 'not run yet' for the rest", () => {
    const md = renderMarkdown(
      [row("1a", "pass", { secretHits: 0 }), row("2b", "fail", { details: "takeover 40 s", secretHits: 0 })],
      new Date("2026-11-26T12:00:00Z"),
      "box: 2 CPUs",
    );
    expect(md).toContain("Last written: 2026-11-26T12:00:00.000Z on box: 2 CPUs.");
    expect(md).toMatch(/\| 1a \| .* \| ✅ pass \| details 1a \(3 s\) \|/);
    expect(md).toMatch(/\| 2b \| .* \| ❌ \*\*FAIL\*\* \| takeover 40 s/);
    expect(md).toMatch(/\| 10 \| Pod Security .* covered elsewhere .*install\.test\.ts/);
    expect(md).toMatch(/\| 3a \| .* \| not run yet \|/);
    expect(md).toContain("**1 scenario(s) failed in their last run:** 2b");
    for (const entry of CATALOGUE) expect(md).toContain(`| ${entry.id} |`);
  });

  it("fails item 11 when any scenario leaked a secret", () => {
    const clean = renderMarkdown([row("1a", "pass", { secretHits: 0 })], new Date(), "m");
    expect(clean).toMatch(/\| 11 \| .* \| ✅ pass \| 1 scenarios scanned, 0 hits/);
    const leaked = renderMarkdown(
      [row("1a", "pass", { secretHits: 0 }), row("5b", "fail", { secretHits: 2 })],
      new Date(),
      "m",
    );
    expect(leaked).toMatch(/\| 11 \| .* \| ❌ \*\*FAIL\*\* \| hits after 5b/);
  });

  it("escapes cell text so a pipe or a newline cannot break the table", () => {
    const md = renderMarkdown([row("1a", "pass", { details: "a | b\nc" })], new Date(), "m");
    expect(md).toContain("a \\| b c");
  });

  it("reads its data block back, and rows of a newer run replace older ones by id", () => {
    const md = renderMarkdown([row("1a", "fail"), row("2a", "pass")], new Date(), "m");
    const back = previousRows(md);
    expect(back.map((r) => `${r.id}:${r.outcome}`).sort()).toEqual(["1a:fail", "2a:pass"]);
    const merged = mergeRows(back, [row("1a", "pass")]);
    expect(merged.map((r) => `${r.id}:${r.outcome}`).sort()).toEqual(["1a:pass", "2a:pass"]);
    expect(previousRows("# no data here")).toEqual([]);
  });

  it("collects the rows of one run across test files and writes the report", () => {
    const dir = mkdtempSync(join(tmpdir(), "poolpolicy-reliability-unit-"));
    // Where the shared control plane's kubeconfig would be: the rows go next to it.
    const key = runDir(join(dir, "run", "kubeconfig"));
    const nextRun = runDir(join(dir, "next-run", "kubeconfig"));
    try {
      recordRow(key, row("1a", "fail", { file: "test/integration/faults/a.test.ts" }));
      recordRow(key, row("1a", "pass", { file: "test/integration/faults/a.test.ts" })); // replaced, not added
      recordRow(key, row("2a", "pass", { file: "test/integration/faults/b.test.ts" }));
      expect(
        rowsOfRun(key)
          .map((r) => `${r.id}:${r.outcome}`)
          .sort(),
      ).toEqual(["1a:pass", "2a:pass"]);
      const path = join(dir, "reliability.md");
      writeReport(key, path);
      writeReport(nextRun, path); // a later run that ran nothing keeps the rows
      expect(
        previousRows(readFileSync(path, "utf8"))
          .map((r) => r.id)
          .sort(),
      ).toEqual(["1a", "2a"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the fault suite's parsers", () => {
  const metrics = [
    "# HELP controller_runtime_reconcile_total Reconciles",
    "# TYPE controller_runtime_reconcile_total counter",
    'controller_runtime_reconcile_total{controller="poolpolicy",result="success"} 7',
    'controller_runtime_reconcile_total{controller="poolpolicy",result="error"} 2',
    'informer_relists_total{resource="poolpolicies"} 1',
    'informer_relists_total{resource="deployments(ns/p)"} 3',
    "process_start_time_seconds 1764190000",
  ].join("\n");

  it("sums Prometheus samples by name and label subset", () => {
    expect(metricValue(metrics, "controller_runtime_reconcile_total")).toBe(9);
    expect(metricValue(metrics, "controller_runtime_reconcile_total", { result: "error" })).toBe(2);
    expect(metricValue(metrics, "informer_relists_total", { resource: "poolpolicies" })).toBe(1);
    expect(metricValue(metrics, "process_start_time_seconds")).toBe(1764190000);
    expect(metricValue(metrics, "absent_total")).toBe(0);
  });

  it("counts PostgreSQL starts from its log", () => {
    const log = [
      "2026-11-26 10:00:00.000 UTC [10] LOG:  database system is ready to accept connections",
      "2026-11-26 10:00:05.000 UTC [10] LOG:  received fast shutdown request",
      "2026-11-26 10:00:06.000 UTC [22] LOG:  database system is ready to accept connections",
    ].join("\n");
    expect(countReadyLines(log)).toBe(2);
  });

  it("finds secrets in clear, base64- and URL-encoded, and names them without revealing them", () => {
    const secret = "s3cr3t/pa ss";
    expect(findSecrets(`x ${secret} y`, [secret])).toEqual([expect.stringMatching(/in clear$/)]);
    expect(findSecrets(Buffer.from(secret).toString("base64"), [secret])).toEqual([
      expect.stringMatching(/base64-encoded$/),
    ]);
    expect(findSecrets(`redis://:${encodeURIComponent(secret)}@h`, [secret])).toEqual([
      expect.stringMatching(/URL-encoded$/),
    ]);
    expect(findSecrets("nothing here", [secret])).toEqual([]);
    expect(findSecrets(secret, [secret])[0]).not.toContain(secret);
  });

  it("picks the operator's failed reconciles by HTTP status", () => {
    const log = [
      '{"level":50,"msg":"reconcile failed","error":{"message":"forbidden","status":403}}',
      '{"level":50,"msg":"reconcile failed","error":{"message":"conflict","status":409}}',
      "not json",
      '{"level":30,"msg":"started"}',
    ].join("\n");
    expect(failedReconciles(log, 403)).toHaveLength(1);
    expect(failedReconciles(log)).toHaveLength(2);
  });
});
