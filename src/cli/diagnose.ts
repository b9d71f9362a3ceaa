/**
 * `poolpolicy diagnose`: "why are we out of connections?" in one command.
 *
 * Gathers, read-only: the server's facts (the operator's own inspectServer), who holds the
 * connections (by database, by user and application), the oldest sessions idle in
 * transaction, the connection budget of every PoolPolicy pointing at the server, the roles
 * its policies hold to their share (spec.enforcement.connectionLimit), the required
 * extensions and Redis; then findings.ts turns them into findings with
 * recommendations. Nothing here writes to PostgreSQL, Redis or the cluster.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { CoreV1Api } from "@kubernetes/client-node";
import { parseDuration } from "../api/duration.js";
import { checkRedisDependency } from "../server/dependencies.js";
import { readSecretKeys } from "../kube/secrets.js";
import { desiredMaxConnections, memoryCondition, restartWorkloadRef, type ServerMemory } from "../server/model.js";
import { planDeclaredPooler, poolerProblem, serverPooler } from "../server/pooler.js";
import { explainSizing } from "../server/pooler-plan.js";
import { describeWorkload, isOwnedKind, POSTGRES_OPERATORS } from "../kube/workloads.js";
import { PostgresError, PostgresPools, describeTarget, type PostgresTarget } from "../postgres/connection.js";
import { inspectServer, type ServerFacts } from "../postgres/inspect.js";
import { inspectRole } from "../postgres/roles.js";
import { planRoleLimit, roleShares } from "../server/role-limits.js";
import { checkRedis } from "../redis/check.js";
import {
  CliError,
  loadKubeConfig,
  readServerBudget,
  parsePolicyRef,
  policyTarget,
  readPolicy,
  type KubeOptions,
  type LoadedPolicy,
  type ServerBudgetView,
} from "./cluster.js";
import { DsnError, dsnWithoutPassword, parseDsn, redactDsn } from "./dsn.js";
import { analyze, isOk } from "./findings.js";
import type { CliIo } from "./io.js";
import type {
  BudgetSection,
  DiagnoseReport,
  ExtensionsSection,
  MemorySection,
  PolicySection,
  PoolerSection,
  PostgresSection,
  RedisSection,
  RoleSection,
  SessionsSection,
  Subject,
} from "./report.js";
import { countIdleInTransactionOlderThan, oldestIdleInTransaction, rollUp, sessionGroups } from "./sessions.js";

/** application_name of the CLI's sessions, so that they are recognisable in pg_stat_activity. */
export const CLI_APPLICATION_NAME = "poolpolicy-cli";
/** Without a policy, sessions idle in transaction longer than this are reported. */
export const DEFAULT_IDLE_THRESHOLD = "5m";

export interface DiagnoseOptions {
  /** A PoolPolicy ("ns/name" or "name"), or… */
  policyRef?: string;
  namespace?: string;
  kube: KubeOptions;
  /** …a plain DSN: no budget, only the server. */
  dsn?: string;
  /** Connect here instead of spec.postgres.host/port (e.g. a kubectl port-forward). */
  pgHost?: string;
  pgPort?: number;
  /** Redis to check: overrides the policy's Secret; the only way to check Redis with --dsn. */
  redisUrl?: string;
  redisRequired?: boolean;
  /** Extensions to require on top of the policy's. */
  requireExtensions: string[];
  /** Overrides the policy's reaper timeout (default 5m with --dsn). */
  idleThreshold?: string;
  /** How many of the oldest idle-in-transaction sessions to list. */
  top: number;
  /** The program name to show in recommendations ("poolpolicy" or "kubectl poolpolicy"). */
  program: string;
}

interface ServerSnapshot {
  facts: ServerFacts;
  sessions: SessionsSection;
}

export async function diagnose(options: DiagnoseOptions, io: CliIo): Promise<DiagnoseReport> {
  const pools = new PostgresPools({ applicationName: CLI_APPLICATION_NAME, connectTimeoutMs: 5_000 });
  try {
    return options.dsn !== undefined
      ? await diagnoseDsn(options.dsn, options, pools, io)
      : await diagnosePolicy(options, pools, io);
  } finally {
    await pools.closeAll();
  }
}

async function diagnosePolicy(options: DiagnoseOptions, pools: PostgresPools, io: CliIo): Promise<DiagnoseReport> {
  if (!options.policyRef) throw new CliError("diagnose needs a PoolPolicy (NAMESPACE/NAME, or NAME with -n) or --dsn");
  const kc = loadKubeConfig(options.kube);
  const ref = parsePolicyRef(options.policyRef, options.namespace, kc);
  io.progress(`reading PoolPolicy ${ref.namespace}/${ref.name}`);
  const loaded = await readPolicy(kc, ref.namespace, ref.name);
  const spec = loaded.spec;
  const threshold = thresholdOf(options.idleThreshold ?? spec.reaper.idleInTransactionTimeout);

  io.progress(`reading the credentials from Secret ${ref.namespace}/${spec.postgres.credentialsSecret.name}`);
  const connection = await policyTarget(kc, loaded, { host: options.pgHost, port: options.pgPort });
  const subject: Subject = {
    policy: loaded.key,
    server: `${options.pgHost ?? spec.postgres.host}:${options.pgPort ?? spec.postgres.port}`,
    database: spec.postgres.database,
    user: connection.ok ? connection.target.user : "?",
  };
  let postgres: PostgresSection;
  let snapshot: ServerSnapshot | undefined;
  if (!connection.ok) {
    postgres = { reachable: false, reason: connection.reason, message: connection.message };
  } else {
    io.secret(connection.target.password);
    ({ postgres, snapshot } = await readServer(pools, connection.target, threshold, options.top, io));
  }

  let budget: BudgetSection | undefined;
  let roles: RoleSection[] | undefined;
  if (snapshot && connection.ok) {
    io.progress("computing the connection budget of every PoolPolicy on this server");
    const view = await readServerBudget(kc, loaded, snapshot.facts);
    budget = budgetSection(view, snapshot.facts);
    ({ roles } = await readRoles(pools, connection.target, view, budget.notes, io));
  }

  io.progress("checking Redis");
  const redis =
    options.redisUrl !== undefined
      ? await redisFromUrl(options.redisUrl, options.redisRequired ?? spec.redis?.required ?? false, io)
      : spec.redis
        ? await redisOfPolicy(kc, loaded)
        : undefined;

  const restartRef =
    spec.postgres.restart && restartWorkloadRef(spec.postgres.restart, loaded.policy.metadata.namespace);
  const policy: PolicySection = {
    maxConnections: spec.postgres.maxConnections,
    restartWorkload: restartRef && describeWorkload(restartRef),
    restartedBy: isOwnedKind(restartRef?.kind) ? POSTGRES_OPERATORS[restartRef.kind].name : undefined,
    pool: { minSize: spec.pool.minSize, maxSize: spec.pool.maxSize },
    reaper: {
      enabled: spec.reaper.enabled,
      dryRun: spec.reaper.dryRun,
      idleInTransactionTimeout: spec.reaper.idleInTransactionTimeout,
    },
    conditions: (loaded.policy.status?.conditions ?? []).map(({ type, status, reason, message }) => ({
      type,
      status,
      reason,
      message,
    })),
  };
  const required = [...new Set([...spec.postgres.requiredExtensions, ...options.requireExtensions])];
  const facts = {
    subject,
    policy,
    postgres,
    sessions: snapshot?.sessions,
    budget,
    roles,
    extensions: extensionsOf(required, spec.postgres.database, snapshot?.facts),
    redis,
  };
  return finish(facts, `${options.program} reap ${loaded.key}`);
}

async function diagnoseDsn(
  dsn: string,
  options: DiagnoseOptions,
  pools: PostgresPools,
  io: CliIo,
): Promise<DiagnoseReport> {
  let target: PostgresTarget;
  try {
    target = parseDsn(dsn);
  } catch (err) {
    if (err instanceof DsnError) throw new CliError(err.message);
    throw err;
  }
  io.secret(target.password);
  const shown = redactDsn(dsn);
  const threshold = thresholdOf(options.idleThreshold ?? DEFAULT_IDLE_THRESHOLD);
  const { postgres, snapshot } = await readServer(pools, target, threshold, options.top, io);
  const redis =
    options.redisUrl !== undefined
      ? await redisFromUrl(options.redisUrl, options.redisRequired ?? false, io)
      : undefined;
  const facts = {
    subject: { dsn: shown, server: `${target.host}:${target.port}`, database: target.database, user: target.user },
    postgres,
    sessions: snapshot?.sessions,
    extensions: extensionsOf(options.requireExtensions, target.database, snapshot?.facts),
    redis,
  };
  // No password in a command meant to be pasted: reap takes it from PGPASSWORD.
  return finish(facts, `PGPASSWORD=… ${options.program} reap --dsn '${dsnWithoutPassword(dsn)}'`);
}

function finish(facts: Omit<DiagnoseReport, "findings" | "ok">, reapCommand: string): DiagnoseReport {
  const findings = analyze(facts, { reapCommand });
  return { ...dropUndefined(facts), findings, ok: isOk(findings) };
}

/** One connection, all the read-only queries: the facts, then who holds the sessions. */
async function readServer(
  pools: PostgresPools,
  target: PostgresTarget,
  threshold: { text: string; ms: number },
  top: number,
  io: CliIo,
): Promise<{ postgres: PostgresSection; snapshot?: ServerSnapshot }> {
  io.progress(`connecting to ${describeTarget(target)}`);
  try {
    const snapshot = await pools.withClient(target, async (client) => {
      const facts = await inspectServer(client);
      const groups = await sessionGroups(client);
      const sessions: SessionsSection = {
        byDatabase: rollUp(groups, (g) => g.database).map(({ key, ...counts }) => ({ database: key, ...counts })),
        byUserAndApplication: groups,
        oldestIdleInTransaction: await oldestIdleInTransaction(client, top),
        idleThreshold: threshold.text,
        idleThresholdMs: threshold.ms,
        idleInTransactionOverThreshold: await countIdleInTransactionOlderThan(client, threshold.ms),
      };
      return { facts, sessions };
    });
    return { postgres: postgresSection(snapshot.facts), snapshot };
  } catch (err) {
    const e = err instanceof PostgresError ? err : new PostgresError("QueryFailed", (err as Error).message);
    return { postgres: { reachable: false, reason: e.reason, message: e.message } };
  }
}

function postgresSection(f: ServerFacts): PostgresSection {
  const reserved = f.superuserReservedConnections + f.reservedConnections;
  const usagePercent = f.maxConnections > 0 ? Math.round((100 * f.connections.total) / f.maxConnections) : 0;
  return {
    reachable: true,
    version: f.version,
    maxConnections: f.maxConnections,
    settingSource: f.settingSource,
    pendingRestart: f.pendingRestart,
    ...(f.alterSystemValue !== undefined ? { alterSystemValue: f.alterSystemValue } : {}),
    postmasterStartTime: new Date(f.postmasterStartTime).toISOString(),
    superuserReservedConnections: f.superuserReservedConnections,
    reservedConnections: f.reservedConnections,
    isSuperuser: f.isSuperuser,
    connections: f.connections,
    // Usage counts every client backend, ours included, exactly like the operator's
    // poolpolicy_postgres_usage_ratio, so the CLI and the alerts agree.
    usagePercent,
    // Free slots for the apps: our own session is left out, it goes away when we do.
    ordinarySlotsFree: f.maxConnections - reserved - (f.connections.total - 1),
  };
}

function budgetSection(view: ServerBudgetView, facts: ServerFacts): BudgetSection {
  const { budget } = view;
  return {
    server: view.server,
    policies: view.policies,
    targets: budget.targets,
    reserve: { ...view.reserve, total: budget.reserve },
    demand: budget.demand,
    capacity: budget.capacity,
    withinLimits: budget.withinLimits,
    headroomPercent: view.settings.headroomPercent,
    ceiling: view.settings.ceiling,
    memory: memorySection(view.memory, facts),
    pooler: poolerSection(view, facts),
    notes: view.notes,
  };
}

/** The server's pooler, sized by the operator's own function against the same figures. */
function poolerSection(view: ServerBudgetView, facts: ServerFacts): PoolerSection | undefined {
  const pooler = serverPooler(view.peers);
  if (pooler.kind === "none") {
    if (pooler.pooled.length === 0) return undefined;
    const problem = poolerProblem(view.peers.find((p) => p.spec.pool.via === "Pooler")!, pooler);
    return { state: "notDeclared", pooled: pooler.pooled, message: problem?.message ?? "" };
  }
  if (pooler.kind === "conflict") return { state: "conflict", pooled: pooler.pooled, message: pooler.message };
  const desired = desiredMaxConnections(view.peers, view.budget, facts, view.memory);
  const plan = planDeclaredPooler(pooler, view.budget, facts.maxConnections, desired, view.server);
  const name = `${pooler.namespace}/${pooler.spec.name}`;
  if (plan.kind === "refused") return { state: "refused", pooled: pooler.pooled, name, message: plan.message };
  const { pods, perPod, left, maxClientConn } = plan;
  return {
    state: "sized",
    pooled: pooler.pooled,
    name,
    pods,
    perPod,
    left,
    maxClientConn,
    explanation: explainSizing(plan),
  };
}

/**
 * Each role a policy of the server holds to its share: the share, the role as PostgreSQL has it
 * now, and what the operator does about it, each from the operator's own function. A failed
 * read leaves the roles out, with a note saying why.
 */
async function readRoles(
  pools: PostgresPools,
  target: PostgresTarget,
  view: ServerBudgetView,
  notes: string[],
  io: CliIo,
): Promise<{ roles?: RoleSection[] }> {
  const shares = roleShares(view.peers, view.budget);
  if (shares.length === 0) return {};
  const names = shares.map((r) => JSON.stringify(r.role)).join(", ");
  io.progress(`reading the CONNECTION LIMIT and sessions of role(s) ${names}`);
  try {
    const facts = await pools.withClient(target, async (client) => {
      const read = [];
      for (const share of shares) read.push(await inspectRole(client, share.role));
      return read;
    });
    const roles = shares.map((share, i): RoleSection => {
      const role = facts[i]!;
      const { demand, margin, limit, policies } = share;
      return {
        role: share.role,
        share: { demand, margin, limit, policies },
        exists: role.exists,
        superuser: role.superuser,
        operatorRole: role.isOperator,
        connectionLimit: role.connectionLimit,
        connections: role.connections,
        plan: planRoleLimit(share, role, view.server),
      };
    });
    return { roles };
  } catch (err) {
    notes.push(`role(s) ${names} held to a share not read: ${(err as Error).message}`);
    return {};
  }
}

/** The ceiling's numbers, and the verdict the operator's MemoryWithinLimits condition gives on the value in force. */
function memorySection(memory: ServerMemory, facts: ServerFacts): MemorySection {
  const { status, reason, message } = memoryCondition(memory, facts.maxConnections);
  const condition = { status, reason, message };
  if (!memory.known) return { known: false, reason: memory.reason, message: memory.message, condition };
  const { ceiling, memoryBytes, fixedBytes, perConnectionBytes } = memory.ceiling;
  return { known: true, ceiling, source: memory.source, memoryBytes, fixedBytes, perConnectionBytes, condition };
}

function extensionsOf(
  required: string[],
  database: string,
  facts: ServerFacts | undefined,
): ExtensionsSection | undefined {
  if (required.length === 0 || !facts) return undefined;
  const missing = required
    .filter((name) => !facts.installedExtensions.includes(name))
    .map((name) => ({ name, availableOnServer: facts.availableExtensions.includes(name) }));
  return { database, required, missing };
}

/** The operator's own Redis check (Secret → PING → INFO), so both say the same. */
async function redisOfPolicy(kc: KubeConfig, loaded: LoadedPolicy): Promise<RedisSection> {
  const core = kc.makeApiClient(CoreV1Api);
  const outcome = await checkRedisDependency(
    (namespace, name, keys) => readSecretKeys(core, namespace, name, keys),
    loaded.policy.metadata.namespace,
    loaded.spec,
  );
  return {
    required: outcome.required,
    available: outcome.condition.status === "True",
    reason: outcome.condition.reason,
    message: outcome.condition.message,
    ...outcome.status,
  };
}

async function redisFromUrl(url: string, required: boolean, io: CliIo): Promise<RedisSection> {
  let password: string;
  try {
    password = decodeURIComponent(new URL(url).password);
  } catch {
    throw new CliError("invalid --redis-url: expected redis://[:password@]host:port[/db]");
  }
  io.secret(password);
  try {
    const facts = await checkRedis(url);
    return {
      required,
      available: true,
      reason: "Available",
      message: `Redis answers PING; ${facts.connectedClients}/${facts.maxClients} clients, ${facts.rejectedConnections} rejected since its start`,
      ...facts,
    };
  } catch (err) {
    return { required, available: false, reason: "RedisUnavailable", message: (err as Error).message };
  }
}

function thresholdOf(text: string): { text: string; ms: number } {
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) throw new CliError(`invalid duration "${text}": expected e.g. 90s, 5m or 1h30m`);
  return { text, ms };
}

/** JSON.stringify drops undefined fields anyway; dropping them here keeps the object and the JSON alike. */
function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
