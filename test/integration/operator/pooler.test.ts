/**
 * The pooler on the real parts (issue 17): the CRD admits spec.pooler and spec.pool.via, the
 * operator process reads them with the server's real budget (Deployments on kwok's nodes, a real
 * PostgreSQL with max_connections 30), applies the pooler's ConfigMap, Secret, Deployment and
 * Service on the real API server and reports PoolerSized with the numbers, or PoolerDoesNotFit
 * with a Warning Event and nothing applied. spec.pooler removed from the declaring policy, the
 * operator deletes the objects (a Normal Event first); declared again, they are applied again.
 * The garbage collector of the real kube-controller-manager removes the objects with the
 * declaring policy.
 *
 * kwok's pods run no process, so no PgBouncer serves traffic here: this proves the objects and
 * their changes; test/integration/pooler/pgbouncer.test.ts proves the traffic with real
 * PgBouncer processes.
 *
 * The harness's Deployments roll with maxSurge 1, so one replica with a pool of 2 is
 * (1 + 1) × 2 = 4 connections at worst. The reserve on PostgreSQL 15: 3 superuser slots + the
 * operator's pool of 2.
 */
import { readFileSync } from "node:fs";
import type { KubeConfig, V1ConfigMap, V1Deployment } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { isNotFound } from "../../../src/kube/errors.js";
import { pgbouncerCommand } from "../../../src/pooler/pooler-objects.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { loadKubeConfig } from "../../harness/kube.js";
import { OperatorProcess, runLogFile } from "../../harness/operator.js";
import { waitFor } from "../../harness/processes.js";
import { Scenario } from "./scenario.js";

let kc: KubeConfig;
let operator: OperatorProcess;
let logFile: string;
let s: Scenario | undefined;
const shop = { "app.kubernetes.io/part-of": "shop" };
const jobs = { "app.kubernetes.io/part-of": "jobs" };

beforeAll(async () => {
  const kubeconfigPath = inject("kubeconfigPath");
  kc = loadKubeConfig(kubeconfigPath);
  await installPoolPolicyCrd(kc);
  logFile = runLogFile(kubeconfigPath, "operator-pooler");
  operator = new OperatorProcess({ kubeconfigPath, logFile });
  await operator.start();
});

afterAll(async () => {
  await operator?.stop();
  await s?.cleanup();
});

describe("the pooler, applied by the operator", () => {
  it("applies the sized pooler, rolls for a shrink and not for a growth, rolls for a listener, refuses without applying, is deleted once no longer declared, and goes with its policy", async () => {
    s = await Scenario.create(kc, { prefix: "pooler", conf: { max_connections: 30 } });
    const ns = s.namespace;
    await s.deployment("api", { labels: shop, replicas: 1 });
    await s.deployment("cron", { labels: jobs, replicas: 1 });
    const pooled = {
      pool: { minSize: 1, maxSize: 2, via: "Pooler" },
      pooler: { name: "pgbouncer", image: "pgbouncer:test", replicas: 1 },
    };
    await s.applyPolicy("p", s.policySpec(pooled));
    const direct = (maxSize: number) =>
      s!.policySpec({ pool: { minSize: 1, maxSize }, targets: { selector: { matchLabels: jobs } } });
    await s.applyPolicy("d", direct(2));
    const poolerMessage = async () =>
      (await s!.status("p")).conditions?.find((c) => c.type === "PoolerSized")?.message ?? "";
    const configMap = () => s!.core.readNamespacedConfigMap({ name: "pgbouncer", namespace: ns });
    const deployment = () => s!.apps.readNamespacedDeployment({ name: "pgbouncer", namespace: ns });
    const ini = async () => (await configMap()).data?.["pgbouncer.ini"] ?? "";
    const checksum = (d: V1Deployment) =>
      d.spec?.template.metadata?.annotations?.["pooling.dbops.io/pgbouncer-restart-checksum"];

    // 30 − 5 reserved − 4 direct (d) = 21 left, over 1 replica + 1 surge: 10 per pod; p's 4 are its clients.
    const sized = await s.waitForCondition("p", "PoolerSized", { status: "True", reason: "Sized" });
    const message = sized.status?.conditions?.find((c) => c.type === "PoolerSized")?.message;
    const sizes =
      `pooler ${ns}/pgbouncer: Deployment ${ns}/pgbouncer (1 replicas, maxSurge 1, image pgbouncer:test), ` +
      `Service pgbouncer:5432, ConfigMap pgbouncer, Secret pgbouncer-auth, applied by ${ns}/p; per pod: ` +
      "10 server connections per pod (max_db_connections 10, default_pool_size 10, reserve_pool_size 0) " +
      "× 2 worst-case pods ≤ 21 left after direct clients and reserved slots; max_client_conn 9";
    // The sizes first; where p's apps connect follows them (pooler-route.test.ts).
    expect(message?.slice(0, sizes.length)).toBe(sizes);
    // The direct policy takes no part in the pooler: no such condition on it.
    await s.waitForCondition("d", "Ready", { status: "True" });
    expect((await s.status("d")).conditions?.some((c) => c.type === "PoolerSized")).toBe(false);

    // The objects, as the API server holds them, owned by p.
    const uid = (await s.readPolicy("p"))!.metadata.uid;
    const owner = [
      {
        apiVersion: "pooling.dbops.io/v1alpha1",
        kind: "PoolPolicy",
        name: "p",
        uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ];
    const cm: V1ConfigMap = await configMap();
    expect(cm.metadata?.ownerReferences).toEqual(owner);
    expect(cm.data?.["pgbouncer.ini"]).toContain("max_db_connections = 10\n");
    expect(cm.data?.["pgbouncer.ini"]).toContain(`appdb = host=127.0.0.1 port=${s.server.port} dbname=appdb\n`);
    expect(cm.data?.["pgbouncer.ini"]).not.toContain(s.server.password);
    const secret = await s.core.readNamespacedSecret({ name: "pgbouncer-auth", namespace: ns });
    expect(secret.metadata?.ownerReferences).toEqual(owner);
    expect(Buffer.from(secret.data!["userlist.txt"]!, "base64").toString()).toBe(
      `"${s.server.superuser}" "${s.server.password}"\n`,
    );
    const first = await deployment();
    expect(first.metadata?.ownerReferences).toEqual(owner);
    expect(first.spec).toMatchObject({
      replicas: 1,
      minReadySeconds: 10,
      strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
    });
    const container = first.spec!.template.spec!.containers[0]!;
    expect(container).toMatchObject({ image: "pgbouncer:test", ports: [{ containerPort: 5432 }] });
    expect(container.volumeMounts?.map((m) => m.mountPath)).toEqual(["/etc/pgbouncer/config", "/etc/pgbouncer/auth"]);
    // PgBouncer with its reload watcher on the mounted files (reload.test.ts runs this command).
    const files = { ini: "/etc/pgbouncer/config/pgbouncer.ini", authFile: "/etc/pgbouncer/auth/userlist.txt" };
    expect(container.command).toEqual(pgbouncerCommand(files));
    const service = await s.core.readNamespacedService({ name: "pgbouncer", namespace: ns });
    expect(service.metadata?.ownerReferences).toEqual(owner);
    expect(service.spec?.ports?.[0]).toMatchObject({ port: 5432, targetPort: "pgbouncer" });
    const generation = first.metadata!.generation!;
    const sum = checksum(first);
    expect(sum).toMatch(/^[0-9a-f]{16}$/);

    // p's apps roll once more, onto the pooler's address, once its Deployment has an available
    // pod (PoolerSized is Sized from then); until they have rolled out, Ready is False for
    // RollingOut (PoolEnvInjected comes before PoolerSized). Settled first, so that the refusal
    // below is Ready's only culprit.
    await s.waitForCondition("p", "Ready", { status: "True", reason: "Converged" });

    // 5 replicas + 1 surge = 6 pods: ⌊21 / 6⌋ = 3 < the 5 asked for. Refused: nothing applied.
    const beforeRefusal = await ini();
    await s.patchPolicy("p", { spec: { pooler: { replicas: 5, minServerConnectionsPerPod: 5 } } });
    const refused = await s.waitForCondition("p", "PoolerSized", { status: "False", reason: "PoolerDoesNotFit" });
    const because =
      "the pooler needs at least 5 server connections per pod; " +
      `127.0.0.1:${s.server.port} has 21 left (max_connections 30 − direct clients 4 − reserved 5), 3 per pod for 6 worst-case pooler pods`;
    expect(refused.status?.conditions?.find((c) => c.type === "PoolerSized")?.message).toContain(because);
    expect(refused.status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({
      status: "False",
      reason: "PoolerDoesNotFit",
    });
    await waitFor("the Warning Event that names the numbers", async () =>
      (await s!.events()).some(
        (e) => e.type === "Warning" && e.reason === "PoolerDoesNotFit" && e.note.includes(because),
      ),
    );
    const afterRefusal = await deployment();
    expect(afterRefusal.spec?.replicas).toBe(1);
    expect(afterRefusal.metadata?.generation).toBe(generation);
    expect(await ini()).toBe(beforeRefusal);

    // Back to one replica; then d's pool doubles: 30 − 5 − 8 = 17 left, 8 per pod. A shrink:
    // the pods running with 10 must restart, so the pod template's cap changes and the pods roll.
    const cap = (d: V1Deployment) =>
      d.spec?.template.metadata?.annotations?.["pooling.dbops.io/pgbouncer-max-db-connections"];
    expect(cap(first)).toBe("10");
    await s.patchPolicy("p", { spec: { pooler: { replicas: 1, minServerConnectionsPerPod: 1 } } });
    await s.waitForCondition("p", "PoolerSized", { status: "True", reason: "Sized" });
    await s.patchPolicy("d", { spec: { pool: { maxSize: 4 } } });
    await waitFor("PoolerSized with 8 per pod", async () =>
      (await poolerMessage()).includes("8 server connections per pod"),
    );
    await waitFor("the pooler's pod template with the cap 8", async () => cap(await deployment()) === "8");
    expect(await ini()).toContain("max_db_connections = 8\n");
    const shrunk = await deployment();
    expect(shrunk.metadata!.generation!).toBeGreaterThan(generation);
    expect(checksum(shrunk)).toBe(sum);

    // d's pool back to 2: 10 per pod again, a growth. The ConfigMap changes; the pods running
    // with 8 are safe, so the pod template keeps 8 and the Deployment's generation stays.
    await s.patchPolicy("d", { spec: { pool: { maxSize: 2 } } });
    await waitFor("PoolerSized with 10 per pod", async () =>
      (await poolerMessage()).includes("10 server connections per pod"),
    );
    await waitFor("the ConfigMap with 10 per pod", async () => (await ini()).includes("max_db_connections = 10\n"));
    const grown = await deployment();
    expect(grown.metadata?.generation).toBe(shrunk.metadata!.generation);
    expect(cap(grown)).toBe("8");

    // A new port is a new listener: PgBouncer must start again, so the pod template changes.
    await s.patchPolicy("p", { spec: { pooler: { port: 6432 } } });
    await waitFor("PoolerSized naming the new port", async () =>
      (await poolerMessage()).includes("Service pgbouncer:6432"),
    );
    expect(await ini()).toContain("listen_port = 6432\n");
    const moved = await deployment();
    expect(moved.metadata!.generation!).toBeGreaterThan(generation);
    expect(checksum(moved)).not.toBe(sum);
    expect(moved.spec!.template.spec!.containers[0]!.ports).toMatchObject([{ containerPort: 6432 }]);
    expect((await s.core.readNamespacedService({ name: "pgbouncer", namespace: ns })).spec?.ports?.[0]).toMatchObject({
      port: 6432,
    });

    // The password is in the Secret only: not in a status, an Event or the operator's log.
    expect(JSON.stringify(await s.status("p"))).not.toContain(s.server.password);
    expect(JSON.stringify(await s.events())).not.toContain(s.server.password);
    expect(readFileSync(logFile, "utf8")).not.toContain(s.server.password);

    const gone = async (read: () => Promise<unknown>) => {
      try {
        await read();
        return false;
      } catch (err) {
        if (isNotFound(err)) return true;
        throw err;
      }
    };
    const reads = [
      configMap,
      deployment,
      () => s!.core.readNamespacedSecret({ name: "pgbouncer-auth", namespace: ns }),
      () => s!.core.readNamespacedService({ name: "pgbouncer", namespace: ns }),
    ];
    const allGone = async () => (await Promise.all(reads.map(gone))).every(Boolean);
    const noneGone = async () => !(await Promise.all(reads.map(gone))).some(Boolean);

    // d's pool at 4 again: 8 per pod, the pod template's cap. The objects the operator renders are
    // then the same before the removal and after the declaration below (see there).
    await s.patchPolicy("d", { spec: { pool: { maxSize: 4 } } });
    await waitFor("the ConfigMap with 8 per pod", async () => (await ini()).includes("max_db_connections = 8\n"));
    expect(cap(await deployment())).toBe("8");

    // spec.pooler removed, the policy staying: the operator deletes the four objects p owns, after
    // a Normal Event naming them, and forgets the pooler (status.pooler). No garbage collector here.
    expect((await s.status("p")).pooler).toEqual({ name: "pgbouncer" });
    await s.patchPolicy("p", { spec: { pooler: null, pool: { via: "Direct" } } });
    await waitFor("the pooler's objects deleted by the operator", allGone);
    await waitFor("the Normal Event naming what was deleted", async () =>
      (await s!.events()).some(
        (e) =>
          e.type === "Normal" &&
          e.reason === "PoolerRemoved" &&
          e.regarding === "p" &&
          e.note.startsWith(
            `Deleting ConfigMap ${ns}/pgbouncer, Secret ${ns}/pgbouncer-auth, Deployment ${ns}/pgbouncer, Service ${ns}/pgbouncer: spec.pooler was removed`,
          ),
      ),
    );
    await waitFor("status.pooler cleared", async () => (await s!.status("p")).pooler === undefined);
    const kept = await s.readPolicy("p");
    expect(kept?.metadata.uid).toBe(uid);
    expect(kept?.metadata.deletionTimestamp).toBeUndefined();
    expect((await s.status("p")).conditions?.some((c) => c.type === "PoolerSized")).toBe(false);

    // Declared again, the same: applied again at once. The operator skips re-applying the very
    // objects it applied less than 10 minutes ago (RecentPoolerApplies); a delete must make it
    // forget them, else they would come back only after those 10 minutes (checked to fail so).
    await s.patchPolicy("p", { spec: { pool: { via: "Pooler" }, pooler: { ...pooled.pooler, port: 6432 } } });
    await waitFor("the pooler's objects applied again", noneGone);
    await waitFor("status.pooler recorded again", async () => (await s!.status("p")).pooler?.name === "pgbouncer");

    // Deleting the declaring policy: the garbage collector deletes what it owns.
    await s.deletePolicy("p");
    await waitFor("the pooler's objects deleted with their policy", allGone);
  });
});
