/**
 * A PoolPolicy scenario on the real parts: a PostgreSQL server bound to a `postgres`
 * StatefulSet through the pod bridge, the admin Secret, app Deployments, and helpers to apply
 * a policy and wait on its status. One per test (own namespace, own server).
 */
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  type KubeConfig,
  type V1Deployment,
} from "@kubernetes/client-node";
import pg from "pg";
import { createNamespace, deleteNamespace, waitForStatefulSet } from "../../harness/kube.js";
import { appDeployment, postgresService, postgresStatefulSet } from "../../harness/manifests.js";
import { PostgresServer, type PostgresOptions } from "../../harness/postgres.js";
import { PostgresPodBridge } from "../../harness/postgres-bridge.js";
import { waitFor } from "../../harness/processes.js";
import type { Condition, PoolPolicy, PoolPolicyStatus } from "../../../src/api/schema.js";
import { deepMerge } from "../../harness/deep-merge.js";

export const APP_DATABASE = "appdb";
const api = { group: "pooling.dbops.io", version: "v1alpha1", plural: "poolpolicies" };

export class Scenario {
  readonly apps: AppsV1Api;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  private bridge?: PostgresPodBridge;
  private clients: pg.Client[] = [];

  private constructor(
    readonly kc: KubeConfig,
    readonly namespace: string,
    readonly server: PostgresServer,
  ) {
    this.apps = kc.makeApiClient(AppsV1Api);
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  static async create(kc: KubeConfig, options: PostgresOptions & { prefix?: string } = {}): Promise<Scenario> {
    const namespace = await createNamespace(kc, options.prefix ?? "pp");
    const server = await PostgresServer.create(options);
    await server.query(`CREATE DATABASE ${APP_DATABASE}`);
    const s = new Scenario(kc, namespace, server);
    await s.core.createNamespacedSecret({
      namespace,
      body: { metadata: { name: "pg-admin" }, stringData: { username: server.superuser, password: server.password } },
    });
    return s;
  }

  /** The postgres StatefulSet, bound to the local server by the pod bridge. */
  async withPostgresWorkload(options: Parameters<typeof postgresStatefulSet>[3] = {}): Promise<PostgresPodBridge> {
    await this.core.createNamespacedService({ namespace: this.namespace, body: postgresService(this.namespace) });
    await this.apps.createNamespacedStatefulSet({
      namespace: this.namespace,
      body: postgresStatefulSet(this.namespace, "postgres", 1, options),
    });
    this.bridge = new PostgresPodBridge(this.kc, this.namespace, "postgres", [this.server]);
    this.bridge.start();
    await waitForStatefulSet(this.kc, this.namespace, "postgres");
    return this.bridge;
  }

  async deployment(name: string, options: Parameters<typeof appDeployment>[2] = {}): Promise<void> {
    await this.apps.createNamespacedDeployment({
      namespace: this.namespace,
      body: appDeployment(this.namespace, name, options),
    });
  }

  async readDeployment(name: string): Promise<V1Deployment> {
    return this.apps.readNamespacedDeployment({ name, namespace: this.namespace });
  }

  async envOf(name: string, container = "app"): Promise<Record<string, string>> {
    const d = await this.readDeployment(name);
    const c = d.spec!.template.spec!.containers.find((x) => x.name === container)!;
    return Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? ""]));
  }

  /** A policy spec pointing at this scenario's server; `overrides` are merged into spec. */
  policySpec(overrides: Record<string, unknown> = {}): Record<string, unknown> {
    const base = {
      postgres: {
        host: "127.0.0.1",
        port: this.server.port,
        database: APP_DATABASE,
        sslMode: "disable",
        credentialsSecret: { name: "pg-admin" },
      },
      targets: { selector: { matchLabels: { "app.kubernetes.io/part-of": "shop" } } },
    };
    return deepMerge(base, overrides);
  }

  async applyPolicy(
    name: string,
    spec: Record<string, unknown>,
    annotations: Record<string, string> = {},
  ): Promise<void> {
    await this.custom.createNamespacedCustomObject({
      ...api,
      namespace: this.namespace,
      body: { apiVersion: "pooling.dbops.io/v1alpha1", kind: "PoolPolicy", metadata: { name, annotations }, spec },
    });
  }

  async patchPolicy(name: string, patch: object): Promise<void> {
    const { PatchStrategy, setHeaderOptions } = await import("@kubernetes/client-node");
    await this.custom.patchNamespacedCustomObject(
      { ...api, namespace: this.namespace, name, body: patch },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  }

  async deletePolicy(name: string): Promise<void> {
    await this.custom.deleteNamespacedCustomObject({ ...api, namespace: this.namespace, name });
  }

  async readPolicy(name: string): Promise<PoolPolicy | undefined> {
    try {
      return (await this.custom.getNamespacedCustomObject({ ...api, namespace: this.namespace, name })) as PoolPolicy;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  async waitForCondition(
    name: string,
    type: string,
    match: Partial<Condition>,
    timeoutMs = 120_000,
  ): Promise<PoolPolicy> {
    let latest: PoolPolicy | undefined;
    await waitFor(
      `PoolPolicy ${this.namespace}/${name} condition ${type} ${JSON.stringify(match)} `,
      async () => {
        latest = await this.readPolicy(name);
        const c = latest?.status?.conditions?.find((x) => x.type === type);
        // Only a condition about the current spec counts: right after an edit, the old one still shows.
        if (!c || c.observedGeneration !== latest?.metadata.generation) return false;
        return Object.entries(match).every(([k, v]) => (c as Record<string, unknown>)[k] === v);
      },
      { timeoutMs, intervalMs: 300 },
    ).catch((err: Error) => {
      throw new Error(`${err.message}; conditions: ${JSON.stringify(latest?.status?.conditions, null, 1)}`);
    });
    return latest!;
  }

  async status(name: string): Promise<PoolPolicyStatus> {
    return (await this.readPolicy(name))?.status ?? {};
  }

  /** The namespace's Events, oldest first (eventTime has microseconds: a reliable order). */
  async events(
    since?: Date,
  ): Promise<{ reason: string; note: string; type: string; time: string; regarding: string }[]> {
    const list = await this.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: this.namespace });
    return (
      list.items
        // A repeated event is one object with a series: its latest occurrence is series.lastObservedTime.
        .map((e) => ({
          reason: e.reason ?? "",
          note: e.note ?? "",
          type: e.type ?? "",
          time: String(e.series?.lastObservedTime ?? e.eventTime ?? ""),
          regarding: e.regarding?.name ?? "",
        }))
        .filter((e) => !since || Date.parse(e.time) >= since.getTime())
        .sort((a, b) => a.time.localeCompare(b.time))
    );
  }

  /** A session of the app database, kept open until cleanup. */
  async session(
    applicationName: string,
    user = this.server.superuser,
    password = this.server.password,
  ): Promise<pg.Client> {
    const client = new pg.Client({
      host: "127.0.0.1",
      port: this.server.port,
      user,
      password,
      database: APP_DATABASE,
      application_name: applicationName,
    });
    client.on("error", () => undefined); // a terminated session errors asynchronously; tests look at it explicitly
    await client.connect();
    this.clients.push(client);
    return client;
  }

  async cleanup(): Promise<void> {
    for (const c of this.clients) await c.end().catch(() => undefined);
    await this.bridge?.stop();
    await this.server.destroy();
    await deleteNamespace(this.kc, this.namespace);
  }
}
