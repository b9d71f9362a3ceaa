/**
 * 8. Backend memory: what one PostgreSQL connection costs, the figure behind the memory ceiling's
 * default per-connection cost (src/server/memory.ts, DEFAULT_PER_CONNECTION_BYTES).
 *
 * N connections are opened on a fresh server (the harness's, shared_buffers 128MB like
 * PostgreSQL's default, huge pages off as in most containers) and each backend's memory is read
 * from /proc/<pid>/smaps_rollup and /proc/<pid>/status twice: idle right after connecting, and
 * idle again after running a typical query mix (a primary-key lookup through a prepared
 * statement, a sort of 10,000 rows that fits in work_mem, a join with an aggregate, a catalog
 * query as ORMs send at start). What a connection costs the container's cgroup is its private
 * memory: anonymous pages (Pss_Anon; a backend's private heap and its copy-on-write pages) plus
 * its page tables (VmPTE). Pss counts also its share of shared_buffers and of the binary, both
 * charged once whatever the number of connections, so it is shown but not used. PostgreSQL's own
 * view (pg_backend_memory_contexts, 14+, asked by each backend about itself) is shown beside it.
 * Baselines: the published figures, about 2 MiB per idle connection (Andres Freund, 2020, with
 * huge pages) and about 9.1 MiB per connection in the RDS default formula.
 */
import { readFileSync } from "node:fs";
import pg from "pg";
import { startPostgres } from "../lib/postgres.js";
import type { ScenarioResult } from "../lib/report.js";
import type { Ctx } from "../lib/settings.js";
import { fmtBytes, mean, percentile } from "../lib/stats.js";
import { DEFAULT_PER_CONNECTION_BYTES } from "../../src/server/memory.js";

const KiB = 1024;
const MiB = 1024 * 1024;
/** Andres Freund, "Analyzing the Limits of Connection Scalability in Postgres" (2020): ~2 MiB per idle connection with huge pages. */
const FREUND_IDLE = 2 * MiB;
/** RDS's default max_connections = DBInstanceClassMemory / 9531392. */
const RDS_PER_CONNECTION = 9_531_392;

/** The statements of a typical request, run once by each backend. */
const TYPICAL = [
  { name: "pk", text: "SELECT id, category, price, note FROM items WHERE id = $1", values: [4242] },
  { text: "SELECT id, price FROM items ORDER BY price DESC, note LIMIT 20" },
  {
    text: `SELECT c.name, count(*) AS n, avg(i.price) AS price
             FROM items i JOIN categories c ON c.id = i.category
            GROUP BY c.name ORDER BY n DESC`,
  },
  {
    text: `SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            WHERE a.attrelid = 'items'::regclass AND a.attnum > 0 ORDER BY a.attnum`,
  },
];

interface Sample {
  pss: number;
  pssAnon: number;
  pageTables: number;
  /** pg_backend_memory_contexts: total_bytes summed over the backend's contexts. */
  contexts: number;
}

/** smaps_rollup and status of one backend, in bytes. */
function procMemory(pid: number): Omit<Sample, "contexts"> {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kB = (text: string, field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    if (!m) throw new Error(`no ${field} in /proc/${pid}: a kernel without it cannot run this scenario`);
    return Number(m[1]) * KiB;
  };
  return { pss: kB(rollup, "Pss"), pssAnon: kB(rollup, "Pss_Anon"), pageTables: kB(status, "VmPTE") };
}

/** pg_backend_memory_contexts exists from PostgreSQL 14. */
const CONTEXTS_FROM = 140000;

async function sample(clients: readonly { client: pg.Client; pid: number }[], versionNum: number): Promise<Sample[]> {
  // /proc first, for all: the context query then allocates in each backend, after its reading.
  const proc = clients.map((c) => procMemory(c.pid));
  const out: Sample[] = [];
  for (const [i, c] of clients.entries()) {
    const contexts =
      versionNum >= CONTEXTS_FROM
        ? (await c.client.query("SELECT sum(total_bytes)::float8 AS total FROM pg_backend_memory_contexts")).rows[0]
            .total
        : Number.NaN;
    out.push({ ...proc[i]!, contexts });
  }
  return out;
}

function row(label: string, samples: readonly Sample[]): string[] {
  const cost = samples.map((s) => s.pssAnon + s.pageTables);
  return [
    label,
    fmtBytes(mean(cost)),
    fmtBytes(percentile(cost, 95)),
    fmtBytes(mean(samples.map((s) => s.pssAnon))),
    fmtBytes(mean(samples.map((s) => s.pageTables))),
    fmtBytes(mean(samples.map((s) => s.pss))),
    fmtBytes(mean(samples.map((s) => s.contexts))),
  ];
}

export async function backends(ctx: Ctx): Promise<ScenarioResult> {
  const started = performance.now();
  const sizes = ctx.settings.backendsN;
  const pgs = await startPostgres({
    conf: { max_connections: Math.max(...sizes) + 20, shared_buffers: "'128MB'", huge_pages: "off" },
  });
  const rows: string[][] = [];
  const raw: Record<number, { idle: Sample[]; afterQueries: Sample[] }> = {};
  let version = "";
  let versionNum = 0;
  try {
    const admin = await pgs.admin();
    version = (await admin.query("SHOW server_version")).rows[0].server_version;
    versionNum = Number((await admin.query("SHOW server_version_num")).rows[0].server_version_num);
    await admin.end();
    const setup = new pg.Client({ ...pgs.server.connection, database: "appdb" });
    await setup.connect();
    await setup.query(`CREATE TABLE categories (id int PRIMARY KEY, name text NOT NULL);
      INSERT INTO categories SELECT g, 'category ' || g FROM generate_series(1, 50) g;
      CREATE TABLE items (id int PRIMARY KEY, category int REFERENCES categories, price numeric, note text);
      INSERT INTO items SELECT g, 1 + g % 50, (g * 7919) % 1000 / 10.0, md5(g::text) FROM generate_series(1, 10000) g;
      ANALYZE`);
    await setup.end();
    for (const n of sizes) {
      const clients: { client: pg.Client; pid: number }[] = [];
      try {
        for (let i = 0; i < n; i++) {
          const client = new pg.Client({ ...pgs.server.connection, database: "appdb" });
          client.on("error", () => undefined);
          await client.connect();
          const pid = (await client.query("SELECT pg_backend_pid() AS pid")).rows[0].pid;
          clients.push({ client, pid });
        }
        const idle = await sample(clients, versionNum);
        for (const c of clients) for (const q of TYPICAL) await c.client.query(q);
        const afterQueries = await sample(clients, versionNum);
        raw[n] = { idle, afterQueries };
        rows.push(row(`${n} connections, idle after connecting`, idle));
        rows.push(row(`${n} connections, idle after the typical queries`, afterQueries));
        ctx.log(
          `N=${n}: ${rows.at(-2)!.slice(1, 3).join(" / ")} idle, ${rows.at(-1)!.slice(1, 3).join(" / ")} after queries`,
        );
      } finally {
        await Promise.all(clients.map((c) => c.client.end().catch(() => undefined)));
      }
    }
  } finally {
    await pgs.destroy();
  }
  const largest = raw[Math.max(...sizes)]!;
  const measured = mean(largest.afterQueries.map((s) => s.pssAnon + s.pageTables));
  const p95 = percentile(
    largest.afterQueries.map((s) => s.pssAnon + s.pageTables),
    95,
  );
  return {
    id: "backends",
    title: "8. Backend memory",
    method: [
      `PostgreSQL ${version}, shared_buffers 128MB, huge_pages off, work_mem 4MB (defaults). ${sizes.join(" and ")} connections opened one after another; each backend read from /proc/<pid>/smaps_rollup and /proc/<pid>/status, idle after connecting and idle again after a typical query mix (prepared primary-key lookup, a top-20 sort over 10,000 rows, a join with an aggregate, a catalog query).`,
      "Cost per connection = Pss_Anon (its private heap and copied pages) + VmPTE (its page tables): what each further connection adds to the container's memory. Pss, which also counts the backend's share of shared_buffers and of the binary, and pg_backend_memory_contexts (PostgreSQL's own accounting, without malloc's overhead and the process's fixed pages) are shown beside it.",
    ],
    checks: [
      {
        what: "one connection after a typical query (Pss_Anon + VmPTE, mean at the largest N)",
        measured: fmtBytes(measured),
        baseline: `${fmtBytes(FREUND_IDLE)} idle (Freund 2020, huge pages); ${fmtBytes(RDS_PER_CONNECTION)} (RDS default formula, with work_mem)`,
        ratio: `${(measured / FREUND_IDLE).toFixed(2)}× Freund`,
        goal: `≤ the default per-connection cost ${fmtBytes(DEFAULT_PER_CONNECTION_BYTES)} (src/server/memory.ts), p95 ${fmtBytes(p95)}`,
        met: p95 <= DEFAULT_PER_CONNECTION_BYTES,
      },
    ],
    tables: [
      {
        title: "Memory per backend (mean over the N backends)",
        columns: [
          "backends",
          "cost (Pss_Anon + VmPTE)",
          "cost p95",
          "Pss_Anon",
          "VmPTE",
          "Pss",
          "pg_backend_memory_contexts",
        ],
        rows,
      },
    ],
    notes: [
      "The default per-connection cost of the memory ceiling is this figure rounded up, plus work_mem counted separately for the sort or hash a query may run (docs/operations.md).",
    ],
    durationMs: performance.now() - started,
    raw,
  };
}
