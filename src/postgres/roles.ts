/**
 * A role's CONNECTION LIMIT (issue 16.1): read it with the role's sessions, and set it.
 *
 * The role name comes from a spec, so it never becomes SQL text of its own: it is a bound
 * parameter where PostgreSQL takes one, and an identifier quoted by the driver in ALTER ROLE
 * (which takes no parameters). test/integration/postgres/role-limits.test.ts fuzzes names with
 * quotes, spaces, mixed case and backslashes against a real server.
 */
import type pg from "pg";

/** What PostgreSQL says about the role a policy names. */
export interface RoleFacts {
  name: string;
  exists: boolean;
  superuser: boolean;
  /** The operator logs in as this role. */
  isOperator: boolean;
  /** rolconnlimit: -1 means no limit. */
  connectionLimit: number;
  /** Sessions of the role, every database counted (what PostgreSQL compares with the limit). */
  connections: number;
}

/**
 * Sessions are counted as PostgreSQL counts them against the limit: every database, client
 * backends only, not background workers. pg_stat_activity shows the role of other users'
 * sessions to anyone, but their backend_type only to superusers and pg_read_all_stats (NULL
 * otherwise, as tried on PostgreSQL 15): a hidden one is counted as the client backend it almost
 * always is, rather than the count dropping to 0 for an operator role without that grant.
 */
const ROLE_SQL = `
SELECT r.rolsuper AS superuser,
       r.rolconnlimit AS connection_limit,
       r.rolname = current_user AS is_operator,
       (SELECT count(*)::int FROM pg_stat_activity a
         WHERE a.usename = r.rolname AND coalesce(a.backend_type, 'client backend') = 'client backend') AS connections
  FROM pg_roles r WHERE r.rolname = $1`;

export async function inspectRole(client: pg.PoolClient, name: string): Promise<RoleFacts> {
  const row = (await client.query(ROLE_SQL, [name])).rows[0];
  if (!row) return { name, exists: false, superuser: false, isOperator: false, connectionLimit: -1, connections: 0 };
  return {
    name,
    exists: true,
    superuser: row.superuser,
    isOperator: row.is_operator,
    connectionLimit: row.connection_limit,
    connections: row.connections,
  };
}

/** ALTER ROLE … CONNECTION LIMIT n (-1: no limit). */
export async function setConnectionLimit(client: pg.PoolClient, name: string, limit: number): Promise<void> {
  if (!Number.isSafeInteger(limit) || limit < -1 || limit > 2_147_483_647) {
    throw new RangeError(`a CONNECTION LIMIT must be an integer from -1 to 2147483647, got ${limit}`);
  }
  await client.query(`ALTER ROLE ${client.escapeIdentifier(name)} CONNECTION LIMIT ${limit.toFixed(0)}`);
}
