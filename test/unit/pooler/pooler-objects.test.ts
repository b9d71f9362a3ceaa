import type { V1Deployment } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import {
  KUBERNETES_EXPANDABLE,
  liveTemplateCap,
  POOLER_CAP_ANNOTATION,
  POOLER_RELOAD_POLL_SECONDS,
  pgbouncerCommand,
  podTemplateCap,
} from "../../../src/pooler/pooler-objects.js";

describe("the cap on the pooler's pod template", () => {
  it("takes the planned cap when it is lower than the live one: the pods roll", () => {
    expect(podTemplateCap(8, 10)).toBe(8);
  });

  it("keeps the live cap when the planned one is higher or equal: no roll", () => {
    expect(podTemplateCap(12, 10)).toBe(10);
    expect(podTemplateCap(10, 10)).toBe(10);
  });

  it("takes the planned cap when no live one is known (no Deployment yet, or one applied before the annotation)", () => {
    expect(podTemplateCap(10, undefined)).toBe(10);
  });

  it("reads the live cap off the Deployment's pod template, undefined when absent or not a number", () => {
    const withCap = (value: string | undefined): V1Deployment => ({
      spec: {
        selector: {},
        template: { metadata: { annotations: value === undefined ? {} : { [POOLER_CAP_ANNOTATION]: value } } },
      },
    });
    expect(liveTemplateCap(withCap("17"))).toBe(17);
    expect(liveTemplateCap(withCap(undefined))).toBeUndefined();
    expect(liveTemplateCap(withCap("x"))).toBeUndefined();
    expect(liveTemplateCap(undefined)).toBeUndefined();
  });
});

describe("the pooler container's command (test/integration/pooler/reload.test.ts runs it)", () => {
  it("runs PgBouncer in the shell's place on the ini, and a watcher that HUPs it when either file changes", () => {
    const command = pgbouncerCommand({ ini: "/c/pgbouncer.ini", authFile: "/a/userlist.txt" });
    expect(command.slice(0, 2)).toEqual(["/bin/sh", "-c"]);
    // The files are the script's $1 and $2 ($0 names it in ps).
    expect(command.slice(3)).toEqual(["pgbouncer", "/c/pgbouncer.ini", "/a/userlist.txt"]);
    const script = command[2]!.split("\n");
    expect(script.at(-1)).toBe('exec pgbouncer "$1"');
    expect(script).toContain('  digest() { cat "$1" "$2" | cksum; }');
    expect(script).toContain(`  while sleep ${POOLER_RELOAD_POLL_SECONDS} && kill -0 "$pid" 2>/dev/null; do`);
    expect(pgbouncerCommand({ ini: "i", authFile: "a" }, 1)[2]).toContain("while sleep 1 ");
  });

  it("holds nothing Kubernetes expands in a command ($$ would become $: the watcher lost PgBouncer's pid on the real node)", () => {
    for (const arg of pgbouncerCommand({ ini: "/c/pgbouncer.ini", authFile: "/a/userlist.txt" })) {
      expect(arg).not.toMatch(KUBERNETES_EXPANDABLE);
    }
    expect("pid=$$").toMatch(KUBERNETES_EXPANDABLE);
    expect("$(PGBOUNCER_PORT)").toMatch(KUBERNETES_EXPANDABLE);
    expect('$(digest "$1" "$2")').not.toMatch(KUBERNETES_EXPANDABLE);
  });
});
