/**
 * `--dsn postgres://user:password@host:port/database?sslmode=…`: the CLI's way to look at a
 * server without a PoolPolicy. The password never leaves this module except inside the
 * PostgresTarget handed to the database client; everything printed uses redactDsn().
 */
import type { PostgresTarget, SslMode } from "../postgres/connection.js";

const SSL_MODES: readonly SslMode[] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

export class DsnError extends Error {}

/**
 * Parses a libpq-style URL. The password may also come from PGPASSWORD, so that it need not
 * appear on a command line (where `ps` and shell history would keep it).
 */
export function parseDsn(dsn: string, env: NodeJS.ProcessEnv = process.env): PostgresTarget {
  let url: URL;
  try {
    url = new URL(dsn);
  } catch {
    // Never echo the text: it may hold a password.
    throw new DsnError("invalid --dsn: expected postgres://user:password@host:port/database");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new DsnError(`invalid --dsn: the scheme must be postgres:// or postgresql://, not ${url.protocol}//`);
  }
  if (!url.hostname) throw new DsnError("invalid --dsn: no host");
  const user = decodeURIComponent(url.username) || env.PGUSER;
  if (!user) throw new DsnError("invalid --dsn: no user (postgres://USER@host/database, or PGUSER)");
  const sslMode = (url.searchParams.get("sslmode") ?? "prefer") as SslMode;
  if (!SSL_MODES.includes(sslMode)) throw new DsnError(`invalid --dsn: sslmode must be one of ${SSL_MODES.join(", ")}`);
  const port = url.port ? Number(url.port) : 5432;
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port,
    database: decodeURIComponent(url.pathname.replace(/^\//, "")) || env.PGDATABASE || "postgres",
    sslMode,
    user,
    password: decodeURIComponent(url.password) || env.PGPASSWORD || "",
  };
}

/**
 * The DSN without its password, for a command line the reader can paste (the password then
 * comes from PGPASSWORD): postgres://app@db:5432/appdb.
 */
export function dsnWithoutPassword(dsn: string): string {
  try {
    const url = new URL(dsn);
    url.password = "";
    return url.toString();
  } catch {
    return "[unparseable dsn]";
  }
}

/** The DSN as it may be printed: postgres://app:***@db:5432/appdb. */
export function redactDsn(dsn: string): string {
  try {
    const url = new URL(dsn);
    if (url.password) url.password = "***";
    return url.toString();
  } catch {
    return "[unparseable dsn]";
  }
}
