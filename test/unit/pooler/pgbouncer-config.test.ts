/**
 * pgbouncer.ini and the auth_file (src/pooler/pgbouncer-config.ts): the sizes as planned, the
 * secret only in the auth_file, names refused rather than mis-rendered, and which changes a
 * RELOAD can apply.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  changeKind,
  type PgBouncerConfigInput,
  reloadCommands,
  renderPgBouncerConfig,
} from "../../../src/pooler/pgbouncer-config.js";
import type { PoolerSizing } from "../../../src/server/pooler-plan.js";

const sizing: PoolerSizing = {
  kind: "sized",
  pods: 2,
  left: 35,
  perPod: 17,
  maxDbConnections: 17,
  defaultPoolSize: 15,
  reservePoolSize: 2,
  maxClientConn: 305,
};

const input = (over: Partial<PgBouncerConfigInput> = {}): PgBouncerConfigInput => ({
  target: {
    host: "pg.db.svc",
    port: 5432,
    database: "app",
    sslMode: "prefer",
    user: "operator",
    password: 's3cret "quoted" \\ pass',
  },
  databases: ["app", "reports"],
  sizing,
  poolMode: "Session",
  listen: { address: "0.0.0.0", port: 6432 },
  authFile: "/etc/pgbouncer/userlist.txt",
  ...over,
});

function rendered(over: Partial<PgBouncerConfigInput> = {}) {
  const c = renderPgBouncerConfig(input(over));
  if (!c.ok) throw new Error(c.message);
  return c;
}

describe("pgbouncer.ini", () => {
  it("carries the planned sizes, the pool mode and one entry per database", () => {
    const c = rendered();
    expect(c.settings).toMatchObject({
      max_db_connections: "17",
      default_pool_size: "15",
      reserve_pool_size: "2",
      max_client_conn: "305",
      pool_mode: "session",
      auth_type: "scram-sha-256",
      auth_user: "operator",
      admin_users: "operator",
      auth_file: "/etc/pgbouncer/userlist.txt",
      server_tls_sslmode: "prefer",
    });
    expect(c.ini).toContain("app = host=pg.db.svc port=5432 dbname=app\n");
    expect(c.ini).toContain("reports = host=pg.db.svc port=5432 dbname=reports\n");
    expect(rendered({ poolMode: "Transaction" }).settings.pool_mode).toBe("transaction");
  });

  it("keeps the password out of the ini and puts it, quoted, in the auth_file only", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 40 }), (password) => {
        const c = renderPgBouncerConfig({ ...input(), target: { ...input().target, password } });
        if (!c.ok) throw new Error(c.message);
        // A password that is also a word of the config (e.g. "0") proves nothing; a long one must not appear.
        if (password.length >= 8) expect(c.ini).not.toContain(password);
        expect(c.userlist).toBe(`"operator" "${password.replaceAll('"', '""')}"\n`);
      }),
    );
  });

  it("refuses names it cannot write safely, naming them and never the password", () => {
    const badDb = renderPgBouncerConfig(input({ databases: ["app db"] }));
    expect(badDb).toEqual({ ok: false, message: 'the database name "app db" cannot be written into pgbouncer.ini' });
    const badUser = renderPgBouncerConfig({ ...input(), target: { ...input().target, user: "op,admin" } });
    expect(badUser.ok).toBe(false);
    expect(!badUser.ok && badUser.message).toContain('"op,admin"');
    expect(!badUser.ok && badUser.message).not.toContain("s3cret");
    const badHost = renderPgBouncerConfig({ ...input(), target: { ...input().target, host: "pg\n[pgbouncer]" } });
    expect(badHost.ok).toBe(false);
  });
});

describe("applying a new config", () => {
  it("reloads when only sizes or the pool mode change, restarts when the listener changes, and does nothing otherwise", () => {
    const now = rendered();
    expect(changeKind(now, rendered())).toEqual({ kind: "none" });
    const smaller = rendered({ sizing: { ...sizing, maxDbConnections: 8, defaultPoolSize: 6 } });
    expect(changeKind(now, smaller)).toEqual({ kind: "reload", keys: ["default_pool_size", "max_db_connections"] });
    expect(changeKind(now, rendered({ poolMode: "Transaction" }))).toEqual({ kind: "reload", keys: ["pool_mode"] });
    expect(changeKind(now, rendered({ databases: ["app"] }))).toEqual({ kind: "reload", keys: [] });
    const moved = rendered({ listen: { address: "0.0.0.0", port: 5432 }, poolMode: "Transaction" });
    expect(changeKind(now, moved)).toEqual({ kind: "restart", keys: ["listen_port"] });
  });

  it("reloads, and reconnects the pooled connections only when a cap shrank, never when a restart is due", () => {
    const now = rendered();
    const smaller = rendered({ sizing: { ...sizing, maxDbConnections: 8, defaultPoolSize: 6 } });
    expect(reloadCommands(now, smaller)).toEqual(["RELOAD", "RECONNECT"]);
    expect(reloadCommands(smaller, now)).toEqual(["RELOAD"]);
    expect(reloadCommands(now, rendered())).toEqual([]);
    expect(reloadCommands(now, rendered({ listen: { address: "127.0.0.1", port: 6432 } }))).toEqual([]);
  });
});
