/**
 * The Helm chart on a real kube-apiserver (the shared test control plane): `helm install` into a
 * namespace that enforces Pod Security "restricted", the operator's pod admitted there (and a
 * copy of it with one field weakened rejected), and the ServiceAccount's RBAC decided by the
 * API server's own authorizer: allowed what the operator does, denied anything more.
 *
 * The pods are kwok's fake pods: the image is never pulled, so the operator does not run here.
 * What is tested is what the API server decides about the chart's objects.
 */
import {
  AppsV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  type V1Pod,
  type V1PodSpec,
  type V1ResourceAttributes,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { apiErrorMessage, statusCodeOf } from "../../../src/kube/errors.js";
import { applyPoolerObjects } from "../../../src/controller/pooler-apply.js";
import { renderPgBouncerConfig } from "../../../src/pooler/pgbouncer-config.js";
import { POOLER_AUTH_FILE, poolerObjects } from "../../../src/pooler/pooler-objects.js";
import { installPoolPolicyCrd } from "../../harness/crd.js";
import { createNamespace, deleteNamespace, loadKubeConfig, waitForDeployment } from "../../harness/kube.js";
import { waitFor } from "../../harness/processes.js";
import { chartDir, helmOk, runHelm } from "../../unit/chart/helm.js";

const kubeconfigPath = inject("kubeconfigPath");
const RESTRICTED = {
  "pod-security.kubernetes.io/enforce": "restricted",
  "pod-security.kubernetes.io/enforce-version": "latest",
};
const CHART_NAME = "poolpolicy-operator";

/** helm against the test control plane (the kubeconfig is the admin's). */
const helm = (args: string[]) => helmOk([...args, "--kubeconfig", kubeconfigPath]);

/** A release named after its namespace: cluster-scoped names (ClusterRole…) never collide between runs. */
async function installRelease(
  namespace: string,
  extra: string[] = [],
): Promise<{ release: string; fullname: string; notes: string }> {
  const release = namespace;
  // --skip-crds: the CRD is shared by every test file and installed by the harness
  // (installPoolPolicyCrd, from the same generated file as the chart's crds/).
  const output = await helm(["install", release, chartDir, "--namespace", namespace, "--skip-crds", ...extra]);
  return { release, fullname: `${release}-${CHART_NAME}`, notes: output.slice(output.indexOf("NOTES:")) };
}

async function uninstallRelease(namespace: string, release: string): Promise<void> {
  await runHelm(["uninstall", release, "--namespace", namespace, "--wait", "--kubeconfig", kubeconfigPath]);
}

/** The API server's answer to "may this ServiceAccount do that?", from its RBAC authorizer. */
async function saMay(
  kc: KubeConfig,
  namespace: string,
  serviceAccount: string,
  attributes: V1ResourceAttributes,
): Promise<boolean> {
  const review = await kc.makeApiClient(AuthorizationV1Api).createSubjectAccessReview({
    body: {
      spec: {
        user: `system:serviceaccount:${namespace}:${serviceAccount}`,
        // The groups a ServiceAccount token carries, so that bindings to them count as they would.
        groups: ["system:serviceaccounts", `system:serviceaccounts:${namespace}`, "system:authenticated"],
        resourceAttributes: attributes,
      },
    },
  });
  return review.status?.allowed === true;
}

const describeAttrs = (a: V1ResourceAttributes) =>
  `${a.verb} ${a.group ? `${a.resource}.${a.group}` : a.resource}${a.subresource ? `/${a.subresource}` : ""}` +
  `${a.name ? ` ${a.name}` : ""} in ${a.namespace || "all namespaces"}`;

/** Creates a Pod and returns the API error (or undefined when it was admitted). */
async function tryCreatePod(kc: KubeConfig, namespace: string, pod: V1Pod, dryRun: boolean): Promise<unknown> {
  try {
    await kc.makeApiClient(CoreV1Api).createNamespacedPod({ namespace, body: pod, dryRun: dryRun ? "All" : undefined });
    return undefined;
  } catch (err) {
    return err;
  }
}

describe("helm install of the chart", () => {
  let kc: KubeConfig;
  let ns: string;
  let release: string;
  let fullname: string;
  let notes: string;
  let installed = false;

  beforeAll(async () => {
    kc = loadKubeConfig(kubeconfigPath);
    await installPoolPolicyCrd(kc);
    ns = await createNamespace(kc, "chart", RESTRICTED);
    ({ release, fullname, notes } = await installRelease(ns));
    installed = true;
  });

  it("prints NOTES that say how to apply a PoolPolicy and read its status", () => {
    expect(notes).toContain("NOTES:");
    expect(notes).toContain("kubectl apply -f examples/poolpolicy.yaml");
    expect(notes).toContain("kubectl get pp");
    expect(notes).toContain("kubectl describe pp");
    expect(notes).toContain(`rollout status deployment/${fullname}`);
    expect(notes).toContain("kubectl apply --server-side --force-conflicts -f charts/poolpolicy-operator/crds/");
  });

  afterAll(async () => {
    if (installed) await uninstallRelease(ns, release);
    await deleteNamespace(kc, ns);
  });

  it("runs the operator's pod in a namespace that enforces Pod Security 'restricted'", async () => {
    // The ReplicaSet creates the pod only if admission accepts it; a rejected pod would leave
    // the Deployment unavailable (and a FailedCreate event on the ReplicaSet).
    const deployment = await waitForDeployment(kc, ns, fullname, 90_000).catch(async (err: Error) => {
      // Say why: a pod that admission rejected shows up as a FailedCreate event of the ReplicaSet.
      const events = await kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: ns });
      const failures = events.items.filter((e) => e.reason === "FailedCreate").map((e) => e.message);
      throw new Error(`${err.message}; FailedCreate events: ${JSON.stringify(failures)}`);
    });
    expect(deployment.status?.availableReplicas).toBe(1);

    const pods = await kc
      .makeApiClient(CoreV1Api)
      .listNamespacedPod({ namespace: ns, labelSelector: `app.kubernetes.io/instance=${release}` });
    expect(pods.items).toHaveLength(1);
    const pod = pods.items[0]!;
    expect(pod.metadata?.ownerReferences?.[0]?.kind).toBe("ReplicaSet");
    expect(pod.spec?.serviceAccountName).toBe(fullname);
    expect(pod.spec?.securityContext?.runAsUser).toBe(65532);
    // The downward API and the ServiceAccount token are there for the operator to use.
    expect(pod.spec?.containers[0]?.env?.find((e) => e.name === "POD_NAMESPACE")?.valueFrom?.fieldRef?.fieldPath).toBe(
      "metadata.namespace",
    );
    expect(pod.spec?.volumes?.some((v) => v.projected?.sources?.some((s) => s.serviceAccountToken))).toBe(true);
  });

  it("is the chart's settings that pass: the same pod with one setting weakened is rejected", async () => {
    const deployment = await kc.makeApiClient(AppsV1Api).readNamespacedDeployment({ name: fullname, namespace: ns });
    const template = deployment.spec!.template;
    const podWith = (name: string, mutate: (spec: V1PodSpec) => void): V1Pod => {
      const spec = structuredClone(template.spec!);
      mutate(spec);
      return { apiVersion: "v1", kind: "Pod", metadata: { name, labels: { test: "psa" } }, spec };
    };

    // Positive control: the chart's own pod spec, created directly, is admitted (dry run: nothing stays).
    const asRendered = await tryCreatePod(
      kc,
      ns,
      podWith("as-rendered", () => {}),
      true,
    );
    expect(asRendered === undefined ? "admitted" : apiErrorMessage(asRendered)).toBe("admitted");

    const weakened: Array<[string, (spec: V1PodSpec) => void, string]> = [
      [
        "allow-privilege-escalation",
        (s) => (s.containers[0]!.securityContext!.allowPrivilegeEscalation = true),
        "allowPrivilegeEscalation",
      ],
      [
        "no-run-as-non-root",
        (s) => {
          delete s.securityContext!.runAsNonRoot;
          delete s.containers[0]!.securityContext!.runAsNonRoot;
        },
        "runAsNonRoot",
      ],
      ["capabilities-kept", (s) => delete s.containers[0]!.securityContext!.capabilities, "unrestricted capabilities"],
      [
        "no-seccomp",
        (s) => {
          delete s.securityContext!.seccompProfile;
          delete s.containers[0]!.securityContext!.seccompProfile;
        },
        "seccompProfile",
      ],
      ["run-as-root", (s) => (s.containers[0]!.securityContext!.runAsUser = 0), "runAsUser=0"],
    ];
    for (const [name, mutate, reason] of weakened) {
      const err = await tryCreatePod(kc, ns, podWith(name, mutate), false);
      expect(err, `pod ${name} should be rejected`).toBeDefined();
      expect(statusCodeOf(err), `pod ${name}: ${apiErrorMessage(err)}`).toBe(403);
      expect(apiErrorMessage(err)).toContain("violates PodSecurity");
      expect(apiErrorMessage(err)).toContain(reason);
    }
    const left = await kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: ns, labelSelector: "test=psa" });
    expect(left.items).toEqual([]);
  });

  it("gives the ServiceAccount what the operator does, cluster-wide", async () => {
    const allowed: V1ResourceAttributes[] = [
      { group: "pooling.dbops.io", resource: "poolpolicies", verb: "list" },
      { group: "pooling.dbops.io", resource: "poolpolicies", verb: "watch" },
      { group: "pooling.dbops.io", resource: "poolpolicies", verb: "patch", namespace: "apps", name: "p" },
      {
        group: "pooling.dbops.io",
        resource: "poolpolicies",
        subresource: "status",
        verb: "patch",
        namespace: "apps",
        name: "p",
      },
      {
        group: "pooling.dbops.io",
        resource: "poolpolicies",
        subresource: "finalizers",
        verb: "update",
        namespace: "apps",
        name: "p",
      },
      { group: "apps", resource: "deployments", verb: "patch", namespace: "apps", name: "web" },
      { group: "apps", resource: "deployments", verb: "watch", namespace: "apps" },
      { group: "apps", resource: "statefulsets", verb: "patch", namespace: "db", name: "postgres" },
      { group: "", resource: "secrets", verb: "get", namespace: "apps", name: "pg-admin" },
      // The credentials Secrets are watched by name (controller/secret-watches.ts).
      { group: "", resource: "secrets", verb: "list", namespace: "apps" },
      { group: "", resource: "secrets", verb: "watch", namespace: "apps" },
      { group: "", resource: "pods", verb: "list", namespace: "db" },
      { group: "", resource: "pods", verb: "delete", namespace: "db", name: "postgres-1" }, // topology-aware restarts
      { group: "", resource: "services", verb: "get", namespace: "db", name: "pg-rw" }, // discovery of the server's owner
      { group: "autoscaling", resource: "horizontalpodautoscalers", verb: "get", namespace: "apps", name: "web" },
      { group: "events.k8s.io", resource: "events", verb: "create", namespace: "apps" },
      { group: "events.k8s.io", resource: "events", verb: "patch", namespace: "apps", name: "e" },
      { group: "events.k8s.io", resource: "events", verb: "list", namespace: "apps" },
      // Leader election, in the release namespace.
      { group: "coordination.k8s.io", resource: "leases", verb: "create", namespace: ns },
      { group: "coordination.k8s.io", resource: "leases", verb: "get", namespace: ns, name: "poolpolicy-operator" },
      { group: "coordination.k8s.io", resource: "leases", verb: "update", namespace: ns, name: "poolpolicy-operator" },
    ];
    const decisions = await Promise.all(
      allowed.map(async (a) => `${describeAttrs(a)}: ${(await saMay(kc, ns, fullname, a)) ? "allowed" : "DENIED"}`),
    );
    expect(decisions.filter((d) => d.endsWith("DENIED"))).toEqual([]);
  });

  it("denies the ServiceAccount anything more", async () => {
    const denied: V1ResourceAttributes[] = [
      { group: "apps", resource: "deployments", verb: "delete", namespace: "apps", name: "web" },
      { group: "apps", resource: "deployments", verb: "create", namespace: "apps" },
      { group: "pooling.dbops.io", resource: "poolpolicies", verb: "update", namespace: "apps", name: "p" },
      {
        group: "pooling.dbops.io",
        resource: "poolpolicies",
        subresource: "status",
        verb: "update",
        namespace: "apps",
        name: "p",
      },
      { group: "apps", resource: "deployments", verb: "update", namespace: "apps", name: "web" },
      { group: "apps", resource: "statefulsets", verb: "delete", namespace: "db", name: "postgres" },
      { group: "", resource: "secrets", verb: "create", namespace: "apps" },
      { group: "", resource: "secrets", verb: "update", namespace: "apps", name: "pg-admin" },
      { group: "", resource: "pods", verb: "create", namespace: "apps" },
      { group: "", resource: "pods", subresource: "exec", verb: "create", namespace: "db", name: "postgres-0" },
      { group: "", resource: "configmaps", verb: "get", namespace: "apps", name: "c" },
      { group: "", resource: "services", verb: "list", namespace: "db" },
      { group: "", resource: "services", verb: "patch", namespace: "db", name: "pg-rw" },
      { group: "", resource: "events", verb: "create", namespace: "apps" },
      { group: "pooling.dbops.io", resource: "poolpolicies", verb: "delete", namespace: "apps", name: "p" },
      { group: "pooling.dbops.io", resource: "poolpolicies", verb: "create", namespace: "apps" },
      { group: "autoscaling", resource: "horizontalpodautoscalers", verb: "patch", namespace: "apps", name: "web" },
      // Leases only in the release namespace, and only its own one for get/update.
      {
        group: "coordination.k8s.io",
        resource: "leases",
        verb: "update",
        namespace: "kube-system",
        name: "kube-controller-manager",
      },
      { group: "coordination.k8s.io", resource: "leases", verb: "create", namespace: "kube-system" },
      { group: "coordination.k8s.io", resource: "leases", verb: "update", namespace: ns, name: "another-lease" },
      { group: "coordination.k8s.io", resource: "leases", verb: "delete", namespace: ns, name: "poolpolicy-operator" },
      // No way to grant itself more.
      { group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", verb: "create" },
      { group: "rbac.authorization.k8s.io", resource: "roles", verb: "escalate", namespace: "apps" },
      {
        group: "",
        resource: "serviceaccounts",
        subresource: "token",
        verb: "create",
        namespace: "apps",
        name: "default",
      },
      {
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        verb: "update",
        name: "poolpolicies.pooling.dbops.io",
      },
    ];
    const decisions = await Promise.all(
      denied.map(async (a) => `${describeAttrs(a)}: ${(await saMay(kc, ns, fullname, a)) ? "ALLOWED" : "denied"}`),
    );
    expect(decisions.filter((d) => d.endsWith("ALLOWED"))).toEqual([]);
  });

  it("helm uninstall removes the release's objects, cluster-scoped ones included", async () => {
    await uninstallRelease(ns, release);
    installed = false;
    const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
    await waitFor("the ClusterRole and ClusterRoleBinding to be deleted", async () => {
      const roles = await rbac.listClusterRole({ labelSelector: `app.kubernetes.io/instance=${release}` });
      const bindings = await rbac.listClusterRoleBinding({ labelSelector: `app.kubernetes.io/instance=${release}` });
      return roles.items.length === 0 && bindings.items.length === 0;
    });
    const apps = kc.makeApiClient(AppsV1Api);
    expect((await apps.listNamespacedDeployment({ namespace: ns })).items).toEqual([]);
    expect(
      (await kc.makeApiClient(CoreV1Api).listNamespacedServiceAccount({ namespace: ns })).items.map(
        (s) => s.metadata?.name,
      ),
    ).not.toContain(fullname);
    expect(
      await saMay(kc, ns, fullname, {
        group: "apps",
        resource: "deployments",
        verb: "patch",
        namespace: "apps",
        name: "web",
      }),
    ).toBe(false);
  });
});

describe("helm install with watchNamespace", () => {
  let kc: KubeConfig;
  let ns: string;
  let watched: string;
  let release: string;
  let fullname: string;
  let installed = false;

  beforeAll(async () => {
    kc = loadKubeConfig(kubeconfigPath);
    await installPoolPolicyCrd(kc);
    ns = await createNamespace(kc, "chartns", RESTRICTED);
    watched = await createNamespace(kc, "watched");
    // No pod needed here: only the RBAC objects are under test.
    ({ release, fullname } = await installRelease(ns, [
      "--set",
      `watchNamespace=${watched}`,
      "--set",
      "replicaCount=0",
    ]));
    installed = true;
  });

  afterAll(async () => {
    if (installed) await uninstallRelease(ns, release);
    await deleteNamespace(kc, ns);
    await deleteNamespace(kc, watched);
  });

  it("grants the operator's rules in the watched namespace only", async () => {
    const inWatched = { group: "apps", resource: "deployments", verb: "patch", namespace: watched, name: "web" };
    expect(await saMay(kc, ns, fullname, inWatched)).toBe(true);
    expect(
      await saMay(kc, ns, fullname, {
        group: "pooling.dbops.io",
        resource: "poolpolicies",
        verb: "watch",
        namespace: watched,
      }),
    ).toBe(true);
    expect(
      await saMay(kc, ns, fullname, { group: "events.k8s.io", resource: "events", verb: "create", namespace: watched }),
    ).toBe(true);
    // Anywhere else, and cluster-wide, nothing.
    expect(await saMay(kc, ns, fullname, { ...inWatched, namespace: "default" })).toBe(false);
    expect(await saMay(kc, ns, fullname, { group: "pooling.dbops.io", resource: "poolpolicies", verb: "list" })).toBe(
      false,
    );
    // Leader election still works in the release namespace.
    expect(
      await saMay(kc, ns, fullname, {
        group: "coordination.k8s.io",
        resource: "leases",
        verb: "update",
        namespace: ns,
        name: "poolpolicy-operator",
      }),
    ).toBe(true);
    const clusterRoles = await kc
      .makeApiClient(RbacAuthorizationV1Api)
      .listClusterRole({ labelSelector: `app.kubernetes.io/instance=${release}` });
    expect(clusterRoles.items).toEqual([]);
  });
});

describe("helm install with rbac.secretNames", () => {
  let kc: KubeConfig;
  let ns: string;
  let release: string;
  let fullname: string;
  let installed = false;

  beforeAll(async () => {
    kc = loadKubeConfig(kubeconfigPath);
    await installPoolPolicyCrd(kc);
    ns = await createNamespace(kc, "chartsec", RESTRICTED);
    ({ release, fullname } = await installRelease(ns, [
      "--set",
      `watchNamespace=${ns}`,
      "--set",
      "rbac.secretNames={pg-admin}",
      "--set",
      "replicaCount=0",
    ]));
    installed = true;
    const core = kc.makeApiClient(CoreV1Api);
    for (const name of ["pg-admin", "other"])
      await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name }, stringData: { k: "v" } } });
  });

  afterAll(async () => {
    if (installed) await uninstallRelease(ns, release);
    await deleteNamespace(kc, ns);
  });

  it("lets the operator's own token list and watch the named Secret by name, and nothing else", async () => {
    // Requests as the operator makes them, with a token of its ServiceAccount: the API server
    // authorizes a list/watch that selects metadata.name against the rule's resourceNames.
    const token = await kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({
      name: fullname,
      namespace: ns,
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const asOperator = new KubeConfig();
    asOperator.loadFromOptions({
      clusters: [{ name: "c", server: kc.getCurrentCluster()!.server, skipTLSVerify: true }],
      users: [{ name: "sa", token: token.status!.token! }],
      contexts: [{ name: "ctx", cluster: "c", user: "sa" }],
      currentContext: "ctx",
    });
    const core = asOperator.makeApiClient(CoreV1Api);
    const list = (fieldSelector?: string) =>
      core.listNamespacedSecret({ namespace: ns, fieldSelector }).then(
        (l) => l.items.map((s) => s.metadata?.name),
        (err: unknown) => statusCodeOf(err),
      );
    expect(await list("metadata.name=pg-admin")).toEqual(["pg-admin"]);
    expect(await list("metadata.name=other")).toBe(403);
    expect(await list()).toBe(403);
    expect(
      await saMay(kc, ns, fullname, { group: "", resource: "secrets", verb: "watch", namespace: ns, name: "pg-admin" }),
    ).toBe(true);
    expect(
      await saMay(kc, ns, fullname, { group: "", resource: "secrets", verb: "get", namespace: ns, name: "other" }),
    ).toBe(false);
  });
});

describe("helm install with pooler.enabled", () => {
  let kc: KubeConfig;
  let ns: string;
  let release: string;
  let fullname: string;
  let installed = false;

  beforeAll(async () => {
    kc = loadKubeConfig(kubeconfigPath);
    await installPoolPolicyCrd(kc);
    ns = await createNamespace(kc, "chartpool", RESTRICTED);
    ({ release, fullname } = await installRelease(ns, [
      "--set",
      `watchNamespace=${ns}`,
      "--set",
      "pooler.enabled=true",
      "--set",
      "replicaCount=0",
    ]));
    installed = true;
  });

  afterAll(async () => {
    if (installed) await uninstallRelease(ns, release);
    await deleteNamespace(kc, ns);
  });

  it("lets the operator's own token apply the pooler's four objects, creating them and then patching them", async () => {
    // The real apply path (controller/pooler-apply.ts) with a token of the chart's ServiceAccount:
    // the API server authorizes an apply that creates an object as a create, a later one as a patch.
    // Checked to fail with pooler.enabled=false (403 on the ConfigMap's patch).
    const token = await kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({
      name: fullname,
      namespace: ns,
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const asOperator = new KubeConfig();
    asOperator.loadFromOptions({
      clusters: [{ name: "c", server: kc.getCurrentCluster()!.server, skipTLSVerify: true }],
      users: [{ name: "sa", token: token.status!.token! }],
      contexts: [{ name: "ctx", cluster: "c", user: "sa" }],
      currentContext: "ctx",
    });
    const sizing = {
      kind: "sized" as const,
      pods: 2,
      left: 20,
      perPod: 10,
      maxDbConnections: 10,
      defaultPoolSize: 10,
      reservePoolSize: 0,
      maxClientConn: 25,
    };
    const config = renderPgBouncerConfig({
      target: { host: "pg.db.svc", port: 5432, database: "app", sslMode: "prefer", user: "admin", password: "pw" },
      databases: ["app"],
      sizing,
      poolMode: "Session",
      listen: { address: "*", port: 5432 },
      authFile: POOLER_AUTH_FILE,
    });
    if (!config.ok) throw new Error(config.message);
    const spec = {
      name: "pgbouncer",
      image: "pgbouncer:test",
      replicas: 1,
      maxSurge: 1,
      port: 5432,
      poolMode: "Session" as const,
      minServerConnectionsPerPod: 1,
      reservePoolSize: 0,
    };
    // The owner need not exist for the authorization asked here (the garbage collector may then
    // delete the objects; the second apply creates them again if so, under the same rules).
    const owner = {
      apiVersion: "pooling.dbops.io/v1alpha1",
      kind: "PoolPolicy",
      name: "p",
      namespace: ns,
      uid: "0c9d4e6e-0000-4000-8000-000000000001",
    };
    const clients = { apps: asOperator.makeApiClient(AppsV1Api), core: asOperator.makeApiClient(CoreV1Api) };
    await applyPoolerObjects(clients, poolerObjects(owner, spec, config, 10));
    await applyPoolerObjects(clients, poolerObjects(owner, { ...spec, replicas: 2 }, config, 10));
    // Deleting one it applied is granted (a pooler no longer declared, pooler-step.ts); nothing
    // beyond: no list of ConfigMaps, no delete of them all at once.
    const may = (verb: string, name?: string) =>
      saMay(kc, ns, fullname, { group: "", resource: "configmaps", verb, namespace: ns, name });
    expect(await may("delete", "pgbouncer")).toBe(true);
    expect(await may("list")).toBe(false);
    expect(await may("deletecollection")).toBe(false);
  });
});
