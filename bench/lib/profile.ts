/** Reading a V8 .cpuprofile: self time by function and by package, for the report. */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function place(url: string): string {
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  const src = /\/work\/[^/]+\/(src\/.*|bench\/.*)$/.exec(url) ?? /\/((?:src|bench|test)\/.*)$/.exec(url);
  if (src) return src[1]!;
  if (url.startsWith("node:")) return url;
  return url === "" ? "(native)" : url.split("/").slice(-2).join("/");
}

/** Top functions and packages by self time, as short strings "name (where) 12.3%". */
export function summarizeProfile(file: string, top = 10): string[] {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
    total += dt;
  });
  const byFunction = new Map<string, number>();
  const byPackage = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    const where = place(n.callFrame.url);
    const fn = `${n.callFrame.functionName || "(anonymous)"} (${where}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ""})`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
    const pkg =
      n.callFrame.functionName === "(idle)"
        ? "(idle)"
        : n.callFrame.functionName === "(garbage collector)"
          ? "(garbage collector)"
          : where;
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
  }
  const pct = (us: number) => `${((100 * us) / Math.max(total, 1)).toFixed(1)}%`;
  const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  const packages = sorted(byPackage)
    .slice(0, 8)
    .map(([k, v]) => `${k} ${pct(v)}`);
  const functions = sorted(byFunction)
    .filter(([k]) => !k.startsWith("(idle)"))
    .slice(0, top)
    .map(([k, v]) => `${k} ${pct(v)}`);
  return [`by package: ${packages.join(", ")} (of ${(total / 1e6).toFixed(1)} s sampled)`, ...functions];
}
