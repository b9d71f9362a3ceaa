/**
 * Item 9: least privilege. The operator runs with a TokenRequest token of the chart's own
 * ServiceAccount, bound by the chart's own ClusterRole (helm install into the fault cluster;
 * every other fault scenario runs the operator that way too).
 *
 * 9a promises: the whole story converges with exactly those rights (max_connections with one
 *    restart, env injected, a session reaped, Events written, the finalizer removes the env on
 *    delete), and the operator never met a "forbidden" on the way.
 * 9b breaks the ClusterRole: one permission at a time is removed (patch on Deployments, reading
 *    Secrets, patch on poolpolicies/status). Secrets are watched, and a watch already open keeps
 *    what it had, as RBAC is checked when a request starts: the operator is restarted without
 *    the right to read them. Promises: each failure is loud (a condition with
 *    a reason and the API's "forbidden" message and a Warning Event, or, where the status
 *    itself cannot be written, an error log line with 403, the error metric and a status left
 *    visibly behind its generation), and the operator recovers once the permission is back.
 * 9c reads the installed (Cluster)Roles of the release: no wildcard anywhere.
 *
 * chart/install.test.ts asks the API server's authorizer (SubjectAccessReviews) about each
 * permission and checks Pod Security "restricted" admission of the operator's pod.
 */
import { afterAll, beforeAll, describe, expect } from "vitest";
import { RbacAuthorizationV1Api, type V1ClusterRole, type V1PolicyRule } from "@kubernetes/client-node";
import { FULLNAME, FaultCluster, RELEASE, logLines, operatorCounters, timeUntil } from "../../harness/faults.js";
import { waitFor } from "../../harness/processes.js";
import { waitForDeployment } from "../../harness/kube.js";
import type { OperatorProcess } from "../../harness/operator.js";
import type { PostgresPodBridge } from "../../harness/postgres-bridge.js";
import { Scenario } from "../operator/scenario.js";
import { faultSuite } from "./support.js";

let cluster: FaultCluster | undefined;
let s: Scenario;
let bridge: PostgresPodBridge;
let operator: OperatorProcess;
let original: V1ClusterRole;
const RESYNC_S = 20;
const suite = faultSuite("test/integration/faults/rbac.test.ts", () => cluster);

beforeAll(async () => {
  cluster = await FaultCluster.start();
  original = await rbac().readClusterRole({ name: FULLNAME });
  s = await Scenario.create(cluster.kc, { prefix: "rbac" });
  suite.secrets.add(s.server.password);
  bridge = await s.withPostgresWorkload();
  await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 2 });
  await s.deployment("worker", {
    labels: { "app.kubernetes.io/part-of": "shop" },
    replicas: 1,
    containers: ["worker", "sidecar"],
  });
  // A failed key backs off exponentially (5 ms → 1000 s, per failure: a burst of events during
  // the failure can push the next retry minutes away); the periodic resync is what bounds the
  // recovery once the permission is back. 20 s here instead of the default 300 s keeps it short.
  operator = cluster.operator({ name: "rbac-op", env: { RESYNC_SECONDS: String(RESYNC_S) } });
  await operator.start();
});

afterAll(async () => {
  await s?.cleanup();
  await cluster?.stop();
});

const rbac = () => cluster!.kc.makeApiClient(RbacAuthorizationV1Api);

/** Replaces the release's ClusterRole with `mutate` applied to the chart's rules. */
async function setRules(mutate: (rules: V1PolicyRule[]) => V1PolicyRule[]): Promise<void> {
  const current = await rbac().readClusterRole({ name: FULLNAME });
  const rules = mutate(structuredClone(original.rules ?? []));
  await rbac().replaceClusterRole({ name: FULLNAME, body: { ...current, rules } });
}

/** The rules without one verb on one resource (a rule left with no verb is dropped: the API refuses it). */
const without = (group: string, resource: string, verb: string) => (rules: V1PolicyRule[]) =>
  rules
    .map((r) =>
      (r.apiGroups ?? []).includes(group) && (r.resources ?? []).includes(resource)
        ? { ...r, verbs: (r.verbs ?? []).filter((v) => v !== verb) }
        : r,
    )
    .filter((r) => (r.verbs ?? []).length > 0);

const condition = async (name: string, type: string) => (await s.status(name)).conditions?.find((c) => c.type === type);

describe("the operator with the chart's ServiceAccount", () => {
  suite.scenario(
    "9a",
    async (m) => {
      const before = await s.server.postmasterStartTime();
      await s.applyPolicy(
        "shop",
        s.policySpec({
          postgres: { maxConnections: 120, restart: { workload: { kind: "StatefulSet", name: "postgres" } } },
          pool: { minSize: 3, maxSize: 12 },
          reaper: { interval: "5s", idleInTransactionTimeout: "2s" },
        }),
      );
      await s.waitForCondition("shop", "MaxConnectionsApplied", { status: "True", reason: "Applied" }, 180_000);
      expect(await s.server.setting("max_connections")).toBe("120");
      expect((await s.server.postmasterStartTime()).getTime()).toBeGreaterThan(before.getTime());
      expect(bridge.rollouts, JSON.stringify(bridge.events)).toBe(1);
      await s.waitForCondition("shop", "PoolEnvInjected", { status: "True" }, 120_000);
      expect(await s.envOf("api")).toEqual({
        LOG_LEVEL: "info",
        DB_POSTGRES_MIN_CONN: "3",
        DB_POSTGRES_MAX_CONN: "12",
      });
      expect(await s.envOf("worker", "sidecar")).toMatchObject({ DB_POSTGRES_MAX_CONN: "12" });
      const idle = await s.session("checkout");
      await idle.query("BEGIN");
      await idle.query("SELECT 1");
      await waitFor(
        "the session to be reaped",
        async () => ((await s.status("shop")).reaper?.totalTerminated ?? 0) >= 1,
        { timeoutMs: 60_000 },
      );
      await s.waitForCondition("shop", "Ready", { status: "True" }, 60_000);
      const reasons = new Set((await s.events()).map((e) => e.reason));
      for (const r of ["MaxConnectionsAltered", "RestartRequested", "EnvInjected", "SessionsReaped"])
        expect(reasons, `Event ${r}`).toContain(r);
      // Delete: the finalizer removes exactly the injected env, then lets the object go.
      await s.deletePolicy("shop");
      await waitFor("the policy to be gone", async () => (await s.readPolicy("shop")) === undefined, {
        timeoutMs: 60_000,
      });
      expect(await s.envOf("api")).toEqual({ LOG_LEVEL: "info" });
      await waitForDeployment(s.kc, s.namespace, "api");
      // Never forbidden on the way: every call the story needed was allowed.
      const forbidden = operator
        .logs()
        .split("\n")
        .filter((l) => /forbidden|"status":403/i.test(l));
      m.note(
        "story",
        `1 restart (bridge ${bridge.restarts}), env in 2 Deployments, 1 session reaped, policy finalized; ${forbidden.length} forbidden lines in the log`,
      );
      expect(forbidden).toEqual([]);
    },
    300_000,
  );

  suite.scenario(
    "9b",
    async (m) => {
      // If 9a failed half-way, its policy selects the same Deployments: remove it first.
      if (await s.readPolicy("shop")) {
        await s.deletePolicy("shop");
        await waitFor("9a's policy to be gone", async () => (await s.readPolicy("shop")) === undefined, {
          timeoutMs: 60_000,
        });
      }
      await s.applyPolicy("p", s.policySpec({ pool: { minSize: 2, maxSize: 8 } }));
      await s.waitForCondition("p", "Ready", { status: "True" }, 120_000);

      // 1. No patch on Deployments: the env cannot be applied.
      await setRules(without("apps", "deployments", "patch"));
      try {
        await s.patchPolicy("p", { spec: { pool: { maxSize: 9 } } });
        const c = (
          await s.waitForCondition("p", "PoolEnvInjected", { status: "False", reason: "ApplyFailed" }, 60_000)
        ).status?.conditions?.find((x) => x.type === "PoolEnvInjected");
        expect(c?.message).toMatch(/forbidden.*cannot patch resource "deployments"/);
        expect((await condition("p", "Ready"))?.status).toBe("False");
        const warnings = (await s.events()).filter((e) => e.type === "Warning" && /forbidden/.test(e.note));
        expect(warnings.map((e) => e.reason)).toContain("EnvInjectionFailed");
        m.note(
          "no patch on deployments",
          `PoolEnvInjected=False ApplyFailed, ${warnings.length} Warning Event(s) saying forbidden`,
        );
      } finally {
        await setRules((r) => r);
      }
      const envMs = await timeUntil(
        "the env to be applied once allowed",
        async () => (await s.envOf("api")).DB_POSTGRES_MAX_CONN === "9",
        60_000,
        250,
      );
      await s.waitForCondition("p", "PoolEnvInjected", { status: "True" }, 60_000);
      m.note("recovered", `env ${(envMs / 1000).toFixed(1)} s after the grant`);

      // 2. No reading Secrets (get, list, watch), for an operator that starts without the right:
      //    the credentials cannot be read.
      await setRules((rules) => ["get", "list", "watch"].reduce((r, verb) => without("", "secrets", verb)(r), rules));
      await operator.stop();
      await operator.start();
      try {
        const c = (
          await s.waitForCondition("p", "PostgresReachable", { status: "False", reason: "SecretUnreadable" }, 60_000)
        ).status?.conditions?.find((x) => x.type === "PostgresReachable");
        expect(c?.message).toMatch(/forbidden.*cannot get resource "secrets"/);
        m.note("no reading secrets", "PostgresReachable=False SecretUnreadable (forbidden)");
      } finally {
        await setRules((r) => r);
      }
      const secretMs = await timeUntil(
        "Connected once allowed",
        async () => (await condition("p", "PostgresReachable"))?.status === "True",
        60_000,
        250,
      );
      m.note("recovered", `credentials ${(secretMs / 1000).toFixed(1)} s after the grant`);

      // 3. No patch on the status subresource: the operator cannot say anything in the status.
      const errorsBefore = (await operatorCounters(operator)).reconcileErrors;
      // Loud: a warning or error line of the operator that says the status write is forbidden.
      const forbiddenStatusLines = () =>
        logLines(operator.logs()).filter(
          (l) => (l.level ?? 0) >= 40 && /forbidden.*poolpolicies\/status/.test(JSON.stringify(l)),
        );
      const refusalsBefore = forbiddenStatusLines().length;
      await setRules(without("pooling.dbops.io", "poolpolicies/status", "patch"));
      try {
        await s.patchPolicy("p", { spec: { pool: { maxSize: 10 } } });
        await waitFor(
          "the forbidden status write in the operator's log",
          () => forbiddenStatusLines().length > refusalsBefore,
          { timeoutMs: 60_000 },
        );
        expect((await operatorCounters(operator)).reconcileErrors).toBeGreaterThan(errorsBefore);
        const p = (await s.readPolicy("p"))!;
        expect(p.status?.observedGeneration, "the status shows it is behind").toBeLessThan(p.metadata.generation!);
        m.note(
          "no patch on poolpolicies/status",
          "warn/error log line saying forbidden, reconcile error metric, status.observedGeneration left behind",
        );
      } finally {
        await setRules((r) => r);
      }
      const statusMs = await timeUntil(
        "the status to catch up once allowed (at the latest at the next resync)",
        async () => {
          const p = await s.readPolicy("p");
          return p?.status?.observedGeneration === p?.metadata.generation;
        },
        (RESYNC_S + 15) * 1000,
        250,
      );
      m.note(
        "recovered",
        `status ${(statusMs / 1000).toFixed(1)} s after the grant (bound: resync ${RESYNC_S} s + 15 s)`,
      );
      await s.waitForCondition("p", "Ready", { status: "True" }, 60_000);
    },
    300_000,
  );

  suite.scenario("9c", async (m) => {
    const selector = `app.kubernetes.io/instance=${RELEASE}`;
    const clusterRoles = (await rbac().listClusterRole({ labelSelector: selector })).items;
    const roles = (await rbac().listRoleForAllNamespaces({ labelSelector: selector })).items;
    const all = [...clusterRoles.map((r) => ({ kind: "ClusterRole", r })), ...roles.map((r) => ({ kind: "Role", r }))];
    expect(all.length).toBeGreaterThanOrEqual(2);
    const wildcards: string[] = [];
    for (const { kind, r } of all) {
      for (const rule of r.rules ?? []) {
        if (rule.nonResourceURLs?.length) wildcards.push(`${kind} ${r.metadata?.name}: nonResourceURLs`);
        for (const field of ["apiGroups", "resources", "verbs", "resourceNames"] as const) {
          for (const value of rule[field] ?? [])
            if (value.includes("*")) wildcards.push(`${kind} ${r.metadata?.name}: ${field} ${value}`);
        }
      }
    }
    m.note(
      "installed roles",
      `${clusterRoles.length} ClusterRole(s), ${roles.length} Role(s), ${all.reduce((n, x) => n + (x.r.rules?.length ?? 0), 0)} rules, ${wildcards.length} wildcards`,
    );
    expect(wildcards).toEqual([]);
  });
});
