/**
 * `--dsn postgres://user:password@host:port/database?sslmode=…`: the CLI's way to look at a
 * server without a PoolPolicy. Parsed by pg-connection-string (node-pg's own parser) in its
 * libpq-compatible mode, so that sslmode means what libpq's documentation says. The password
 * never leaves this module except inside the PostgresTarget handed to the database client;
 * everything printed uses redactDsn().
 */
import { parse } from "pg-connection-string";
import type { PostgresTarget, SslMode } from "../postgres/connection.js";

const SSL_MODES: readonly SslMode[] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

export class DsnError extends Error {}

/**
 * Parses a libpq-style URL. The password may also come from PGPASSWORD, so that it need not
 * appear on a command line (where `ps` and shell history would keep it).
 */
export function parseDsn(dsn: string, env: NodeJS.ProcessEnv = process.env): PostgresTarget {
  // The parser resolves anything against a base URL and reads socket paths and key=value strings
  // too: the CLI takes URLs only, so the scheme is checked first.
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(dsn)?.[1]?.toLowerCase();
  if (scheme === undefined) throw new DsnError("invalid --dsn: expected postgres://user:password@host:port/database");
  if (scheme !== "postgres" && scheme !== "postgresql") {
    throw new DsnError(`invalid --dsn: the scheme must be postgres:// or postgresql://, not ${scheme}://`);
  }
  const sslMode = (searchParam(dsn, "sslmode") ?? "prefer") as SslMode;
  if (!SSL_MODES.includes(sslMode)) throw new DsnError(`invalid --dsn: sslmode must be one of ${SSL_MODES.join(", ")}`);
  if (sslMode === "verify-ca") {
    // libpq's verify-ca checks the certificate against the CA file named by sslrootcert, which
    // the CLI does not read; verify-full checks it against the system's CAs and the host name.
    throw new DsnError(
      "invalid --dsn: sslmode=verify-ca needs a CA file, which the CLI does not read: use verify-full",
    );
  }
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(dsn, { useLibpqCompat: true });
  } catch {
    // Never echo the text or the parser's message: either may hold the password.
    throw new DsnError("invalid --dsn: expected postgres://user:password@host:port/database");
  }
  if (!parsed.host) throw new DsnError("invalid --dsn: no host");
  const user = parsed.user || env.PGUSER;
  if (!user) throw new DsnError("invalid --dsn: no user (postgres://USER@host/database, or PGUSER)");
  const port = parsed.port ? Number(parsed.port) : 5432;
  if (!Number.isInteger(port) || port < 1 || port > 65_535)
    throw new DsnError("invalid --dsn: the port must be 1 to 65535");
  return {
    host: parsed.host,
    port,
    database: parsed.database || env.PGDATABASE || "postgres",
    sslMode,
    user,
    password: parsed.password || env.PGPASSWORD || "",
  };
}

/** A query parameter, read before the parser sees the DSN (its libpq mode refuses verify-ca without a CA file). */
function searchParam(dsn: string, name: string): string | undefined {
  try {
    return new URL(dsn).searchParams.get(name) ?? undefined;
  } catch {
    throw new DsnError("invalid --dsn: expected postgres://user:password@host:port/database");
  }
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
