import { describe, expect, it } from "vitest";
import { analyze, isOk } from "../../../src/cli/findings.js";
import { age, renderDiagnose, renderReap, table } from "../../../src/cli/render.js";
import { budget, facts, role } from "./fixtures.js";

describe("table", () => {
  it("pads columns to the widest cell, three spaces apart, no trailing blanks", () => {
    expect(
      table(
        ["NAME", "N"],
        [
          ["api", 10],
          ["a-longer-name", 2],
        ],
      ),
    ).toBe("  NAME            N\n" + "  api             10\n" + "  a-longer-name   2\n");
  });
});

describe("age", () => {
  it("reads like a Go duration", () => {
    expect(age(0.4)).toBe("0s");
    expect(age(3723)).toBe("1h2m3s");
  });
});

describe("renderDiagnose", () => {
  it("shows every section and each finding with its recommendation", () => {
    const f = facts({
      budget: budget({
        memory: {
          known: true,
          ceiling: 208,
          source: "the memory limit 2 GiB of container postgres in StatefulSet db/pg",
          memoryBytes: 2 ** 31,
          fixedBytes: 384 * 2 ** 20,
          perConnectionBytes: 8 * 2 ** 20,
          condition: { status: "True", reason: "WithinMemory", message: "" },
        },
      }),
      extensions: {
        database: "appdb",
        required: ["plpgsql", "pgcrypto"],
        missing: [{ name: "pgcrypto", availableOnServer: true }],
      },
      redis: {
        required: true,
        available: true,
        reason: "Available",
        message: "",
        connectedClients: 3,
        maxClients: 10000,
        rejectedConnections: 0,
      },
    });
    const findings = analyze(f, { reapCommand: "poolpolicy reap shop/p" });
    const text = renderDiagnose({ ...f, findings, ok: isOk(findings) });
    expect(text).toMatch(/^PoolPolicy shop\/p: postgres@db:5432\/appdb\n/);
    expect(text).toContain("  max_connections   100 (source: configuration file; no restart pending)\n");
    expect(text).toContain("  in use            20/100 (20%): 5 active, 8 idle, 2 idle in transaction\n");
    expect(text).toContain("BUDGET ON db:5432 (2 PoolPolicies)\n");
    expect(text).toContain("  shop/p      shop/api          10         7                   70\n");
    expect(text).toContain("  demand     115 of capacity 100: 15 over\n");
    expect(text).toContain(
      "  memory     ceiling 208 max_connections: the memory limit 2 GiB of container postgres in StatefulSet db/pg, 384 MiB fixed + 8 MiB per connection\n",
    );
    expect(text).toContain("  pgcrypto    missing (available: CREATE EXTENSION)\n");
    expect(text).toContain("  PING ok; clients 3/10000; 0 rejected since start\n");
    expect(text).toContain("  CRITICAL  BudgetExceeded: demand 115 > capacity 100: ");
    expect(text).toContain("            → raise max_connections to 140 ");
    expect(text.endsWith("\nPROBLEMS FOUND\n")).toBe(true);
  });

  it("shows the server's pooler in the budget: its sizes and who goes through it, or why it does not run", () => {
    const pooler = {
      state: "sized" as const,
      name: "shop/pgbouncer",
      pooled: ["shop/p"],
      pods: 2,
      perPod: 10,
      left: 21,
      maxClientConn: 9,
      explanation:
        "10 server connections per pod (…) × 2 worst-case pods ≤ 21 left after direct clients and reserved slots",
    };
    const render = (b: ReturnType<typeof budget>) => {
      const f = facts({ budget: b });
      return renderDiagnose({ ...f, findings: [], ok: true });
    };
    expect(render(budget({ pooler }))).toContain(
      "  pooler     shop/pgbouncer: 10 server connections per pod (…) × 2 worst-case pods ≤ 21 left after direct clients and reserved slots (through it: shop/p)\n",
    );
    const refused = { state: "refused" as const, name: "shop/pgbouncer", pooled: ["shop/p"], message: "needs 5" };
    expect(render(budget({ pooler: refused }))).toContain(
      "  pooler     shop/pgbouncer does not fit: needs 5 (through it: shop/p)\n",
    );
    expect(render(budget())).not.toContain("  pooler ");
  });

  it("shows each role held to its share: share = demand + margin, the limit as read, sessions, the operator's plan", () => {
    const roles = [
      role({ role: "Shop App", connectionLimit: 3, connections: 3, policies: ["shop/p", "shop/p2"] }),
      role({ role: "reports", demand: 10, margin: 0, connectionLimit: -1, connections: 0, policies: ["reports/q"] }),
      role({ role: "batch", demand: 4, connectionLimit: 6, connections: 2, policies: ["shop/b"] }),
      role({ role: "gone", exists: false, connectionLimit: -1, connections: 0, policies: ["shop/g"] }),
    ];
    const f = facts({ roles });
    const findings = analyze(f, { reapCommand: "poolpolicy reap shop/p" });
    const text = renderDiagnose({ ...f, findings, ok: isOk(findings) });
    expect(text).toContain(
      [
        "ROLES HELD TO THEIR SHARE (spec.enforcement.connectionLimit)",
        "  ROLE         SHARE   DEMAND + MARGIN   CONNECTION LIMIT   SESSIONS   THE OPERATOR                    POLICIES",
        '  "Shop App"   22      20 + 2            3                  3          raises it to 22                 shop/p, shop/p2',
        "  reports      10      10 + 0            no limit           0          lowers it to 10 after rollout   reports/q",
        "  batch        6       4 + 2             6                  2          keeps it                        shop/b",
        "  gone         22      20 + 2            (no such role)     0          refuses: RoleNotFound           shop/g",
        "",
      ].join("\n"),
    );
  });

  it("says OK when nothing is wrong", () => {
    const text = renderDiagnose({ ...facts(), findings: [], ok: true });
    expect(text).toContain("FINDINGS\n  none: nothing wrong found\n");
    expect(text.endsWith("\nOK\n")).toBe(true);
  });
});

describe("renderReap", () => {
  const base = {
    subject: { policy: "shop/p", server: "db:5432", database: "appdb", user: "postgres" },
    olderThan: "5m",
    excludeUsers: ["replicator"],
    excludeApplicationNames: ["pg_dump"],
    sessions: [
      { pid: 7, user: "app", applicationName: "orders", clientAddress: null, idleSeconds: 400, terminated: false },
    ],
  };

  it("a dry run says what would be terminated and how to do it", () => {
    const text = renderReap({ ...base, dryRun: true, terminated: 0 });
    expect(text).toContain(
      "Dry run on PoolPolicy shop/p (postgres@db:5432/appdb): 1 session(s) idle in transaction for more than 5m would be terminated; pass --execute to terminate them.",
    );
    expect(text).toContain("  7     6m40s   app    orders        local    would terminate\n");
    expect(text).toContain("users [replicator], applications [pg_dump]");
  });

  it("an executed reap counts what it terminated", () => {
    const text = renderReap({
      ...base,
      dryRun: false,
      sessions: [{ ...base.sessions[0]!, terminated: true }],
      terminated: 1,
    });
    expect(text).toContain("terminated 1 of 1 session(s)");
    expect(text).toContain("terminated\n");
  });
});
