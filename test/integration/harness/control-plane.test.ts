/**
 * Proof that the test control plane is the real thing: admission runs the CRD's CEL rules,
 * the controller-manager and scheduler make Deployments and StatefulSets roll on kwok nodes,
 * the Postgres pod bridge restarts a real PostgreSQL when its pod is replaced, and objects
 * survive a kube-apiserver restart (etcd keeps them).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { ControlPlane } from "../../harness/controlplane.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import {
  createNamespace,
  deleteNamespace,
  loadKubeConfig,
  waitForDeployment,
  waitForStatefulSet,
} from "../../harness/kube.js";
import { appDeployment, postgresService, postgresStatefulSet } from "../../harness/manifests.js";
import { PostgresServer } from "../../harness/postgres.js";
import { PostgresPodBridge } from "../../harness/postgres-bridge.js";
import { waitFor } from "../../harness/processes.js";

const policy = (namespace: string, name: string, pool: object) => ({
  apiVersion: "pooling.dbops.io/v1alpha1",
  kind: "PoolPolicy",
  metadata: { name, namespace },
  spec: {
    postgres: { host: "127.0.0.1", credentialsSecret: { name: "pg" } },
    pool,
    targets: { selector: { matchLabels: { app: "x" } } },
  },
});

describe("the shared control plane", () => {
  let kc: KubeConfig;
  let namespace: string;

  beforeAll(async () => {
    kc = loadKubeConfig(inject("kubeconfigPath"));
    await installPoolPolicyCrd(kc);
    namespace = await createNamespace(kc, "cp");
  });
  afterAll(async () => deleteNamespace(kc, namespace));

  it("rejects an object that breaks a CEL rule at admission, with the rule's message", async () => {
    const custom = kc.makeApiClient(CustomObjectsApi);
    const create = (body: object) =>
      custom.createNamespacedCustomObject({
        group: "pooling.dbops.io",
        version: "v1alpha1",
        plural: "poolpolicies",
        namespace,
        body,
      });
    const rejected = await create(policy(namespace, "bad", { minSize: 30, maxSize: 10 })).then(
      () => undefined,
      (e: { code: number; body: string }) => e,
    );
    expect(rejected?.code).toBe(422);
    expect(String(rejected?.body)).toContain("minSize must not exceed maxSize");

    const accepted = (await create(policy(namespace, "good", {}))) as {
      spec: { pool: { minSize: number; maxSize: number; env: { max: string } } };
    };
    expect(accepted.spec.pool).toMatchObject({ minSize: 5, maxSize: 25, env: { max: "DB_POSTGRES_MAX_CONN" } });
  });

  it("creates a ReplicaSet with Ready pods for a Deployment, and rolls it when the pod template changes", async () => {
    const apps = kc.makeApiClient(AppsV1Api);
    const core = kc.makeApiClient(CoreV1Api);
    await apps.createNamespacedDeployment({ namespace, body: appDeployment(namespace, "api", { replicas: 2 }) });
    await waitForDeployment(kc, namespace, "api");
    const firstSets = (await apps.listNamespacedReplicaSet({ namespace })).items;
    expect(firstSets).toHaveLength(1);
    const pods = (await core.listNamespacedPod({ namespace, labelSelector: "app=api" })).items;
    expect(
      pods.filter((p) => p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")),
    ).toHaveLength(2);

    const d = await apps.readNamespacedDeployment({ name: "api", namespace });
    d.spec!.template.spec!.containers[0]!.env = [{ name: "LOG_LEVEL", value: "debug" }];
    await apps.replaceNamespacedDeployment({ name: "api", namespace, body: d });
    await waitForDeployment(kc, namespace, "api");
    const sets = (await apps.listNamespacedReplicaSet({ namespace })).items;
    expect(sets).toHaveLength(2);
    const newPods = (await core.listNamespacedPod({ namespace, labelSelector: "app=api" })).items.filter(
      (p) => !p.metadata?.deletionTimestamp,
    );
    expect(newPods.map((p) => p.spec!.containers[0]!.env?.[0]?.value)).toEqual(["debug", "debug"]);
  });

  it("restarts the bridged PostgreSQL when a StatefulSet rollout replaces its pod, before the pod is Ready", async () => {
    const server = await PostgresServer.create();
    const apps = kc.makeApiClient(AppsV1Api);
    const core = kc.makeApiClient(CoreV1Api);
    const bridge = new PostgresPodBridge(kc, namespace, "postgres", [server]);
    try {
      await core.createNamespacedService({ namespace, body: postgresService(namespace) });
      await apps.createNamespacedStatefulSet({ namespace, body: postgresStatefulSet(namespace) });
      bridge.start();
      await waitForStatefulSet(kc, namespace, "postgres");
      expect(bridge.events.map((e) => e.action)).toEqual(["adopted", "ready"]);
      const before = await server.postmasterStartTime();

      await apps.patchNamespacedStatefulSet({
        name: "postgres",
        namespace,
        body: [{ op: "add", path: "/spec/template/metadata/annotations", value: { restart: "1" } }],
      });
      await waitForStatefulSet(kc, namespace, "postgres");
      const after = await server.postmasterStartTime();
      expect(after.getTime()).toBeGreaterThan(before.getTime());
      const actions = bridge.events.slice(2).map((e) => e.action);
      expect(actions).toEqual(["stopped", "started", "ready"]);
      const started = bridge.events.find((e) => e.action === "started")!;
      const ready = bridge.events.at(-1)!;
      expect(ready.at.getTime()).toBeGreaterThanOrEqual(started.at.getTime());
      expect(after.getTime()).toBeLessThanOrEqual(ready.at.getTime());
    } finally {
      await bridge.stop();
      await server.destroy();
    }
  });
});

describe("a control plane of its own", () => {
  it("keeps every object when the kube-apiserver is killed and started again on the same etcd", async () => {
    const plane = new ControlPlane();
    try {
      await plane.start();
      const kc = plane.kubeConfig();
      const namespace = await createNamespace(kc, "restart");
      const core = kc.makeApiClient(CoreV1Api);
      await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "kept" }, data: { answer: "42" } } });
      await kc
        .makeApiClient(AppsV1Api)
        .createNamespacedDeployment({ namespace, body: appDeployment(namespace, "web", { replicas: 1 }) });
      await waitForDeployment(kc, namespace, "web");

      await plane.stopApiServer("SIGKILL");
      await expect(core.readNamespacedConfigMap({ name: "kept", namespace })).rejects.toThrow();
      await plane.startApiServer();

      const cm = await core.readNamespacedConfigMap({ name: "kept", namespace });
      expect(cm.data).toEqual({ answer: "42" });
      await waitFor("the Deployment to be served again", async () => {
        const d = await kc.makeApiClient(AppsV1Api).readNamespacedDeployment({ name: "web", namespace });
        return d.status?.readyReplicas === 1;
      });
    } finally {
      await plane.stop();
    }
  });
});
