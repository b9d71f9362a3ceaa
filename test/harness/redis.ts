/**
 * A throwaway redis-server on a free loopback port, without persistence.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { ManagedProcess, waitFor } from "./processes.js";
import { freePort } from "./ports.js";

export class RedisServer {
  readonly dir = mkdtempSync(join(tmpdir(), "poolpolicy-redis-"));
  port = 0;
  private process?: ManagedProcess;

  private constructor(readonly password?: string) {}

  static async create(options: { password?: string } = {}): Promise<RedisServer> {
    const server = new RedisServer(options.password);
    server.port = await freePort();
    await server.start();
    return server;
  }

  /** A redis:// URL, with the password when one is set. */
  get url(): string {
    return this.password
      ? `redis://:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}`
      : `redis://127.0.0.1:${this.port}`;
  }

  get isRunning(): boolean {
    return this.process !== undefined && !this.process.hasExited;
  }

  async start(): Promise<void> {
    if (this.isRunning) return;
    const args = [
      "--port",
      String(this.port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      this.dir,
    ];
    if (this.password) args.push("--requirepass", this.password);
    this.process = new ManagedProcess({
      name: "redis",
      command: "redis-server",
      args,
      logFile: join(this.dir, "redis.log"),
    });
    await waitFor(`redis on port ${this.port}`, async () => {
      const client = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on("error", () => undefined); // a refused connection before start-up is expected; connect() rejects too
      try {
        await client.connect();
        return (await client.ping()) === "PONG";
      } finally {
        client.disconnect();
      }
    });
  }

  async stop(): Promise<void> {
    await this.process?.stop("SIGTERM", 5_000);
  }

  async destroy(): Promise<void> {
    await this.stop();
    if (!process.env.POOLPOLICY_KEEP_TMP) rmSync(this.dir, { recursive: true, force: true });
  }
}
