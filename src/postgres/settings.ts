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
    const e = err as { code?: string; message?: string };
    if (/ALTER SYSTEM is not allowed/i.test(e.message ?? "")) {
      throw new AlterSystemError(
        "AlterSystemDisabled",
        `ALTER SYSTEM is disabled on this server (allow_alter_system = off): set max_connections through the server's configuration instead`,
        e.code,
      );
    }
    if (e.code === "42501") {
      throw new AlterSystemError(
        "PermissionDenied",
        `the operator's role may not change max_connections: ${e.message}. Grant it with ` +
          "`GRANT ALTER SYSTEM ON PARAMETER max_connections TO <role>` (PostgreSQL 15+) or use a superuser",
        e.code,
      );
    }
    throw err;
  }
  await client.query("SELECT pg_reload_conf()");
}
