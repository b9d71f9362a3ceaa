/**
 * docs/postgres-support.json: what the operator does on each PostgreSQL major. The matrix test
 * (test/matrix/postgres-matrix.test.ts) proves every cell on a real server of that major; the
 * README's table is rendered from the same file, so the table says only what a test has shown.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./tools.js";

export type CellStatus = "yes" | "no" | "n/a" | "untested";
export interface Cell {
  status: CellStatus;
  reason?: string;
}
interface Feature {
  id: string;
  title: string;
  cells: Record<string, CellStatus | Cell>;
}
export interface SupportMatrix {
  majors: number[];
  features: Feature[];
}

export const SUPPORT_JSON = join(repoRoot, "docs/postgres-support.json");
export const README = join(repoRoot, "README.md");
export const TABLE_START =
  "<!-- postgres-support: generated from docs/postgres-support.json by `npm run -s support-table` -->";
export const TABLE_END = "<!-- /postgres-support -->";

export function loadSupportMatrix(path = SUPPORT_JSON): SupportMatrix {
  return JSON.parse(readFileSync(path, "utf8")) as SupportMatrix;
}

/** The declared cell of `feature` on `major`; a missing one is an error, not a default. */
export function supportCell(matrix: SupportMatrix, feature: string, major: number): Cell {
  const row = matrix.features.find((f) => f.id === feature);
  if (!row) throw new Error(`docs/postgres-support.json has no feature "${feature}"`);
  const cell = row.cells[String(major)];
  if (cell === undefined)
    throw new Error(`docs/postgres-support.json has no cell for "${feature}" on PostgreSQL ${major}`);
  return typeof cell === "string" ? { status: cell } : cell;
}

const SYMBOL: Record<CellStatus, string> = { yes: "yes", no: "no", "n/a": "n/a", untested: "untested" };

/** The Markdown table (features × majors) and its numbered notes, between the README's markers. */
export function renderSupportTable(matrix: SupportMatrix): string {
  const notes: string[] = [];
  const noteOf = (reason: string): number => {
    const at = notes.indexOf(reason);
    if (at >= 0) return at + 1;
    notes.push(reason);
    return notes.length;
  };
  const header = `| | ${matrix.majors.map((m) => `PostgreSQL ${m}`).join(" | ")} |`;
  const rule = `|---|${matrix.majors.map(() => "---").join("|")}|`;
  const rows = matrix.features.map((f) => {
    const cells = matrix.majors.map((m) => {
      const cell = supportCell(matrix, f.id, m);
      return cell.reason ? `${SYMBOL[cell.status]} (${noteOf(cell.reason)})` : SYMBOL[cell.status];
    });
    return `| ${f.title} | ${cells.join(" | ")} |`;
  });
  const noteLines = notes.map((n, i) => `(${i + 1}) ${n}`);
  return [TABLE_START, "", header, rule, ...rows, "", ...noteLines.flatMap((l) => [l, ""]), TABLE_END].join("\n");
}

/** The table as the README holds it now, markers included; undefined when the markers are missing. */
export function readmeSupportTable(readme: string): string | undefined {
  const start = readme.indexOf(TABLE_START);
  const end = readme.indexOf(TABLE_END);
  if (start < 0 || end < start) return undefined;
  return readme.slice(start, end + TABLE_END.length);
}
