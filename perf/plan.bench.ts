// Plan benchmark: 10 000 Services x 10 endpoints across 3 zones.
// Reports medians and ratios measured in this one run; absolute times on a shared machine are noise.
//   npm run bench                 (SERVICES=2000 ENDPOINTS=10 npm run bench to scale it)
// The parent runs the measurement twice in child processes: with V8's default heap sizing, and
// with the V8 flags kube-ipvs is launched with (src/util/v8-flags.ts: the bin's shebang and the
// npm scripts pass them); targets are judged on the latter, and both are printed.
import { spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { defaultConfig } from '../src/config/config.ts';
import { Model } from '../src/model/model.ts';
import { planConfigFrom } from '../src/plan/config.ts';
import { Planner } from '../src/plan/plan.ts';
import { DAEMON_V8_FLAGS, EXIT_DEADLOCK_V8_FLAGS } from '../src/util/v8-flags.ts';
import { syntheticCluster } from './cluster.ts';

if (!process.env.BENCH_CHILD) {
  let failed = false;
  for (const [label, flags] of [
    // Both with the exit-deadlock flags (they change no heap sizing; see v8-flags.ts).
    ['V8 defaults', EXIT_DEADLOCK_V8_FLAGS],
    [`as kube-ipvs is launched: ${DAEMON_V8_FLAGS.join(' ')}`, DAEMON_V8_FLAGS],
  ] as const) {
    process.stdout.write(`--- ${label}\n`);
    const r = spawnSync(process.execPath, ['--expose-gc', ...flags, import.meta.filename], {
      env: { ...process.env, BENCH_CHILD: label },
      stdio: 'inherit',
    });
    if (r.status !== 0) failed = true;
  }
  process.exit(failed ? 1 : 0);
}

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const ENDPOINTS = Number(process.env.ENDPOINTS ?? 10);
const { serviceObj, sliceObj, node } = syntheticCluster(ENDPOINTS);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const CHANGES = Number(process.env.CHANGES ?? 2000);
const gc = (globalThis as { gc?: () => void }).gc;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const mb = (n: number) => `${(n / 1024 / 1024).toFixed(0)} MB`;

const rssBefore = process.memoryUsage().rss;
const model = new Model({ nodeName: 'node-0', proxyName: 'kube-ipvs' });
const cfg = planConfigFrom(defaultConfig());

let t0 = performance.now();
model.apply({ kind: 'Node', previous: null, current: node });
for (let i = 0; i < SERVICES; i++) {
  model.apply({ kind: 'Service', previous: null, current: serviceObj(i) });
  model.apply({ kind: 'EndpointSlice', previous: null, current: sliceObj(i, 0) });
}
const loadMs = performance.now() - t0;

// Full plans: every Service compiled from scratch.
const fullMs: number[] = [];
let planner = new Planner(model, cfg);
for (let r = 0; r < ROUNDS; r++) {
  planner = new Planner(model, cfg);
  t0 = performance.now();
  planner.planAll();
  fullMs.push(performance.now() - t0);
}
t0 = performance.now();
const snap = planner.snapshot();
const snapshotMs = performance.now() - t0;

// Incremental: one EndpointSlice changes (an endpoint goes terminating or comes back), through
// the model's change tracking and the planner's re-plan of that one Service.
const applyMs: number[] = [];
const replanMs: number[] = [];
const versions = new Map<number, number>();
let seed = 7;
for (let c = 0; c < CHANGES; c++) {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  const i = (seed >>> 8) % SERVICES;
  const v = versions.get(i) ?? 0;
  const previous = sliceObj(i, v);
  const current = sliceObj(i, v + 1);
  versions.set(i, v + 1);
  t0 = performance.now();
  const result = model.apply({ kind: 'EndpointSlice', previous, current });
  const t1 = performance.now();
  const changed = planner.update(result);
  const t2 = performance.now();
  if (changed.length !== 1) throw new Error(`expected one re-planned service, got ${changed.length}`);
  applyMs.push(t1 - t0);
  replanMs.push(t2 - t1);
}
const totalIncr = applyMs.map((a, k) => a + replanMs[k]!);

// Let V8 give back what the bench itself threw away (raw objects, the discarded planners).
for (let k = 0; k < 3; k++) {
  gc?.();
  await new Promise((r) => setTimeout(r, 200));
}
const rssAfter = process.memoryUsage().rss;
const heap = process.memoryUsage().heapUsed;
const fullMedian = median(fullMs);
const incrMedian = median(totalIncr);

const lines = [
  `plan benchmark: ${SERVICES} Services x ${ENDPOINTS} endpoints, 3 zones (node ${process.version}, ${ROUNDS} full rounds, ${CHANGES} slice changes)`,
  `  virtual servers planned          ${snap.virtualServers.length}`,
  `  model load (all adds)            ${loadMs.toFixed(0)} ms`,
  `  full plan, median                ${fullMedian.toFixed(1)} ms   (min ${Math.min(...fullMs).toFixed(1)}, max ${Math.max(...fullMs).toFixed(1)})   target well under 1000 ms`,
  `  snapshot (whole-node view)       ${snapshotMs.toFixed(1)} ms`,
  `  one slice change, median         ${(incrMedian * 1000).toFixed(1)} µs   (model ${(median(applyMs) * 1000).toFixed(1)} µs + re-plan ${(median(replanMs) * 1000).toFixed(1)} µs; p99 ${(pct(totalIncr, 0.99) * 1000).toFixed(1)} µs)   target well under 1000 µs`,
  `  full plan / one change           ${(fullMedian / incrMedian).toFixed(0)}x`,
  `  RSS after (gc ${gc ? 'run' : 'not exposed'})            ${mb(rssAfter)}   (at start ${mb(rssBefore)}, heap used ${mb(heap)})   target under 200 MB`,
];
process.stdout.write(lines.join('\n') + '\n');
const timeOk = fullMedian < 1000 && incrMedian < 1;
const memOk = rssAfter < 200 * 1024 * 1024;
const judged = process.env.BENCH_CHILD !== 'V8 defaults';
process.stdout.write(
  `${timeOk ? 'time targets met' : 'TIME TARGET MISSED'}; ${memOk ? 'RSS under 200 MB' : `RSS over 200 MB${judged ? '' : ' (not judged with V8 defaults)'}`}\n`,
);
process.exitCode = timeOk && (memOk || !judged) ? 0 : 1;
