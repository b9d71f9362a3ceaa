/**
 * `poolpolicy reap`: terminate sessions idle in transaction longer than a duration, by hand.
 *
 * The operator's own statement (src/postgres/reap.ts) does the work, so the safety filters
 * are the reaper's: one statement that re-checks idleness while it terminates; only client
 * backends of the one database; never our own session, excluded users and application
 * names, or superuser sessions unless we are superuser. Dry run unless --execute.
 */
import { parseDuration } from "../api/duration.js";
import { PostgresError, PostgresPools, describeTarget, type PostgresTarget } from "../postgres/connection.js";
import { reapIdleInTransaction, type ReapedSession } from "../postgres/reap.js";
import { CliError, loadKubeConfig, parsePolicyRef, policyTarget, readPolicy, type KubeOptions } from "./cluster.js";
import { CLI_APPLICATION_NAME, DEFAULT_IDLE_THRESHOLD } from "./diagnose.js";
import { DsnError, parseDsn, redactDsn } from "./dsn.js";
import type { CliIo } from "./io.js";

export interface ReapCommandOptions {
  policyRef?: string;
  namespace?: string;
  kube: KubeOptions;
  dsn?: string;
  pgHost?: string;
  pgPort?: number;
  /** Default: the policy's spec.reaper.idleInTransactionTimeout; 5m with --dsn. */
  olderThan?: string;
  /** Terminate; without it, only report (dry run). */
  execute: boolean;
  /** Added to the policy's spec.reaper exclusions. */
  excludeUsers: string[];
  excludeApplicationNames: string[];
}

export interface ReapReport {
  subject: { policy?: string; dsn?: string; server: string; database: string; user: string };
  dryRun: boolean;
  olderThan: string;
  excludeUsers: string[];
  excludeApplicationNames: string[];
  /** Oldest first. In a dry run, the sessions that would be terminated. */
  sessions: ReapedSession[];
  terminated: number;
}

export async function reap(options: ReapCommandOptions, io: CliIo): Promise<ReapReport> {
  const plan = options.dsn !== undefined ? planForDsn(options.dsn, options) : await planForPolicy(options, io);
  io.secret(plan.target.password);
  const olderThanMs = parseDuration(plan.olderThan);
  if (olderThanMs === undefined || olderThanMs <= 0)
    throw new CliError(`invalid --older-than "${plan.olderThan}": expected e.g. 90s, 5m or 1h30m`);

  const pools = new PostgresPools({ applicationName: CLI_APPLICATION_NAME, connectTimeoutMs: 5_000 });
  io.progress(`connecting to ${describeTarget(plan.target)}`);
  let sessions: ReapedSession[];
  try {
    sessions = await pools.withClient(plan.target, (client) =>
      reapIdleInTransaction(client, {
        database: plan.target.database,
        idleLongerThanMs: olderThanMs,
        excludeUsers: plan.excludeUsers,
        excludeApplicationNames: plan.excludeApplicationNames,
        dryRun: !options.execute,
      }),
    );
  } catch (err) {
    const message = err instanceof PostgresError ? err.message : (err as Error).message;
    throw new ReapFailed(`reaping on ${describeTarget(plan.target)} failed: ${message}`);
  } finally {
    await pools.closeAll();
  }
  sessions.sort((a, b) => b.idleSeconds - a.idleSeconds);
  return {
    subject: {
      ...plan.subject,
      server: `${plan.target.host}:${plan.target.port}`,
      database: plan.target.database,
      user: plan.target.user,
    },
    dryRun: !options.execute,
    olderThan: plan.olderThan,
    excludeUsers: plan.excludeUsers,
    excludeApplicationNames: plan.excludeApplicationNames,
    sessions,
    terminated: sessions.filter((s) => s.terminated).length,
  };
}

/** The reap itself failed (PostgreSQL unreachable, no permission): exit code 1. */
export class ReapFailed extends Error {}

interface Plan {
  target: PostgresTarget;
  subject: { policy?: string; dsn?: string };
  olderThan: string;
  excludeUsers: string[];
  excludeApplicationNames: string[];
}

async function planForPolicy(options: ReapCommandOptions, io: CliIo): Promise<Plan> {
  if (!options.policyRef) throw new CliError("reap needs a PoolPolicy (NAMESPACE/NAME, or NAME with -n) or --dsn");
  const kc = loadKubeConfig(options.kube);
  const ref = parsePolicyRef(options.policyRef, options.namespace, kc);
  io.progress(`reading PoolPolicy ${ref.namespace}/${ref.name}`);
  const loaded = await readPolicy(kc, ref.namespace, ref.name);
  const connection = await policyTarget(kc, loaded, { host: options.pgHost, port: options.pgPort });
  if (!connection.ok) throw new ReapFailed(`${connection.reason}: ${connection.message}`);
  const reaper = loaded.spec.reaper;
  return {
    target: connection.target,
    subject: { policy: loaded.key },
    olderThan: options.olderThan ?? reaper.idleInTransactionTimeout,
    excludeUsers: union(reaper.excludeUsers, options.excludeUsers),
    excludeApplicationNames: union(reaper.excludeApplicationNames, options.excludeApplicationNames),
  };
}

function planForDsn(dsn: string, options: ReapCommandOptions): Plan {
  let target: PostgresTarget;
  try {
    target = parseDsn(dsn);
  } catch (err) {
    if (err instanceof DsnError) throw new CliError(err.message);
    throw err;
  }
  return {
    target,
    subject: { dsn: redactDsn(dsn) },
    olderThan: options.olderThan ?? DEFAULT_IDLE_THRESHOLD,
    excludeUsers: union(options.excludeUsers),
    excludeApplicationNames: union(options.excludeApplicationNames),
  };
}

function union(...lists: readonly string[][]): string[] {
  return [...new Set(lists.flat())].sort();
}
