/**
 * Writes the PoolPolicy CRD, generated from src/api/schema.ts, to crds/ and to the Helm chart.
 * Run with `npm run generate`; test/unit/api/crd.test.ts fails when the files are stale.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { renderCrdYaml, CRD_FILES } from "../src/api/crd-files.js";

const root = join(dirname(new URL(import.meta.url).pathname), "..");
for (const file of CRD_FILES) {
  const path = join(root, file);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, renderCrdYaml());
  console.log(`wrote ${file}`);
}
