/**
 * /metrics of a running operator, scraped after it did real work: reconciled a policy, raised
 * max_connections with one restart of the Postgres workload, reaped a session idle in
 * transaction, held an app role to its share (CONNECTION LIMIT). And its logs: JSON lines with levels, the policy key on what it did, no secret.
 * Then the chart's Grafana dashboard on a real Prometheus scraping that operator: every panel's
 * query has data, with the labels its panel shows.
 *
 * A control plane of its own, not the shared one: the operators of other test files watch
 * every namespace and would also restart and reap here, leaving this operator's counters at
 * 0 or 1 depending on who came first.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../../harness/controlplane.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { PrometheusServer } from "../../harness/prometheus.js";
import { legendLabels, loadDashboard, queriesOf, substitute } from "../../unit/chart/dashboard.js";
import { findObject, renderChart } from "../../unit/chart/helm.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { APP_DATABASE, Scenario } from "../operator/scenario.js";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format, enough of it for assertions: samples, and the TYPE of each family. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample) continue;
    const labels: Record<string, string> = {};
    for (const m of (sample[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!;
    samples.push({ name: sample[1]!, labels, value: Number(sample[3]) });
  }
  return { samples, types };
}

/** The app role the policy holds to its share (spec.enforcement.connectionLimit): not a superuser. */
const APP_ROLE = "shop";
const APP_ROLE_PASSWORD = "shop-pw-3d81c6";

const controlPlane = new ControlPlane();
let kc: KubeConfig;
let s: Scenario;
let operator: OperatorProcess;
let server: string;
const clients: pg.Client[] = [];
let prometheus: PrometheusServer | undefined;

beforeAll(async () => {
  await controlPlane.start();
  kc = controlPlane.kubeConfig();
  await installPoolPolicyCrd(kc);
  s = await Scenario.create(kc, { prefix: "metrics" });
  server = `127.0.0.1:${s.server.port}`;
  // A memory limit, so that the memory ceiling is known and its gauge (and panel) has a series;
  // 2Gi carries far more than the policy's 120 (PostgreSQL's defaults: 208).
  await s.withPostgresWorkload({ memoryLimit: "2Gi" });
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  await s.server.query(`CREATE ROLE ${APP_ROLE} LOGIN PASSWORD '${APP_ROLE_PASSWORD}'`);
  await s.server.query(`GRANT ALL ON DATABASE ${APP_DATABASE} TO ${APP_ROLE}`);
  operator = new OperatorProcess({
    kubeconfigPath: controlPlane.kubeconfigPath,
    logFile: runLogFile(controlPlane.kubeconfigPath, "operator-metrics"),
  });
  await operator.start();
});

afterAll(async () => {
  await prometheus?.stop();
  for (const c of clients) await c.end().catch(() => undefined);
  await operator?.stop();
  await s?.cleanup();
  await controlPlane.stop();
});

describe("the operator's /metrics", () => {
  it("counts reconciles, the queue, a restart and a reaped session, and mirrors the server's connections and the app role's limit", async () => {
    await s.applyPolicy(
      "p",
      s.policySpec({
        postgres: { maxConnections: 120, restart: { workload: { name: "postgres" } } },
        reaper: { interval: "5s", idleInTransactionTimeout: "1s" },
        enforcement: { connectionLimit: { role: APP_ROLE, margin: 2 } },
      }),
    );
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await s.server.setting("max_connections")).toBe("120");
    // The role's share: 1 pod + 1 surge × pool max 25, + margin 2.
    await s.waitForCondition("p", "RoleConnectionLimit", { status: "True", reason: "Enforced" });
    const limits = await s.server.query("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", [APP_ROLE]);
    expect(limits).toEqual([{ rolconnlimit: 52 }]);
    // Two sessions of the app role, after the restart (which ends every session), kept open.
    for (const n of [1, 2]) await s.session(`shop-${n}`, APP_ROLE, APP_ROLE_PASSWORD);

    // After the restart (which ends every session): one session left idle in a transaction.
    const victim = new pg.Client({
      host: "127.0.0.1",
      port: s.server.port,
      user: s.server.superuser,
      password: s.server.password,
      database: APP_DATABASE,
      application_name: "forgetful",
    });
    victim.on("error", () => undefined); // it is going to be terminated
    await victim.connect();
    clients.push(victim);
    await victim.query("BEGIN");
    await waitFor("the reaper to terminate it", async () => ((await s.status("p")).reaper?.totalTerminated ?? 0) >= 1, {
      timeoutMs: 60_000,
    });

    let scrape = parseExposition(await operator.metrics());
    const value = (name: string, labels: Record<string, string> = {}) =>
      scrape.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
    // The gauges refresh on every reconcile: wait for one that saw max_connections 120.
    await waitFor("the max_connections gauge to show 120", async () => {
      scrape = parseExposition(await operator.metrics());
      return value("poolpolicy_postgres_max_connections", { server }) === 120;
    });
    const role = { server, role: APP_ROLE };
    await waitFor("the app role's sessions gauge to show its 2 sessions", async () => {
      scrape = parseExposition(await operator.metrics());
      return value("poolpolicy_role_connections", role) === 2;
    });

    expect(
      Object.fromEntries(
        [
          "controller_runtime_reconcile_total",
          "controller_runtime_reconcile_errors_total",
          "controller_runtime_reconcile_time_seconds",
          "workqueue_depth",
          "workqueue_adds_total",
          "workqueue_queue_duration_seconds",
          "workqueue_work_duration_seconds",
          "poolpolicy_postgres_connections",
          "poolpolicy_postgres_max_connections",
          "poolpolicy_postgres_usage_ratio",
          "poolpolicy_budget_demand_connections",
          "poolpolicy_budget_capacity_connections",
          "poolpolicy_reaper_sessions_terminated_total",
          "poolpolicy_postgres_restarts_requested_total",
          "poolpolicy_postgres_restarts_verified_total",
          "poolpolicy_role_share_connections",
          "poolpolicy_role_connection_limit",
          "poolpolicy_role_connections",
        ].map((family) => [family, scrape.types.get(family)]),
      ),
    ).toEqual({
      controller_runtime_reconcile_total: "counter",
      controller_runtime_reconcile_errors_total: "counter",
      controller_runtime_reconcile_time_seconds: "histogram",
      workqueue_depth: "gauge",
      workqueue_adds_total: "counter",
      workqueue_queue_duration_seconds: "histogram",
      workqueue_work_duration_seconds: "histogram",
      poolpolicy_postgres_connections: "gauge",
      poolpolicy_postgres_max_connections: "gauge",
      poolpolicy_postgres_usage_ratio: "gauge",
      poolpolicy_budget_demand_connections: "gauge",
      poolpolicy_budget_capacity_connections: "gauge",
      poolpolicy_reaper_sessions_terminated_total: "counter",
      poolpolicy_postgres_restarts_requested_total: "counter",
      poolpolicy_postgres_restarts_verified_total: "counter",
      poolpolicy_role_share_connections: "gauge",
      poolpolicy_role_connection_limit: "gauge",
      poolpolicy_role_connections: "gauge",
    });

    // Reconciles and the work queue.
    // A live policy's pass always asks to come back (statistics, the reaper): result "requeue".
    expect(
      value("controller_runtime_reconcile_total", { controller: "poolpolicy", result: "requeue" }),
    ).toBeGreaterThan(0);
    expect(value("controller_runtime_reconcile_time_seconds_count", { controller: "poolpolicy" })).toBeGreaterThan(0);
    expect(value("workqueue_adds_total", { name: "poolpolicy" })).toBeGreaterThan(0);
    expect(value("workqueue_queue_duration_seconds_count", { name: "poolpolicy" })).toBeGreaterThan(0);
    expect(value("workqueue_depth", { name: "poolpolicy" })).toBeGreaterThanOrEqual(0);

    // The server, as the same observation saw it: usage = total / max_connections.
    const total = value("poolpolicy_postgres_connections", { server, state: "total" })!;
    expect(total).toBeGreaterThanOrEqual(1); // at least the operator's own session
    for (const state of ["active", "idle", "idle_in_transaction"])
      expect(value("poolpolicy_postgres_connections", { server, state }), state).toBeGreaterThanOrEqual(0);
    expect(value("poolpolicy_postgres_usage_ratio", { server })).toBeCloseTo(total / 120, 10);

    // What the operator did: one restart for 100 → 120, one session reaped in this namespace.
    expect(value("poolpolicy_postgres_restarts_requested_total")).toBe(1);
    expect(value("poolpolicy_reaper_sessions_terminated_total", { namespace: s.namespace })).toBe(1);

    // The budget: 1 pod + 1 surge × 25, plus 3 superuser_reserved + 2 operator; capacity 120;
    // one verified restart.
    expect(value("poolpolicy_budget_demand_connections", { server })).toBe(55);
    expect(value("poolpolicy_budget_capacity_connections", { server })).toBe(120);
    expect(value("poolpolicy_postgres_restarts_verified_total")).toBe(1);

    // The app role: its share 50 + 2, the limit the operator set to it, its 2 sessions.
    expect(value("poolpolicy_role_share_connections", role)).toBe(52);
    expect(value("poolpolicy_role_connection_limit", role)).toBe(52);
  });

  it("exports every metric the chart's alert rules use", async () => {
    const rule = findObject(
      await renderChart([
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
      ]),
      "PrometheusRule",
    );
    const exprs = (rule.spec.groups as { rules: { alert: string; expr: string }[] }[]).flatMap((g) => g.rules);
    const { types } = parseExposition(await operator.metrics());
    for (const { alert, expr } of exprs) {
      const names = expr.match(/\b(?:poolpolicy|controller_runtime|workqueue)_[a-z0-9_]+/g) ?? [];
      expect(names.length, alert).toBeGreaterThan(0);
      for (const name of names)
        expect(types.has(name), `${alert} uses ${name}, which the operator does not export`).toBe(true);
    }
  });

  it("logs JSON lines with a level, the policy key on what it did, and no secret", () => {
    const lines = operator
      .logs()
      .split("\n")
      .filter((l) => l.trim() !== "");
    expect(lines.length).toBeGreaterThan(0);
    const entries = lines.map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON log line: ${line}`);
      }
    });
    for (const e of entries) {
      expect(typeof e.level, JSON.stringify(e)).toBe("number");
      expect(typeof e.msg, JSON.stringify(e)).toBe("string");
      expect(typeof e.time, JSON.stringify(e)).toBe("string");
    }
    const key = `${s.namespace}/p`;
    const acted = entries.filter((e) => e.action === "AlterSystem" || e.action === "RollingRestart");
    expect(acted.map((e) => e.action)).toEqual(expect.arrayContaining(["AlterSystem", "RollingRestart"]));
    for (const e of acted) expect(e.policy, JSON.stringify(e)).toBe(key);
    expect(operator.logs()).not.toContain(s.server.password);
  });
});

/**
 * After the test above: the operator has a policy on `server`, restarted its workload once,
 * reaped a session and holds an app role with 2 sessions to its share, so every panel has
 * something to show. Prometheus scrapes it every second;
 * Grafana's $__rate_interval (at least four scrape intervals) becomes 10s.
 */
describe("the chart's Grafana dashboard, on Prometheus scraping the operator", () => {
  const job = "poolpolicy-operator";
  const values = () => ({ server, rateInterval: "10s", interval: "1s", range: "1m" });

  beforeAll(async () => {
    prometheus = new PrometheusServer({
      targets: [`127.0.0.1:${operator.httpPort}`],
      job,
      logFile: runLogFile(controlPlane.kubeconfigPath, "prometheus"),
    });
    await prometheus.start();
    // Enough samples for rate() and increase() over 10s: a scrape every second for 12 s.
    await prometheus.waitForScrapes(12);
  });

  it("lists the policy's server in the server variable", async () => {
    const variable = loadDashboard().templating.list.find((v) => v.name === "server")!;
    const [, metric, label] = /^label_values\((\w+), (\w+)\)$/.exec(variable.definition!)!;
    expect(await prometheus!.labelValues(label!, metric!)).toEqual([server]);
  });

  it("has data for every query of every panel, with the labels the panel shows", async () => {
    const queries = queriesOf(loadDashboard());
    const results = new Map<string, Awaited<ReturnType<PrometheusServer["query"]>>>();
    for (const { panel, target } of queries) {
      const expr = substitute(target.expr, values());
      const series = await prometheus!.query(expr);
      const what = `${panel} / ${target.refId}: ${expr}`;
      expect(series.length, `${what} returned no series`).toBeGreaterThan(0);
      for (const sample of series) {
        for (const label of legendLabels(target.legendFormat))
          expect(sample.metric[label], `${what}: series without {{${label}}}`).toBeTruthy();
        // A per-server query returns that server's series, and nothing else.
        if (target.expr.includes("$server")) expect(sample.metric.server, what).toBe(server);
        // No value check here: a quantile is NaN, and rightly so, in a window without reconciles.
      }
      results.set(`${panel} / ${target.refId}`, series);
    }
    const valuesOf = (key: string) => results.get(key)!.map((sample) => Number(sample.value[1]));
    const labelsOf = (key: string, label: string) =>
      results
        .get(key)!
        .map((sample) => sample.metric[label])
        .sort();

    // What the panels show, against what the first test set up: max_connections 120, demand 55.
    expect(valuesOf("max_connections / A")).toEqual([120]);
    expect(valuesOf("Budget headroom / A")).toEqual([120 - 55]);
    const budgetPanel = "Worst-case demand against capacity and the memory ceiling";
    expect(valuesOf(`${budgetPanel} / A`)).toEqual([55]);
    // The memory ceiling the panel draws is the one the policy's status reports (2Gi: above 120).
    const ceiling = (await s.status("p")).budget?.memoryCeiling;
    expect(ceiling).toBeGreaterThan(120);
    expect(valuesOf(`${budgetPanel} / C`)).toEqual([ceiling]);
    expect(labelsOf("Connections by state, against max_connections / A", "state")).toEqual([
      "active",
      "idle",
      "idle_in_transaction",
    ]);
    expect(labelsOf("Sessions reaped, by policy namespace / A", "policy_namespace")).toEqual([s.namespace]);
    expect(labelsOf("Restarts held, by workload / A", "workload")).toEqual([`StatefulSet ${s.namespace}/postgres`]);
    expect(valuesOf("Restarts held, by workload / A")).toEqual([0]);
    expect(labelsOf("Reconciles by result / A", "result")).toEqual(["error", "requeue", "success"]);
    expect(labelsOf("Operator memory / A", "instance")).toEqual([`127.0.0.1:${operator.httpPort}`]);
    // Each role's share, limit and sessions: the app role, as the first test left it.
    const rolesPanel = "Each role's share, CONNECTION LIMIT and sessions";
    for (const refId of ["A", "B", "C"]) expect(labelsOf(`${rolesPanel} / ${refId}`, "role")).toEqual([APP_ROLE]);
    expect(valuesOf(`${rolesPanel} / A`)).toEqual([52]);
    expect(valuesOf(`${rolesPanel} / B`)).toEqual([52]);
    expect(valuesOf(`${rolesPanel} / C`)).toEqual([2]);
    const atLimit = "Sessions against CONNECTION LIMIT, by role / A";
    expect(labelsOf(atLimit, "role")).toEqual([APP_ROLE]);
    expect(valuesOf(atLimit)[0]).toBeCloseTo(2 / 52, 12);
    const usage = valuesOf("Connections in use / A")[0]!;
    expect(usage).toBeGreaterThan(0);
    expect(usage).toBeLessThan(1);
  });
});
