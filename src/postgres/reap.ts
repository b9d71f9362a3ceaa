/**
 * Terminating sessions left "idle in transaction": they hold locks and a connection slot while
 * doing nothing, a classic cause of "too many clients".
 *
 * Select and terminate happen in ONE statement, with the idleness condition evaluated in it, so
 * a session that turned active is not killed from a stale list of pids. Idleness is measured
 * like idle_in_transaction_session_timeout does, from state_change. Never touched: other
 * databases, non-client backends (walsenders, autovacuum, workers), our own session, excluded
 * users and application names, and superuser sessions when we are not superuser (terminating
 * one would fail the whole statement).
 */
import type pg from "pg";

export interface ReapOptions {
  database: string;
  idleLongerThanMs: number;
  excludeUsers: string[];
  excludeApplicationNames: string[];
  /** Report the candidates, terminate nothing. */
  dryRun: boolean;
}

export interface ReapedSession {
  pid: number;
  user: string | null;
  applicationName: string;
  clientAddress: string | null;
  idleSeconds: number;
  terminated: boolean;
}

export const REAP_SQL = `
SELECT s.pid,
       s.usename AS user,
       s.application_name,
       host(s.client_addr) AS client_address,
       extract(epoch FROM now() - s.state_change)::float8 AS idle_seconds,
       CASE WHEN $5::boolean THEN false ELSE pg_terminate_backend(s.pid) END AS terminated
  FROM pg_stat_activity s
 WHERE s.backend_type = 'client backend'
   AND s.state IN ('idle in transaction', 'idle in transaction (aborted)')
   AND s.state_change < now() - make_interval(secs => $1::float8 / 1000)
   AND s.datname = $2
   AND s.pid <> pg_backend_pid()
   AND NOT (coalesce(s.usename, '') = ANY($3::text[]))
   AND NOT (s.application_name = ANY($4::text[]))
   AND (NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = s.usesysid), false)
        OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user))`;

export async function reapIdleInTransaction(client: pg.PoolClient, options: ReapOptions): Promise<ReapedSession[]> {
  const result = await client.query(REAP_SQL, [
    options.idleLongerThanMs,
    options.database,
    options.excludeUsers,
    options.excludeApplicationNames,
    options.dryRun,
  ]);
  return result.rows.map((r) => ({
    pid: r.pid,
    user: r.user,
    applicationName: r.application_name,
    clientAddress: r.client_address,
    idleSeconds: Math.round(r.idle_seconds),
    terminated: r.terminated,
  }));
}
