/**
 * The Redis check: PING, then INFO clients and INFO stats for the numbers that predict
 * "ERR max number of clients reached" (connected_clients against maxclients, and
 * rejected_connections, which counts clients already turned away).
 */
import { Redis } from "ioredis";
import { redactUrl } from "../log.js";

export interface RedisFacts {
  connectedClients: number;
  maxClients: number;
  rejectedConnections: number;
}

export class RedisCheckError extends Error {}

export function parseInfo(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) fields[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return fields;
}

export async function checkRedis(url: string, timeoutMs = 3_000): Promise<RedisFacts> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
    connectionName: "poolpolicy-operator",
  });
  client.on("error", () => undefined); // surfaced through the rejected promises below
  try {
    await client.connect();
    await client.ping();
    const info = parseInfo(`${await client.info("clients")}\n${await client.info("stats")}`);
    return {
      connectedClients: Number(info.connected_clients ?? 0),
      maxClients: Number(info.maxclients ?? 0),
      rejectedConnections: Number(info.rejected_connections ?? 0),
    };
  } catch (err) {
    const message = (err as Error).message.replaceAll(url, redactUrl(url));
    throw new RedisCheckError(`Redis at ${redactUrl(url)}: ${message}`);
  } finally {
    client.disconnect();
  }
}
