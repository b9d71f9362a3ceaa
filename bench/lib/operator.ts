/**
 * The operator under benchmark: test/harness/operator.ts's OperatorProcess (src/main.ts under
 * tsx, as the tests run it), or, for memory figures, the operator compiled to JavaScript and run
 * by plain node as the container image runs it (tsx's loader thread alone holds ~150 MiB of RSS).
 * Production-like settings (LOG_LEVEL=info, the default 30 s stats refresh) and the in-process
 * probe (operator-probe.mjs) preloaded through NODE_OPTIONS.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { OperatorProcess } from "../../test/harness/operator.js";
import { freePort } from "../../test/harness/ports.js";
import { repoRoot } from "../../test/harness/tools.js";
import { parseProm, type Sample } from "./prom.js";

const probePath = fileURLToPath(new URL("./operator-probe.mjs", import.meta.url));
/** Where bench/tsconfig.operator.json compiles src/ (dist/ is git-ignored). */
const compiledRoot = join(repoRoot, "dist/bench-operator/src");
let compiled = false;

/** Compiles src/ to dist/bench-operator (once per benchmark process). */
export function compileOperator(): string {
  if (!compiled) {
    execFileSync(
      process.execPath,
      [join(repoRoot, "node_modules/typescript/bin/tsc"), "-p", join(repoRoot, "bench/tsconfig.operator.json")],
      { stdio: "inherit" },
    );
    compiled = true;
  }
  return join(compiledRoot, "main.js");
}

export interface ProbeState {
  since: number;
  requests: Record<string, number>;
  writes: Array<{ at: number; verb: string; path: string }>;
  reconciles: number;
  reconcilesByKey: Record<string, number>;
  overlaps: number;
  maxConcurrentPerKey: number;
  maxInFlight: number;
  reconcileMs: number[];
  controllerWrapped: boolean;
  /** New TCP/TLS connections to the API server. */
  connects: number;
  /** API responses by HTTP status (409: a write lost to a concurrent change). */
  responsesByStatus: Record<string, number>;
  /** The first requests after a reset: sent and answered, in ms since `since`. */
  timeline: Array<{ sent: number; answered?: number; request: string }>;
  wrapError?: string;
  memory: NodeJS.MemoryUsage;
  /** Peak resident bytes since the process started (VmHWM; Linux). */
  peakRss?: number;
  /** The process's CPU time since it started (µs), user and system. */
  cpu: NodeJS.CpuUsage;
}

export interface GcResult {
  memory: NodeJS.MemoryUsage;
  /** Resident bytes by kind of mapping, from /proc/self/smaps. */
  smaps?: {
    brkHeap: number;
    anonymous: number;
    files: number;
    other: number;
    anonymousBySize?: Record<string, number>;
  };
  heap: { used_heap_size: number; total_heap_size: number; malloced_memory: number; peak_malloced_memory: number };
}

const WRITE_VERBS = new Set(["CREATE", "UPDATE", "PATCH", "APPLY", "DELETE"]);

export function writesOf(requests: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(requests).filter(([k]) => WRITE_VERBS.has(k.split(" ")[0]!)));
}

export function readsOf(requests: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(requests).filter(([k]) => !WRITE_VERBS.has(k.split(" ")[0]!)));
}

export const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);

export class BenchOperator {
  private process?: OperatorProcess;
  private probePort = 0;
  readonly logFile: string;

  constructor(
    private readonly kubeconfigPath: string,
    logDir: string,
    name: string,
    private readonly env: Record<string, string> = {},
    private readonly mode: "tsx" | "compiled" = "tsx",
  ) {
    mkdirSync(logDir, { recursive: true });
    this.logFile = join(logDir, `operator-${name}.log`);
  }

  /** Starts a fresh process (and probe port) and waits for its /readyz. */
  async start(extraEnv: Record<string, string> = {}): Promise<void> {
    this.probePort = await freePort();
    // Compiled: dist/bench-operator/src/main.js under plain node, like the image's ENTRYPOINT.
    const compiled = this.mode === "compiled";
    this.process = new OperatorProcess({
      kubeconfigPath: this.kubeconfigPath,
      logFile: this.logFile,
      entry: compiled ? [compileOperator()] : undefined,
      env: {
        ...(compiled ? { BENCH_CONTROLLER_MODULE: join(compiledRoot, "runtime/controller.js") } : {}),
        NODE_OPTIONS: `--import=${probePath}`,
        BENCH_PROBE_PORT: String(this.probePort),
        LOG_LEVEL: "info",
        WORKERS: "4",
        STATS_REFRESH_SECONDS: "30",
        RESYNC_SECONDS: "300",
        ...this.env,
        ...extraEnv,
      },
    });
    await this.process.start();
  }

  async stop(): Promise<void> {
    await this.process?.stop();
  }

  async metrics(): Promise<Sample[]> {
    return parseProm(await this.process!.metrics());
  }

  private async call<T>(path: string, method = "GET"): Promise<T> {
    const res = await fetch(`http://127.0.0.1:${this.probePort}${path}`, { method });
    if (!res.ok) throw new Error(`probe ${path}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }

  probe(): Promise<ProbeState> {
    return this.call<ProbeState>("/probe");
  }

  reset(): Promise<void> {
    return this.call("/reset", "POST");
  }

  gc(): Promise<GcResult> {
    return this.call<GcResult>("/gc", "POST");
  }

  profileStart(): Promise<void> {
    return this.call("/profile/start", "POST");
  }

  profileStop(file: string): Promise<void> {
    return this.call(`/profile/stop?file=${encodeURIComponent(file)}`, "POST");
  }

  heapSnapshot(file: string): Promise<{ file: string }> {
    return this.call(`/heap-snapshot?file=${encodeURIComponent(file)}`, "POST");
  }

  logs(): string {
    return this.process?.logs() ?? "";
  }
}
