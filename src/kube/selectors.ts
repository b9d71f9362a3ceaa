/**
 * Label selectors as the API server's `labelSelector` query parameter spells them. The one
 * rendering that the operator's watches, its reconcile and the CLI's LISTs share.
 */
import type { V1LabelSelector } from "@kubernetes/client-node";

export function labelSelectorString(selector: Pick<V1LabelSelector, "matchLabels" | "matchExpressions">): string {
  const parts = Object.entries(selector.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of selector.matchExpressions ?? []) {
    const values = (e.values ?? []).join(",");
    if (e.operator === "In") parts.push(`${e.key} in (${values})`);
    else if (e.operator === "NotIn") parts.push(`${e.key} notin (${values})`);
    else if (e.operator === "Exists") parts.push(e.key);
    else parts.push(`!${e.key}`);
  }
  return parts.join(",");
}
