/**
 * PgBouncer's configuration, rendered from the pooler's sizes (server/pooler-plan.ts). Pure:
 * what is rendered here is written by whoever runs PgBouncer (the test harness today, the
 * operator's ConfigMap and Secret later) and applied with RELOAD when it may be.
 *
 * Two files, kept apart on purpose:
 *   - pgbouncer.ini: sizes, pool mode, the server's address. No secret in it, ever: it may be
 *     shown, logged, diffed and put in a ConfigMap.
 *   - the auth_file (userlist.txt): the one secret, the login of the Secret the policy already
 *     names (spec.postgres.credentialsSecret). It belongs in a Secret and nowhere else.
 *
 * Authentication: auth_query, with that login as auth_user. PgBouncer looks each app's SCRAM
 * verifier up in pg_shadow through it and, since 1.14, logs into the server as the app with the
 * keys the client's own SCRAM exchange proved. Why this and not an auth_file of every app login:
 * the operator does not know the apps' passwords and should not; with auth_query the apps keep
 * their own roles and passwords (so a role's CONNECTION LIMIT still holds each app to its share),
 * a password change needs no new config, and the only secret the pooler holds is one the
 * operator already has. The price: auth_user must read pg_shadow (a superuser, which the
 * operator's login usually is to run ALTER SYSTEM), and the pooler pod holds that password.
 * A dedicated role with a SECURITY DEFINER lookup function, as CloudNativePG does, is the
 * better end state; docs/pooler.md lists it as not done.
 */
import type { PoolPolicySpec } from "../api/schema.js";
import type { PostgresTarget } from "../postgres/connection.js";
import type { PoolerSizing } from "../server/pooler-plan.js";

export interface PgBouncerConfigInput {
  /** The server and the auth_user's login (server/credentials.ts policyTarget). */
  target: PostgresTarget;
  /** Databases served (server/pooler.ts), one [databases] entry each. */
  databases: readonly string[];
  sizing: PoolerSizing;
  poolMode: NonNullable<PoolPolicySpec["pooler"]>["poolMode"];
  listen: { address: string; port: number };
  /** Where the auth_file will be, as PgBouncer sees the path. */
  authFile: string;
}

export type PgBouncerConfig =
  | {
      ok: true;
      /** pgbouncer.ini: no secret. */
      ini: string;
      /** The auth_file's content: the auth_user's password. Never log it. */
      userlist: string;
      /** The [pgbouncer] settings as rendered, for comparing two configs (changeKind). */
      settings: Record<string, string>;
    }
  | { ok: false; message: string };

/**
 * Names written into pgbouncer.ini unquoted. PgBouncer's ini and connect-string syntax has no
 * escaping rule we could rely on for arbitrary text, so anything else is refused with a message
 * rather than rendered into a config that means something else.
 */
const PLAIN = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const HOST = /^[A-Za-z0-9_.:-]+$/;

/** The auth_file's quoting: fields in double quotes, a double quote doubled. */
function quoteUserlist(field: string): string {
  return `"${field.replaceAll('"', '""')}"`;
}

/** Renders pgbouncer.ini and the auth_file, or says which name cannot be rendered (never the password). */
export function renderPgBouncerConfig(input: PgBouncerConfigInput): PgBouncerConfig {
  const { target, sizing } = input;
  if (!HOST.test(target.host)) {
    return {
      ok: false,
      message: `the server's host ${JSON.stringify(target.host)} cannot be written into pgbouncer.ini`,
    };
  }
  if (!PLAIN.test(target.user)) {
    return {
      ok: false,
      message: `the login ${JSON.stringify(target.user)} of spec.postgres.credentialsSecret cannot be PgBouncer's auth_user and admin user (letters, digits, _ . - only)`,
    };
  }
  const databases = input.databases.length > 0 ? input.databases : [target.database];
  const unfit = databases.find((d) => !PLAIN.test(d));
  if (unfit !== undefined) {
    return { ok: false, message: `the database name ${JSON.stringify(unfit)} cannot be written into pgbouncer.ini` };
  }
  const settings: Record<string, string> = {
    listen_addr: input.listen.address,
    listen_port: String(input.listen.port),
    // No Unix socket: the pods' filesystem is read-only, and clients come over the Service.
    unix_socket_dir: "",
    auth_type: "scram-sha-256",
    auth_file: input.authFile,
    auth_user: target.user,
    auth_query: "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
    admin_users: target.user,
    pool_mode: input.poolMode === "Transaction" ? "transaction" : "session",
    // The sizes (pooler-plan.ts): max_db_connections is the cap the budget holds; the pools
    // of every user of a database share it.
    max_db_connections: String(sizing.maxDbConnections),
    default_pool_size: String(sizing.defaultPoolSize),
    reserve_pool_size: String(sizing.reservePoolSize),
    max_client_conn: String(sizing.maxClientConn),
    max_user_connections: "0",
    min_pool_size: "0",
    // Clients wait for a server connection rather than fail; after this long they get an error
    // that names the wait, not "too many clients".
    query_wait_timeout: "120",
    server_tls_sslmode: target.sslMode,
    // JDBC and others send it at startup; PgBouncer would refuse the client otherwise.
    ignore_startup_parameters: "extra_float_digits",
    log_connections: "0",
    log_disconnections: "0",
    logfile: "",
    pidfile: "",
  };
  const lines = [
    "; Rendered by poolpolicy-operator from the server's connection budget (docs/pooler.md).",
    `; ${sizing.perPod} server connections per pod × ${sizing.pods} worst-case pods ≤ ${sizing.left} left on the server.`,
    "[databases]",
    ...databases.map((d) => `${d} = host=${target.host} port=${target.port} dbname=${d}`),
    "",
    "[pgbouncer]",
    ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
    "",
  ];
  const userlist = `${quoteUserlist(target.user)} ${quoteUserlist(target.password)}\n`;
  return { ok: true, ini: lines.join("\n"), userlist, settings };
}

/**
 * Settings PgBouncer reads only at start: a change to any of them needs a new process (a pod
 * roll). Everything else, pool sizes and pool_mode and [databases] included, is taken by RELOAD.
 */
const RESTART_SETTINGS = new Set(["listen_addr", "listen_port", "unix_socket_dir", "pidfile", "user", "so_reuseport"]);

export type ConfigChange = { kind: "none" } | { kind: "reload"; keys: string[] } | { kind: "restart"; keys: string[] };

/** How to apply `next` where `current` runs: nothing, RELOAD on the admin console, or a new process. */
export function changeKind(
  current: Pick<Extract<PgBouncerConfig, { ok: true }>, "ini" | "settings">,
  next: Pick<Extract<PgBouncerConfig, { ok: true }>, "ini" | "settings">,
): ConfigChange {
  const keys = [...new Set([...Object.keys(current.settings), ...Object.keys(next.settings)])]
    .filter((k) => current.settings[k] !== next.settings[k])
    .sort();
  const restart = keys.filter((k) => RESTART_SETTINGS.has(k));
  if (restart.length > 0) return { kind: "restart", keys: restart };
  if (keys.length > 0 || current.ini !== next.ini) return { kind: "reload", keys };
  return { kind: "none" };
}

/** Settings whose lowering leaves connections above the new cap open until they are recycled. */
const CAPS = ["max_db_connections", "default_pool_size", "reserve_pool_size"];

/**
 * The admin console commands that apply a reloadable change without dropping a client: RELOAD,
 * and RECONNECT when a cap shrank. PgBouncer checks max_db_connections only when it opens a
 * server connection, so after a RELOAD that lowers it the connections already open stay above
 * the new cap until server_idle_timeout; RECONNECT closes each of them once its client releases
 * it (session mode: at disconnect; transaction mode: at the transaction's end), and new ones
 * open under the new cap. Empty when the change needs a restart (changeKind) or is none.
 */
export function reloadCommands(
  current: Pick<Extract<PgBouncerConfig, { ok: true }>, "ini" | "settings">,
  next: Pick<Extract<PgBouncerConfig, { ok: true }>, "ini" | "settings">,
): string[] {
  if (changeKind(current, next).kind !== "reload") return [];
  const shrank = CAPS.some((k) => Number(next.settings[k]) < Number(current.settings[k]));
  return shrank ? ["RELOAD", "RECONNECT"] : ["RELOAD"];
}
