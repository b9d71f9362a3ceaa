/**
 * Item 4: other writers change what the operator writes, at the same time as it does.
 *
 * 4a breaks: another field manager edits the Deployment's env (an Update that takes over the
 *    operator's value and adds its own entries), then a rival server-side applier keeps
 *    forcing its own value of DB_POSTGRES_MAX_CONN once a second.
 *    Promises: the operator's two entries come back each time, the other manager's own edits
 *    stay (no lost update), a non-forced apply of the operator's entry is refused with a
 *    conflict, and the operator writes at most once per foreign change, nothing once it stops.
 * 4b breaks: the PoolPolicy is edited ten times a second (annotations) while its spec changes,
 *    so the object the operator read is almost always stale by the time it writes the status.
 *    Promises: no lost update (the last spec is applied and observed, every annotation kept),
 *    no status write refused with 409 (the status is written without a resourceVersion
 *    precondition: observedGeneration says which spec it describes, and a pass that lost every
 *    write to a conflict would never report anything while edits keep coming), status writes
 *    per minute bounded during the storm, and quiet (≈0 writes) once it ends.
 */
import { afterAll, beforeAll, describe, expect } from "vitest";
import { EventsV1Api, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import {
  FaultCluster,
  apiserverRequests,
  counterDelta,
  operatorCounters,
  perMinute,
  sleep,
  type RequestFilter,
} from "../../harness/faults.js";
import { waitFor } from "../../harness/processes.js";
import { MAX_TAKES } from "../../../src/controller/env-conflicts.js";
import type { OperatorProcess } from "../../harness/operator.js";
import { Scenario } from "../operator/scenario.js";
import { faultSuite } from "./support.js";

let cluster: FaultCluster | undefined;
let s: Scenario;
let operator: OperatorProcess;
const suite = faultSuite("test/integration/faults/concurrent-edits.test.ts", () => cluster);

beforeAll(async () => {
  cluster = await FaultCluster.start();
  s = await Scenario.create(cluster.kc, { prefix: "edits" });
  suite.secrets.add(s.server.password);
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
  operator = cluster.operator({ name: "edits-op" });
  await operator.start();
  await s.applyPolicy("p", s.policySpec());
  await s.waitForCondition("p", "Ready", { status: "True" }, 120_000);
});

afterAll(async () => {
  await s?.cleanup();
  await cluster?.stop();
});

/** A window with no foreign change, in which a converged operator must stay (almost) silent. */
const QUIET_MS = 20_000;

const ssa = () => setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);

/** Status writes the kube-apiserver refused with 409 Conflict (only the operator writes status here). */
const CONFLICTING_STATUS_WRITES: RequestFilter[] = ["PUT", "PATCH"].map((verb) => ({
  code: "409",
  resource: "poolpolicies",
  subresource: "status",
  verb,
}));
const statusConflicts = async () =>
  (await Promise.all(CONFLICTING_STATUS_WRITES.map((f) => apiserverRequests(cluster!, f)))).reduce((a, b) => a + b, 0);

/** How many server-side applies of the pool env the operator made: its EnvInjected Events, series counted. */
async function operatorInjections(): Promise<number> {
  const list = await cluster!.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: s.namespace });
  return list.items
    .filter((e) => e.reason === "EnvInjected" && e.reportingController === "pooling.dbops.io/poolpolicy-operator")
    .reduce((n, e) => n + (e.series?.count ?? 1), 0);
}

/** A rival's server-side apply of one env entry of the app container. */
function rivalApply(value: string, force: boolean) {
  return s.apps.patchNamespacedDeployment(
    {
      name: "api",
      namespace: s.namespace,
      fieldManager: "rival-controller",
      force,
      body: {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "api", namespace: s.namespace },
        spec: { template: { spec: { containers: [{ name: "app", env: [{ name: "DB_POSTGRES_MAX_CONN", value }] }] } } },
      },
    },
    ssa(),
  );
}

describe("concurrent edits", () => {
  suite.scenario(
    "4a",
    async (m) => {
      // A human with kubectl edit (an Update, field manager "kubectl-edit"): changes the operator's
      // value, changes the app's own LOG_LEVEL, adds FOO.
      const current = await s.readDeployment("api");
      const env = current.spec!.template.spec!.containers[0]!.env!;
      const edited = env.map((e) =>
        e.name === "DB_POSTGRES_MAX_CONN"
          ? { ...e, value: "99" }
          : e.name === "LOG_LEVEL"
            ? { ...e, value: "debug" }
            : e,
      );
      await s.apps.patchNamespacedDeployment(
        {
          name: "api",
          namespace: s.namespace,
          fieldManager: "kubectl-edit",
          body: [
            {
              op: "replace",
              path: "/spec/template/spec/containers/0/env",
              value: [...edited, { name: "FOO", value: "bar" }],
            },
          ],
        },
        setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
      );
      await waitFor(
        "the operator to restore its value",
        async () => (await s.envOf("api")).DB_POSTGRES_MAX_CONN === "25",
        { timeoutMs: 60_000 },
      );
      expect(await s.envOf("api")).toEqual({
        LOG_LEVEL: "debug",
        FOO: "bar",
        DB_POSTGRES_MIN_CONN: "5",
        DB_POSTGRES_MAX_CONN: "25",
      });

      // A rival applier without force is told the operator owns the entry: no silent overwrite.
      const refused = await rivalApply("77", false).then(
        () => undefined,
        (err: { code?: number }) => err.code,
      );
      expect(refused, "a non-forced apply of the operator's entry").toBe(409);

      // A rival that forces its value once a second, a dozen times, as a GitOps self-heal would.
      // The operator takes it back MAX_TAKES times, then leaves it and reports the conflict
      // (issue 13): the rival has the last word. (The Event of the restore above is written after
      // the status: let it land before counting from here.)
      await sleep(3_000);
      const injectionsBefore = await operatorInjections();
      const generationBefore = (await s.readDeployment("api")).metadata!.generation!;
      const countersBefore = await operatorCounters(operator);
      const fightStarted = Date.now();
      let rivalWrites = 0;
      for (let i = 0; i < 12; i++) {
        await rivalApply("77", true);
        rivalWrites += 1;
        await sleep(1_000);
      }
      const stopped = await s.waitForCondition("p", "PoolEnvInjected", {
        status: "False",
        reason: "ConflictingManager",
      });
      expect(stopped.status!.conditions!.find((c) => c.type === "PoolEnvInjected")!.message).toContain(
        '"rival-controller" keeps setting DB_POSTGRES_MAX_CONN=77',
      );
      expect((await s.envOf("api")).DB_POSTGRES_MAX_CONN).toBe("77");
      const fightMs = Date.now() - fightStarted;
      const injections = (await operatorInjections()) - injectionsBefore;
      const generations = (await s.readDeployment("api")).metadata!.generation! - generationBefore;
      const fightRates = perMinute(countersBefore, await operatorCounters(operator), fightMs);
      m.note(
        "fight",
        `${rivalWrites} forced rival applies, ${injections} operator re-applies, ${generations} Deployment generations, ${fightRates.statusWrites} status writes/min, ${fightRates.reconciles} reconciles/min`,
      );
      expect(injections, "the operator re-applied at least once").toBeGreaterThanOrEqual(1);
      expect(injections, "the operator's takes, bounded").toBeLessThanOrEqual(MAX_TAKES);

      // Quiet once the rival stops: no write at all for 20 s.
      await sleep(3_000);
      const quietFrom = {
        injections: await operatorInjections(),
        generation: (await s.readDeployment("api")).metadata!.generation!,
        counters: await operatorCounters(operator),
      };
      await sleep(QUIET_MS);
      const quietTo = await operatorCounters(operator);
      const quietRates = perMinute(quietFrom.counters, quietTo, QUIET_MS);
      const quietWrites = counterDelta(quietFrom.counters, quietTo).statusWrites;
      const quietInjections = (await operatorInjections()) - quietFrom.injections;
      m.note(
        `quiet ${QUIET_MS / 1000} s`,
        `${quietInjections} env writes, ${quietRates.statusWrites} status writes/min, ${quietRates.reconciles} reconciles/min`,
      );
      expect(quietInjections).toBe(0);
      expect((await s.readDeployment("api")).metadata!.generation).toBe(quietFrom.generation);
      expect(quietWrites, "status writes in the quiet window").toBeLessThanOrEqual(1);
      // STATS_REFRESH_SECONDS=5 in tests: ~12 periodic reconciles a minute, plus the odd event.
      expect(quietRates.reconciles).toBeLessThanOrEqual(30);
      // The other managers' entries are still there, the operator owns exactly its two.
      expect(await s.envOf("api")).toEqual({
        LOG_LEVEL: "debug",
        FOO: "bar",
        DB_POSTGRES_MIN_CONN: "5",
        DB_POSTGRES_MAX_CONN: "77",
      });
      const mine = (await s.readDeployment("api")).metadata?.managedFields?.find(
        (f) => f.manager === "poolpolicy-operator/p" && f.operation === "Apply",
      );
      const owned = JSON.stringify(mine?.fieldsV1 ?? {});
      expect(owned).toContain('k:{\\"name\\":\\"DB_POSTGRES_MIN_CONN\\"}');
      expect(owned).not.toContain("FOO");
      expect(owned).not.toContain("LOG_LEVEL");
    },
    240_000,
  );

  suite.scenario(
    "4b",
    async (m) => {
      const conflictsBefore = await statusConflicts();
      const before = await operatorCounters(operator);
      const stormStarted = Date.now();
      let annotationWrites = 0;
      let storming = true;
      // Ten metadata edits a second: the operator's cached resourceVersion is almost always stale.
      // It goes on until the spec changes are done AND 60 edits landed: on a loaded machine a
      // patch takes longer, and the storm must not get thinner (at most 1,000 attempts).
      const storm = (async () => {
        for (let seq = 1; (storming || annotationWrites < 60) && seq <= 1000; seq++) {
          await s.patchPolicy("p", { metadata: { annotations: { "storm.test/seq": String(seq) } } }).then(
            () => {
              annotationWrites = seq;
            },
            () => undefined,
          );
          await sleep(100);
        }
      })();
      // Meanwhile the spec changes five times: each one needs status writes (observedGeneration, rollout).
      const sizes = [26, 27, 28, 30];
      for (const maxSize of sizes) {
        await s.patchPolicy("p", { spec: { pool: { maxSize } } });
        await sleep(3_500);
      }
      storming = false;
      await storm;
      const stormMs = Date.now() - stormStarted;
      const afterStorm = await operatorCounters(operator);
      const stormRates = perMinute(before, afterStorm, stormMs);
      const stormWrites = counterDelta(before, afterStorm).statusWrites;
      const conflicts = (await statusConflicts()) - conflictsBefore;
      m.note(
        "storm",
        `${Math.round(stormMs / 1000)} s, ${annotationWrites} foreign edits, ${sizes.length} spec changes`,
      );
      m.note(
        "operator during the storm",
        `${conflicts} status writes refused with 409 (kube-apiserver's count), ${stormRates.statusWrites} status writes/min, ${stormRates.reconciles} reconciles/min, ${stormRates.reconcileErrors} errors/min`,
      );

      // No lost update: the last spec applied and observed, the last foreign edit kept.
      await waitFor("the last spec to be applied", async () => (await s.envOf("api")).DB_POSTGRES_MAX_CONN === "30", {
        timeoutMs: 60_000,
      });
      await waitFor(
        "the status to observe the last generation",
        async () => {
          const p = await s.readPolicy("p");
          return p?.status?.observedGeneration === p?.metadata.generation;
        },
        { timeoutMs: 60_000 },
      );
      await s.waitForCondition("p", "Ready", { status: "True" }, 60_000);
      const p = (await s.readPolicy("p"))!;
      expect(p.metadata.annotations?.["storm.test/seq"]).toBe(String(annotationWrites));
      expect(p.status?.conditions?.find((c) => c.type === "PoolEnvInjected")?.message).toContain(
        "DB_POSTGRES_MAX_CONN=30",
      );
      expect(
        annotationWrites,
        "the storm edited the policy (else this scenario proves nothing)",
      ).toBeGreaterThanOrEqual(50);
      expect(stormWrites, "the operator wrote status during the storm").toBeGreaterThan(0);
      expect(conflicts, "status writes refused with 409").toBe(0);
      // Bounded by the spec changes, not by the foreign edits: a spec change takes a few status
      // writes (observedGeneration, the rollout's progress, Ready); one per foreign edit would be
      // annotationWrites of them. Counts, not a rate: a loaded machine stretches the storm's
      // seconds, not its writes (a rate bound of 60/min failed at 62.9 on a loaded run: 15 writes).
      expect(stormWrites).toBeLessThanOrEqual(6 * sizes.length);
      expect(stormWrites).toBeLessThan(annotationWrites / 4);

      // Quiet once the storm is over.
      await sleep(3_000);
      const quietFrom = await operatorCounters(operator);
      await sleep(QUIET_MS);
      const quietTo = await operatorCounters(operator);
      const quietRates = perMinute(quietFrom, quietTo, QUIET_MS);
      m.note(
        `quiet ${QUIET_MS / 1000} s after`,
        `${quietRates.statusWrites} status writes/min, ${quietRates.reconciles} reconciles/min`,
      );
      expect(counterDelta(quietFrom, quietTo).statusWrites, "status writes in the quiet window").toBeLessThanOrEqual(1);
      expect(quietRates.reconciles).toBeLessThanOrEqual(30);
      expect(quietRates.reconcileErrors).toBe(0);
    },
    240_000,
  );
});
