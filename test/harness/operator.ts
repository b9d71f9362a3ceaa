/**
 * Runs the operator as a separate process (src/main.ts under tsx, on the Node that runs the
 * tests), exactly as it runs in a pod but pointed at the test control plane. Tests can stop
 * it gracefully, SIGKILL it mid-way and start it again, and read what it logged.
 */
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { ManagedProcess, waitFor } from "./processes.js";
import { freePort } from "./ports.js";
import { repoRoot } from "./tools.js";

export interface OperatorOptions {
  kubeconfigPath: string;
  logFile: string;
  env?: Record<string, string>;
  /** Node's arguments that run the operator; default src/main.ts under tsx. */
  entry?: string[];
}

/**
 * A log file in the temp dir of the control plane at `kubeconfigPath`: it goes with the control
 * plane's teardown (POOLPOLICY_KEEP_TMP=1 keeps it, with the logs of every component).
 */
export function runLogFile(kubeconfigPath: string, name: string): string {
  return join(dirname(kubeconfigPath), "logs", `${name}-${Date.now()}.log`);
}

export class OperatorProcess {
  private process?: ManagedProcess;
  httpPort = 0;
  starts = 0;

  constructor(private readonly options: OperatorOptions) {}

  async start(): Promise<void> {
    this.httpPort = await freePort();
    this.starts += 1;
    this.process = new ManagedProcess({
      name: "operator",
      command: process.execPath,
      args: this.options.entry ?? ["--import", "tsx", join(repoRoot, "src/main.ts")],
      cwd: repoRoot,
      logFile: this.options.logFile,
      env: {
        ...process.env,
        KUBECONFIG: this.options.kubeconfigPath,
        LEADER_ELECT: "false",
        HTTP_HOST: "127.0.0.1",
        HTTP_PORT: String(this.httpPort),
        POD_NAME: `operator-test-${this.starts}`,
        LOG_LEVEL: "debug",
        WORKERS: "4",
        STATS_REFRESH_SECONDS: "5",
        ...this.options.env,
      },
    });
    await waitFor(
      `the operator's /readyz (log: ${this.options.logFile})`,
      async () => {
        if (this.process?.hasExited) throw new Error(`the operator exited; see ${this.options.logFile}`);
        const res = await fetch(`http://127.0.0.1:${this.httpPort}/readyz`);
        return res.ok;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
  }

  async stop(): Promise<void> {
    await this.process?.stop("SIGTERM", 15_000);
  }

  async kill(): Promise<void> {
    await this.process?.stop("SIGKILL");
  }

  async metrics(): Promise<string> {
    return (await fetch(`http://127.0.0.1:${this.httpPort}/metrics`)).text();
  }

  logs(): string {
    return existsSync(this.options.logFile) ? readFileSync(this.options.logFile, "utf8") : "";
  }
}
