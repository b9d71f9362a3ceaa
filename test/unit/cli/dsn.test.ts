import { describe, expect, it } from "vitest";
import { DsnError, parseDsn, redactDsn } from "../../../src/cli/dsn.js";

describe("--dsn", () => {
  it("parses user, password, host, port, database and sslmode", () => {
    expect(parseDsn("postgres://app:s%40cret@db.example:6432/appdb?sslmode=require", {})).toEqual({
      host: "db.example",
      port: 6432,
      database: "appdb",
      sslMode: "require",
      user: "app",
      password: "s@cret",
    });
  });

  it("defaults: port 5432, sslmode prefer, password and database from the environment", () => {
    expect(parseDsn("postgresql://app@[::1]", { PGPASSWORD: "from-env", PGDATABASE: "envdb" })).toEqual({
      host: "::1",
      port: 5432,
      database: "envdb",
      sslMode: "prefer",
      user: "app",
      password: "from-env",
    });
  });

  it("refuses what it cannot use, without echoing the DSN", () => {
    for (const bad of [
      "not a url with s3cret-pw",
      "mysql://u:s3cret-pw@h/db",
      "postgres://h/db",
      "postgres://u:s3cret-pw@h/db?sslmode=maybe",
    ]) {
      let error: unknown;
      try {
        parseDsn(bad, {});
      } catch (err) {
        error = err;
      }
      expect(error, bad).toBeInstanceOf(DsnError);
      expect((error as Error).message).not.toContain("s3cret-pw");
    }
  });

  it("sslmode means what libpq says, with no warning from the parser about its own ssl options", () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on("warning", onWarning);
    try {
      for (const mode of ["disable", "prefer", "require", "verify-full"] as const) {
        expect(parseDsn(`postgres://app:pw@db/appdb?sslmode=${mode}`, {}).sslMode).toBe(mode);
      }
    } finally {
      process.off("warning", onWarning);
    }
    expect(warnings).toEqual([]);
    expect(() => parseDsn("postgres://app:s3cret-pw@db/appdb?sslmode=verify-ca", {})).toThrow(
      /sslmode=verify-ca needs a CA file, which the CLI does not read: use verify-full/,
    );
  });

  it("refuses a port out of range and a DSN without a host", () => {
    expect(() => parseDsn("postgres://app@db:70000/appdb", {})).toThrow(DsnError);
    expect(() => parseDsn("postgres:///appdb", { PGUSER: "app" })).toThrow(/no host/);
  });

  it("redacts the password for printing", () => {
    expect(redactDsn("postgres://app:s3cret@db:5432/appdb")).toBe("postgres://app:***@db:5432/appdb");
    expect(redactDsn("postgres://app@db/appdb")).toBe("postgres://app@db/appdb");
    expect(redactDsn("::::")).toBe("[unparseable dsn]");
  });
});

describe("dsnWithoutPassword", () => {
  it("drops the password, for commands meant to be pasted with PGPASSWORD", async () => {
    const { dsnWithoutPassword } = await import("../../../src/cli/dsn.js");
    expect(dsnWithoutPassword("postgres://app:s3cret@db:5432/appdb?sslmode=disable")).toBe(
      "postgres://app@db:5432/appdb?sslmode=disable",
    );
  });
});
