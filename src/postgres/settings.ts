/**
 * Changing max_connections: ALTER SYSTEM writes postgresql.auto.conf, pg_reload_conf() makes the
 * server notice (pending_restart turns true), and only a postmaster restart applies it.
 *
 * ALTER SYSTEM takes no bind parameters, so the value is checked to be an integer in
 * PostgreSQL's range and rendered as a number; no text from a spec ever reaches the statement.
 */
import type pg from "pg";
import { MAX_CONNECTIONS_MAX, MAX_CONNECTIONS_MIN } from "../api/schema.js";
import { PostgresError } from "./connection.js";

export function renderAlterMaxConnections(value: number): string {
  if (!Number.isSafeInteger(value) || value < MAX_CONNECTIONS_MIN || value > MAX_CONNECTIONS_MAX) {
    throw new RangeError(
      `max_connections must be an integer from ${MAX_CONNECTIONS_MIN} to ${MAX_CONNECTIONS_MAX}, got ${value}`,
    );
  }
  return `ALTER SYSTEM SET max_connections = ${value.toFixed(0)}`;
}

export type AlterFailure = "PermissionDenied" | "AlterSystemDisabled";

export class AlterSystemError extends PostgresError {
  constructor(
    readonly failure: AlterFailure,
    message: string,
    code?: string,
  ) {
    super("PermissionDenied", message, code);
  }
}

/** ALTER SYSTEM SET max_connections = value; SELECT pg_reload_conf(). Not inside a transaction. */
export async function alterMaxConnections(client: pg.PoolClient, value: number): Promise<void> {
  const statement = renderAlterMaxConnections(value);
  try {
    await client.query(statement);
  } catch (err) {
    throw await explainAlterSystemFailure(client, err, "max_connections", "restart");
  }
  await reloadConfiguration(client, "max_connections");
}

/**
 * SELECT pg_reload_conf() after an ALTER SYSTEM of `parameter`. The function is a superuser's
 * unless granted, and GRANT ALTER SYSTEM ON PARAMETER does not include it: a role with that
 * grant alone has just written postgresql.auto.conf and is refused here.
 */
export async function reloadConfiguration(client: pg.PoolClient, parameter: string): Promise<void> {
  try {
    await client.query("SELECT pg_reload_conf()");
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code !== "42501") throw err;
    throw new AlterSystemError(
      "PermissionDenied",
      `the operator's role changed ${parameter} with ALTER SYSTEM but may not reload the configuration: ${e.message}. ` +
        "Grant it with `GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <role>`",
      e.code,
    );
  }
}

/**
 * A failed ALTER SYSTEM SET `parameter` as an AlterSystemError saying what to do, or the error
 * as it was when it is neither refusal. What to do depends on the server's major (asked on the
 * same connection: the failed statement ran outside a transaction, so the session is usable):
 * - 17+ can switch ALTER SYSTEM off (allow_alter_system = off; "ALTER SYSTEM is not allowed in
 *   this environment", SQLSTATE 55000): the value then belongs in the server's configuration;
 * - 15+ lets a superuser grant the right on one parameter (GRANT ALTER SYSTEM ON PARAMETER);
 * - 13 and 14 have no such grant: only a superuser may run ALTER SYSTEM at all.
 */
export async function explainAlterSystemFailure(
  client: pg.PoolClient,
  err: unknown,
  parameter: string,
  appliedBy: "restart" | "reload",
): Promise<unknown> {
  const e = err as { code?: string; message?: string };
  if (/ALTER SYSTEM is not allowed/i.test(e.message ?? "")) {
    return new AlterSystemError(
      "AlterSystemDisabled",
      `ALTER SYSTEM is disabled on this server (allow_alter_system = off): set ${parameter} in the server's ` +
        `configuration (postgresql.conf, or the parameters of whatever manages PostgreSQL) and ${appliedBy} it, ` +
        "or set allow_alter_system = on",
      e.code,
    );
  }
  if (e.code !== "42501") return err;
  const versionNum = Number((await client.query("SELECT current_setting('server_version_num') AS v")).rows[0].v);
  const remedy =
    versionNum >= 150_000
      ? `Grant it with \`GRANT ALTER SYSTEM ON PARAMETER ${parameter} TO <role>\` and ` +
        "`GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <role>`, or use a superuser"
      : `On PostgreSQL ${Math.floor(versionNum / 10_000)} only a superuser may run ALTER SYSTEM ` +
        "(GRANT ALTER SYSTEM ON PARAMETER exists from PostgreSQL 15): give the operator a superuser's credentials";
  return new AlterSystemError(
    "PermissionDenied",
    `the operator's role may not change ${parameter}: ${e.message}. ${remedy}`,
    e.code,
  );
}
