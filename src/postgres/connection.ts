/**
 * The operator's own connections to PostgreSQL: one small pool per server and login, shared by
 * every policy that points there, health-checked and recreated after failures.
 *
 * The key includes a digest of the password, so a rotated Secret gets a fresh pool and the old
 * one is closed. Errors are rethrown as PostgresError with a reason a condition can carry and a
 * message that never contains the password (pg's messages do not; we add none).
 */
import { createHash } from "node:crypto";
import pg from "pg";

export type SslMode = "disable" | "prefer" | "require" | "verify-ca" | "verify-full";

export interface PostgresTarget {
  host: string;
  port: number;
  database: string;
  sslMode: SslMode;
  user: string;
  password: string;
}

/** Why talking to PostgreSQL failed, in words a condition's reason can use. */
export type PostgresFailure =
  | "AuthenticationFailed"
  | "ConnectionRefused"
  | "HostNotFound"
  | "Timeout"
  | "TooManyConnections"
  | "DatabaseNotFound"
  | "PermissionDenied"
  | "ServerShuttingDown"
  | "QueryFailed";

export class PostgresError extends Error {
  constructor(
    readonly reason: PostgresFailure,
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

export function describeTarget(t: Pick<PostgresTarget, "host" | "port" | "database" | "user">): string {
  return `${t.user}@${t.host}:${t.port}/${t.database}`;
}

/** Maps a pg or socket error to a PostgresError (SQLSTATE codes: PostgreSQL appendix A). */
export function classifyPostgresError(err: unknown, target: PostgresTarget): PostgresError {
  if (err instanceof PostgresError) return err;
  const e = err as { code?: string; message?: string };
  const where = describeTarget(target);
  const text = e.message ?? String(err);
  switch (e.code) {
    case "28P01":
    case "28000":
      return new PostgresError("AuthenticationFailed", `authentication failed for ${where}: ${text}`, e.code);
    case "53300":
      return new PostgresError(
        "TooManyConnections",
        `${where}: ${text} (the operator's role should own a reserved slot: a superuser, or on PostgreSQL 16+ a member of pg_use_reserved_connections)`,
        e.code,
      );
    case "3D000":
      return new PostgresError("DatabaseNotFound", `${where}: ${text}`, e.code);
    case "42501":
      return new PostgresError("PermissionDenied", `${where}: ${text}`, e.code);
    case "57P01":
    case "57P02":
    case "57P03":
      return new PostgresError("ServerShuttingDown", `${where}: ${text}`, e.code);
    case "ECONNREFUSED":
      return new PostgresError(
        "ConnectionRefused",
        `cannot connect to ${target.host}:${target.port}: connection refused`,
        e.code,
      );
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return new PostgresError("HostNotFound", `cannot resolve host ${target.host}`, e.code);
    case "ETIMEDOUT":
      return new PostgresError("Timeout", `connecting to ${target.host}:${target.port} timed out`, e.code);
  }
  if (/timeout/i.test(text)) return new PostgresError("Timeout", `${where}: ${text}`, e.code);
  if (/terminat|ECONNRESET|Connection terminated/i.test(text)) {
    return new PostgresError("ServerShuttingDown", `${where}: connection lost: ${text}`, e.code);
  }
  return new PostgresError("QueryFailed", `${where}: ${text}`, e.code);
}

function sslOption(mode: SslMode): pg.ClientConfig["ssl"] {
  switch (mode) {
    case "disable":
    case "prefer": // tried with TLS first by the pool registry, see connect()
      return false;
    case "require":
      return { rejectUnauthorized: false };
    case "verify-ca":
    case "verify-full":
      return { rejectUnauthorized: true };
  }
}

/** Connections the operator keeps to one server at most: part of every server's budget reserve. */
export const OPERATOR_POOL_SIZE = 2;

export class PostgresPools {
  private readonly pools = new Map<string, pg.Pool>();
  /** Servers that answered "prefer" without TLS: remembered so we do not retry TLS every time. */
  private readonly noTls = new Set<string>();

  constructor(private readonly options: { applicationName?: string; connectTimeoutMs?: number } = {}) {}

  /**
   * Runs `work` on a pooled connection. A connection-level failure discards the pool, so the
   * next call starts from fresh connections (after a PostgreSQL restart, every pooled
   * connection is dead), and the failure is retried once right away on a new pool.
   */
  async withClient<T>(target: PostgresTarget, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    try {
      return await this.runOnce(target, work);
    } catch (err) {
      const failure = classifyPostgresError(err, target);
      if (failure.reason !== "ServerShuttingDown") throw failure;
      await this.discard(target);
      try {
        return await this.runOnce(target, work);
      } catch (retryErr) {
        throw classifyPostgresError(retryErr, target);
      }
    }
  }

  async discard(target: PostgresTarget): Promise<void> {
    const key = poolKey(target);
    const pool = this.pools.get(key);
    this.pools.delete(key);
    await pool?.end().catch(() => undefined);
  }

  async closeAll(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
  }

  private async runOnce<T>(target: PostgresTarget, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const pool = await this.poolFor(target);
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      await this.discard(target);
      throw err;
    }
    let broken = false;
    // A checked-out client whose server goes away (a restart's fast shutdown sends 57P01) emits
    // 'error' between queries; with no listener, that event would kill the process.
    const onError = () => {
      broken = true;
    };
    client.on("error", onError);
    try {
      return await work(client);
    } catch (err) {
      broken ||= isConnectionLevel(err);
      throw err;
    } finally {
      client.off("error", onError);
      client.release(broken);
    }
  }

  private async poolFor(target: PostgresTarget): Promise<pg.Pool> {
    const key = poolKey(target);
    const existing = this.pools.get(key);
    if (existing) return existing;
    // A rotated password or changed server: drop pools of the same host/user under an old key.
    for (const [otherKey, pool] of this.pools) {
      if (otherKey.startsWith(serverPrefix(target))) {
        this.pools.delete(otherKey);
        void pool.end().catch(() => undefined);
      }
    }
    const pool = await this.createPool(target);
    this.pools.set(key, pool);
    return pool;
  }

  private async createPool(target: PostgresTarget): Promise<pg.Pool> {
    const base: pg.PoolConfig = {
      host: target.host,
      port: target.port,
      database: target.database,
      user: target.user,
      password: target.password,
      application_name: this.options.applicationName ?? "poolpolicy-operator",
      connectionTimeoutMillis: this.options.connectTimeoutMs ?? 5_000,
      idleTimeoutMillis: 30_000,
      max: OPERATOR_POOL_SIZE,
      ssl: sslOption(target.sslMode),
    };
    if (target.sslMode !== "prefer" || this.noTls.has(serverPrefix(target))) return guard(new pg.Pool(base));
    // sslmode=prefer: TLS when the server offers it, plain otherwise (node-pg has no "prefer").
    const tls = guard(new pg.Pool({ ...base, ssl: { rejectUnauthorized: false } }));
    try {
      const probe = await tls.connect();
      probe.release();
      return tls;
    } catch (err) {
      await tls.end().catch(() => undefined);
      if (!/does not support SSL/i.test((err as Error).message ?? "")) throw err;
      this.noTls.add(serverPrefix(target));
      return guard(new pg.Pool(base));
    }
  }
}

/** An idle pooled client whose server went away emits 'error'; unhandled, that would kill the process. */
function guard(pool: pg.Pool): pg.Pool {
  pool.on("error", () => undefined);
  return pool;
}

function serverPrefix(t: PostgresTarget): string {
  return `${t.host}:${t.port}/${t.database}/${t.user}/`;
}

function poolKey(t: PostgresTarget): string {
  const secretDigest = createHash("sha256").update(t.password).digest("hex").slice(0, 16);
  return `${serverPrefix(t)}${t.sslMode}/${secretDigest}`;
}

function isConnectionLevel(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (e.code && /^(08|57P)/.test(e.code)) return true;
  return /Connection terminated|ECONNRESET|EPIPE|not queryable/i.test(e.message ?? "");
}
