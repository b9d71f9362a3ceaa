/**
 * max_connections through a Zalando postgresql, on the real control plane with Zalando's
 * published postgresql CRD (tools/fetch-crds.sh) and a real PostgreSQL started as Patroni starts
 * it (max_connections on the postgres command line, where ALTER SYSTEM cannot change it).
 * Zalando's own operator needs real pods running Spilo and Patroni; the stand-in
 * (test/harness/zalando-standin.ts) does its part here: it follows the resource's parameter,
 * restarts the server with the new command-line value and reports the PostgresClusterStatus
 * values the operator reports. The operator runs with the chart's ServiceAccount and RBAC
 * (postgresOperators.zalando.enabled).
 *
 * Discovery (which resource owns the server behind a Service) is asserted on the real API server
 * with real Services carrying Zalando's labels, read with the chart's ServiceAccount through the
 * operator's own Kubernetes port: the operator process cannot be pointed at a Service name here
 * (no cluster DNS on this machine; the policies name 127.0.0.1).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { ApiKubernetes } from "../../../src/controller/adapters.js";
import { ownerSuggestion, serverOwner } from "../../../src/controller/discovery.js";
import { installZalandoCrd } from "../../harness/crd.js";
import { createNamespace } from "../../harness/kube.js";
import { FaultCluster } from "../../harness/faults.js";
import type { OperatorProcess } from "../../harness/operator.js";
import { patroniCommandLine, ZalandoStandIn } from "../../harness/zalando-standin.js";
import { OWNER_FIELD_MANAGER } from "../../../src/controller/workload.js";
import { ZALANDO, type ZalandoPostgresql } from "../../../src/kube/workloads.js";
import { Scenario } from "./scenario.js";

let cluster: FaultCluster | undefined;
let kc: KubeConfig;
let operator: OperatorProcess;
let scenario: Scenario | undefined;
let standIn: ZalandoStandIn | undefined;

// A private control plane with the chart installed and its Zalando rule enabled: the operator
// runs with the chart's ServiceAccount, so the test also proves that get and patch on
// postgresqls.acid.zalan.do are all the rights this path needs.
beforeAll(async () => {
  cluster = await FaultCluster.start(["postgresOperators.zalando.enabled=true"]);
  kc = cluster.kc;
  await installZalandoCrd(kc);
  operator = cluster.operator({ name: "zalando-op", env: { RESYNC_SECONDS: "10" } });
  await operator.start();
});

afterAll(async () => {
  await standIn?.stop();
  await scenario?.cleanup();
  await cluster?.stop();
});

type ManagedFields = { manager?: string; operation?: string; fieldsV1?: unknown }[];

async function readPostgresql(): Promise<ZalandoPostgresql & { metadata: { managedFields?: ManagedFields } }> {
  return (await scenario!.custom.getNamespacedCustomObject({
    ...ZALANDO,
    namespace: scenario!.namespace,
    name: "acid-shop",
  })) as ZalandoPostgresql & { metadata: { managedFields?: ManagedFields } };
}

describe("max_connections through a Zalando postgresql", () => {
  it("waits for the Manual approval, then sets only the parameter; Patroni restarts once; verified", async () => {
    scenario = await Scenario.create(kc, { prefix: "zalando", commandLine: patroniCommandLine(100) });
    const s = scenario;
    await s.deployment("api", { labels: { "app.kubernetes.io/part-of": "shop" }, replicas: 1 });
    // The resource as a Zalando user writes it: the CRD's required fields, one other parameter.
    await s.custom.createNamespacedCustomObject({
      ...ZALANDO,
      namespace: s.namespace,
      body: {
        apiVersion: "acid.zalan.do/v1",
        kind: "postgresql",
        metadata: { name: "acid-shop" },
        spec: {
          teamId: "acid",
          numberOfInstances: 1,
          volume: { size: "1Gi" },
          postgresql: { version: "17", parameters: { work_mem: "4MB" } },
        },
      },
    });
    standIn = new ZalandoStandIn(kc, s.namespace, "acid-shop", s.server, "100");
    standIn.start();
    // Patroni's way: the value is on the command line, so ALTER SYSTEM would change nothing.
    const [before] = await s.server.query<{ source: string }>(
      "SELECT source FROM pg_settings WHERE name = 'max_connections'",
    );
    expect(before?.source).toBe("command line");
    const started = await s.server.postmasterStartTime();

    const workload = { apiVersion: "acid.zalan.do/v1", kind: "postgresql", name: "acid-shop" };
    await s.applyPolicy(
      "p",
      s.policySpec({ postgres: { maxConnections: 120, restart: { workload, policy: "Manual" } } }),
    );
    const waiting = await s.waitForCondition("p", "MaxConnectionsApplied", { reason: "AwaitingApproval" });
    expect(waiting.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "needs a restart of Zalando postgresql",
    );
    // Nothing asked of the resource before the approval.
    expect((await readPostgresql()).spec?.postgresql?.parameters?.max_connections).toBeUndefined();
    expect(standIn.restarts, JSON.stringify(standIn.events)).toBe(0);

    await s.patchPolicy("p", { metadata: { annotations: { "pooling.dbops.io/approve-restart": "120" } } });
    const applied = await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(standIn.failure).toBeUndefined();
    expect(applied.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      "verified after Zalando's postgres-operator restarted it",
    );
    expect(await s.server.setting("max_connections")).toBe("120");
    expect((await s.server.postmasterStartTime()).getTime()).toBeGreaterThan(started.getTime());
    expect(standIn.restarts, JSON.stringify(standIn.events)).toBe(1);
    expect(standIn.statuses).toContain("Updating");

    const pg = await readPostgresql();
    expect(pg.spec?.postgresql?.parameters).toEqual({ work_mem: "4MB", max_connections: "120" });
    expect(pg.status?.PostgresClusterStatus).toBe("Running");
    const ours = (pg.metadata.managedFields ?? []).filter((m) => m.manager === OWNER_FIELD_MANAGER);
    expect(ours).toEqual([
      expect.objectContaining({
        operation: "Apply",
        fieldsV1: { "f:spec": { "f:postgresql": { "f:parameters": { "f:max_connections": {} } } } },
      }),
    ]);
    // In force from the command line Patroni gave it; no ALTER SYSTEM was run.
    const [after] = await s.server.query<{ source: string }>(
      "SELECT source FROM pg_settings WHERE name = 'max_connections'",
    );
    expect(after?.source).toBe("command line");
    const [altered] = await s.server.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf'",
    );
    expect(altered?.n).toBe(0);

    const events = await s.events();
    expect(events.filter((e) => e.reason === "RestartRequested").map((e) => e.note)).toEqual([
      `spec.postgresql.parameters.max_connections = 120 on Zalando postgresql ${s.namespace}/acid-shop; Zalando's postgres-operator restarts the instances`,
    ]);
    expect(events.filter((e) => e.reason === "MaxConnectionsVerified")).toHaveLength(1);
    expect(events.some((e) => e.reason === "MaxConnectionsAltered")).toBe(false);
    expect(operator.logs()).not.toMatch(/forbidden/i);
  });

  it("a failed sync holds a lowering (OwnerBusy); once Running again, one more restart applies it", async () => {
    const s = scenario!;
    // What Zalando's operator writes when a periodic sync failed.
    await standIn!.report("SyncFailed");
    await s.patchPolicy("p", {
      metadata: { annotations: { "pooling.dbops.io/approve-restart": "110" } },
      spec: { postgres: { maxConnections: 110 } },
    });
    const busy = await s.waitForCondition("p", "MaxConnectionsApplied", { reason: "OwnerBusy" });
    expect(busy.status?.conditions?.find((c) => c.type === "MaxConnectionsApplied")?.message).toContain(
      `Zalando's postgres-operator is busy with Zalando postgresql ${s.namespace}/acid-shop (PostgresClusterStatus "SyncFailed")`,
    );
    expect((await readPostgresql()).spec?.postgresql?.parameters?.max_connections).toBe("120");
    expect(standIn!.restarts).toBe(1);

    await standIn!.report("Running");
    await s.waitForCondition("p", "MaxConnectionsApplied", { status: "True", reason: "Applied" });
    expect(await s.server.setting("max_connections")).toBe("110");
    expect(standIn!.restarts).toBe(2);
    expect(standIn!.failure).toBeUndefined();
  });
});

describe("discovery on the real API server", () => {
  it("reads Zalando's labels off its Services with the chart's ServiceAccount and names the postgresql", async () => {
    // A namespace of its own: this test does not depend on the scenario above.
    const namespace = await createNamespace(kc, "zalando-svc");
    const core = kc.makeApiClient(CoreV1Api);
    const labels = { application: "spilo", "cluster-name": "acid-shop", team: "acid" };
    const ports = [{ name: "postgresql", port: 5432, targetPort: 5432 }];
    // As Zalando's operator creates them (pkg/cluster/k8sres.go generateService): the primary's
    // Service named like the cluster, the replicas' with -repl; plus one nobody owns.
    const services: { name: string; labels: Record<string, string> }[] = [
      { name: "acid-shop", labels: { ...labels, "spilo-role": "master" } },
      { name: "acid-shop-repl", labels: { ...labels, "spilo-role": "replica" } },
      { name: "plain", labels: { app: "pg" } },
    ];
    for (const { name, labels } of services) {
      await core.createNamespacedService({
        namespace,
        body: { metadata: { name, labels }, spec: { ports } },
      });
    }
    const asOperator = new KubeConfig();
    asOperator.loadFromFile(cluster!.saKubeconfigPath);
    // The port without watch caches reads with GETs, as it does until a cache has synced.
    const kube = new ApiKubernetes(asOperator, {
      watchTargets: () => undefined,
      cachedTargets: async () => undefined,
      cachedHpas: async () => undefined,
      budgetInputsVersion: () => undefined,
      cachedSecret: async () => undefined,
    });
    const primary = await serverOwner(kube, `acid-shop.${namespace}`, "elsewhere");
    expect(primary && ownerSuggestion(primary)).toBe(
      `Service ${namespace}/acid-shop belongs to Zalando postgresql ${namespace}/acid-shop (labels application=spilo, cluster-name=acid-shop): ` +
        `set spec.postgres.restart.workload to {apiVersion: acid.zalan.do/v1, kind: postgresql, name: acid-shop, namespace: ${namespace}}; ` +
        "the operator then sets max_connections there and Zalando's postgres-operator restarts the instances " +
        "(Helm chart: --set postgresOperators.zalando.enabled=true)",
    );
    const replicas = await serverOwner(kube, `acid-shop-repl.${namespace}.svc.cluster.local`, "elsewhere");
    expect(replicas?.owner.primaryService).toBe("acid-shop");
    expect(await serverOwner(kube, `plain.${namespace}`, "elsewhere")).toBeUndefined();
    expect(await serverOwner(kube, "missing", namespace)).toBeUndefined();
  });
});
