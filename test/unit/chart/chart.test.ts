/**
 * The Helm chart, rendered by the pinned helm: lint, least-privilege RBAC, Pod Security
 * "restricted" fields, probes, the operator's environment (checked against src/config.ts),
 * leader election, watchNamespace, and values.schema.json rejecting bad values.
 * The chart's behaviour on a real API server (admission, RBAC decisions) is in
 * test/integration/chart/install.test.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadAll } from "js-yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { configSchema } from "../../../src/config.js";
import { chartDir, findObject, helmOk, type Manifest, renderChart, runHelm, templateArgs } from "./helm.js";

const RBAC_KINDS = new Set(["Role", "ClusterRole"]);

/** Every rule as "group/resource: verbs", sorted, so a test can compare a role with a list. */
function ruleTable(role: Manifest): string[] {
  const rows: string[] = [];
  for (const rule of role.rules as Manifest[]) {
    for (const group of rule.apiGroups as string[]) {
      for (const resource of rule.resources as string[]) {
        const names = rule.resourceNames ? ` [${(rule.resourceNames as string[]).join(",")}]` : "";
        rows.push(`${group || "core"}/${resource}${names}: ${[...(rule.verbs as string[])].sort().join(",")}`);
      }
    }
  }
  return rows.sort();
}

/** What the operator needs (see the chart's _helpers.tpl), and nothing more. */
const OPERATOR_RULES = [
  "pooling.dbops.io/poolpolicies: get,list,patch,watch",
  "pooling.dbops.io/poolpolicies/status: get,patch",
  "pooling.dbops.io/poolpolicies/finalizers: update",
  "apps/deployments: get,list,patch,watch",
  "apps/statefulsets: get,list,patch,watch",
  "core/secrets: get,list,watch",
  "core/pods: delete,get,list,watch",
  "core/services: get",
  "autoscaling/horizontalpodautoscalers: get,list,watch",
  "events.k8s.io/events: create,list,patch",
].sort();

const deploymentOf = (objects: Manifest[]) => findObject(objects, "Deployment");
const containerOf = (objects: Manifest[]) => deploymentOf(objects).spec.template.spec.containers[0] as Manifest;
const envOf = (objects: Manifest[]) => containerOf(objects).env as Manifest[];
const envValue = (objects: Manifest[], name: string) =>
  envOf(objects).find((e) => e.name === name)?.value as string | undefined;

describe("helm lint", () => {
  it("passes --strict with the default values and with the non-default branches", async () => {
    for (const extra of [
      [],
      ["--set", "replicaCount=2"],
      ["--set", "watchNamespace=apps"],
      ["--set", "leaderElection.enabled=false"],
      ["--set", "pooler.enabled=true"],
    ]) {
      const result = await runHelm(["lint", "--strict", chartDir, ...extra]);
      expect(result.code, `helm lint ${extra.join(" ")}:\n${result.stdout}${result.stderr}`).toBe(0);
      expect(result.stdout).toContain("0 chart(s) failed");
    }
  });
});

describe("helm template with default values", () => {
  let objects: Manifest[];
  beforeAll(async () => {
    objects = await renderChart();
  });

  it("renders the operator's objects, and no ServiceMonitor by default", () => {
    expect(objects.map((o) => o.kind).sort()).toEqual(
      ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"].sort(),
    );
    for (const o of objects) expect(o.metadata.labels["app.kubernetes.io/instance"]).toBe("ppo");
  });

  it("uses no wildcard in any RBAC rule", () => {
    const roles = objects.filter((o) => RBAC_KINDS.has(o.kind));
    expect(roles.length).toBeGreaterThan(0);
    for (const role of roles) {
      for (const rule of role.rules as Manifest[]) {
        expect(rule.nonResourceURLs, `${role.kind} ${role.metadata.name}`).toBeUndefined();
        for (const field of ["apiGroups", "resources", "verbs", "resourceNames"]) {
          for (const value of (rule[field] ?? []) as string[])
            expect(value, `${role.kind} ${role.metadata.name} ${field}`).not.toContain("*");
        }
      }
    }
  });

  it("grants cluster-wide exactly the operator's rules, and leases only in the release namespace", () => {
    const clusterRole = findObject(objects, "ClusterRole");
    expect(ruleTable(clusterRole)).toEqual(OPERATOR_RULES);
    expect(JSON.stringify(clusterRole.rules)).not.toContain("leases");

    const leaseRole = findObject(objects, "Role");
    expect(leaseRole.metadata.namespace).toBe("ops");
    expect(ruleTable(leaseRole)).toEqual(
      ["coordination.k8s.io/leases: create", "coordination.k8s.io/leases [poolpolicy-operator]: get,update"].sort(),
    );
  });

  it("binds the roles to the operator's ServiceAccount", () => {
    const sa = findObject(objects, "ServiceAccount");
    for (const kind of ["ClusterRoleBinding", "RoleBinding"]) {
      const binding = findObject(objects, kind);
      expect(binding.subjects).toEqual([{ kind: "ServiceAccount", name: sa.metadata.name, namespace: "ops" }]);
    }
    expect(findObject(objects, "ClusterRoleBinding").roleRef).toMatchObject({
      kind: "ClusterRole",
      name: findObject(objects, "ClusterRole").metadata.name,
    });
    expect(findObject(objects, "RoleBinding").roleRef).toMatchObject({
      kind: "Role",
      name: findObject(objects, "Role").metadata.name,
    });
    expect(deploymentOf(objects).spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
  });

  it("runs the pod as Pod Security 'restricted' requires, with a numeric non-root UID", () => {
    const pod = deploymentOf(objects).spec.template.spec as Manifest;
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(Number.isInteger(pod.securityContext.runAsUser)).toBe(true);
    expect(pod.hostNetwork ?? false).toBe(false);
    expect(pod.hostPID ?? false).toBe(false);

    const container = containerOf(objects);
    expect(container.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(typeof container.securityContext.runAsUser).toBe("number");
  });

  it("gives the read-only root filesystem an emptyDir at /tmp, and mounts the token", () => {
    const pod = deploymentOf(objects).spec.template.spec as Manifest;
    expect(pod.volumes).toEqual([{ name: "tmp", emptyDir: { sizeLimit: "64Mi" } }]);
    expect(containerOf(objects).volumeMounts).toEqual([{ name: "tmp", mountPath: "/tmp" }]);
    expect(pod.automountServiceAccountToken).toBe(true);
    expect(findObject(objects, "ServiceAccount").automountServiceAccountToken).toBe(true);
    expect(pod.terminationGracePeriodSeconds).toBe(30);
  });

  it("probes /healthz and /readyz on the named port http (8080), which the Service exposes", () => {
    const container = containerOf(objects);
    expect(container.ports).toEqual([{ name: "http", containerPort: 8080, protocol: "TCP" }]);
    expect(container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
    expect(container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
    const service = findObject(objects, "Service");
    expect(service.spec.ports).toEqual([{ name: "http", port: 8080, targetPort: "http", protocol: "TCP" }]);
    expect(service.spec.selector).toEqual(deploymentOf(objects).spec.selector.matchLabels);
  });

  it("uses the default image, one replica and the default resources", () => {
    const deployment = deploymentOf(objects);
    expect(deployment.spec.replicas).toBe(1);
    expect(containerOf(objects).image).toBe("poolpolicy-operator:0.1.0");
    expect(containerOf(objects).imagePullPolicy).toBe("IfNotPresent");
    expect(containerOf(objects).resources).toEqual({
      requests: { cpu: "50m", memory: "160Mi" },
      limits: { cpu: "500m", memory: "1Gi" },
    });
    expect(deployment.spec.template.spec.priorityClassName).toBeUndefined();
  });

  it("sets an environment that the operator's own config schema accepts", () => {
    const env = envOf(objects);
    const names = env.map((e) => e.name);
    expect(new Set(names).size).toBe(names.length);
    // Every variable is one the operator reads (a typo would be silently ignored by it).
    expect(names.filter((n) => !(n in configSchema.shape))).toEqual([]);
    expect(env.find((e) => e.name === "POD_NAMESPACE")?.valueFrom).toEqual({
      fieldRef: { fieldPath: "metadata.namespace" },
    });
    expect(env.find((e) => e.name === "POD_NAME")?.valueFrom).toEqual({ fieldRef: { fieldPath: "metadata.name" } });

    // What the kubelet would pass: literal values as they are, the downward API filled in.
    const processEnv = Object.fromEntries(
      env.map((e) => [e.name, e.value ?? (e.valueFrom.fieldRef.fieldPath === "metadata.name" ? "ppo-abc" : "ops")]),
    );
    for (const [name, value] of Object.entries(processEnv)) expect(typeof value, name).toBe("string");
    expect(configSchema.parse(processEnv)).toMatchObject({
      WATCH_NAMESPACE: "",
      LEADER_ELECT: true,
      LEASE_NAME: "poolpolicy-operator",
      POD_NAMESPACE: "ops",
      POD_NAME: "ppo-abc",
      HTTP_HOST: "0.0.0.0",
      HTTP_PORT: 8080,
      LOG_LEVEL: "info",
      WORKERS: 4,
      RESYNC_SECONDS: 300,
      STATS_REFRESH_SECONDS: 30,
    });
  });
});

describe("leader election", () => {
  it("is on with one replica too (old and new pod overlap in a rolling update), and with two", async () => {
    for (const replicas of [1, 2]) {
      const objects = await renderChart(["--set", `replicaCount=${replicas}`]);
      expect(deploymentOf(objects).spec.replicas).toBe(replicas);
      expect(envValue(objects, "LEADER_ELECT")).toBe("true");
      expect(deploymentOf(objects).spec.strategy).toEqual({
        type: "RollingUpdate",
        rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
      });
      expect(findObject(objects, "Role").rules.some((r: Manifest) => r.resources.includes("leases"))).toBe(true);
    }
  });

  it("off: LEADER_ELECT false, the Recreate strategy, and no Lease permissions", async () => {
    const objects = await renderChart(["--set", "leaderElection.enabled=false"]);
    expect(envValue(objects, "LEADER_ELECT")).toBe("false");
    expect(deploymentOf(objects).spec.strategy).toEqual({ type: "Recreate" });
    expect(objects.filter((o) => o.kind === "Role" || o.kind === "RoleBinding")).toEqual([]);
  });

  it("off with two replicas is refused: two pods would both reconcile", async () => {
    const result = await runHelm(templateArgs(["--set", "leaderElection.enabled=false", "--set", "replicaCount=2"]));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("leaderElection.enabled=false allows at most one replica");
  });

  it("uses the configured Lease name in the env and in the Role's resourceNames", async () => {
    const objects = await renderChart(["--set", "leaderElection.leaseName=ppo-lease"]);
    expect(envValue(objects, "LEASE_NAME")).toBe("ppo-lease");
    expect(ruleTable(findObject(objects, "Role"))).toContain("coordination.k8s.io/leases [ppo-lease]: get,update");
  });
});

describe("watchNamespace", () => {
  it("swaps the ClusterRole for a Role with the same rules in the watched namespace", async () => {
    const objects = await renderChart(["--set", "watchNamespace=apps"]);
    expect(objects.filter((o) => o.kind.startsWith("Cluster"))).toEqual([]);
    const watchRole = objects.find((o) => o.kind === "Role" && o.metadata.namespace === "apps")!;
    expect(ruleTable(watchRole)).toEqual(OPERATOR_RULES);
    const binding = objects.find((o) => o.kind === "RoleBinding" && o.metadata.namespace === "apps")!;
    expect(binding.roleRef).toMatchObject({ kind: "Role", name: watchRole.metadata.name });
    // The ServiceAccount stays in the release namespace.
    expect(binding.subjects).toEqual([
      { kind: "ServiceAccount", name: findObject(objects, "ServiceAccount").metadata.name, namespace: "ops" },
    ]);
    // The Lease stays in the release namespace.
    expect(objects.find((o) => o.kind === "Role" && o.metadata.namespace === "ops")).toBeDefined();
    expect(envValue(objects, "WATCH_NAMESPACE")).toBe("apps");
  });

  it("limits Secrets to the names in rbac.secretNames when they are given", async () => {
    const objects = await renderChart(["--set", "rbac.secretNames={pg-admin,pg-app}"]);
    const rows = ruleTable(findObject(objects, "ClusterRole"));
    expect(rows.filter((r) => r.startsWith("core/secrets"))).toEqual([
      "core/secrets [pg-admin,pg-app]: get,list,watch",
    ]);
    expect(rows.filter((r) => !r.startsWith("core/secrets"))).toEqual(
      OPERATOR_RULES.filter((r) => !r.startsWith("core/secrets")),
    );
  });

  it("grants get and patch on CloudNativePG Clusters only when postgresOperators.cloudnativePG.enabled", async () => {
    const cnpg = (rows: string[]) => rows.filter((r) => r.startsWith("postgresql.cnpg.io/"));
    expect(cnpg(ruleTable(findObject(await renderChart(), "ClusterRole")))).toEqual([]);
    const enable = ["--set", "postgresOperators.cloudnativePG.enabled=true"];
    const rows = ruleTable(findObject(await renderChart(enable), "ClusterRole"));
    expect(cnpg(rows)).toEqual(["postgresql.cnpg.io/clusters: get,patch"]);
    expect(rows.filter((r) => !r.startsWith("postgresql.cnpg.io/"))).toEqual(OPERATOR_RULES);
    // With a watched namespace, the Role there carries it.
    const scoped = await renderChart([...enable, "--set", "watchNamespace=apps"]);
    const role = scoped.find((o) => o.kind === "Role" && o.metadata.namespace === "apps")!;
    expect(cnpg(ruleTable(role))).toEqual(["postgresql.cnpg.io/clusters: get,patch"]);
  });

  it("grants get and patch on Zalando postgresqls only when postgresOperators.zalando.enabled", async () => {
    const zalando = (rows: string[]) => rows.filter((r) => r.startsWith("acid.zalan.do/"));
    expect(zalando(ruleTable(findObject(await renderChart(), "ClusterRole")))).toEqual([]);
    const enable = ["--set", "postgresOperators.zalando.enabled=true"];
    const rows = ruleTable(findObject(await renderChart(enable), "ClusterRole"));
    expect(zalando(rows)).toEqual(["acid.zalan.do/postgresqls: get,patch"]);
    // Only its own rule: nothing of CloudNativePG's, nothing else added.
    expect(rows.filter((r) => !r.startsWith("acid.zalan.do/"))).toEqual(OPERATOR_RULES);
    const scoped = await renderChart([...enable, "--set", "watchNamespace=apps"]);
    const role = scoped.find((o) => o.kind === "Role" && o.metadata.namespace === "apps")!;
    expect(zalando(ruleTable(role))).toEqual(["acid.zalan.do/postgresqls: get,patch"]);
  });

  it("grants create, patch and delete on the pooler's objects only when pooler.enabled", async () => {
    const poolerRows = [
      "apps/deployments: create,delete",
      "core/configmaps: create,delete,get,patch",
      "core/secrets: create,delete,patch",
      "core/services: create,delete,patch",
    ];
    const base = ruleTable(findObject(await renderChart(), "ClusterRole"));
    expect(base).toEqual([...OPERATOR_RULES].sort());
    const rows = ruleTable(findObject(await renderChart(["--set", "pooler.enabled=true"]), "ClusterRole"));
    expect(rows).toEqual([...OPERATOR_RULES, ...poolerRows].sort());
    // With a watched namespace, the Role there carries them, and nothing cluster-wide does.
    const scoped = await renderChart(["--set", "pooler.enabled=true", "--set", "watchNamespace=apps"]);
    const role = scoped.find((o) => o.kind === "Role" && o.metadata.namespace === "apps")!;
    expect(ruleTable(role)).toEqual([...OPERATOR_RULES, ...poolerRows].sort());
    expect(scoped.some((o) => o.kind === "ClusterRole")).toBe(false);
  });
});

describe("values", () => {
  it("passes values through: image, pull policy, scheduling, pod metadata, operator settings", async () => {
    const objects = await renderChart([
      "--set",
      "image.repository=registry.example/ppo",
      "--set",
      "image.tag=1.2.3",
      "--set",
      "image.pullPolicy=Never",
      "--set",
      "priorityClassName=system-cluster-critical",
      "--set",
      "nodeSelector.role=infra",
      "--set",
      "tolerations[0].key=infra,tolerations[0].operator=Exists",
      "--set",
      "podAnnotations.team=dbops",
      "--set",
      "logLevel=debug",
      "--set",
      "workers=8",
    ]);
    const pod = deploymentOf(objects).spec.template as Manifest;
    expect(containerOf(objects).image).toBe("registry.example/ppo:1.2.3");
    expect(containerOf(objects).imagePullPolicy).toBe("Never");
    expect(pod.spec.priorityClassName).toBe("system-cluster-critical");
    expect(pod.spec.nodeSelector).toEqual({ role: "infra" });
    expect(pod.spec.tolerations).toEqual([{ key: "infra", operator: "Exists" }]);
    expect(pod.metadata.annotations).toEqual({ team: "dbops" });
    expect(envValue(objects, "LOG_LEVEL")).toBe("debug");
    expect(envValue(objects, "WORKERS")).toBe("8");
  });

  it("renders large numbers from a values file as integers, not 1e+06", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ppo-values-"));
    try {
      writeFileSync(join(dir, "values.yaml"), "resyncSeconds: 1000000\nstatsRefreshSeconds: 3600\n");
      const objects = await renderChart(["-f", join(dir, "values.yaml")]);
      expect(envValue(objects, "RESYNC_SECONDS")).toBe("1000000");
      expect(envValue(objects, "STATS_REFRESH_SECONDS")).toBe("3600");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ["a negative replica count", ["--set", "replicaCount=-1"], "/replicaCount"],
    ["a replica count that is not a number", ["--set", "replicaCount=two"], "/replicaCount"],
    ["an unknown top-level key", ["--set", "replicas=2"], "additional properties 'replicas' not allowed"],
    ["an unknown nested key", ["--set", "image.name=x"], "additional properties 'name' not allowed"],
    ["an unknown pull policy", ["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"],
    ["an unknown log level", ["--set", "logLevel=verbose"], "/logLevel"],
    ["zero workers", ["--set", "workers=0"], "/workers"],
    ["leader election as a string", ["--set-string", "leaderElection.enabled=yes"], "/leaderElection/enabled"],
    ["a watchNamespace that is not a namespace name", ["--set", "watchNamespace=Apps_1"], "/watchNamespace"],
  ])("values.schema.json rejects %s", async (_what, extra, message) => {
    const result = await runHelm(templateArgs(extra));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("values don't meet the specifications of the schema");
    expect(result.stderr).toContain(message);
  });
});

describe("ServiceMonitor", () => {
  it("is rendered only when enabled AND the cluster serves monitoring.coreos.com/v1", async () => {
    const enabled = ["--set", "metrics.serviceMonitor.enabled=true"];
    expect((await renderChart(enabled)).some((o) => o.kind === "ServiceMonitor")).toBe(false);
    expect(
      (await renderChart(["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"])).some(
        (o) => o.kind === "ServiceMonitor",
      ),
    ).toBe(false);

    const objects = await renderChart([
      ...enabled,
      "--set",
      "metrics.serviceMonitor.labels.release=prom",
      "--api-versions",
      "monitoring.coreos.com/v1/ServiceMonitor",
    ]);
    const monitor = findObject(objects, "ServiceMonitor");
    expect(monitor.metadata.labels.release).toBe("prom");
    expect(monitor.spec.selector.matchLabels).toEqual(findObject(objects, "Service").spec.selector);
    expect(monitor.spec.endpoints).toEqual([{ port: "http", path: "/metrics", interval: "30s", scrapeTimeout: "10s" }]);
  });
});

describe("CRD", () => {
  it("ships the PoolPolicy CRD in crds/ (installed by helm install, never upgraded)", async () => {
    const docs = loadAll(await helmOk(templateArgs(["--include-crds"]))) as Manifest[];
    const crd = findObject(docs.filter(Boolean), "CustomResourceDefinition", "poolpolicies.pooling.dbops.io");
    expect(crd.spec.names.shortNames).toContain("pp");
  });
});
