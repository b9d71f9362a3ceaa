/**
 * Label selectors in their string form (`a=b,c in (d,e),!f`), matched in memory.
 *
 * Why: the operator watches each namespace's Deployments once and answers "which Deployments
 * does this policy select" from that cache, as the API server would for a `labelSelector`
 * query. The grammar is apimachinery's (`labels.Parse`): `k=v`, `k==v`, `k!=v`, `k in (…)`,
 * `k notin (…)`, `k` (exists) and `!k` (does not exist), joined by commas; an empty selector
 * selects everything. Label keys and values cannot contain spaces, commas, parentheses, `=`
 * or `!`, so splitting on them is exact.
 *
 * `indexKeys` serves the caches' indexes: the `key=value` labels of which any selected object
 * must carry one, so a lookup reads only the objects under those entries instead of all.
 */

type Requirement =
  | { key: string; op: "in"; values: ReadonlySet<string> }
  | { key: string; op: "notin"; values: ReadonlySet<string> }
  | { key: string; op: "exists" }
  | { key: string; op: "doesnotexist" };

export type Labels = Readonly<Record<string, string>> | undefined;

export class LabelSelector {
  private constructor(
    readonly text: string,
    private readonly requirements: readonly Requirement[],
  ) {}

  /** Throws on a selector that is not valid, naming the part that is not. */
  static parse(text: string): LabelSelector {
    return new LabelSelector(text, splitRequirements(text).map(parseRequirement));
  }

  matches(labels: Labels): boolean {
    return this.requirements.every((r) => satisfies(r, labels?.[r.key]));
  }

  /**
   * `key=value` strings of which every selected object carries at least one (from the equality
   * or `in` requirement with the fewest values); undefined when the selector has none, and then
   * every object must be tested.
   */
  indexKeys(): string[] | undefined {
    let best: Extract<Requirement, { op: "in" }> | undefined;
    for (const r of this.requirements) {
      if (r.op === "in" && (!best || r.values.size < best.values.size)) best = r;
    }
    return best ? [...best.values].map((v) => labelIndexKey(best.key, v)) : undefined;
  }
}

function satisfies(r: Requirement, value: string | undefined): boolean {
  if (r.op === "in") return value !== undefined && r.values.has(value);
  if (r.op === "notin") return value === undefined || !r.values.has(value);
  if (r.op === "exists") return value !== undefined;
  return value === undefined;
}

/** The index entry of one label, as `indexKeys` names them. */
export function labelIndexKey(key: string, value: string): string {
  return `${key}=${value}`;
}

/** Splits on the commas that separate requirements, not those inside `( … )`. */
function splitRequirements(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "(") depth++;
    else if (c === ")") depth--;
    else if (c === "," && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p !== "");
}

const setForm = /^(\S+)\s+(in|notin)\s*\(([^()]*)\)$/;
const equalityForm = /^([^\s=!]+)\s*(==|=|!=)\s*([^\s=!,()]*)$/;
const existsForm = /^(!?)([^\s=!,()]+)$/;

function parseRequirement(part: string): Requirement {
  const set = setForm.exec(part);
  if (set) {
    const values = new Set(
      set[3]!
        .split(",")
        .map((v) => v.trim())
        .filter((v) => v !== ""),
    );
    return { key: set[1]!, op: set[2] as "in" | "notin", values };
  }
  const equality = equalityForm.exec(part);
  if (equality) {
    const values = new Set([equality[3]!]);
    return { key: equality[1]!, op: equality[2] === "!=" ? "notin" : "in", values };
  }
  const exists = existsForm.exec(part);
  if (exists) return { key: exists[2]!, op: exists[1] === "!" ? "doesnotexist" : "exists" };
  throw new Error(`invalid label selector requirement "${part}"`);
}
