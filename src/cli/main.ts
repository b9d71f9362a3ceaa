#!/usr/bin/env node
/**
 * `poolpolicy`, the operator's command line: `diagnose` answers "why are we out of
 * connections?", `reap` terminates sessions stuck idle in transaction.
 *
 * Installed as the package's bin; named (or linked as) `kubectl-poolpolicy` on the PATH it is
 * also the kubectl plugin `kubectl poolpolicy`. Commands run through runCli(), which takes argv
 * and returns the exit code and what was printed, so tests run the CLI in-process.
 *
 * Exit codes: 0 all good; 1 diagnose found a problem, or reap failed; 2 the command could not
 * run (bad arguments, no kubeconfig, policy not found, API errors).
 */
import { readFileSync, realpathSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { apiErrorMessage } from "../kube/errors.js";
import { CliError } from "./cluster.js";
import { diagnose } from "./diagnose.js";
import { captureIo, createIo, type CliIo } from "./io.js";
import { reap, ReapFailed } from "./reap.js";
import { renderDiagnose, renderReap } from "./render.js";

export const EXIT_OK = 0;
export const EXIT_PROBLEMS = 1;
export const EXIT_USAGE = 2;

export interface CliResult {
  exitCode: number;
  /** What was printed, when runCli captured it (no io given). */
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Where to write; default: captured into the result. */
  io?: CliIo;
  /** The name shown in help and recommendations. */
  program?: string;
}

const usage = (p: string) => `Usage:
  ${p} diagnose [NAMESPACE/]NAME [-n NAMESPACE] [options]   diagnose a PoolPolicy's server and budget
  ${p} diagnose --dsn postgres://USER[:PASSWORD]@HOST:PORT/DB [options]
  ${p} reap [NAMESPACE/]NAME [-n NAMESPACE] [--older-than 5m] [--execute]
  ${p} reap --dsn postgres://… [--older-than 5m] [--execute]
  ${p} version

Common options:
  --kubeconfig PATH        kubeconfig (default: $KUBECONFIG or ~/.kube/config)
  --context NAME           kubeconfig context
  -n, --namespace NS       namespace of the PoolPolicy (default: the context's)
  --dsn URL                a server without a PoolPolicy; the password may come from $PGPASSWORD
  --pg-host HOST, --pg-port PORT
                           connect here instead of spec.postgres.host/port (e.g. kubectl port-forward)
  --json                   machine-readable output
  -q, --quiet              no progress lines on stderr

diagnose:
  --redis-url URL          check this Redis (overrides the policy's Secret)
  --redis-required         treat Redis being down as a failure
  --require-extension EXT  an extension that must be installed (repeatable; adds to the policy's)
  --idle-threshold DUR     report sessions idle in transaction longer than this
                           (default: the policy's reaper timeout, or 5m with --dsn)
  --top N                  how many of the oldest idle-in-transaction sessions to list (default 10)

reap (a dry run unless --execute; same filters as the operator's reaper):
  --older-than DUR         idle in transaction longer than this (default: the policy's timeout, or 5m)
  --execute                terminate the sessions
  --exclude-user USER      never touch this user (repeatable; adds to the policy's)
  --exclude-app NAME       never touch this application_name (repeatable; adds to the policy's)

Exit codes: 0 fine; 1 problems found (diagnose) or the reap failed; 2 the command could not run.
`;

const common = {
  kubeconfig: { type: "string" },
  context: { type: "string" },
  namespace: { type: "string", short: "n" },
  dsn: { type: "string" },
  "pg-host": { type: "string" },
  "pg-port": { type: "string" },
  json: { type: "boolean", default: false },
  quiet: { type: "boolean", short: "q", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const satisfies ParseArgsConfig["options"];

const diagnoseOptions = {
  ...common,
  "redis-url": { type: "string" },
  "redis-required": { type: "boolean" },
  "require-extension": { type: "string", multiple: true, default: [] },
  "idle-threshold": { type: "string" },
  top: { type: "string", default: "10" },
} as const satisfies ParseArgsConfig["options"];

const reapOptions = {
  ...common,
  "older-than": { type: "string" },
  execute: { type: "boolean", default: false },
  "exclude-user": { type: "string", multiple: true, default: [] },
  "exclude-app": { type: "string", multiple: true, default: [] },
} as const satisfies ParseArgsConfig["options"];

export async function runCli(argv: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  const captured = options.io ? undefined : captureIo();
  const io = options.io ?? captured!;
  const program = options.program ?? "poolpolicy";
  let exitCode: number;
  try {
    exitCode = await dispatch([...argv], io, program);
  } catch (err) {
    exitCode = reportError(err, io, program);
  }
  return { exitCode, stdout: captured?.stdout() ?? "", stderr: captured?.stderr() ?? "" };
}

async function dispatch(argv: string[], io: CliIo, program: string): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "diagnose":
      return runDiagnose(rest, io, program);
    case "reap":
      return runReap(rest, io, program);
    case "version":
    case "--version":
      io.out(`${program} ${packageVersion()}\n`);
      return EXIT_OK;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      io.out(usage(program));
      return command === undefined ? EXIT_USAGE : EXIT_OK;
    default:
      throw new CliError(`unknown command "${command}"`);
  }
}

async function runDiagnose(argv: string[], io: CliIo, program: string): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: diagnoseOptions,
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    io.out(usage(program));
    return EXIT_OK;
  }
  const report = await diagnose(
    {
      ...subjectOf(values, positionals),
      redisUrl: values["redis-url"],
      redisRequired: values["redis-required"],
      requireExtensions: values["require-extension"],
      idleThreshold: values["idle-threshold"],
      top: positiveInt(values.top, "--top"),
      program,
    },
    io,
  );
  io.out(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderDiagnose(report));
  return report.ok ? EXIT_OK : EXIT_PROBLEMS;
}

async function runReap(argv: string[], io: CliIo, program: string): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: reapOptions, allowPositionals: true, strict: true });
  if (values.help) {
    io.out(usage(program));
    return EXIT_OK;
  }
  const report = await reap(
    {
      ...subjectOf(values, positionals),
      olderThan: values["older-than"],
      execute: values.execute,
      excludeUsers: values["exclude-user"],
      excludeApplicationNames: values["exclude-app"],
    },
    io,
  );
  io.out(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderReap(report));
  return EXIT_OK;
}

/** What both commands point at: a PoolPolicy or a DSN, never both. */
function subjectOf(
  values: {
    kubeconfig?: string;
    context?: string;
    namespace?: string;
    dsn?: string;
    "pg-host"?: string;
    "pg-port"?: string;
  },
  positionals: string[],
) {
  if (positionals.length > 1)
    throw new CliError(`expected one PoolPolicy, got ${positionals.length}: ${positionals.join(" ")}`);
  const [policyRef] = positionals;
  if (policyRef !== undefined && values.dsn !== undefined) throw new CliError("give a PoolPolicy or --dsn, not both");
  if (policyRef === undefined && values.dsn === undefined)
    throw new CliError("give a PoolPolicy ([NAMESPACE/]NAME) or --dsn");
  return {
    policyRef,
    namespace: values.namespace,
    kube: { kubeconfig: values.kubeconfig, context: values.context },
    dsn: values.dsn,
    pgHost: values["pg-host"],
    pgPort: values["pg-port"] === undefined ? undefined : positiveInt(values["pg-port"], "--pg-port"),
  };
}

function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new CliError(`${flag} must be a positive integer, not "${text}"`);
  return n;
}

function reportError(err: unknown, io: CliIo, program: string): number {
  if (err instanceof ReapFailed) {
    io.err(`error: ${err.message}\n`);
    return EXIT_PROBLEMS;
  }
  // parseArgs' errors (unknown option, missing value) are usage errors too.
  const code = (err as { code?: string }).code;
  if (err instanceof CliError || (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))) {
    io.err(`error: ${(err as Error).message}\nRun "${program} help" for usage.\n`);
    return EXIT_USAGE;
  }
  // Anything else is an API or network failure we did not expect: say what it was, briefly.
  io.err(`error: ${apiErrorMessage(err)}\n`);
  return EXIT_USAGE;
}

/** The package's version, found by walking up from this file (src/cli or dist/src/cli). */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "poolpolicy-operator") return pkg.version ?? "unknown";
    } catch {
      /* not here: one level up */
    }
  }
  return "unknown";
}

/** "kubectl poolpolicy" when run as the kubectl plugin (an executable named kubectl-…), else "poolpolicy". */
export function programName(invokedAs: string | undefined): string {
  return invokedAs && basename(invokedAs).startsWith("kubectl-") ? "kubectl poolpolicy" : "poolpolicy";
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const quiet = argv.includes("--quiet") || argv.includes("-q");
  // Progress only on a terminal: in a pipe or a CI log it would be noise around the result.
  const io = createIo(
    { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) },
    Boolean(process.stderr.isTTY) && !quiet,
  );
  const { exitCode } = await runCli(argv, { io, program: programName(process.argv[1]) });
  // Exit explicitly once stdout is flushed: idle keep-alive sockets of the Kubernetes client
  // would otherwise hold the process open for seconds.
  process.stdout.write("", () => process.exit(exitCode));
}

/** True when this file is the program being run (directly, through the bin link, or as kubectl-poolpolicy). */
function isEntryPoint(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main().catch((err: unknown) => {
    process.stderr.write(`poolpolicy: ${(err as Error).message}\n`);
    process.exit(EXIT_USAGE);
  });
}
