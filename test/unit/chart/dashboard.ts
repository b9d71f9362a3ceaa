/**
 * The chart's Grafana dashboard (charts/poolpolicy-operator/dashboards/poolpolicy.json) as the
 * tests read it: its panels, each query, and the query as Prometheus would receive it from
 * Grafana once the dashboard's variables are substituted. Used by the unit test (every query
 * names metrics the operator exports) and the integration test (every query has data).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { chartDir } from "./helm.js";

export const dashboardFile = join(chartDir, "dashboards/poolpolicy.json");

export interface Target {
  expr: string;
  legendFormat?: string;
  refId: string;
  datasource?: { type: string; uid: string };
}

export interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
  datasource?: { type: string; uid: string };
}

export interface Variable {
  name: string;
  type: string;
  query?: string | { query: string };
  definition?: string;
}

export interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

export function loadDashboard(text = readFileSync(dashboardFile, "utf8")): Dashboard {
  return JSON.parse(text) as Dashboard;
}

/** Every query of every panel, with the panel's title. */
export function queriesOf(dashboard: Dashboard): Array<{ panel: string; target: Target }> {
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((target) => ({ panel: p.title, target })));
}

/** The `{{label}}` placeholders of a legend: labels each series of the query must carry. */
export const legendLabels = (legend: string | undefined) =>
  [...(legend ?? "").matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]!);

export interface VariableValues {
  server: string;
  /** Grafana's $__rate_interval: at least four scrape intervals. */
  rateInterval: string;
  /** Grafana's $__interval and $__range: the step and the time range of the graph. */
  interval: string;
  range: string;
}

/**
 * The query as Grafana sends it: the dashboard's variables and Grafana's built-ins replaced, in
 * both their `$name` and `${name}` forms. A `$` variable left over is an error, so that a new
 * variable in the dashboard cannot slip past the tests unsubstituted.
 */
export function substitute(expr: string, values: VariableValues): string {
  const byName: Record<string, string> = {
    server: values.server,
    __rate_interval: values.rateInterval,
    __interval: values.interval,
    __range: values.range,
  };
  return expr.replace(/\$\{(\w+)\}|\$(__\w+|[A-Za-z]\w*)/g, (_whole, braced: string, bare: string) => {
    const name = braced ?? bare;
    const value = byName[name];
    if (value === undefined) throw new Error(`the dashboard query uses $${name}, which the tests do not know: ${expr}`);
    return value;
  });
}
