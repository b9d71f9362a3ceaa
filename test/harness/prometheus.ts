/**
 * A real Prometheus (Debian's prometheus package, taken out of its .deb by tools/install-deps.sh
 * into the tools cache) that scrapes the operator's /metrics, for tests that run PromQL against
 * what a live operator exports: the chart's Grafana dashboard.
 *
 * It listens on loopback only, on a free port, keeps its data in a temp folder of its own
 * (poolpolicy-prometheus-*), and stop() removes that folder: call it in afterAll, so that it
 * happens when the test fails too.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { freePort } from "./ports.js";
import { ManagedProcess, waitFor } from "./processes.js";
import { toolsDir } from "./tools.js";

export type PrometheusTool = "prometheus" | "promtool";

/**
 * $PROMETHEUS / $PROMTOOL, then the PATH, then <tools cache>/prometheus-VERSION/, where
 * `make deps` puts both programs. undefined when none has it.
 */
export function findPrometheusTool(tool: PrometheusTool): string | undefined {
  const fromEnv = process.env[tool.toUpperCase()];
  if (fromEnv) return fromEnv;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, tool))) return join(dir, tool);
  }
  try {
    const cache = dirname(toolsDir());
    const folder = readdirSync(cache)
      .filter((d) => d.startsWith("prometheus-") && existsSync(join(cache, d, tool)))
      .sort()
      .pop();
    return folder && join(cache, folder, tool);
  } catch {
    return undefined; // no tools cache
  }
}

export interface PrometheusSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface PrometheusOptions {
  /** host:port of each target whose /metrics Prometheus scrapes, as job `job`. */
  targets: string[];
  job: string;
  /** Where Prometheus's own log goes (a file the test's teardown removes or keeps). */
  logFile: string;
  /** Seconds between scrapes; 1 so that rate() has samples within seconds. */
  scrapeIntervalSeconds?: number;
}

export class PrometheusServer {
  private process?: ManagedProcess;
  private dir?: string;
  port = 0;

  constructor(private readonly options: PrometheusOptions) {}

  async start(): Promise<void> {
    const binary = findPrometheusTool("prometheus");
    if (!binary) {
      throw new Error(
        "prometheus not found ($PROMETHEUS, PATH, or the tools cache's prometheus-*/): run `make deps` as root, which takes it out of Debian's prometheus package",
      );
    }
    this.dir = mkdtempSync(join(tmpdir(), "poolpolicy-prometheus-"));
    const interval = `${this.options.scrapeIntervalSeconds ?? 1}s`;
    // JSON is YAML.
    const config = {
      global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
      scrape_configs: [{ job_name: this.options.job, static_configs: [{ targets: this.options.targets }] }],
    };
    writeFileSync(join(this.dir, "prometheus.yml"), JSON.stringify(config, null, 2));
    this.port = await freePort();
    this.process = new ManagedProcess({
      name: "prometheus",
      command: binary,
      args: [
        `--config.file=${join(this.dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(this.dir, "data")}`,
        `--web.listen-address=127.0.0.1:${this.port}`,
      ],
      logFile: this.options.logFile,
    });
    await waitFor(
      `Prometheus to be ready (log: ${this.options.logFile})`,
      async () => {
        if (this.process?.hasExited) throw new Error(`prometheus exited; see ${this.options.logFile}`);
        return (await fetch(`${this.url}/-/ready`)).ok;
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * Waits until every target was scraped successfully at least `scrapes` times in the last
   * minute: then rate() and increase() over a window of a few scrape intervals have samples.
   */
  async waitForScrapes(scrapes: number): Promise<void> {
    const query = `sum_over_time(up{job="${this.options.job}"}[1m])`;
    await waitFor(
      `${scrapes} successful scrapes of each target of job ${this.options.job} (log: ${this.options.logFile})`,
      async () => {
        const result = await this.query(query);
        return result.length === this.options.targets.length && result.every((s) => Number(s.value[1]) >= scrapes);
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
  }

  /** An instant query through the HTTP API (/api/v1/query); a PromQL error throws with Prometheus's message. */
  async query(expr: string): Promise<PrometheusSample[]> {
    const res = await fetch(`${this.url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: PrometheusSample[] };
    };
    if (body.status !== "success") throw new Error(`Prometheus refused ${expr}: ${body.error}`);
    if (body.data?.resultType !== "vector")
      throw new Error(`${expr} returned a ${body.data?.resultType}, not a vector`);
    return body.data.result;
  }

  /** Values of `label` over the series that match `match` (/api/v1/label/…/values), as Grafana's label_values() asks. */
  async labelValues(label: string, match: string): Promise<string[]> {
    const res = await fetch(`${this.url}/api/v1/label/${label}/values?${new URLSearchParams({ "match[]": match })}`);
    const body = (await res.json()) as { status: string; error?: string; data?: string[] };
    if (body.status !== "success")
      throw new Error(`Prometheus refused label_values(${match}, ${label}): ${body.error}`);
    return body.data ?? [];
  }

  /** Stops Prometheus and removes its temp folder (config and data). */
  async stop(): Promise<void> {
    await this.process?.stop("SIGTERM", 10_000);
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}
