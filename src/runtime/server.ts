/**
 * The operator's HTTP endpoints, on node:http:
 *
 * - `/healthz` (liveness): 200 while the process's loops are alive. The kubelet restarts the
 *   pod when it fails, so its checks must only fail when a restart would help (a worker loop
 *   that died), never because a dependency is down: restarting us does not fix PostgreSQL.
 * - `/readyz` (readiness): 200 once the informers have synced. Until then the cache is
 *   partial and a reconcile could mistake "not listed yet" for "deleted".
 * - `/metrics`: the Prometheus registry in the text exposition format.
 *
 * Each check has a timeout, so one hung check cannot make the probe itself hang. The body
 * lists every check as `[+]name ok` or `[-]name failed: why`, like the API server's own
 * /healthz?verbose.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { log as rootLog, type Logger } from "../log.js";
import { describeError } from "../kube/errors.js";
import { registry as runtimeRegistry } from "./metrics.js";

/** Passes when it returns true; fails when it returns false, throws or times out. */
export type Check = () => boolean | Promise<boolean>;

export interface NamedCheck {
  name: string;
  check: Check;
}

export interface OperatorServerOptions {
  healthChecks?: NamedCheck[];
  readinessChecks?: NamedCheck[];
  /** Default: the runtime's registry (which the domain metrics join). */
  registry?: Registry;
  checkTimeoutMs?: number;
  logger?: Logger;
}

interface CheckResult {
  name: string;
  passed: boolean;
  detail?: string;
}

export class OperatorServer {
  private readonly healthChecks: NamedCheck[];
  private readonly readinessChecks: NamedCheck[];
  private readonly registry: Registry;
  private readonly checkTimeoutMs: number;
  private readonly log: Logger;
  private readonly server: Server;

  constructor(options: OperatorServerOptions = {}) {
    this.healthChecks = [...(options.healthChecks ?? [])];
    this.readinessChecks = [...(options.readinessChecks ?? [])];
    this.registry = options.registry ?? runtimeRegistry;
    this.checkTimeoutMs = options.checkTimeoutMs ?? 5_000;
    this.log = (options.logger ?? rootLog).child({ component: "http" });
    this.server = createServer((req, res) => void this.route(req, res));
  }

  addHealthCheck(name: string, check: Check): void {
    this.healthChecks.push({ name, check });
  }

  addReadinessCheck(name: string, check: Check): void {
    this.readinessChecks.push({ name, check });
  }

  /** Starts listening; resolves with the bound port (useful with port 0). */
  listen(port: number, host = "0.0.0.0"): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  /** Stops listening and drops idle keep-alive connections (Prometheus keeps one open). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, "method not allowed\n");
      const path = new URL(req.url ?? "/", "http://localhost").pathname;
      if (path === "/healthz" || path === "/livez") return await this.serveChecks(res, this.healthChecks);
      if (path === "/readyz") return await this.serveChecks(res, this.readinessChecks);
      if (path === "/metrics") return await this.serveMetrics(res);
      send(res, 404, "not found\n");
    } catch (err) {
      this.log.error({ url: req.url, error: describeError(err) }, "request failed");
      if (!res.headersSent) send(res, 500, "internal error\n");
    }
  }

  private async serveChecks(res: ServerResponse, checks: NamedCheck[]): Promise<void> {
    const results = await Promise.all(checks.map((check) => this.runCheck(check)));
    const passed = results.every((result) => result.passed);
    const lines = results.map((r) =>
      r.passed ? `[+]${r.name} ok` : `[-]${r.name} failed${r.detail ? `: ${r.detail}` : ""}`,
    );
    lines.push(passed ? "ok" : "failed");
    send(res, passed ? 200 : 503, `${lines.join("\n")}\n`);
  }

  private async runCheck({ name, check }: NamedCheck): Promise<CheckResult> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<CheckResult>((resolve) => {
      timer = setTimeout(() => resolve({ name, passed: false, detail: "timed out" }), this.checkTimeoutMs);
    });
    const outcome = (async (): Promise<CheckResult> => {
      try {
        return { name, passed: (await check()) === true };
      } catch (err) {
        return { name, passed: false, detail: describeError(err).message };
      }
    })();
    try {
      return await Promise.race([outcome, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async serveMetrics(res: ServerResponse): Promise<void> {
    const body = await this.registry.metrics();
    send(res, 200, body, this.registry.contentType);
  }
}

function send(res: ServerResponse, status: number, body: string, contentType = "text/plain; charset=utf-8"): void {
  res.writeHead(status, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(body) });
  res.end(res.req.method === "HEAD" ? undefined : body);
}
