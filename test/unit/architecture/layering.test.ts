/**
 * Which folder of src/ may import which: the layering that keeps the domain (api, budget, server,
 * postgres) and the Kubernetes plumbing (kube, runtime) free of the controller, and the CLI beside
 * the controller rather than on top of it. A new edge fails here until the table says it is meant.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const SRC = resolve(import.meta.dirname, "../../../src");

/** The folders (and top-level modules, by file name) each folder may import. */
const ALLOWED: Record<string, readonly string[]> = {
  api: [],
  budget: [],
  kube: ["api"],
  postgres: ["api"],
  redis: ["log.ts"],
  runtime: ["kube", "log.ts"],
  server: ["api", "budget", "kube", "postgres", "redis"],
  // PgBouncer's configuration, rendered from the server model's sizes (issue 17).
  pooler: ["api", "postgres", "server"],
  controller: ["api", "budget", "kube", "postgres", "pooler", "redis", "runtime", "server", "log.ts"],
  cli: ["api", "budget", "kube", "pooler", "postgres", "redis", "runtime", "server"],
};

/** Every import of one src/ folder into another, as "from-file -> to-file". */
function crossFolderImports(): { from: string; to: string; fromFolder: string; toFolder: string }[] {
  const edges = [];
  for (const file of readdirSync(SRC, { recursive: true, encoding: "utf8" })) {
    if (!file.endsWith(".ts") || !file.includes("/")) continue; // main.ts, config.ts, log.ts: the top may import anything
    const text = readFileSync(join(SRC, file), "utf8");
    for (const [, specifier] of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
      const to = relative(SRC, resolve(SRC, dirname(file), specifier!)).replace(/\.js$/, ".ts");
      const fromFolder = file.split("/")[0]!;
      const toFolder = to.includes("/") ? to.split("/")[0]! : to;
      if (fromFolder !== toFolder) edges.push({ from: file, to, fromFolder, toFolder });
    }
  }
  return edges;
}

describe("src/ layering", () => {
  const edges = crossFolderImports();

  it("every folder is in the table", () => {
    const folders = readdirSync(SRC, { withFileTypes: true }).filter((d) => d.isDirectory());
    expect(folders.map((d) => d.name).sort()).toEqual(Object.keys(ALLOWED).sort());
  });

  it("reads the imports it checks (the scan is not blind)", () => {
    expect(edges).toContainEqual(expect.objectContaining({ from: "server/credentials.ts", to: "kube/secrets.ts" }));
  });

  it("each folder imports only what the table allows", () => {
    const forbidden = edges
      .filter((e) => !ALLOWED[e.fromFolder]!.includes(e.toFolder))
      .map((e) => `${e.from} -> ${e.to}`);
    expect(forbidden).toEqual([]);
  });
});
