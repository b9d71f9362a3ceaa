/**
 * PostgreSQL for the benchmarks: test/harness/postgres.ts's throwaway server, an app database,
 * and a login of its own for the operator (a superuser, like the tests' admin), so that
 * pg_stat_statements can tell the operator's statements from the benchmark's own.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { PostgresServer, type PostgresOptions } from "../../test/harness/postgres.js";
import { createSecret, type Cluster } from "./cluster.js";
import { deepMerge } from "../../test/harness/deep-merge.js";

export const APP_DATABASE = "appdb";
/**
 * The pool every benchmark policy injects. Small on purpose: the server's budget counts every
 * selected Deployment's worst case (replicas + surge) × pool max, and with thousands of
 * Deployments a default pool (25) would exceed any max_connections a test server can have, so
 * every policy would sit at Ready=False/OverCommitted.
 */
export const POOL = { minSize: 1, maxSize: 2 } as const;

/** A max_connections that keeps the budget of `deployments` selected Deployments (pool max ≤ 3) within limits. */
export function maxConnectionsFor(deployments: number, replicas: number): number {
  return 3 * deployments * (replicas + 1) + 100;
}
export const OPERATOR_ROLE = "pp_operator";

export interface BenchPostgres {
  server: PostgresServer;
  operatorPassword: string;
  /** Superuser client on the `postgres` database, for the benchmark's own queries. */
  admin(): Promise<pg.Client>;
  destroy(): Promise<void>;
}

export async function startPostgres(options: PostgresOptions & { statements?: boolean } = {}): Promise<BenchPostgres> {
  const conf: Record<string, string | number> = { ...options.conf };
  if (options.statements) {
    conf.shared_preload_libraries = "'pg_stat_statements'";
    conf["pg_stat_statements.max"] = 5000;
  }
  const server = await PostgresServer.create({ ...options, conf });
  const operatorPassword = randomBytes(12).toString("hex");
  await server.query(`CREATE DATABASE ${APP_DATABASE}`);
  await server.query(`CREATE ROLE ${OPERATOR_ROLE} LOGIN SUPERUSER PASSWORD '${operatorPassword}'`);
  if (options.statements) await server.query("CREATE EXTENSION pg_stat_statements");
  return {
    server,
    operatorPassword,
    admin: async () => {
      const client = new pg.Client({ ...server.connection, connectionTimeoutMillis: 10_000 });
      client.on("error", () => undefined);
      await client.connect();
      return client;
    },
    destroy: () => server.destroy(),
  };
}

/** The Secret the policies of `namespace` read the operator's login from ("pg-admin"). */
export async function createCredentialsSecret(c: Cluster, namespace: string, pgs: BenchPostgres): Promise<void> {
  await createSecret(c, namespace, "pg-admin", { username: OPERATOR_ROLE, password: pgs.operatorPassword });
}

/** A PoolPolicy spec pointing at `pgs`; `overrides` are merged in. */
export function policySpec(pgs: BenchPostgres, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const base = {
    postgres: {
      host: "127.0.0.1",
      port: pgs.server.port,
      database: APP_DATABASE,
      sslMode: "disable",
      credentialsSecret: { name: "pg-admin" },
    },
    targets: { selector: { matchLabels: { "bench.pooling.dbops.io/group": "g0" } } },
    pool: { ...POOL },
  };
  return deepMerge(base, overrides);
}
