/**
 * A fake Kubernetes API on loopback for unit tests of watch-driven code: every GET of a
 * collection answers the items the test set for its path (with the query the test can read
 * back), a `?watch=true` request stays open and receives the events the test sends (those sent
 * before it connected too, after the resourceVersion it asks for, as the API server would).
 * Integration tests run the same code against a real kube-apiserver.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ConnectionReusingKubeConfig } from "../../../src/runtime/kube-config.js";

export class FakeApi {
  /** Items listed per collection path. */
  listed: Record<string, unknown[]> = {};
  /** Every request: path, then " watch" for watches, then the query. */
  readonly requests: Array<{ path: string; watch: boolean; query: URLSearchParams }> = [];
  /** Open watches per path; a watch a stopped informer gave up on leaves when its client closes it. */
  private readonly watchers = new Map<string, Set<ServerResponse>>();
  private readonly sent = new Map<string, Array<{ resourceVersion: number; line: string }>>();
  private server?: Server;

  async start(): Promise<ConnectionReusingKubeConfig> {
    this.server = createServer((req, res) => {
      const url = new URL(req.url!, "http://x");
      const watch = url.searchParams.get("watch") === "true";
      this.requests.push({ path: url.pathname, watch, query: url.searchParams });
      res.writeHead(200, { "content-type": "application/json" });
      if (watch) {
        res.write("");
        // Events sent before this watch connected, after the version it asks to start from.
        const from = Number(url.searchParams.get("resourceVersion") ?? 0);
        for (const e of this.sent.get(url.pathname) ?? []) if (e.resourceVersion > from) res.write(e.line);
        const open = this.watchers.get(url.pathname) ?? new Set();
        this.watchers.set(url.pathname, open.add(res));
        res.on("close", () => open.delete(res));
        return;
      }
      // Pages when asked (`limit`), the continue token being the offset of the next page.
      const all = this.listed[url.pathname] ?? [];
      const from = Number(url.searchParams.get("continue") ?? 0);
      const limit = Number(url.searchParams.get("limit") ?? all.length) || all.length;
      const items = all.slice(from, from + limit);
      const more = from + limit < all.length ? { continue: String(from + limit) } : {};
      res.end(JSON.stringify({ kind: "List", apiVersion: "v1", metadata: { resourceVersion: "1", ...more }, items }));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    const kc = new ConnectionReusingKubeConfig();
    kc.loadFromOptions({
      clusters: [
        { name: "c", server: `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`, skipTLSVerify: true },
      ],
      users: [{ name: "u", token: "t" }],
      contexts: [{ name: "ctx", cluster: "c", user: "u" }],
      currentContext: "ctx",
    });
    return kc;
  }

  watching(path: string): boolean {
    return (this.watchers.get(path)?.size ?? 0) > 0;
  }

  /** To every open watch of the path. */
  send(
    path: string,
    type: "ADDED" | "MODIFIED" | "DELETED",
    object: { metadata?: { resourceVersion?: string } },
  ): void {
    const line = `${JSON.stringify({ type, object })}\n`;
    const log = this.sent.get(path) ?? [];
    this.sent.set(path, [...log, { resourceVersion: Number(object.metadata?.resourceVersion ?? 0), line }]);
    for (const res of this.watchers.get(path) ?? []) res.write(line);
  }

  /** Ends the open watches (between tests). */
  endWatches(): void {
    for (const open of this.watchers.values()) for (const res of open) res.end();
    this.watchers.clear();
    this.sent.clear();
    this.requests.length = 0;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }
}
