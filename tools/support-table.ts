/**
 * Rewrites the README's PostgreSQL support table from docs/postgres-support.json
 * (`npm run -s support-table`). The unit test test/unit/docs/support-table.test.ts fails when the
 * two disagree; the matrix test proves each cell of the JSON on a real server.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { loadSupportMatrix, README, readmeSupportTable, renderSupportTable } from "../test/harness/support-table.js";

const readme = readFileSync(README, "utf8");
const current = readmeSupportTable(readme);
if (current === undefined) {
  console.error("README.md has no support table markers (see TABLE_START in test/harness/support-table.ts)");
  process.exit(1);
}
writeFileSync(
  README,
  readme.replace(current, () => renderSupportTable(loadSupportMatrix())),
);
console.log("README.md: PostgreSQL support table rewritten from docs/postgres-support.json");
