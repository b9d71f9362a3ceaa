/**
 * Item 8: fuzzed PoolPolicy specs (fast-check) against the real kube-apiserver, then through the
 * running operator.
 *
 * 8a breaks admission with thousands of hostile specs (FUZZ_RUNS, default 3000), server-side dry
 *    run: 0, 262144, '100;DROP TABLE x', floats, NUL bytes, 70 kB strings, unicode, objects where
 *    strings go, missing required fields. Promise: each is either admitted or rejected with
 *    400/422, never a 5xx or a hang.
 * 8b sends a sample of the ADMITTED ones (every admitted spec the operator's zod schema rejects,
 *    up to 20, plus up to 20 valid ones) as real objects to the running operator. Promises: each
 *    invalid one ends Ready=False reason InvalidSpec and no SQL runs for it (each object points
 *    at a database name of its own on a canary PostgreSQL, whose log would show any connection
 *    to it; the valid ones, pointed the same way, are the positive control that the log does);
 *    each valid one gets a status; no table was dropped; the operator never crashed (same
 *    process, no restart, no uncaught error in its log).
 *
 * admission-agreement.test.ts checks that the CRD and zod agree on 300 specs without the operator.
 */
import { afterAll, beforeAll, describe, expect } from "vitest";
import fc from "fast-check";
import { CustomObjectsApi } from "@kubernetes/client-node";
import { FaultCluster, crashSigns, operatorCounters, postgresLog } from "../../harness/faults.js";
import { waitFor } from "../../harness/processes.js";
import type { OperatorProcess } from "../../harness/operator.js";
import { APP_DATABASE, Scenario } from "../operator/scenario.js";
import { validateSpec, type PoolPolicy } from "../../../src/api/schema.js";
import { faultSuite } from "./support.js";
import { DELETE, setPath, validSpec } from "../../harness/spec-mutations.js";

const RUNS = Number(process.env.FUZZ_RUNS ?? 3000);
const SEED = Number(process.env.FUZZ_SEED ?? 20261126);
const MAX_INVALID_OBJECTS = 20;
const MAX_VALID_OBJECTS = 20;
const api = { group: "pooling.dbops.io", version: "v1alpha1", plural: "poolpolicies" };

let cluster: FaultCluster | undefined;
let s: Scenario;
let operator: OperatorProcess;
const suite = faultSuite("test/integration/faults/fuzz.test.ts", () => cluster);
/** Specs the kube-apiserver admitted in 8a, for 8b. */
const admitted: { spec: Record<string, any>; valid: boolean; message: string }[] = [];

beforeAll(async () => {
  cluster = await FaultCluster.start();
  s = await Scenario.create(cluster.kc, { prefix: "fuzz" });
  suite.secrets.add(s.server.password);
  // The canary table a SQL injection would drop.
  await s.server.query("CREATE TABLE x (id int)", [], APP_DATABASE);
  operator = cluster.operator({ name: "fuzz-op" });
  await operator.start();
});

afterAll(async () => {
  await s?.cleanup();
  await cluster?.stop();
});

const hostileValues: unknown[] = [
  0,
  -1,
  1,
  5,
  25,
  65535,
  65536,
  262143,
  262144,
  10.5,
  0.1,
  1e21,
  Number.MAX_SAFE_INTEGER,
  -2147483649,
  "auto",
  "100;DROP TABLE x",
  "'; DROP TABLE x; --",
  "100); DROP TABLE x; --",
  "",
  " ",
  "5m",
  "1s",
  "0s",
  "500ms",
  "90s",
  "1h30m",
  "-5s",
  "abc",
  "ßüñ☃",
  "𝕏😀",
  "\u0000",
  "a\u0000b",
  "\u202Eevil",
  "x".repeat(300),
  "y".repeat(70_000),
  true,
  false,
  null,
  [],
  {},
  ["a"],
  [1, 2],
  { $ne: 1 },
  "02:00",
  "25:00",
  "UTC",
  "Mars/Olympus",
  "Europe/Nowhere",
  "Europe/Berlin",
  "StatefulSet",
  "Deployment",
  "Manual",
  "require",
  "verify-full",
];

const hostile = fc.oneof(
  { arbitrary: fc.constantFrom(...hostileValues), weight: 4 },
  { arbitrary: fc.integer(), weight: 1 },
  { arbitrary: fc.double({ noNaN: true }), weight: 1 },
  { arbitrary: fc.string({ maxLength: 20 }), weight: 1 },
  { arbitrary: fc.string({ unit: "grapheme", maxLength: 8 }), weight: 1 },
  { arbitrary: fc.string({ unit: "binary", maxLength: 8 }), weight: 1 },
  { arbitrary: fc.constant(DELETE), weight: 1 },
);

const paths = [
  "postgres",
  "postgres.host",
  "postgres.port",
  "postgres.database",
  "postgres.sslMode",
  "postgres.maxConnections",
  "postgres.credentialsSecret",
  "postgres.credentialsSecret.name",
  "postgres.credentialsSecret.passwordKey",
  "postgres.requiredExtensions",
  "postgres.restart.policy",
  "postgres.restart.workload.kind",
  "postgres.restart.workload.name",
  "postgres.restart.workload.namespace",
  "postgres.restart.maintenanceWindow.start",
  "postgres.restart.maintenanceWindow.timeZone",
  "postgres.restart.maintenanceWindow.duration",
  "postgres.restart.maintenanceWindow.days",
  "postgres.restart.delayBetweenPods",
  "pool",
  "pool.minSize",
  "pool.maxSize",
  "pool.env.min",
  "pool.env.max",
  "targets",
  "targets.selector",
  "targets.selector.matchLabels",
  "targets.containers",
  "reaper.interval",
  "reaper.idleInTransactionTimeout",
  "reaper.excludeUsers",
  "reaper.excludeApplicationNames",
  "reaper.dryRun",
  "reaper.mode",
  "redis.urlSecret.name",
  "redis.required",
  "budget.reserve",
  "budget.ceiling",
];

/** Admitted by the CRD, rejected by zod: the CRD cannot check that a time zone exists. */
const badTimeZones = fc.constantFrom(
  "Mars/Olympus",
  "Europe/Nowhere",
  "Not/A_Zone",
  "Etc/GMT+99",
  "Moon/Tranquility_Base",
);

const mutations = fc.array(fc.tuple(fc.constantFrom(...paths), hostile), { minLength: 1, maxLength: 3 });
const specs = fc
  .oneof(
    { arbitrary: mutations, weight: 5 },
    // Biased towards what admission lets through and zod refuses, so 8b has invalid specs to send.
    {
      arbitrary: fc
        .tuple(badTimeZones, fc.array(fc.tuple(fc.constantFrom(...paths), hostile), { maxLength: 1 }))
        .map(([tz, ms]) => [["postgres.restart.maintenanceWindow.timeZone", tz], ...ms] as [string, unknown][]),
      weight: 1,
    },
  )
  .map((ms) => {
    const spec = validSpec();
    for (const [path, value] of ms) setPath(spec, path, value);
    return spec;
  });

describe("fuzzed PoolPolicy specs", () => {
  suite.scenario(
    "8a",
    async (m) => {
      const custom = cluster!.kc.makeApiClient(CustomObjectsApi);
      const outcomes = new Map<string, number>();
      const unexpected: string[] = [];
      let n = 0;
      const started = performance.now();
      await fc.assert(
        fc.asyncProperty(specs, async (spec) => {
          const body = {
            apiVersion: "pooling.dbops.io/v1alpha1",
            kind: "PoolPolicy",
            metadata: { name: `dry${n++}`, namespace: s.namespace },
            spec,
          };
          let outcome: string;
          try {
            const created = (await custom.createNamespacedCustomObject({
              ...api,
              namespace: s.namespace,
              body,
              dryRun: "All",
            })) as PoolPolicy;
            const verdict = validateSpec(created.spec);
            outcome = verdict.ok ? "admitted, valid" : "admitted, invalid";
            if (admitted.length < 5_000)
              admitted.push({
                spec: created.spec as Record<string, any>,
                valid: verdict.ok,
                message: verdict.ok ? "" : verdict.message,
              });
          } catch (err) {
            const code = (err as { code?: number }).code;
            outcome = `rejected ${code}`;
            if (code !== 400 && code !== 422) unexpected.push(`${code}: ${JSON.stringify(spec).slice(0, 300)}`);
          }
          outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        }),
        { numRuns: RUNS, seed: SEED, examples: [] },
      );
      const seconds = (performance.now() - started) / 1000;
      m.note("cases", `${n} in ${seconds.toFixed(0)} s (seed ${SEED})`);
      m.note("outcomes", [...outcomes].map(([k, v]) => `${v} ${k}`).join(", "));
      // What admission lets through and zod refuses, by field (the known gap: time zones).
      const gaps = new Map<string, number>();
      for (const a of admitted.filter((x) => !x.valid))
        for (const field of new Set([...a.message.matchAll(/(spec\.[\w.]+):/g)].map((x) => x[1]!)))
          gaps.set(field, (gaps.get(field) ?? 0) + 1);
      m.note("admitted but invalid, by field", [...gaps].map(([k, v]) => `${v} ${k}`).join(", ") || "none");
      expect(unexpected, "answers other than admitted, 400 or 422").toEqual([]);
      expect(n).toBe(RUNS);
      expect(outcomes.get("admitted, valid") ?? 0, "some specs got through (else 8b tests nothing)").toBeGreaterThan(0);
    },
    600_000,
  );

  suite.scenario(
    "8b",
    async (m) => {
      const startedAs = (await operatorCounters(operator)).processStart;
      const invalid = admitted.filter((a) => !a.valid).slice(0, MAX_INVALID_OBJECTS);
      const valid = admitted.filter((a) => a.valid).slice(0, MAX_VALID_OBJECTS);
      expect(invalid.length, "admitted-but-invalid specs found by 8a").toBeGreaterThan(0);
      const custom = cluster!.kc.makeApiClient(CustomObjectsApi);
      const sent: { name: string; database: string | undefined; valid: boolean; spec: unknown }[] = [];
      for (const [i, a] of [...invalid, ...valid].entries()) {
        const spec = structuredClone(a.spec);
        const name = `fz${i}`;
        // Point what the fuzzer left alone at the canary, with a database name of this object's own.
        const pgSpec = (typeof spec.postgres === "object" && spec.postgres !== null ? spec.postgres : {}) as Record<
          string,
          any
        >;
        if (pgSpec.host === "db.example") {
          pgSpec.host = "127.0.0.1";
          if (pgSpec.port === undefined || pgSpec.port === 5432) pgSpec.port = s.server.port;
        }
        if (pgSpec.credentialsSecret?.name === "pg") pgSpec.credentialsSecret.name = "pg-admin";
        const ownDatabase = pgSpec.database === undefined || pgSpec.database === "postgres";
        if (ownDatabase) pgSpec.database = name;
        await custom.createNamespacedCustomObject({
          ...api,
          namespace: s.namespace,
          body: { apiVersion: "pooling.dbops.io/v1alpha1", kind: "PoolPolicy", metadata: { name }, spec },
        });
        sent.push({
          name,
          database: ownDatabase && pgSpec.host === "127.0.0.1" ? name : undefined,
          valid: a.valid,
          spec,
        });
      }

      // Every object gets a verdict from the operator.
      const pending = new Set(sent.map((x) => x.name));
      const verdicts = new Map<string, { reason: string; status: string }>();
      await waitFor(
        "a status on every fuzzed object",
        async () => {
          for (const name of [...pending]) {
            const p = await s.readPolicy(name);
            const ready = p?.status?.conditions?.find((c) => c.type === "Ready");
            if (ready && p?.status?.observedGeneration === p?.metadata.generation) {
              verdicts.set(name, { reason: ready.reason, status: ready.status });
              pending.delete(name);
            }
          }
          return pending.size === 0;
        },
        { timeoutMs: 180_000, intervalMs: 1_000 },
      ).catch((err: Error) => {
        const specsOf = sent
          .filter((x) => pending.has(x.name))
          .map((x) => `${x.name} ${JSON.stringify(x.spec).slice(0, 300)}`);
        throw new Error(`${err.message}: no status on ${specsOf.join(" | ")}`);
      });

      const log = postgresLog(s.server);
      const touched = (database: string) => log.includes(`"${database}"`);
      const wrongVerdicts = sent
        .filter((x) => !x.valid && verdicts.get(x.name)?.reason !== "InvalidSpec")
        .map((x) => `${x.name}: ${JSON.stringify(verdicts.get(x.name))}`);
      const validCalledInvalid = sent
        .filter((x) => x.valid && verdicts.get(x.name)?.reason === "InvalidSpec")
        .map((x) => x.name);
      const sqlForInvalid = sent.filter((x) => !x.valid && x.database && touched(x.database)).map((x) => x.name);
      const controls = sent.filter((x) => x.valid && x.database);
      const controlsSeen = controls.filter((x) => touched(x.database!)).length;
      const reasons = new Map<string, number>();
      for (const v of verdicts.values()) reasons.set(v.reason, (reasons.get(v.reason) ?? 0) + 1);
      m.note("objects", `${invalid.length} admitted-but-invalid, ${valid.length} valid`);
      m.note("Ready reasons", [...reasons].map(([k, v]) => `${v} ${k}`).join(", "));
      m.note(
        "SQL",
        `${sqlForInvalid.length} connections for invalid specs; positive control ${controlsSeen}/${controls.length} valid ones seen in the log`,
      );
      expect(wrongVerdicts, "admitted-but-invalid specs not reported InvalidSpec").toEqual([]);
      expect(validCalledInvalid, "valid specs reported InvalidSpec").toEqual([]);
      expect(sqlForInvalid, "invalid specs that reached PostgreSQL").toEqual([]);
      if (controls.length > 0)
        expect(controlsSeen, "the canary's log shows the valid specs' connections").toBeGreaterThan(0);
      expect(
        (await s.server.query("SELECT to_regclass('public.x') IS NOT NULL AS present", [], APP_DATABASE))[0]!.present,
      ).toBe(true);
      // The operator never crashed.
      const now = await operatorCounters(operator);
      expect(now.processStart, "same operator process").toBe(startedAs);
      expect(operator.starts).toBe(1);
      expect(crashSigns(operator.logs())).toEqual([]);
      expect(await fetch(`http://127.0.0.1:${operator.httpPort}/healthz`).then((r) => r.ok)).toBe(true);
    },
    400_000,
  );
});
