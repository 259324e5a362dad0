// A V8 CPU profile (inspector's Profiler.stop, or node --cpu-prof's .cpuprofile file) as its top functions by self
// time. perf/ipvs.lab.ts prints its profiles with it; `node perf/profile.ts FILE [N]` prints a saved one (the race's
// RACE_PROFILE=1 files, kept with LAB_KEEP=DIR).
import { readFileSync } from 'node:fs';
import { argv } from 'node:process';
import { pathToFileURL } from 'node:url';

export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples?: number[];
  timeDeltas?: number[];
}

/** The `n` functions with the most self time, as "  12.3%  name file:line" lines. */
export function topSelf(p: CpuProfile, n = 20): string[] {
  const dt = new Map<number, number>();
  p.samples?.forEach((id, k) => dt.set(id, (dt.get(id) ?? 0) + (p.timeDeltas?.[k] ?? 0)));
  const self = new Map<string, number>();
  for (const node of p.nodes) {
    const f = node.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + (dt.get(node.id) ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  return [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, us]) => `    ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`);
}

if (import.meta.url === pathToFileURL(argv[1] ?? '').href) {
  const [file, n] = argv.slice(2);
  if (!file) throw new Error('usage: node perf/profile.ts FILE.cpuprofile [N]');
  console.log(topSelf(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, Number(n ?? 30)).join('\n'));
}
