/**
 * Who holds the connections: the session breakdown `diagnose` shows next to the facts of
 * src/postgres/inspect.ts. Client backends only (walsenders, autovacuum and background
 * workers have slots of their own), the same population inspectServer counts, so the
 * numbers add up to the usage the operator reports. Read-only.
 */
import type pg from "pg";

/** One (database, user, application) group of client backends. */
export interface SessionGroup {
  database: string;
  user: string;
  applicationName: string;
  total: number;
  active: number;
  idle: number;
  /** "idle in transaction" and "idle in transaction (aborted)". */
  idleInTransaction: number;
  /** Anything else: fastpath function call, disabled, or not visible to our role. */
  other: number;
}

export interface IdleInTransactionSession {
  pid: number;
  database: string;
  user: string;
  applicationName: string;
  clientAddress: string | null;
  state: string;
  /** Seconds since the session went idle (state_change), what the reaper and the server timeout measure. */
  idleSeconds: number;
  /** Seconds since its transaction began. */
  transactionSeconds: number | null;
  /** The last statement, shortened to one line and with password literals masked. */
  query: string;
}

const GROUPS_SQL = `
SELECT coalesce(datname, '') AS database,
       coalesce(usename, '') AS "user",
       application_name,
       count(*)::int AS total,
       count(*) FILTER (WHERE state = 'active')::int AS active,
       count(*) FILTER (WHERE state = 'idle')::int AS idle,
       count(*) FILTER (WHERE state IN ('idle in transaction', 'idle in transaction (aborted)'))::int AS idle_in_transaction
  FROM pg_stat_activity
 WHERE backend_type = 'client backend'
 GROUP BY 1, 2, 3
 ORDER BY total DESC, 1, 2, 3`;

const IDLE_IN_TRANSACTION_SQL = `
SELECT pid,
       coalesce(datname, '') AS database,
       coalesce(usename, '') AS "user",
       application_name,
       host(client_addr) AS client_address,
       state,
       extract(epoch FROM now() - state_change)::float8 AS idle_seconds,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,
       left(query, 1000) AS query
  FROM pg_stat_activity
 WHERE backend_type = 'client backend'
   AND state IN ('idle in transaction', 'idle in transaction (aborted)')
 ORDER BY state_change
 LIMIT $1`;

/** Counted separately from the listing, so that "12 sessions over 5m" is right even when only 10 are listed. */
const OLDER_THAN_SQL = `
SELECT count(*)::int AS n
  FROM pg_stat_activity
 WHERE backend_type = 'client backend'
   AND state IN ('idle in transaction', 'idle in transaction (aborted)')
   AND state_change < now() - make_interval(secs => $1::float8 / 1000)`;

export async function sessionGroups(client: pg.PoolClient): Promise<SessionGroup[]> {
  const rows = (await client.query(GROUPS_SQL)).rows;
  return rows.map((r) => ({
    database: r.database,
    user: r.user,
    applicationName: r.application_name,
    total: r.total,
    active: r.active,
    idle: r.idle,
    idleInTransaction: r.idle_in_transaction,
    other: r.total - r.active - r.idle - r.idle_in_transaction,
  }));
}

export async function oldestIdleInTransaction(
  client: pg.PoolClient,
  limit: number,
): Promise<IdleInTransactionSession[]> {
  const rows = (await client.query(IDLE_IN_TRANSACTION_SQL, [limit])).rows;
  return rows.map((r) => ({
    pid: r.pid,
    database: r.database,
    user: r.user,
    applicationName: r.application_name,
    clientAddress: r.client_address,
    state: r.state,
    idleSeconds: Math.round(r.idle_seconds),
    transactionSeconds: r.transaction_seconds === null ? null : Math.round(r.transaction_seconds),
    query: shortenQuery(r.query ?? ""),
  }));
}

export async function countIdleInTransactionOlderThan(client: pg.PoolClient, ms: number): Promise<number> {
  return (await client.query(OLDER_THAN_SQL, [ms])).rows[0].n;
}

/** Sums the groups by one key: the per-database or per-user view of the same sessions. */
export function rollUp(
  groups: readonly SessionGroup[],
  key: (g: SessionGroup) => string,
): (Omit<SessionGroup, "database" | "user" | "applicationName"> & { key: string })[] {
  const sums = new Map<string, Omit<SessionGroup, "database" | "user" | "applicationName"> & { key: string }>();
  for (const g of groups) {
    const k = key(g);
    const s = sums.get(k) ?? { key: k, total: 0, active: 0, idle: 0, idleInTransaction: 0, other: 0 };
    s.total += g.total;
    s.active += g.active;
    s.idle += g.idle;
    s.idleInTransaction += g.idleInTransaction;
    s.other += g.other;
    sums.set(k, s);
  }
  return [...sums.values()].sort((a, b) => b.total - a.total || a.key.localeCompare(b.key));
}

/**
 * One line of at most `max` characters. Password literals are masked first: a statement such
 * as ALTER ROLE … PASSWORD '…' stays in pg_stat_activity.query after it ran.
 */
export function shortenQuery(query: string, max = 200): string {
  const masked = query.replace(/(password\s*(=\s*)?)'(?:[^']|'')*'/gi, "$1'***'");
  const oneLine = masked.replace(/\s+/g, " ").trim();
  return oneLine.length <= max ? oneLine : `${oneLine.slice(0, max - 1)}…`;
}
