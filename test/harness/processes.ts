/**
 * Child processes of the harness: every server the tests or the demo start (etcd, the
 * Kubernetes components, kwok, PostgreSQL, Redis) is a ManagedProcess.
 *
 * Why a registry: the harness promises to leave no process behind, on success, on test
 * failure and on Ctrl-C. Every process is registered when spawned, and a process-wide exit
 * hook kills whatever is still registered, synchronously, because an 'exit' handler cannot
 * await anything.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";

const running = new Set<ManagedProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const p of running) p.killNow();
  });
}

export interface SpawnOptions {
  /** Name used in error messages and as the log file's name. */
  name: string;
  command: string;
  args: string[];
  /** Everything the process prints goes there, so a failing test can point at it. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export class ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  private child: ChildProcess;
  private log: WriteStream;
  private exited: Promise<number | null>;
  private exitCode: number | null | undefined = undefined;

  constructor(readonly options: SpawnOptions) {
    installExitHook();
    this.name = options.name;
    this.logFile = options.logFile;
    this.log = createWriteStream(options.logFile, { flags: "a" });
    this.child = spawn(options.command, options.args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout?.pipe(this.log, { end: false });
    this.child.stderr?.pipe(this.log, { end: false });
    running.add(this);
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        running.delete(this);
        resolve(this.exitCode);
      });
      this.child.once("error", (err) => {
        this.log.write(`spawn error: ${err.message}\n`);
        this.exitCode = -1;
        running.delete(this);
        resolve(-1);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get hasExited(): boolean {
    return this.exitCode !== undefined;
  }

  /** Resolves with the exit code when the process ends. */
  waitForExit(): Promise<number | null> {
    return this.exited;
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.hasExited) this.child.kill(sig);
  }

  /**
   * Sends `sig`, waits up to `graceMs`, then SIGKILL. Resolves once the process is gone.
   */
  async stop(sig: NodeJS.Signals = "SIGTERM", graceMs = 10_000): Promise<void> {
    if (this.hasExited) return;
    this.child.kill(sig);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
    this.log.end();
  }

  /** Synchronous last resort for the exit hook. */
  killNow(): void {
    if (!this.hasExited) this.child.kill("SIGKILL");
  }
}

/** Polls `check` until it returns true, or throws with `what` and the last error after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  { timeoutMs = 60_000, intervalMs = 200 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const detail = lastError instanceof Error ? `: last error: ${lastError.message}` : "";
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
}
