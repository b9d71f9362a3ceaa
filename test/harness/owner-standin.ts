/**
 * What the Postgres-operator stand-ins (cnpg-standin.ts, zalando-standin.ts) share: each follows
 * one resource of its operator (a GET every pollMs, as the pod bridge follows its pods), bound
 * to one local PostgreSQL server, and records what it did. A subclass says what its operator
 * does in one step and how it reports its status.
 */
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { PostgresServer } from "./postgres.js";

export interface StandInEvent<Action extends string = string> {
  at: Date;
  action: Action;
  maxConnections: string | undefined;
}

export abstract class OwnerStandIn<Action extends string, Resource> {
  /** What the stand-in did, in order: tests assert on it. */
  readonly events: StandInEvent<Action | "adopted" | "restarted">[] = [];
  /** The value the server runs as far as the stand-in knows (set once it adopted the resource). */
  protected applied: string | undefined;
  protected adopted = false;
  /** A failed step of the loop: the test's next assertion fails with it instead of timing out. */
  failure?: Error;
  private readonly custom: CustomObjectsApi;
  private running = false;
  private loop?: Promise<void>;

  constructor(
    kc: KubeConfig,
    private readonly api: { group: string; version: string; plural: string },
    protected readonly namespace: string,
    protected readonly name: string,
    protected readonly server: PostgresServer,
    private readonly pollMs = 200,
  ) {
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  get restarts(): number {
    return this.events.filter((e) => e.action === "restarted").length;
  }

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        try {
          await this.step(await this.read());
        } catch (err) {
          this.failure = err as Error;
          this.running = false;
          return;
        }
        await new Promise((r) => setTimeout(r, this.pollMs));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** What the operator does with the resource as it reads now. */
  protected abstract step(resource: Resource): Promise<void>;

  protected record(action: Action | "adopted" | "restarted", maxConnections: string | undefined): void {
    this.events.push({ at: new Date(), action, maxConnections });
  }

  /** As an operator writes its status: a merge patch of the status subresource. */
  protected async patchStatus(status: Record<string, string>): Promise<void> {
    await this.custom.patchNamespacedCustomObjectStatus(
      { ...this.api, namespace: this.namespace, name: this.name, body: { status } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  }

  private async read(): Promise<Resource> {
    return (await this.custom.getNamespacedCustomObject({
      ...this.api,
      namespace: this.namespace,
      name: this.name,
    })) as Resource;
  }
}
