/**
 * What the chart's PromQL (alert rules, dashboard panels) may name: the metrics the operator
 * registers, with their label names, and the metric names and labels an expression uses, read
 * with Prometheus's own PromQL grammar (@prometheus-io/lezer-promql) rather than a regex, so
 * that a function or a label is never taken for a metric and a metric of any name is found.
 */
import { parser } from "@prometheus-io/lezer-promql";
import { Histogram } from "prom-client";
import { registry } from "../../../src/runtime/metrics.js";
import "../../../src/controller/metrics.js"; // registers the domain metrics on the registry

/** The metrics the operator exports, with their label names; a histogram as its three series. */
export function exportedMetrics(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const m of registry.getMetricsAsArray()) {
    const labels = [...((m as unknown as { labelNames?: readonly string[] }).labelNames ?? [])];
    const names = m instanceof Histogram ? [`${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`] : [m.name];
    for (const n of names) out.set(n, m instanceof Histogram && n.endsWith("_bucket") ? [...labels, "le"] : labels);
  }
  return out;
}

/**
 * Labels Prometheus adds at scrape time: `job` and `instance` always; `namespace`, `pod`, … of
 * the target through a ServiceMonitor; `exported_namespace`, the renamed `namespace` of the
 * metric itself when the target has one (honorLabels: false).
 */
export const SCRAPE_LABELS = new Set(["job", "instance", "namespace", "pod", "service", "exported_namespace"]);

export interface ParsedExpr {
  /** Names of the vector selectors (the metrics the expression reads). */
  metrics: string[];
  /** Label names of `by (…)`, `without (…)`, `on (…)` and `ignoring (…)`. */
  groupingLabels: string[];
  /** Labels the expression creates itself (the destination of label_replace / label_join). */
  createdLabels: string[];
  /** Syntax errors, as the text where the parser failed; empty for a valid expression. */
  errors: string[];
}

export function parsePromql(expr: string): ParsedExpr {
  const parsed: ParsedExpr = { metrics: [], groupingLabels: [], createdLabels: [], errors: [] };
  const text = (node: { from: number; to: number }) => expr.slice(node.from, node.to);
  parser.parse(expr).iterate({
    enter(node) {
      if (node.type.isError) parsed.errors.push(`at ${node.from}: "${expr.slice(node.from, node.from + 30)}"`);
      else if (node.name === "Identifier" && node.node.parent?.name === "VectorSelector")
        parsed.metrics.push(text(node));
      else if (node.name === "LabelName" && node.node.parent?.name === "GroupingLabels")
        parsed.groupingLabels.push(text(node));
      else if (node.name === "FunctionCall") {
        const fn = node.node.getChild("FunctionIdentifier");
        if (fn && ["label_replace", "label_join"].includes(text(fn))) {
          // The destination label is the first string argument.
          const dst = node.node.getChild("FunctionCallBody")?.getChild("StringLiteral");
          if (dst) parsed.createdLabels.push(JSON.parse(text(dst)) as string);
        }
      }
    },
  });
  parsed.metrics = [...new Set(parsed.metrics)];
  parsed.groupingLabels = [...new Set(parsed.groupingLabels)];
  return parsed;
}

/**
 * What is wrong with an expression against the operator's registry: a syntax error, no metric
 * at all, a metric the operator does not export (renamed or misspelt), or a label in a grouping
 * clause that neither its metrics, the scrape, nor the expression itself provides.
 */
export function promqlProblems(expr: string, exported: Map<string, string[]>): string[] {
  const parsed = parsePromql(expr);
  const problems = parsed.errors.map((e) => `syntax error ${e}`);
  if (parsed.metrics.length === 0) problems.push("names no metric");
  for (const name of parsed.metrics) if (!exported.has(name)) problems.push(`${name} is not exported by the operator`);
  const labels = new Set([
    ...parsed.metrics.flatMap((n) => exported.get(n) ?? []),
    ...SCRAPE_LABELS,
    ...parsed.createdLabels,
  ]);
  for (const label of parsed.groupingLabels) {
    if (!labels.has(label)) problems.push(`no metric of the expression has label ${label}`);
  }
  return problems;
}
