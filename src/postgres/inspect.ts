/**
 * Read-only facts about a PostgreSQL server, gathered in one round of queries per reconcile:
 * the max_connections in force and where it comes from, whether a restart is pending, the
 * postmaster's start time (which tells a restart happened), sessions by state, reserved slots,
 * and installed extensions.
 */
import type pg from "pg";

export interface ConnectionCounts {
  total: number;
  active: number;
  idle: number;
  idleInTransaction: number;
}

/** The server settings the memory ceiling depends on (src/server/memory.ts), in bytes (and a count of workers). */
export interface MemorySettings {
  sharedBuffers: number;
  workMem: number;
  maintenanceWorkMem: number;
  /** -1: use maintenance_work_mem (PostgreSQL's default). */
  autovacuumWorkMem: number;
  autovacuumMaxWorkers: number;
}

export interface ServerFacts {
  version: string;
  versionNum: number;
  maxConnections: number;
  /** pg_settings.source of max_connections: "default", "configuration file", "command line", … */
  settingSource: string;
  pendingRestart: boolean;
  /** The value postgresql.auto.conf (ALTER SYSTEM) holds, if any: what the next start will use. */
  alterSystemValue?: number;
  /** Whether our role may read pg_file_settings; without it alterSystemValue is unknown. */
  mayReadConfigFiles: boolean;
  postmasterStartTime: Date;
  superuserReservedConnections: number;
  /** PG16+: slots for roles with pg_use_reserved_connections; 0 before. */
  reservedConnections: number;
  connections: ConnectionCounts;
  installedExtensions: string[];
  availableExtensions: string[];
  isSuperuser: boolean;
  /** Superuser, or (PG15+) GRANT ALTER SYSTEM ON PARAMETER max_connections and EXECUTE on pg_reload_conf(). */
  mayAlterMaxConnections: boolean;
  /** PG17+: allow_alter_system; true where the setting does not exist. */
  allowAlterSystem: boolean;
  /** The settings the memory ceiling depends on (src/server/memory.ts), in bytes. */
  memory: MemorySettings;
}

const SETTINGS_SQL = `
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       s.setting::int AS max_connections,
       s.source AS source,
       s.pending_restart AS pending_restart,
       pg_postmaster_start_time() AS postmaster_start_time,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS is_superuser,
       coalesce(current_setting('allow_alter_system', true), 'on') = 'on' AS allow_alter_system,
       pg_size_bytes(current_setting('shared_buffers'))::float8 AS shared_buffers,
       pg_size_bytes(current_setting('work_mem'))::float8 AS work_mem,
       pg_size_bytes(current_setting('maintenance_work_mem'))::float8 AS maintenance_work_mem,
       pg_size_bytes(current_setting('autovacuum_work_mem'))::float8 AS autovacuum_work_mem,
       current_setting('autovacuum_max_workers')::int AS autovacuum_max_workers
  FROM pg_settings s WHERE s.name = 'max_connections'`;

const MAY_ALTER_MAX_CONNECTIONS_SQL = `
SELECT has_parameter_privilege('max_connections', 'ALTER SYSTEM')
       AND has_function_privilege('pg_catalog.pg_reload_conf()', 'EXECUTE') AS ok`;

/**
 * pg_file_settings is readable by superusers only (by default): asked only when we may.
 * No `error IS NULL` filter: after ALTER SYSTEM + reload, the auto.conf entry of a setting that
 * needs a restart carries error = 'setting could not be applied' until the restart, which is
 * exactly the pending value we want to see (filtering it out made every reconcile of a pending
 * restart run ALTER SYSTEM + pg_reload_conf() again; found by test/integration/faults).
 */
const ALTER_SYSTEM_VALUE_SQL = `
SELECT f.setting FROM pg_file_settings f
 WHERE f.name = 'max_connections' AND f.sourcefile LIKE '%postgresql.auto.conf'
 ORDER BY f.seqno DESC LIMIT 1`;

async function mayReadConfigFiles(client: pg.PoolClient): Promise<boolean> {
  return (await client.query("SELECT has_table_privilege('pg_catalog.pg_file_settings', 'SELECT') AS ok")).rows[0].ok;
}

/** max_connections as postgresql.auto.conf holds it (ask mayReadConfigFiles first). */
async function readAlterSystemValue(client: pg.PoolClient): Promise<number | undefined> {
  const setting = (await client.query(ALTER_SYSTEM_VALUE_SQL)).rows[0]?.setting;
  return setting === undefined ? undefined : Number(setting);
}

/** Client backends only: walsenders, autovacuum and background workers do not count. */
const COUNTS_SQL = `
SELECT count(*)::int AS total,
       count(*) FILTER (WHERE state = 'active')::int AS active,
       count(*) FILTER (WHERE state = 'idle')::int AS idle,
       count(*) FILTER (WHERE state IN ('idle in transaction', 'idle in transaction (aborted)'))::int AS idle_in_transaction
  FROM pg_stat_activity WHERE backend_type = 'client backend'`;

const EXTENSIONS_SQL = `
SELECT (SELECT coalesce(array_agg(extname::text ORDER BY extname), '{}') FROM pg_extension) AS installed,
       (SELECT coalesce(array_agg(name::text ORDER BY name), '{}') FROM pg_available_extensions) AS available`;

// ::text matters: node-pg leaves name[] unparsed, and "age" would then match inside "{…,pageinspect,…}".
export async function inspectServer(client: pg.PoolClient): Promise<ServerFacts> {
  const settings = (await client.query(SETTINGS_SQL)).rows[0];
  const mayReadFiles = await mayReadConfigFiles(client);
  // has_parameter_privilege exists from PostgreSQL 15; before, only a superuser may. The reload
  // that follows ALTER SYSTEM (it makes pending_restart true) is a superuser's too unless granted:
  // with the parameter's grant alone, ALTER SYSTEM succeeds and pg_reload_conf() is refused
  // (found by the PostgreSQL matrix on 15 to 18).
  const mayAlter =
    settings.is_superuser ||
    (settings.version_num >= 150000 && (await client.query(MAY_ALTER_MAX_CONNECTIONS_SQL)).rows[0].ok);
  const alterSystemValue = mayReadFiles ? await readAlterSystemValue(client) : undefined;
  const counts = (await client.query(COUNTS_SQL)).rows[0];
  const extensions = (await client.query(EXTENSIONS_SQL)).rows[0];
  return {
    version: settings.version,
    versionNum: settings.version_num,
    maxConnections: settings.max_connections,
    settingSource: settings.source,
    pendingRestart: settings.pending_restart,
    alterSystemValue,
    mayReadConfigFiles: mayReadFiles,
    postmasterStartTime: settings.postmaster_start_time,
    superuserReservedConnections: settings.superuser_reserved,
    reservedConnections: settings.reserved,
    connections: {
      total: counts.total,
      active: counts.active,
      idle: counts.idle,
      idleInTransaction: counts.idle_in_transaction,
    },
    installedExtensions: extensions.installed,
    availableExtensions: extensions.available,
    isSuperuser: settings.is_superuser,
    mayAlterMaxConnections: mayAlter,
    allowAlterSystem: settings.allow_alter_system,
    memory: {
      sharedBuffers: settings.shared_buffers,
      workMem: settings.work_mem,
      maintenanceWorkMem: settings.maintenance_work_mem,
      autovacuumWorkMem: settings.autovacuum_work_mem,
      autovacuumMaxWorkers: settings.autovacuum_max_workers,
    },
  };
}

/** One PostgreSQL instance of a replication group, as the topology-aware restart needs it. */
export interface InstanceFacts {
  inRecovery: boolean;
  alterSystemValue?: number;
  maxConnections: number;
  pendingRestart: boolean;
  postmasterStartTime: Date;
  /** The primary's current WAL position, or the position a replica has replayed. */
  lsn: bigint | undefined;
  /**
   * A replica whose replay is paused or asked to pause (e.g. its settings fell below the
   * primary's). pg_is_wal_replay_paused(), not 14's pg_get_wal_replay_pause_state(): the same
   * answer ("pause requested" counts), and it exists on 13 too, where the other does not (the
   * PostgreSQL matrix found every inspectInstance on 13 failing).
   */
  replayPaused: boolean;
}

const INSTANCE_SQL = `
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('max_connections')::int AS max_connections,
       (SELECT pending_restart FROM pg_settings WHERE name = 'max_connections') AS pending_restart,
       pg_postmaster_start_time() AS started,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text AS lsn,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS replay_paused`;

export async function inspectInstance(client: pg.PoolClient): Promise<InstanceFacts> {
  const r = (await client.query(INSTANCE_SQL)).rows[0];
  const alterSystemValue = (await mayReadConfigFiles(client)) ? await readAlterSystemValue(client) : undefined;
  return {
    alterSystemValue,
    inRecovery: r.in_recovery,
    maxConnections: r.max_connections,
    pendingRestart: r.pending_restart,
    postmasterStartTime: r.started,
    lsn: r.lsn === null ? undefined : parseLsn(r.lsn),
    replayPaused: r.replay_paused,
  };
}

/** "16/B374D848" → a comparable number. */
export function parseLsn(text: string): bigint {
  const [high, low] = text.split("/");
  return (BigInt(`0x${high}`) << 32n) + BigInt(`0x${low}`);
}
