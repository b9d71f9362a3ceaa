/**
 * A real PgBouncer (Debian's `pgbouncer` package, installed by tools/install-deps.sh) as our
 * child process beside the harness's PostgreSQL: the stand-in for one pooler pod until the
 * operator runs the pooler's Deployment. It runs the config the operator's renderer produced
 * (src/pooler/pgbouncer-config.ts), written into a temp dir, and is driven over its admin
 * console (RELOAD, SHOW POOLS, SHOW CONFIG) as the operator would drive it.
 *
 * PgBouncer refuses to run as root: as root we drop to the `postgres` account like the
 * PostgreSQL harness does (setpriv execs in place, so signals reach pgbouncer itself).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { chownTree, unprivileged } from "./postgres.js";
import { ManagedProcess, waitFor } from "./processes.js";

export const PGBOUNCER_BINARY = "/usr/sbin/pgbouncer";

export interface RenderedConfig {
  ini: string;
  userlist: string;
}

export class PgBouncerProcess {
  readonly dir: string;
  private process?: ManagedProcess;

  private constructor(
    readonly port: number,
    /** The admin login (the auth_user of the rendered config); used by the test only. */
    private readonly admin: { user: string; password: string },
  ) {
    this.dir = mkdtempSync(join(tmpdir(), "poolpolicy-pgbouncer-"));
  }

  /** Paths the renderer must be given: the config is written there. */
  static paths(dir: string): { ini: string; authFile: string } {
    return { ini: join(dir, "pgbouncer.ini"), authFile: join(dir, "userlist.txt") };
  }

  /**
   * Starts PgBouncer on `port` with the config `render` returns for this process's directory
   * (the auth_file's path goes into the ini, so the renderer needs the directory first).
   */
  static async start(
    port: number,
    admin: { user: string; password: string },
    render: (paths: { authFile: string }) => RenderedConfig,
  ): Promise<PgBouncerProcess> {
    if (!existsSync(PGBOUNCER_BINARY)) {
      throw new Error(`${PGBOUNCER_BINARY} not found: run tools/install-deps.sh as root (apt-get install pgbouncer)`);
    }
    const bouncer = new PgBouncerProcess(port, admin);
    bouncer.write(render(PgBouncerProcess.paths(bouncer.dir)));
    const { command, args } = unprivileged(PGBOUNCER_BINARY, [PgBouncerProcess.paths(bouncer.dir).ini]);
    bouncer.process = new ManagedProcess({
      name: "pgbouncer",
      command,
      args,
      logFile: join(bouncer.dir, "pgbouncer.log"),
    });
    await waitFor(`pgbouncer on port ${port} (log: ${bouncer.dir}/pgbouncer.log)`, async () => {
      if (bouncer.process?.hasExited) throw new Error(`pgbouncer exited; see ${bouncer.dir}/pgbouncer.log`);
      await bouncer.adminQuery("SHOW VERSION");
      return true;
    });
    return bouncer;
  }

  /** Writes the rendered files (the auth_file readable by its owner only). */
  write(config: RenderedConfig): void {
    const paths = PgBouncerProcess.paths(this.dir);
    writeFileSync(paths.ini, config.ini);
    writeFileSync(paths.authFile, config.userlist, { mode: 0o600 });
    if (userInfo().uid === 0) chownTree(this.dir, "postgres");
  }

  /** One admin console command on a fresh connection (the console speaks the simple protocol only). */
  async adminQuery<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string): Promise<T[]> {
    const client = new pg.Client({
      host: "127.0.0.1",
      port: this.port,
      database: "pgbouncer",
      user: this.admin.user,
      password: this.admin.password,
      connectionTimeoutMillis: 5_000,
    });
    client.on("error", () => undefined);
    await client.connect();
    try {
      return (await client.query<T>(sql)).rows;
    } finally {
      await client.end();
    }
  }

  /** SHOW CONFIG as name → value. */
  async config(): Promise<Record<string, string>> {
    const rows = await this.adminQuery<{ key: string; value: string }>("SHOW CONFIG");
    return Object.fromEntries(rows.map((r) => [r.key, r.value]));
  }

  get log(): string {
    return join(this.dir, "pgbouncer.log");
  }

  async stop(): Promise<void> {
    // SIGINT: PgBouncer's "safe shutdown" waits for clients; SIGTERM drops them at once.
    await this.process?.stop("SIGTERM", 10_000);
    if (!process.env.POOLPOLICY_KEEP_TMP) rmSync(this.dir, { recursive: true, force: true });
  }
}
