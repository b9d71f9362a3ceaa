import { describe, expect, it } from "vitest";
import { rollUp, shortenQuery, type SessionGroup } from "../../../src/cli/sessions.js";

describe("shortenQuery", () => {
  it("makes one line and cuts it with an ellipsis", () => {
    expect(shortenQuery("SELECT *\n  FROM orders\n\tWHERE id = $1")).toBe("SELECT * FROM orders WHERE id = $1");
    expect(shortenQuery("x".repeat(300), 10)).toBe(`${"x".repeat(9)}…`);
  });

  it("masks password literals, which pg_stat_activity keeps after ALTER ROLE … PASSWORD", () => {
    expect(shortenQuery("ALTER ROLE app PASSWORD 'it''s-secret'")).toBe("ALTER ROLE app PASSWORD '***'");
    expect(shortenQuery("CREATE USER u WITH ENCRYPTED password 'pw1' VALID UNTIL 'infinity'")).toBe(
      "CREATE USER u WITH ENCRYPTED password '***' VALID UNTIL 'infinity'",
    );
  });
});

describe("rollUp", () => {
  const g = (database: string, user: string, total: number, idle: number): SessionGroup => ({
    database,
    user,
    applicationName: "a",
    total,
    active: total - idle,
    idle,
    idleInTransaction: 0,
    other: 0,
  });

  it("sums groups by a key, biggest first", () => {
    expect(rollUp([g("a", "u", 1, 1), g("b", "u", 5, 2), g("a", "v", 2, 0)], (x) => x.database)).toEqual([
      { key: "b", total: 5, active: 3, idle: 2, idleInTransaction: 0, other: 0 },
      { key: "a", total: 3, active: 2, idle: 1, idleInTransaction: 0, other: 0 },
    ]);
  });
});
