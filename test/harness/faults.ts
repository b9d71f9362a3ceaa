/**
 * Fault injection for the reliability suite (test/integration/faults): a private control plane
 * with the chart's RBAC, the operator running as the chart's ServiceAccount, admission rules
 * that refuse one chosen write (a step boundary the operator cannot pass), and the counters the
 * scenarios assert on (PostgreSQL restarts, operator metrics, secrets leaked into logs).
 *
 * Why a control plane per test file: every other operator test runs an operator that watches
 * every namespace of the shared control plane. In a fault test that kills "the" operator, a
 * second operator from another file would quietly finish the work (or write Events), and the
 * test would prove nothing. A private control plane costs about 5 s and makes the operators of
 * a fault test the only writers there are.
 *
 * Why the chart's ServiceAccount: the operator in production has exactly the chart's RBAC, not
 * system:masters. Running every fault scenario with a token of that ServiceAccount proves the
 * RBAC is enough for the recovery paths too (relists, retries, finalizers, Events).
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  CoordinationV1Api,
  CustomObjectsApi,
  EventsV1Api,
  KubeConfig,
} from "@kubernetes/client-node";
import pg from "pg";
import { ControlPlane } from "./controlplane.js";
import { installPoolPolicyCrd } from "./crd.js";
import { OperatorProcess } from "./operator.js";
import { ManagedProcess, waitFor } from "./processes.js";
import { freePort } from "./ports.js";
import { repoRoot, toolPath } from "./tools.js";
import type { PostgresServer } from "./postgres.js";

export const CHART_DIR = join(repoRoot, "charts/poolpolicy-operator");
/** Where the chart is installed in a fault cluster, and the release's full name. */
export const RELEASE_NAMESPACE = "poolpolicy-system";
export const RELEASE = "ppo";
export const FULLNAME = `${RELEASE}-poolpolicy-operator`;
/** The Lease name the chart's leader-election Role allows (values.yaml leaderElection.leaseName). */
export const CHART_LEASE_NAME = "poolpolicy-operator";

export interface OperatorSpec {
  /** Names the log file and, unless env says otherwise, POD_NAME. */
  name: string;
  env?: Record<string, string>;
  /** Run with the admin kubeconfig instead of the chart's ServiceAccount. */
  asAdmin?: boolean;
}

/** A private control plane with the chart installed (no operator pod: replicaCount=0). */
export class FaultCluster {
  readonly operators: OperatorProcess[] = [];
  kc!: KubeConfig;
  /** A kubeconfig holding a TokenRequest token of the chart's ServiceAccount. */
  saKubeconfigPath = "";
  saToken = "";
  readonly saUser = `system:serviceaccount:${RELEASE_NAMESPACE}:${FULLNAME}`;

  private constructor(readonly controlPlane: ControlPlane) {}

  /** `chartValues`: extra `name=value` settings of the chart (helm --set). */
  static async start(chartValues: string[] = []): Promise<FaultCluster> {
    const cluster = new FaultCluster(new ControlPlane());
    try {
      await cluster.controlPlane.start();
      cluster.kc = cluster.controlPlane.kubeConfig();
      await installPoolPolicyCrd(cluster.kc);
      await cluster.installChart(chartValues);
    } catch (err) {
      await cluster.controlPlane.stop();
      throw err;
    }
    return cluster;
  }

  get dir(): string {
    return this.controlPlane.dir;
  }

  /** An operator process (not started) running as the chart's ServiceAccount unless asAdmin. */
  operator(spec: OperatorSpec): OperatorProcess {
    const op = new OperatorProcess({
      kubeconfigPath: spec.asAdmin ? this.controlPlane.kubeconfigPath : this.saKubeconfigPath,
      logFile: join(this.dir, "logs", `operator-${spec.name}.log`),
      env: { POD_NAME: spec.name, ...spec.env },
    });
    this.operators.push(op);
    return op;
  }

  /** Every line every operator of this cluster logged so far. */
  operatorLogs(): string {
    return this.operators.map((o) => o.logs()).join("\n");
  }

  async stop(): Promise<void> {
    for (const op of this.operators) await op.stop().catch(() => undefined);
    await this.controlPlane.stop();
  }

  private async installChart(chartValues: string[]): Promise<void> {
    await runTool(
      "helm",
      [
        "install",
        RELEASE,
        CHART_DIR,
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        // The CRD was installed from the same generated file; replicaCount=0: the operator runs
        // as a local process with the pod's identity, not as a kwok pod that never runs.
        "--skip-crds",
        "--set",
        "replicaCount=0",
        ...chartValues.flatMap((v) => ["--set", v]),
        "--kubeconfig",
        this.controlPlane.kubeconfigPath,
      ],
      helmEnv(this.dir),
    );
    const token = await this.kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({
      name: FULLNAME,
      namespace: RELEASE_NAMESPACE,
      body: { spec: { audiences: [], expirationSeconds: 4 * 3600 } },
    });
    this.saToken = token.status?.token ?? "";
    if (!this.saToken) throw new Error("the TokenRequest for the chart ServiceAccount returned no token");
    this.saKubeconfigPath = join(this.dir, "kubeconfig-operator-sa");
    writeFileSync(this.saKubeconfigPath, kubeconfigWithToken(this.controlPlane.server, this.saToken, FULLNAME), {
      mode: 0o600,
    });
  }
}

/** A KubeConfig with the chart ServiceAccount's token: API calls made as the operator. */
export function loadSaKubeConfig(cluster: FaultCluster): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(cluster.saKubeconfigPath);
  return kc;
}

function kubeconfigWithToken(server: string, token: string, user: string): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: local",
    "  cluster:",
    `    server: ${server}`,
    "    insecure-skip-tls-verify: true",
    "users:",
    `- name: ${user}`,
    "  user:",
    `    token: ${token}`,
    "contexts:",
    "- name: local",
    `  context: { cluster: local, user: ${user} }`,
    "current-context: local",
    "",
  ].join("\n");
}

function helmEnv(dir: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    HELM_CONFIG_HOME: join(dir, "helm/config"),
    HELM_CACHE_HOME: join(dir, "helm/cache"),
    HELM_DATA_HOME: join(dir, "helm/data"),
  };
}

/** Runs one of the pinned tools to completion; throws with its output when it fails. */
export async function runTool(
  tool: "helm" | "kubectl",
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  const { execFile } = await import("node:child_process");
  return new Promise((resolve, reject) => {
    execFile(toolPath(tool), args, { env, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${tool} ${args.join(" ")} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

// ---- a second kube-apiserver on the same etcd ---------------------------------------------------

/**
 * Another kube-apiserver in front of the same etcd, started with the control plane's own
 * credentials: the way to change an object while the kube-apiserver the operator talks to is
 * dead or frozen (as a client would through the other member of an HA pair). Reads the
 * ControlPlane's private etcd port: the harness keeps it private, and this is the only user.
 */
export class SideApiServer {
  private process?: ManagedProcess;
  port = 0;

  constructor(private readonly controlPlane: ControlPlane) {}

  async start(): Promise<KubeConfig> {
    const cp = this.controlPlane as unknown as { etcdPort?: unknown; dir: string };
    if (typeof cp.etcdPort !== "number" || cp.etcdPort <= 0) {
      throw new Error(
        "SideApiServer: ControlPlane no longer has a private etcdPort; expose the etcd URL from test/harness/controlplane.ts",
      );
    }
    this.port = await freePort();
    const pki = join(cp.dir, `pki-side-${this.port}`);
    this.process = new ManagedProcess({
      name: "kube-apiserver-side",
      command: toolPath("kube-apiserver"),
      args: [
        `--etcd-servers=http://127.0.0.1:${cp.etcdPort}`,
        `--cert-dir=${pki}`,
        `--secure-port=${this.port}`,
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        "--authorization-mode=RBAC",
        // Same issuer and keys as the main one, so tokens are valid on both.
        `--service-account-issuer=${this.controlPlane.server}/`,
        `--service-account-key-file=${join(cp.dir, "sa.key")}`,
        `--service-account-signing-key-file=${join(cp.dir, "sa.key")}`,
        `--token-auth-file=${join(cp.dir, "tokens.csv")}`,
        "--event-ttl=1h",
        // Two apiservers must not both run the lease-based endpoint reconciler on one Service IP.
        "--endpoint-reconciler-type=none",
      ],
      logFile: join(cp.dir, "logs", `kube-apiserver-side-${this.port}.log`),
    });
    const kc = this.controlPlane.kubeConfig();
    const cluster = kc.getCurrentCluster()!;
    const side = new KubeConfig();
    side.loadFromOptions({
      clusters: [{ ...cluster, server: `https://127.0.0.1:${this.port}` }],
      users: kc.users,
      contexts: kc.contexts,
      currentContext: kc.currentContext,
    });
    const core = side.makeApiClient(CoreV1Api);
    await waitFor(
      `the side kube-apiserver (log: ${this.process.logFile})`,
      async () => {
        if (this.process?.hasExited) throw new Error(`it exited; see ${this.process.logFile}`);
        await core.readNamespace({ name: "default" });
        return true;
      },
      { timeoutMs: 90_000, intervalMs: 250 },
    );
    return side;
  }

  async stop(): Promise<void> {
    await this.process?.stop("SIGTERM", 5_000);
  }
}

// ---- admission rules that refuse one write ------------------------------------------------------

export interface DenyRule {
  /** Unique in the cluster. */
  name: string;
  namespace: string;
  apiGroup: string;
  /** e.g. "statefulsets" or "poolpolicies/status". */
  resource: string;
  /** CEL: the request is refused when this is false. Variables: object, oldObject, request. */
  allowIf: string;
  message: string;
  /** Only requests of this user are judged (the operator's), everybody else passes. */
  user: string;
}

/**
 * A ValidatingAdmissionPolicy (built into the kube-apiserver, no webhook) that refuses one kind
 * of write by one user in one namespace: the operator can do every step of its work up to that
 * write and no further, so killing it then kills it exactly at that step boundary.
 * Resolves once the rule is in force (a dry-run write of `probe` is refused); `probe` must make
 * that write as the operator's user and throw the API error.
 */
export async function denyWrites(
  kc: KubeConfig,
  rule: DenyRule,
  probe: () => Promise<unknown>,
): Promise<() => Promise<void>> {
  const admission = kc.makeApiClient(AdmissionregistrationV1Api);
  await admission.createValidatingAdmissionPolicy({
    body: {
      metadata: { name: rule.name },
      spec: {
        failurePolicy: "Fail",
        matchConstraints: {
          resourceRules: [
            { apiGroups: [rule.apiGroup], apiVersions: ["*"], operations: ["UPDATE"], resources: [rule.resource] },
          ],
        },
        matchConditions: [
          { name: "operator-only", expression: `request.userInfo.username == ${JSON.stringify(rule.user)}` },
        ],
        // reason Forbidden: answered 403, as an RBAC refusal would be (the default is 422 Invalid).
        validations: [{ expression: rule.allowIf, message: rule.message, reason: "Forbidden" }],
      },
    },
  });
  await admission.createValidatingAdmissionPolicyBinding({
    body: {
      metadata: { name: rule.name },
      spec: {
        policyName: rule.name,
        validationActions: ["Deny"],
        matchResources: { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": rule.namespace } } },
      },
    },
  });
  await waitFor(
    `admission rule ${rule.name} to be in force`,
    async () => {
      try {
        await probe();
        return false;
      } catch (err) {
        return (
          (err as { code?: number }).code === 403 &&
          /ValidatingAdmissionPolicy|denied request/.test(String((err as { body?: unknown }).body ?? ""))
        );
      }
    },
    { timeoutMs: 30_000, intervalMs: 250 },
  );
  return async () => {
    await admission.deleteValidatingAdmissionPolicyBinding({ name: rule.name }).catch(() => undefined);
    await admission.deleteValidatingAdmissionPolicy({ name: rule.name }).catch(() => undefined);
    // Out of force once the same probe passes again.
    await waitFor(
      `admission rule ${rule.name} to be lifted`,
      async () => {
        try {
          await probe();
          return true;
        } catch {
          return false;
        }
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
  };
}

// ---- PostgreSQL restarts, counted two independent ways -----------------------------------------

/**
 * Counts PostgreSQL starts two ways that do not depend on the bridge: the distinct values of
 * pg_postmaster_start_time() seen by a poller (every 100 ms, so a restart cannot hide between
 * two polls: a restart takes longer than that), and the "ready to accept connections" lines the
 * postmaster writes to its log at every start (the harness appends the log across restarts).
 */
export class PostmasterStarts {
  readonly seen = new Set<string>();
  private running = false;
  private loop?: Promise<void>;

  constructor(private readonly server: PostgresServer) {}

  start(): this {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        try {
          const [row] = await queryServer<{ t: Date }>(this.server, "SELECT pg_postmaster_start_time() AS t");
          this.seen.add(row!.t.toISOString());
        } catch {
          // down or restarting: the next poll sees the new start time
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    return this;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** Distinct start times seen so far (the first one included). */
  get distinct(): number {
    return this.seen.size;
  }

  /** Starts recorded in the postmaster's log since the server was created. */
  logStarts(): number {
    return countReadyLines(postgresLog(this.server));
  }
}

/**
 * One statement on a fresh superuser connection, like PostgresServer.query, but safe to run
 * while the server shuts down: a connection terminated by the shutdown emits an 'error' event,
 * which without a listener is an uncaught exception in the test process.
 */
export async function queryServer<T extends pg.QueryResultRow = pg.QueryResultRow>(
  server: PostgresServer,
  sql: string,
  params: unknown[] = [],
  database = "postgres",
): Promise<T[]> {
  const client = new pg.Client({ ...server.connection, database, connectionTimeoutMillis: 5_000 });
  client.on("error", () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export function postgresLog(server: PostgresServer): string {
  const file = join(server.dir, "postgres.log");
  return existsSync(file) ? readFileSync(file, "utf8") : "";
}

export function countReadyLines(log: string): number {
  return log.split("\n").filter((l) => l.includes("database system is ready to accept connections")).length;
}

// ---- operator metrics --------------------------------------------------------------------------

/** Sum of the samples of `name` whose labels include `labels`, in Prometheus text format. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries(
      [...(match[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(match[4]);
  }
  return sum;
}

export interface OperatorCounters {
  reconciles: number;
  reconcileErrors: number;
  statusWrites: number;
  restartsRequested: number;
  /** process_start_time_seconds: changes only if the process is a new one. */
  processStart: number;
  relists: number;
  watchRestarts: number;
}

export async function operatorCounters(op: OperatorProcess): Promise<OperatorCounters> {
  const text = await op.metrics();
  return {
    reconciles: metricValue(text, "controller_runtime_reconcile_total"),
    reconcileErrors: metricValue(text, "controller_runtime_reconcile_errors_total"),
    statusWrites: metricValue(text, "poolpolicy_status_writes_total"),
    restartsRequested: metricValue(text, "poolpolicy_postgres_restarts_requested_total"),
    processStart: metricValue(text, "process_start_time_seconds"),
    relists: metricValue(text, "informer_relists_total"),
    watchRestarts: metricValue(text, "informer_watch_restarts_total"),
  };
}

/** What each counter grew by between two snapshots. */
export function counterDelta(before: OperatorCounters, after: OperatorCounters): OperatorCounters {
  const out = {} as OperatorCounters;
  for (const k of Object.keys(before) as (keyof OperatorCounters)[]) out[k] = after[k] - before[k];
  return out;
}

/** Rate per minute of each counter between two snapshots taken `ms` apart. */
export function perMinute(
  before: OperatorCounters,
  after: OperatorCounters,
  ms: number,
): Record<keyof OperatorCounters, number> {
  const out = {} as Record<keyof OperatorCounters, number>;
  for (const k of Object.keys(before) as (keyof OperatorCounters)[])
    out[k] = Math.round((((after[k] - before[k]) * 60_000) / ms) * 10) / 10;
  return out;
}

// ---- the kube-apiserver's own counters ---------------------------------------------------------

/**
 * The kube-apiserver's /metrics (admin token). In a private control plane the operator is the
 * only client writing PoolPolicy status or patching the postgres StatefulSet, so
 * apiserver_request_total counts exactly its refused writes (403 from an admission rule, 409
 * conflicts), whatever the operator logs about them. Counters restart with the apiserver.
 */
export function apiserverMetrics(cluster: FaultCluster): Promise<string> {
  return cluster.controlPlane.adminGet("/metrics", 10_000);
}

export interface RequestFilter {
  code: string;
  resource: string;
  subresource?: string;
  /** PUT, PATCH, POST… as the kube-apiserver reports it. */
  verb: string;
}

/** Real (not dry-run) requests the kube-apiserver answered with `code`. */
export async function apiserverRequests(cluster: FaultCluster, f: RequestFilter): Promise<number> {
  return metricValue(await apiserverMetrics(cluster), "apiserver_request_total", {
    code: f.code,
    resource: f.resource,
    subresource: f.subresource ?? "",
    verb: f.verb,
    dry_run: "",
  });
}

// ---- operator log lines -------------------------------------------------------------------------

export interface LogLine {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

/** The operator's JSON log lines (pino), skipping anything that is not JSON. */
export function logLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      /* a partial last line */
    }
  }
  return out;
}

/** "reconcile failed" lines whose error carries this HTTP status. */
export function failedReconciles(text: string, status?: number): LogLine[] {
  return logLines(text).filter(
    (l) =>
      l.msg === "reconcile failed" &&
      (status === undefined || (l.error as { status?: number } | undefined)?.status === status),
  );
}

/** Signs that the process died of something it did not handle. */
export function crashSigns(text: string): string[] {
  return text
    .split("\n")
    .filter(
      (l) =>
        /Unhandled|uncaught|UnhandledPromiseRejection|FATAL ERROR|Segmentation|heap out of memory/i.test(l) &&
        !l.startsWith("{"),
    );
}

// ---- secrets ------------------------------------------------------------------------------------

/**
 * Everything the operator wrote that a user or a log pipeline can read: its logs, every Event
 * (both APIs) and every PoolPolicy (status included) of the cluster. A private cluster makes
 * "every" cheap and exact.
 */
export async function operatorVisibleOutput(cluster: FaultCluster, kc: KubeConfig = cluster.kc): Promise<string> {
  const events = await kc.makeApiClient(EventsV1Api).listEventForAllNamespaces();
  const coreEvents = await kc.makeApiClient(CoreV1Api).listEventForAllNamespaces();
  const policies = await kc
    .makeApiClient(CustomObjectsApi)
    .listClusterCustomObject({ group: "pooling.dbops.io", version: "v1alpha1", plural: "poolpolicies" });
  const leases = await kc.makeApiClient(CoordinationV1Api).listLeaseForAllNamespaces();
  return [
    cluster.operatorLogs(),
    JSON.stringify(events.items),
    JSON.stringify(coreEvents.items),
    JSON.stringify(policies),
    JSON.stringify(leases.items),
  ].join("\n");
}

/** Each secret found in `text`, as itself or base64-encoded, described without revealing it. */
export function findSecrets(text: string, secrets: Iterable<string>): string[] {
  const hits: string[] = [];
  for (const secret of new Set(secrets)) {
    if (secret.length < 6) continue; // too short to be a meaningful needle
    const label = `secret #${createHash("sha256").update(secret).digest("hex").slice(0, 8)} (${secret.length} chars)`;
    if (text.includes(secret)) hits.push(`${label} in clear`);
    else if (text.includes(Buffer.from(secret).toString("base64"))) hits.push(`${label} base64-encoded`);
    else if (text.includes(encodeURIComponent(secret)) && encodeURIComponent(secret) !== secret)
      hits.push(`${label} URL-encoded`);
  }
  return hits;
}

// ---- small things -------------------------------------------------------------------------------

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls until `check` holds and returns how long that took, in ms. */
export async function timeUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 60_000,
  intervalMs = 100,
): Promise<number> {
  const started = performance.now();
  await waitFor(what, check, { timeoutMs, intervalMs });
  return Math.round(performance.now() - started);
}
