/**
 * The chart's Grafana dashboard: the ConfigMap Grafana's sidecar loads is rendered only when
 * enabled, with the label (and namespace) asked for, and carries the dashboard file unchanged;
 * the dashboard selects one server with its `server` variable; and every query parses as PromQL
 * and names only metrics the operator registers, grouped by labels they carry, so that renaming
 * a metric fails here. That the queries have data on a real Prometheus scraping a real operator
 * is test/integration/metrics/metrics.test.ts.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  type Dashboard,
  dashboardFile,
  legendLabels,
  loadDashboard,
  queriesOf,
  substitute,
  type VariableValues,
} from "./dashboard.js";
import { findObject, type Manifest, renderChart, runHelm, templateArgs } from "./helm.js";
import { exportedMetrics, parsePromql, promqlProblems, SCRAPE_LABELS } from "./promql.js";

const ENABLED = ["--set", "grafanaDashboard.enabled=true"];
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JS template.
const DATASOURCE = { type: "prometheus", uid: "${datasource}" };
const VALUES: VariableValues = { server: "db.example:5432", rateInterval: "2m", interval: "30s", range: "6h" };

const configMapOf = async (extra: string[] = []) =>
  findObject(await renderChart([...ENABLED, ...extra]), "ConfigMap", "ppo-poolpolicy-operator-dashboard");

/** Every problem of every query of a dashboard, as "panel / refId: problem". */
function dashboardProblems(dashboard: Dashboard): string[] {
  const exported = exportedMetrics();
  return queriesOf(dashboard).flatMap(({ panel, target }) =>
    promqlProblems(substitute(target.expr, VALUES), exported).map((p) => `${panel} / ${target.refId}: ${p}`),
  );
}

describe("the Grafana dashboard's ConfigMap", () => {
  it("is not rendered by default", async () => {
    expect((await renderChart()).filter((o: Manifest) => o.kind === "ConfigMap")).toEqual([]);
  });

  it("carries the sidecar's label and the dashboard file, unchanged and valid JSON", async () => {
    const cm = await configMapOf();
    expect(cm.metadata.namespace).toBe("ops");
    expect(cm.metadata.labels).toMatchObject({ grafana_dashboard: "1", "app.kubernetes.io/instance": "ppo" });
    expect(Object.keys(cm.data)).toEqual(["poolpolicy-operator.json"]);
    const shipped = JSON.parse(cm.data["poolpolicy-operator.json"] as string) as Dashboard;
    expect(shipped).toEqual(JSON.parse(readFileSync(dashboardFile, "utf8")));
    expect(shipped.uid).toBe("poolpolicy-operator");
  });

  it("takes its label, namespace, extra labels and annotations from values", async () => {
    const cm = await configMapOf([
      "--set",
      "grafanaDashboard.label=dashboards",
      "--set",
      "grafanaDashboard.labelValue=postgres",
      "--set",
      "grafanaDashboard.namespace=monitoring",
      "--set",
      "grafanaDashboard.labels.team=dba",
      "--set",
      "grafanaDashboard.annotations.grafana_folder=PostgreSQL",
    ]);
    expect(cm.metadata.namespace).toBe("monitoring");
    expect(cm.metadata.labels).toMatchObject({ dashboards: "postgres", team: "dba" });
    expect(cm.metadata.labels.grafana_dashboard).toBeUndefined();
    expect(cm.metadata.annotations).toEqual({ grafana_folder: "PostgreSQL" });
  });

  it("refuses a label value Kubernetes would refuse", async () => {
    const result = await runHelm(templateArgs([...ENABLED, "--set", "grafanaDashboard.labelValue=not a value"]));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("values don't meet the specifications of the schema");
  });

  it("passes helm lint --strict when enabled", async () => {
    const result = await runHelm(["lint", "--strict", templateArgs()[2]!, ...ENABLED]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
  });
});

describe("the Grafana dashboard", () => {
  const dashboard = loadDashboard();

  it("has a data source variable and a server variable listing the servers the operator exports", () => {
    const [datasource, server] = dashboard.templating.list;
    expect(datasource).toMatchObject({ name: "datasource", type: "datasource", query: "prometheus" });
    expect(server).toMatchObject({ name: "server", type: "query" });
    const query = typeof server!.query === "string" ? server!.query : server!.query!.query;
    expect(query).toBe(server!.definition);
    const [, metric, label] = /^label_values\((\w+), (\w+)\)$/.exec(query) ?? [];
    expect(exportedMetrics().get(metric!), query).toContain(label);
    expect(label).toBe("server");
  });

  it("reads every panel from the data source variable, and every per-server metric through $server", () => {
    const exported = exportedMetrics();
    const queries = queriesOf(dashboard);
    expect(queries.length).toBeGreaterThan(10);
    for (const { panel, target } of queries) {
      expect(target.datasource, panel).toEqual(DATASOURCE);
      const metrics = parsePromql(substitute(target.expr, VALUES)).metrics;
      for (const metric of metrics) {
        if (!exported.get(metric)?.includes("server")) continue;
        // Each selector of a per-server metric, not just one of them, is narrowed to the server.
        const selectors = target.expr.match(new RegExp(`\\b${metric}\\{[^}]*\\}`, "g")) ?? [];
        expect(selectors.length, `${panel}: ${metric} without a selector`).toBeGreaterThan(0);
        for (const s of selectors) expect(s, `${panel} / ${target.refId}`).toContain('server="$server"');
      }
    }
  });

  it("names only metrics the operator exports, grouped by labels they carry, in valid PromQL", () => {
    expect(dashboardProblems(dashboard)).toEqual([]);
  });

  it("fails that check when a metric is renamed, in any panel", () => {
    const metrics = new Set(
      queriesOf(dashboard).flatMap(({ target }) => parsePromql(substitute(target.expr, VALUES)).metrics),
    );
    expect(metrics.size).toBeGreaterThan(10);
    for (const metric of metrics) {
      // The metric renamed wherever it appears, as a rename in src/ without the dashboard would leave it.
      const renamed = structuredClone(dashboard);
      for (const { target } of queriesOf(renamed))
        target.expr = target.expr.replace(new RegExp(`\\b${metric}\\b`, "g"), `${metric}_renamed`);
      expect(dashboardProblems(renamed), metric).toContainEqual(
        expect.stringContaining(`${metric}_renamed is not exported`),
      );
    }
  });

  it("shows in each legend only labels its query keeps", () => {
    for (const { panel, target } of queriesOf(dashboard)) {
      const parsed = parsePromql(substitute(target.expr, VALUES));
      const kept = new Set([...parsed.groupingLabels, ...SCRAPE_LABELS]);
      for (const label of legendLabels(target.legendFormat))
        expect(kept.has(label), `${panel}: {{${label}}}`).toBe(true);
    }
  });

  it("explains every panel, and no two panels overlap", () => {
    const cells = new Map<string, string>();
    for (const panel of dashboard.panels) {
      if (panel.type !== "row") expect(panel.description?.length ?? 0, panel.title).toBeGreaterThan(80);
      const { x, y, w, h } = panel.gridPos;
      expect(x + w, panel.title).toBeLessThanOrEqual(24);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          const other = cells.get(`${i},${j}`);
          expect(other, `${panel.title} overlaps ${other}`).toBeUndefined();
          cells.set(`${i},${j}`, panel.title);
        }
      }
    }
  });

  it("substitutes every variable a query uses, and refuses one it does not know", () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's ${name} form, not a JS template.
    expect(substitute('rate(x{server="$server"}[$__rate_interval]) + y[${__range}]', VALUES)).toBe(
      'rate(x{server="db.example:5432"}[2m]) + y[6h]',
    );
    expect(substitute('label_replace(x, "a", "$1", "b", "(.+)")', VALUES)).toBe(
      'label_replace(x, "a", "$1", "b", "(.+)")',
    );
    expect(() => substitute('x{pod="$pod"}', VALUES)).toThrow("uses $pod");
  });
});
