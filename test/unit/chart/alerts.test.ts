/**
 * The chart's PrometheusRule: rendered only when asked for and served; its PromQL names only
 * metrics the operator exports, with labels they carry; and, where promtool is installed, the
 * real rule checker accepts the rules (`promtool check rules`) and the alerts fire on the series
 * they should and on no others (`promtool test rules`).
 *
 * promtool: $PROMTOOL, `promtool` on the PATH, or <tools cache>/prometheus-*\/promtool, where
 * `make deps` puts it (taken out of Debian's prometheus package; test/harness/prometheus.ts).
 * Without it those two tests are skipped and say so; the structural checks always run.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findPrometheusTool } from "../../harness/prometheus.js";
import { findObject, type Manifest, renderChart, runHelm, templateArgs } from "./helm.js";
import { exportedMetrics, promqlProblems } from "./promql.js";

const API = ["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"];
const ENABLED = ["--set", "metrics.prometheusRule.enabled=true"];

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

async function renderRule(extra: string[] = []): Promise<Manifest> {
  return findObject(await renderChart([...ENABLED, ...API, ...extra]), "PrometheusRule");
}

const rulesOf = (rule: Manifest) => (rule.spec.groups as { rules: Rule[] }[]).flatMap((g) => g.rules);

describe("PrometheusRule", () => {
  it("is rendered only when enabled AND the cluster serves monitoring.coreos.com/v1 PrometheusRule", async () => {
    expect((await renderChart(ENABLED)).some((o) => o.kind === "PrometheusRule")).toBe(false);
    expect((await renderChart(API)).some((o) => o.kind === "PrometheusRule")).toBe(false);
    const rule = await renderRule(["--set", "metrics.prometheusRule.labels.release=prom"]);
    expect(rule.metadata).toMatchObject({ name: "ppo-poolpolicy-operator", namespace: "ops" });
    expect(rule.metadata.labels).toMatchObject({ release: "prom", "app.kubernetes.io/instance": "ppo" });
  });

  it("alerts at 85 % and 95 % usage, on sessions reaped, on the budget, on a role at its limit and on reconcile errors", async () => {
    const rules = rulesOf(await renderRule());
    expect(rules.map((r) => [r.alert, r.labels.severity])).toEqual([
      ["PoolPolicyPostgresConnectionsHigh", "warning"],
      ["PoolPolicyPostgresConnectionsCritical", "critical"],
      ["PoolPolicySessionsReaped", "warning"],
      ["PoolPolicyBudgetExceeded", "warning"],
      ["PoolPolicyRoleAtConnectionLimit", "warning"],
      ["PoolPolicyReconcileErrors", "warning"],
    ]);
    expect(rules[0]!.expr).toBe("max by (server) (poolpolicy_postgres_usage_ratio) >= 0.85");
    expect(rules[1]!.expr).toBe("max by (server) (poolpolicy_postgres_usage_ratio) >= 0.95");
    expect(rules[2]!.expr).toBe(
      "sum by (namespace, exported_namespace) (increase(poolpolicy_reaper_sessions_terminated_total[15m])) > 0",
    );
  });

  it("takes thresholds, durations and alert labels from values, and refuses a warning above the critical level", async () => {
    const rules = rulesOf(
      await renderRule([
        "--set",
        "metrics.prometheusRule.usage.warningPercent=80",
        "--set",
        "metrics.prometheusRule.usage.criticalPercent=90",
        "--set",
        "metrics.prometheusRule.usage.for=2m",
        "--set",
        "metrics.prometheusRule.reaper.window=1h",
        "--set",
        "metrics.prometheusRule.alertLabels.team=dba",
      ]),
    );
    expect(rules[0]).toMatchObject({ expr: "max by (server) (poolpolicy_postgres_usage_ratio) >= 0.8", for: "2m" });
    expect(rules[1]!.expr).toContain(">= 0.9");
    expect(rules[2]!.expr).toContain("[1h]");
    for (const r of rules) expect(r.labels.team, r.alert).toBe("dba");

    const refused = await runHelm(
      templateArgs([...ENABLED, ...API, "--set", "metrics.prometheusRule.usage.warningPercent=95"]),
    );
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("warningPercent must be below criticalPercent");
    const badDuration = await runHelm(
      templateArgs([...ENABLED, ...API, "--set", "metrics.prometheusRule.usage.for=5 minutes"]),
    );
    expect(badDuration.stderr).toContain("values don't meet the specifications of the schema");
  });

  it("names only metrics the operator exports, grouped by labels they carry", async () => {
    const exported = exportedMetrics();
    for (const rule of rulesOf(await renderRule())) expect(promqlProblems(rule.expr, exported), rule.alert).toEqual([]);
  });
});

describe("PrometheusRule with promtool", () => {
  const promtool = findPrometheusTool("promtool");
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "poolpolicy-alerts-"));
    const rule = await renderRule();
    // JSON is YAML: promtool reads the groups as Prometheus would load them from the CR.
    writeFileSync(join(dir, "rules.yaml"), JSON.stringify({ groups: rule.spec.groups }, null, 2));
    writeFileSync(join(dir, "tests.yaml"), JSON.stringify(ALERT_TESTS, null, 2));
  });
  afterAll(() => dir && rmSync(dir, { recursive: true, force: true }));

  it.skipIf(!promtool)(`promtool check rules accepts them (${promtool ?? "promtool not found: skipped"})`, async () => {
    const result = await run(promtool!, ["check", "rules", join(dir, "rules.yaml")]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toContain("SUCCESS: 6 rules found");
  });

  it.skipIf(!promtool)(
    "promtool test rules: each alert fires on the series it should, when it should, and not on others",
    async () => {
      const result = await run(promtool!, ["test", "rules", join(dir, "tests.yaml")], dir);
      expect(result.code, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toContain("SUCCESS");
    },
  );
});

const usageDescription = (value: string, server: string) =>
  `${value} of max_connections in use on ${server} for 5m. New connections fail with "too many clients" when it is full. Run \`poolpolicy diagnose\` for a policy on this server to see who holds the connections and what to change.`;
const criticalDescription = (value: string, server: string) =>
  `${value} of max_connections in use on ${server} for 5m. Run \`poolpolicy diagnose\`: it lists sessions by state and idle-in-transaction sessions, and computes the max_connections or pool size that fits.`;
const reapedDescription = (value: string, namespace: string) =>
  `About ${value} session(s) of namespace ${namespace} were terminated in the last 15m for sitting idle in a transaction longer than their PoolPolicy allows. An application opens transactions and does not finish them: its requests fail with FATAL 57P01 when the reaper strikes. Find it with \`poolpolicy diagnose\` (oldest idle-in-transaction sessions) and the SessionsReaped Events of the PoolPolicy.`;
const budgetAnnotations = (server: string) => ({
  summary: `Worst-case connection demand exceeds max_connections on ${server}`,
  description: `If every Deployment pointing at ${server} scaled to its HPA maximum (plus rollout surge) with full pools, it would need more than max_connections. \`poolpolicy diagnose\` shows the budget per Deployment and the max_connections or pool size that fits.`,
});

/** promtool's unit tests of the default rules: series in, alerts (labels and rendered annotations) out. */
const ALERT_TESTS = {
  rule_files: ["rules.yaml"],
  evaluation_interval: "1m",
  tests: [
    {
      interval: "1m",
      input_series: [
        // Two operator pods exporting the same server: max by (server) makes it one alert.
        { series: 'poolpolicy_postgres_usage_ratio{server="busy:5432", pod="op-a"}', values: "0.9x20" },
        { series: 'poolpolicy_postgres_usage_ratio{server="busy:5432", pod="op-b"}', values: "0.5x20" },
        { series: 'poolpolicy_postgres_usage_ratio{server="full:5432"}', values: "0.97x20" },
        { series: 'poolpolicy_postgres_usage_ratio{server="calm:5432"}', values: "0.84x20" },
      ],
      alert_rule_test: [
        // Above the threshold, but not yet for 5m.
        { eval_time: "4m", alertname: "PoolPolicyPostgresConnectionsHigh", exp_alerts: [] },
        {
          eval_time: "6m",
          alertname: "PoolPolicyPostgresConnectionsHigh",
          exp_alerts: [
            {
              exp_labels: { severity: "warning", server: "busy:5432" },
              exp_annotations: {
                summary: "PostgreSQL busy:5432 uses 85% or more of max_connections",
                description: usageDescription("90%", "busy:5432"),
              },
            },
            {
              exp_labels: { severity: "warning", server: "full:5432" },
              exp_annotations: {
                summary: "PostgreSQL full:5432 uses 85% or more of max_connections",
                description: usageDescription("97%", "full:5432"),
              },
            },
          ],
        },
        {
          eval_time: "6m",
          alertname: "PoolPolicyPostgresConnectionsCritical",
          exp_alerts: [
            {
              exp_labels: { severity: "critical", server: "full:5432" },
              exp_annotations: {
                summary: "PostgreSQL full:5432 is about to run out of connections (95% or more of max_connections)",
                description: criticalDescription("97%", "full:5432"),
              },
            },
          ],
        },
      ],
    },
    {
      interval: "1m",
      input_series: [
        // Scraped through a ServiceMonitor: the policy's namespace became exported_namespace.
        {
          series:
            'poolpolicy_reaper_sessions_terminated_total{namespace="poolpolicy-system", exported_namespace="shop", pod="op-a"}',
          values: "0 0 0 1x30",
        },
        // Scraped without a target namespace: the label kept its name.
        { series: 'poolpolicy_reaper_sessions_terminated_total{namespace="billing"}', values: "0x33" },
      ],
      alert_rule_test: [
        {
          eval_time: "5m",
          alertname: "PoolPolicySessionsReaped",
          exp_alerts: [
            {
              exp_labels: { severity: "warning", namespace: "poolpolicy-system", exported_namespace: "shop" },
              exp_annotations: {
                summary: "The reaper terminated sessions idle in transaction in namespace shop",
                description: reapedDescription("1", "shop"),
              },
            },
          ],
        },
        // Nothing reaped in the last 15 minutes: resolved.
        { eval_time: "25m", alertname: "PoolPolicySessionsReaped", exp_alerts: [] },
      ],
    },
    {
      interval: "1m",
      input_series: [
        { series: 'poolpolicy_budget_demand_connections{server="over:5432"}', values: "120x20" },
        { series: 'poolpolicy_budget_capacity_connections{server="over:5432"}', values: "100x20" },
        { series: 'poolpolicy_budget_demand_connections{server="fits:5432"}', values: "95x20" },
        { series: 'poolpolicy_budget_capacity_connections{server="fits:5432"}', values: "100x20" },
      ],
      alert_rule_test: [
        { eval_time: "9m", alertname: "PoolPolicyBudgetExceeded", exp_alerts: [] },
        {
          eval_time: "11m",
          alertname: "PoolPolicyBudgetExceeded",
          exp_alerts: [
            {
              exp_labels: { severity: "warning", server: "over:5432" },
              exp_annotations: budgetAnnotations("over:5432"),
            },
          ],
        },
      ],
    },
    {
      interval: "1m",
      input_series: [
        // shop is at its limit; web below it; batch has no limit (no series of it).
        { series: 'poolpolicy_role_connections{server="pg:5432", role="shop"}', values: "12x20" },
        { series: 'poolpolicy_role_connection_limit{server="pg:5432", role="shop"}', values: "12x20" },
        { series: 'poolpolicy_role_connections{server="pg:5432", role="web"}', values: "3x20" },
        { series: 'poolpolicy_role_connection_limit{server="pg:5432", role="web"}', values: "10x20" },
        { series: 'poolpolicy_role_connections{server="pg:5432", role="batch"}', values: "40x20" },
      ],
      alert_rule_test: [
        { eval_time: "4m", alertname: "PoolPolicyRoleAtConnectionLimit", exp_alerts: [] },
        {
          eval_time: "6m",
          alertname: "PoolPolicyRoleAtConnectionLimit",
          exp_alerts: [
            {
              exp_labels: { severity: "warning", server: "pg:5432", role: "shop" },
              exp_annotations: {
                summary: "Role shop is at its CONNECTION LIMIT on pg:5432",
                description:
                  "Role shop has had as many sessions as its CONNECTION LIMIT on pg:5432 for 5m: its new sessions are refused (too many connections for role). The limit is the role's share of the budget: something connects beyond its pools (a client of its own, a leak, more pods than the budget knows). `poolpolicy diagnose` shows each role's share, limit and sessions.",
              },
            },
          ],
        },
      ],
    },
    {
      interval: "1m",
      input_series: [
        // One failed reconcile a minute, for 30 minutes; another controller's errors do not count.
        { series: 'controller_runtime_reconcile_errors_total{controller="poolpolicy"}', values: "0+1x30" },
        { series: 'controller_runtime_reconcile_errors_total{controller="other"}', values: "0+5x30" },
      ],
      alert_rule_test: [
        { eval_time: "10m", alertname: "PoolPolicyReconcileErrors", exp_alerts: [] },
        {
          eval_time: "20m",
          alertname: "PoolPolicyReconcileErrors",
          exp_alerts: [
            {
              exp_labels: { severity: "warning", controller: "poolpolicy" },
              exp_annotations: {
                summary: "poolpolicy-operator reconciles keep failing",
                description:
                  'Reconciles of PoolPolicies have failed for 15m (16.67m per second). Failures against PostgreSQL or Redis are conditions, not errors: this is the Kubernetes API failing or refusing the operator. See the operator\'s logs (JSON, field "policy").',
              },
            },
          ],
        },
      ],
    },
  ],
};

function run(command: string, args: string[], cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr });
    });
  });
}
