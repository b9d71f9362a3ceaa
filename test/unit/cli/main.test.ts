/**
 * The command line itself, in-process and without a cluster: usage, argument errors and their
 * exit code 2. Diagnose and reap against real servers: test/integration/cli.
 */
import { describe, expect, it } from "vitest";
import { EXIT_OK, EXIT_USAGE, programName, runCli } from "../../../src/cli/main.js";

describe("poolpolicy", () => {
  it("prints usage for help, and exits 2 without a command", async () => {
    const help = await runCli(["help"]);
    expect(help.exitCode).toBe(EXIT_OK);
    expect(help.stdout).toContain("poolpolicy diagnose [NAMESPACE/]NAME");
    expect(help.stdout).toContain("Exit codes: 0 fine; 1 problems found");
    expect((await runCli([])).exitCode).toBe(EXIT_USAGE);
    expect((await runCli(["diagnose", "--help"], { program: "kubectl poolpolicy" })).stdout).toContain(
      "kubectl poolpolicy reap --dsn",
    );
  });

  it("prints its version", async () => {
    expect((await runCli(["version"])).stdout).toMatch(/^poolpolicy \d+\.\d+\.\d+\n$/);
  });

  it.each([
    [["frobnicate"], 'unknown command "frobnicate"'],
    [["diagnose"], "give a PoolPolicy ([NAMESPACE/]NAME) or --dsn"],
    [["diagnose", "ns/p", "--dsn", "postgres://u@h/db"], "give a PoolPolicy or --dsn, not both"],
    [["diagnose", "a", "b"], "expected one PoolPolicy, got 2"],
    [["diagnose", "--dsn", "postgres://u@h/db", "--top", "0"], "--top must be a positive integer"],
    [["diagnose", "--dsn", "postgres://u@h/db", "--idle-threshold", "5 minutes"], 'invalid duration "5 minutes"'],
    [["diagnose", "--dsn", "postgres://u@h/db", "--frob"], "Unknown option '--frob'"],
    [["reap", "--dsn", "postgres://u@h/db", "--older-than", "soon"], 'invalid --older-than "soon"'],
    [["diagnose", "p", "--kubeconfig", "/nonexistent/kubeconfig"], "cannot load the kubeconfig"],
  ])("%j is a usage error (exit 2)", async (argv, message) => {
    const result = await runCli(argv);
    expect(result.exitCode).toBe(EXIT_USAGE);
    expect(result.stderr).toContain(message);
    expect(result.stdout).toBe("");
  });

  it("never echoes the password of a DSN it cannot parse", async () => {
    const result = await runCli(["diagnose", "--dsn", "postgres://u:hunter2-secret@:not-a-port/db"]);
    expect(result.exitCode).toBe(EXIT_USAGE);
    expect(result.stderr).toContain("invalid --dsn");
    expect(result.stderr + result.stdout).not.toContain("hunter2-secret");
  });
});

describe("programName", () => {
  it("is `kubectl poolpolicy` when kubectl runs us as the plugin kubectl-poolpolicy", () => {
    expect(programName("/usr/local/bin/kubectl-poolpolicy")).toBe("kubectl poolpolicy");
    expect(programName("/usr/lib/node_modules/.bin/poolpolicy")).toBe("poolpolicy");
    expect(programName(undefined)).toBe("poolpolicy");
  });
});
