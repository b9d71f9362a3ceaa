import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { load } from "js-yaml";
import { CRD_FILES, renderCrdYaml } from "../../../src/api/crd-files.js";
import { poolPolicyCrd } from "../../../src/api/crd.js";
import { repoRoot } from "../../harness/tools.js";

describe("the CRD generated from the zod schema", () => {
  it.each(CRD_FILES)("is what %s holds (run `npm run generate` after changing src/api/schema.ts)", (file) => {
    expect(readFileSync(join(repoRoot, file), "utf8")).toBe(renderCrdYaml());
  });

  const crd = poolPolicyCrd() as any;
  const version = crd.spec.versions[0];
  const spec = version.schema.openAPIV3Schema.properties.spec;

  it("is structural: no additionalProperties:false, no propertyNames, anywhere", () => {
    const text = JSON.stringify(load(renderCrdYaml()));
    expect(text).not.toContain('"additionalProperties":false');
    expect(text).not.toContain("propertyNames");
    expect(text).not.toContain("$schema");
  });

  it("has the status subresource, short name pp, and the printer columns users read", () => {
    expect(version.subresources).toEqual({ status: {} });
    expect(crd.spec.names.shortNames).toEqual(["pp"]);
    expect(version.additionalPrinterColumns.map((c: any) => c.name)).toEqual([
      "Ready",
      "Reason",
      "MaxConn",
      "Usage",
      "Targets",
      "Age",
      "Host",
      "Port",
      "Demand",
      "Capacity",
      "MemCeiling",
      "Role",
      "RoleLimit",
    ]);
  });

  it("shows the server, the budget and the role's limit only with -o wide (priority 1)", () => {
    const wide = version.additionalPrinterColumns.filter((c: any) => c.priority === 1).map((c: any) => c.jsonPath);
    expect(wide).toEqual([
      ".spec.postgres.host",
      ".spec.postgres.port",
      ".status.budget.demand",
      ".status.budget.capacity",
      ".status.budget.memoryCeiling",
      ".status.connectionLimit.role",
      ".status.connectionLimit.current",
    ]);
  });

  it("keeps maxConnections int-or-string with its range in a CEL rule", () => {
    const m = spec.properties.postgres.properties.maxConnections;
    expect(m["x-kubernetes-int-or-string"]).toBe(true);
    expect(m["x-kubernetes-validations"][0].rule).toContain("262143");
  });

  it("spells out the defaults: pool 5/25, reaper every 60s after 5m", () => {
    expect(spec.properties.pool.default).toEqual({
      minSize: 5,
      maxSize: 25,
      env: {
        min: "DB_POSTGRES_MIN_CONN",
        max: "DB_POSTGRES_MAX_CONN",
        host: "DB_POSTGRES_HOST",
        port: "DB_POSTGRES_PORT",
      },
      via: "Direct",
    });
    expect(spec.properties.reaper.properties.interval.default).toBe("60s");
    expect(spec.properties.reaper.properties.idleInTransactionTimeout.default).toBe("5m");
  });

  it("bounds every string and list that a CEL rule reads", () => {
    const unbounded: string[] = [];
    const walk = (node: any, path: string) => {
      if (
        node.type === "string" &&
        node.maxLength === undefined &&
        node.enum === undefined &&
        !path.startsWith("status")
      )
        unbounded.push(path);
      if (node.type === "array" && node.maxItems === undefined && !path.startsWith("status")) unbounded.push(path);
      for (const [k, v] of Object.entries(node.properties ?? {})) walk(v, `${path}.${k}`);
      if (node.items) walk(node.items, `${path}[]`);
      if (typeof node.additionalProperties === "object") walk(node.additionalProperties, `${path}{}`);
    };
    walk(spec, "spec");
    expect(unbounded).toEqual([]);
  });

  it("lists conditions as a map keyed by type", () => {
    const conditions = version.schema.openAPIV3Schema.properties.status.properties.conditions;
    expect(conditions["x-kubernetes-list-type"]).toBe("map");
    expect(conditions["x-kubernetes-list-map-keys"]).toEqual(["type"]);
  });
});
