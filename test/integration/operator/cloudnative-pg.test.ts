/**
 * max_connections through a CloudNativePG Cluster, on the real control plane with CloudNativePG's
 * published Cluster CRD (tools/fetch-crds.sh) and a real PostgreSQL 17 run as CloudNativePG runs
 * it (allow_alter_system = off, parameters in an included custom.conf). CloudNativePG's own
 * operator needs a real node to run its instances; the stand-in (test/harness/cnpg-standin.ts)
 * does its part here: it follows the Cluster's parameter, writes it into custom.conf, restarts
 * the server and reports the phases CloudNativePG reports. The operator runs with the chart's
 * ServiceAccount and RBAC (postgresOperators.cloudnativePG.enabled).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthorizationV1Api, type KubeConfig, RbacAuthorizationV1Api } from "@kubernetes/client-node";
import { installCloudNativePgCrd } from "../../harness/crd.js";
import { CloudNativePgStandIn, cloudNativePgConf } from "../../harness/cnpg-standin.js";
import { FULLNAME, FaultCluster } from "../../harness/faults.js";
import type { OperatorProcess } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { OWNER_FIELD_MANAGER } from "../../../src/controller/workload.js";
import { CNPG, type CnpgCluster } from "../../../src/kube/workloads.js";
import { Scenario } from "./scenario.js";

let cluster: FaultCluster | undefined;
let kc: KubeConfig;
let operator: OperatorProcess;
let scenario: Scenario | undefined;
let standIn: CloudNativePgStandIn | undefined;

// A private control plane with the chart installed and its CloudNativePG rule enabled: the
// operator runs with the chart's ServiceAccount, so the test also proves that get and patch on
// clusters.postgresql.cnpg.io are all the rights this path needs.
beforeAll(async () => {
  cluster = await FaultCluster.start(["postgresOperators.cloudnativePG.enabled=true"]);
  kc = cluster.kc;
  await installCloudNativePgCrd(kc);
  // A restored RBAC rule raises no watch event: the periodic resync (10 s here, 300 s by
  // default) is what brings the policy back after WorkloadForbidden.
  operator = cluster.operator({ name: "cnpg-op", env: { RESYNC_SECONDS: "10" } });
  await operator.start();
});

afterAll(async () => {
  await standIn?.stop();
  await scenario?.cleanup();
  await cluster?.stop();
});

type ManagedFields = { manager?: string; operation?: string; fieldsV1?: unknown }[];

async function readCluster(): Promise<CnpgCluster & { metadata: { managedFields?: ManagedFields } }> {
  return (await scenario!.custom.getNamespacedCustomObject({
    ...CNPG,
    namespace: scenario!.namespace,
    name: "pg",
  })) as CnpgCluster & { metadata: { managedFields?: ManagedFields } };
}

describe("max_connections through a CloudNativePG Cluster", () => {
  it("waits for the Manual approval, then sets only the Cluster's parameter; CloudNativePG restarts once; verified", async () => {
    scenario = await Scenario.create(kc, { prefix: "cnpg", major: 17, conf: cloudNativePgConf() });
    const s = scenario;
    await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
    await s.custom.createNamespacedCustomObject({
      ...CNPG,
      namespace: s.namespace,
      body: {
        apiVersion: "postgresql.cnpg.io/v1",
        kind: "Cluster",
        metadata: { name: "pg" },
        spec: { instances: 1, storage: { size: "1Gi" }, postgresql: { parameters: { work_mem: "4MB" } } },
      },
    });
    standIn = new CloudNativePgStandIn(kc, s.namespace, "pg", s.server);
    standIn.start();
    // The server as CloudNativePG runs it: ALTER SYSTEM refused outright.
    await expect(s.server.query("ALTER SYSTEM SET work_mem = '8MB'")).rejects.toThrow(/ALTER SYSTEM is not allowed/);
    const started = await s.server.postmasterStartTime();

    const workload = { apiVersion: "postgresql.cnpg.io/v1", kind: "Cluster", name: "pg" };
    await s.applyPolicy(
      "p",
      s.policySpec({ postgres: { maxConnections: 120, restart: { workload, policy: "Manual" } } }),
    );
    const waiting = await s.waitForCondition("p", "MaxConnectionsApplied", { reason: "AwaitingApproval" });
    expect(waiting.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "needs a restart of CloudNativePG Cluster",
    );
    // Nothing asked of the Cluster before the approval.
    expect((await readCluster()).spec?.postgresql?.parameters?.max_connections).toBeUndefined();
    expect(standIn.restarts, JSON.stringify(standIn.events)).toBe(0);

    await s.patchPolicy("p", { metadata: { annotations: { "pooling.dbops.io/approve-restart": "120" } } });
    const applied = await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(standIn.failure).toBeUndefined();
    expect(applied.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "verified after CloudNativePG restarted it",
    );
    expect(await s.server.setting("max_connections")).toBe("120");
    expect((await s.server.postmasterStartTime()).getTime()).toBeGreaterThan(started.getTime());
    expect(standIn.restarts, JSON.stringify(standIn.events)).toBe(1);
    expect(standIn.phases).toContain("Applying configuration");

    const cluster = await readCluster();
    expect(cluster.spec?.postgresql?.parameters).toEqual({ work_mem: "4MB", max_connections: "120" });
    expect(cluster.status?.phase).toBe("Cluster in healthy state");
    const ours = (cluster.metadata.managedFields ?? []).filter((m) => m.manager === OWNER_FIELD_MANAGER);
    expect(ours).toEqual([
      expect.objectContaining({
        operation: "Apply",
        fieldsV1: { "f:spec": { "f:postgresql": { "f:parameters": { "f:max_connections": {} } } } },
      }),
    ]);

    // In force from the configuration file CloudNativePG writes; nothing in postgresql.auto.conf.
    const [source] = await s.server.query<{ sourcefile: string }>(
      "SELECT sourcefile FROM pg_settings WHERE name = 'max_connections'",
    );
    expect(source?.sourcefile).toMatch(/\/custom\.conf$/);
    const [altered] = await s.server.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf'",
    );
    expect(altered?.n).toBe(0);

    const events = await s.events();
    expect(events.filter((e) => e.reason === "RestartRequested").map((e) => e.note)).toEqual([
      `spec.postgresql.parameters.max_connections = 120 on CloudNativePG Cluster ${s.namespace}/pg; CloudNativePG restarts the instances`,
    ]);
    expect(events.filter((e) => e.reason === "MaxConnectionsVerified")).toHaveLength(1);
    expect(events.some((e) => e.reason === "MaxConnectionsAltered")).toBe(false);
    expect(operator.logs()).not.toMatch(/forbidden/i);
  });

  it("without the chart's rule on Clusters: WorkloadForbidden says what to grant; applied once it is back", async () => {
    const s = scenario!;
    const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
    const role = await rbac.readClusterRole({ name: FULLNAME });
    const withoutCnpg = (role.rules ?? []).filter((r) => !r.apiGroups?.includes("postgresql.cnpg.io"));
    expect(withoutCnpg.length).toBe((role.rules ?? []).length - 1);
    await rbac.replaceClusterRole({ name: FULLNAME, body: { ...role, rules: withoutCnpg } });
    // The authorizer learns of the change from its own watch: only once it denies may the policy
    // change, or a pass in between would still apply the value.
    const authz = kc.makeApiClient(AuthorizationV1Api);
    await waitFor("the authorizer to deny get on clusters.postgresql.cnpg.io", async () => {
      const review = await authz.createSubjectAccessReview({
        body: {
          spec: {
            user: cluster!.saUser,
            resourceAttributes: {
              group: "postgresql.cnpg.io",
              resource: "clusters",
              verb: "get",
              namespace: s.namespace,
            },
          },
        },
      });
      return review.status?.allowed === false;
    });
    await s.patchPolicy("p", {
      metadata: { annotations: { "pooling.dbops.io/approve-restart": "130" } },
      spec: { postgres: { maxConnections: 130 } },
    });
    const refused = await s.waitForCondition("p", "MaxConnectionsApplied", { reason: "WorkloadForbidden" });
    expect(refused.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "--set postgresOperators.cloudnativePG.enabled=true",
    );
    expect(standIn!.restarts).toBe(1);

    const current = await rbac.readClusterRole({ name: FULLNAME });
    await rbac.replaceClusterRole({ name: FULLNAME, body: { ...current, rules: role.rules } });
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await s.server.setting("max_connections")).toBe("130");
    expect(standIn!.restarts).toBe(2);
  });
});
