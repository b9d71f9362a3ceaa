import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MATRIX_MAJORS } from "../../harness/postgres.js";
import {
  loadSupportMatrix,
  README,
  readmeSupportTable,
  renderSupportTable,
  supportCell,
} from "../../harness/support-table.js";
import { repoRoot } from "../../harness/tools.js";

describe("the README's PostgreSQL support table", () => {
  const matrix = loadSupportMatrix();

  it("is the rendering of docs/postgres-support.json (run `npm run -s support-table` after changing it)", () => {
    expect(readmeSupportTable(readFileSync(README, "utf8"))).toBe(renderSupportTable(matrix));
  });

  it("covers exactly the majors the matrix test runs on, every cell declared, every limitation with its reason", () => {
    expect(matrix.majors).toEqual([...MATRIX_MAJORS]);
    // tools/install-postgres.sh --all (make deps) fetches the same majors.
    const env = readFileSync(join(repoRoot, "tools/versions.env"), "utf8");
    expect(/^POSTGRES_MATRIX_MAJORS="([\d ]+)"$/m.exec(env)?.[1]?.split(" ").map(Number)).toEqual([...MATRIX_MAJORS]);
    for (const major of MATRIX_MAJORS)
      expect(env, `POSTGRES_NPM_${major}`).toMatch(new RegExp(`^POSTGRES_NPM_${major}=${major}\\.`, "m"));
    for (const feature of matrix.features) {
      expect(Object.keys(feature.cells).map(Number).sort(), feature.id).toEqual([...MATRIX_MAJORS]);
      for (const major of MATRIX_MAJORS) {
        const cell = supportCell(matrix, feature.id, major);
        expect(["yes", "no", "n/a", "untested"], `${feature.id} on ${major}`).toContain(cell.status);
        if (cell.status !== "yes") expect(cell.reason, `${feature.id} on ${major}`).toMatch(/\w/);
      }
    }
  });
});
