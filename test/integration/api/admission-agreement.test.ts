/**
 * The CRD (what the apiserver admits) and the zod schema (what the operator accepts) are two
 * renderings of one schema. This test sends random, often hostile, specs to the real apiserver
 * (server-side dry run) and checks that both sides agree on each: drift in either direction
 * fails. The one known difference: the CRD cannot check that a time zone exists, so zod alone
 * rejects that, and the operator reports it as InvalidSpec.
 */
import { beforeAll, expect, inject, it } from "vitest";
import fc from "fast-check";
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { createNamespace, loadKubeConfig } from "../../harness/kube.js";
import { validateSpec } from "../../../src/api/schema.js";
import { setPath, validSpec } from "../../harness/spec-mutations.js";

let kc: KubeConfig;
let namespace: string;

beforeAll(async () => {
  kc = loadKubeConfig(inject("kubeconfigPath"));
  await installPoolPolicyCrd(kc);
  namespace = await createNamespace(kc, "admit");
});

const hostile = fc.oneof(
  fc.constantFrom(
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
    1e21,
    "auto",
    "100;DROP TABLE x",
    "",
    " ",
    "5m",
    "1s",
    "90s",
    "1h30m",
    "abc",
    "ßüñ☃",
    "x".repeat(300),
    true,
    [],
    {},
    ["a"],
    "02:00",
    "25:00",
    "UTC",
    "Mars/Olympus",
    "Cluster",
    "StatefulSet",
    "postgresql.cnpg.io/v1",
    "apps/v1",
    "Pooler",
    "Direct",
    "Session",
    "Transaction",
    "pgbouncer",
    "PgBouncer",
    // The four env names must differ: these collide with each other's defaults.
    "DB_POSTGRES_MIN_CONN",
    "DB_POSTGRES_HOST",
  ),
  fc.integer(),
  fc.string({ maxLength: 20 }),
  fc.string({ unit: "grapheme", maxLength: 8 }),
);

const paths = [
  "postgres.host",
  "postgres.port",
  "postgres.database",
  "postgres.sslMode",
  "postgres.maxConnections",
  "postgres.credentialsSecret.name",
  "postgres.requiredExtensions",
  "postgres.restart.policy",
  "postgres.restart.workload.kind",
  "postgres.restart.workload.apiVersion",
  "postgres.restart.maintenanceWindow.start",
  "postgres.restart.maintenanceWindow.timeZone",
  "postgres.restart.maintenanceWindow.duration",
  "pool.minSize",
  "pool.maxSize",
  "pool.env.min",
  "pool.env.max",
  "pool.env.host",
  "pool.env.port",
  "pool.via",
  "pooler.name",
  "pooler.image",
  "pooler.replicas",
  "pooler.poolMode",
  "pooler.minServerConnectionsPerPod",
  "targets.selector.matchLabels",
  "targets.containers",
  "reaper.interval",
  "reaper.idleInTransactionTimeout",
  "reaper.excludeUsers",
  "reaper.dryRun",
];

it("admission and the operator's validation agree on random specs", async () => {
  const custom = kc.makeApiClient(CustomObjectsApi);
  let n = 0;
  const disagreements: string[] = [];
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.constantFrom(...paths), hostile), { minLength: 1, maxLength: 3 }),
      async (mutations) => {
        const spec = validSpec();
        for (const [path, value] of mutations) setPath(spec, path, value);
        const body = {
          apiVersion: "pooling.dbops.io/v1alpha1",
          kind: "PoolPolicy",
          metadata: { name: `p${n++}`, namespace },
          spec,
        };
        let admitted: { spec: unknown } | undefined;
        try {
          admitted = (await custom.createNamespacedCustomObject({
            group: "pooling.dbops.io",
            version: "v1alpha1",
            plural: "poolpolicies",
            namespace,
            body,
            dryRun: "All",
          })) as { spec: unknown };
        } catch (err) {
          const code = (err as { code?: number }).code;
          if (code !== 422 && code !== 400) throw err; // anything else is a broken test, not a verdict
        }
        const verdict = validateSpec(admitted?.spec ?? spec);
        const knownGap = !verdict.ok && /time zone/.test(verdict.message);
        if (Boolean(admitted) !== verdict.ok && !(admitted && knownGap)) {
          disagreements.push(
            `${JSON.stringify(mutations)} admitted=${Boolean(admitted)} zod=${verdict.ok ? "ok" : verdict.message}`,
          );
        }
      },
    ),
    { numRuns: 300, seed: 20261126 },
  );
  expect(disagreements).toEqual([]);
});
