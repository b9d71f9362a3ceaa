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
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { pgbouncerCommand } from "../../src/pooler/pooler-objects.js";
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
    /** The admin login (the auth_user of the rendered config); a test that rotates it sets the new one. */
    public admin: { user: string; password: string },
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
   * `asInThePod` runs it with the pooler container's command (pgbouncerCommand: PgBouncer and its
   * reload watcher, looking every `pollSeconds`) instead of the bare binary.
   */
  static async start(
    port: number,
    admin: { user: string; password: string },
    render: (paths: { authFile: string }) => RenderedConfig,
    options: { asInThePod?: { pollSeconds: number } } = {},
  ): Promise<PgBouncerProcess> {
    if (!existsSync(PGBOUNCER_BINARY)) {
      throw new Error(`${PGBOUNCER_BINARY} not found: run tools/install-deps.sh as root (apt-get install pgbouncer)`);
    }
    const bouncer = new PgBouncerProcess(port, admin);
    const paths = PgBouncerProcess.paths(bouncer.dir);
    bouncer.write(render(paths));
    const [shell, ...shellArgs] = options.asInThePod
      ? pgbouncerCommand({ ini: paths.ini, authFile: paths.authFile }, options.asInThePod.pollSeconds)
      : [PGBOUNCER_BINARY, paths.ini];
    const { command, args } = unprivileged(shell!, shellArgs);
    bouncer.process = new ManagedProcess({
      name: "pgbouncer",
      command,
      args,
      logFile: join(bouncer.dir, "pgbouncer.log"),
      // The pod's command calls `pgbouncer` by name, as the image's PATH finds it.
      env: { ...process.env, PATH: `/usr/sbin:${process.env.PATH ?? "/usr/bin:/bin"}` },
    });
    await waitFor(`pgbouncer on port ${port} (log: ${bouncer.dir}/pgbouncer.log)`, async () => {
      if (bouncer.process?.hasExited) throw new Error(`pgbouncer exited; see ${bouncer.dir}/pgbouncer.log`);
      await bouncer.adminQuery("SHOW VERSION");
      return true;
    });
    return bouncer;
  }

  /**
   * Writes the rendered files (the auth_file readable by its owner only), each replaced whole by
   * a rename, as the kubelet swaps a ConfigMap's or Secret's files: a reader sees the old file or
   * the new one, never half of it.
   */
  write(config: RenderedConfig): void {
    const paths = PgBouncerProcess.paths(this.dir);
    const replace = (path: string, content: string, mode: number) => {
      writeFileSync(`${path}.new`, content, { mode });
      if (userInfo().uid === 0) chownTree(`${path}.new`, "postgres");
      renameSync(`${path}.new`, path);
    };
    replace(paths.ini, config.ini, 0o644);
    replace(paths.authFile, config.userlist, 0o600);
    if (userInfo().uid === 0) chownTree(this.dir, "postgres");
  }

  /** The process's pid (PgBouncer's own: setpriv and the pod's shell exec in place). */
  get pid(): number | undefined {
    return this.process?.pid;
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
