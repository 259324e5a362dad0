// IPVS programming benchmark, run inside the lab VM (npm run bench:lab):
//  1. cold start: program SERVICES x ENDPOINTS from an empty kernel through the reconciler,
//     vs `ipvsadm -R` restoring the same virtual servers on the same kernel (ratio);
//  2. one endpoint change at that scale: change seen (model.apply) -> kernel updated, median/p99;
//  3. a full resync with nothing to do, vs `ipvsadm -Ln` reading the same state (its floor: one
//     service dump and one destination dump per service, as the resync reads it);
//  4. endpoint changes while a full resync runs, written alongside it (syncDestinations, as the
//     daemon does): change -> kernel, median/p99, next to the resync's own duration.
// PROFILE=cold,idle (1: idle): CPU profiles of the cold start and of the idle resync, top functions by self time.
// The /metrics scrape at that scale is perf/scrape.lab.ts (npm run bench:lab:scrape).
// Under TCG every number is inflated by emulation: read the ratios, not the absolute times.
import { execFileSync } from 'node:child_process';
import { Session } from 'node:inspector/promises';
import { performance } from 'node:perf_hooks';
import { defaultConfig } from '../src/config/config.ts';
import { NetlinkIpvs } from '../src/dataplane/ipvs/client.ts';
import { NetlinkLinks } from '../src/dataplane/links.ts';
import { MemoryOwnership } from '../src/dataplane/ownership.ts';
import { Reconciler } from '../src/dataplane/reconciler.ts';
import { Model } from '../src/model/model.ts';
import { planConfigFrom } from '../src/plan/config.ts';
import { Planner } from '../src/plan/plan.ts';
import { hostPort } from '../src/util/ip.ts';
import { topSelf } from './profile.ts';

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const ENDPOINTS = Number(process.env.ENDPOINTS ?? 10);
const CHANGES = Number(process.env.CHANGES ?? 200);
const ip = (base: number, i: number) => `10.${base + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

function sliceObj(i: number, version: number) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `svc-${i}-x`, namespace: 'bench', labels: { 'kubernetes.io/service-name': `svc-${i}` } },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: Array.from({ length: ENDPOINTS }, (_, k) => ({
      addresses: [ip(128, i * ENDPOINTS + k + (k === 0 ? version % 2 : 0) * 7_000_000)],
      conditions: { ready: true },
    })),
  };
}

const model = new Model({ nodeName: 'bench-node', proxyName: 'kube-ipvs' });
model.apply({
  kind: 'Node',
  previous: null,
  current: {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'bench-node' },
    status: { addresses: [{ type: 'InternalIP', address: '192.168.200.1' }] },
  },
});
for (let i = 0; i < SERVICES; i++) {
  model.apply({
    kind: 'Service',
    previous: null,
    current: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `svc-${i}`, namespace: 'bench' },
      spec: { clusterIP: ip(96, i), ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
    },
  });
  model.apply({ kind: 'EndpointSlice', previous: null, current: sliceObj(i, 0) });
}
/** Each Service's slice version: a change moves it on by one, so every change is a real one. */
const versions = new Map<number, number>();
const nextChange = (i: number) => {
  const v = versions.get(i) ?? 0;
  versions.set(i, v + 1);
  return { kind: 'EndpointSlice' as const, previous: sliceObj(i, v), current: sliceObj(i, v + 1) };
};
const planner = new Planner(model, planConfigFrom(defaultConfig()));
planner.planAll();
const plan = planner.snapshot();
const dests = plan.virtualServers.reduce((n, v) => n + v.realServers.length, 0);

// The floor: `ipvsadm -R` of the same virtual servers and `ip -batch` binding the same addresses to a dummy
// interface, in a network namespace of their own, deleted afterwards. Not in this one, then flushed: the kernel keeps
// deleted destinations in a trash list for two to four minutes (ip_vs_dest_trash_expire) and walks that list on
// every destination it adds (ip_vs_trash_get_dest), so whatever is programmed next right after a flush of 100 000
// destinations runs up to twice as slow. (Earlier runs of this benchmark flushed here before kube-ipvs' cold start:
// that was the "superlinear" part of its cold start.) Deleting a namespace frees its IPVS state at once.
const rules: string[] = [];
for (const vs of plan.virtualServers) {
  rules.push(`-A -t ${hostPort(vs.address, vs.port)} -s ${vs.scheduler}`);
  for (const rs of vs.realServers)
    rules.push(`-a -t ${hostPort(vs.address, vs.port)} -r ${hostPort(rs.address, rs.port)} -m -w ${rs.weight}`);
}
const FLOOR_NS = 'kipvs-floor';
const inFloor = (cmd: string, args: string[], input?: string) =>
  execFileSync('ip', ['netns', 'exec', FLOOR_NS, cmd, ...args], { input, maxBuffer: 1 << 26 });
execFileSync('ip', ['netns', 'add', FLOOR_NS]);
inFloor('ip', ['link', 'add', 'kipvs-floor0', 'type', 'dummy']);
// IPVS refuses a destination whose address is not a unicast route (EINVAL, "address not unicast"): the namespace
// needs its loopback up and a route, as the node has.
inFloor('ip', ['link', 'set', 'lo', 'up']);
inFloor('ip', ['link', 'set', 'kipvs-floor0', 'up']);
inFloor('ip', ['route', 'add', 'default', 'dev', 'kipvs-floor0']);
let t0 = performance.now();
inFloor('ipvsadm', ['-R'], rules.join('\n') + '\n');
const ipvsadmMs = performance.now() - t0;
const floorDests = String(inFloor('ipvsadm', ['-Ln']))
  .split('\n')
  .filter((l) => /^ {2}-> \d/.test(l)).length;
if (floorDests !== dests) throw new Error(`ipvsadm -R restored ${floorDests} destinations, not ${dests}`);
t0 = performance.now();
inFloor(
  'ip',
  ['-batch', '-'],
  plan.addresses.map((a) => `address add ${a}/${a.includes(':') ? 128 : 32} dev kipvs-floor0\n`).join(''),
);
const ipAddrMs = performance.now() - t0;
execFileSync('ip', ['netns', 'del', FLOOR_NS]);
// The namespace's state is freed by a kernel worker: give it time before measuring anything else.
await new Promise((r) => setTimeout(r, 10_000));
const ipvs = await NetlinkIpvs.open({ timeoutMs: 60_000 });

// PROFILE=cold,idle: CPU profiles of the cold start and of the idle resync, the top functions by self time.
const profiles = new Set((process.env.PROFILE ?? '').split(',').filter(Boolean));
if (profiles.has('1')) profiles.add('idle');
const tops: string[] = [];
async function profiled<T>(name: string, f: () => Promise<T>): Promise<T> {
  if (!profiles.has(name)) return f();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  const r = await f();
  const { profile: p } = await session.post('Profiler.stop');
  tops.push(`  ${name} profile, self time:`, ...topSelf(p));
  session.disconnect();
  return r;
}

// kube-ipvs from cold: the same virtual servers plus their addresses on the dummy interface.
const links = new NetlinkLinks({ timeoutMs: 60_000 });
const owned = new MemoryOwnership();
// Writes alongside a running sync on a socket of their own, as run.ts does.
const asideIpvs = await NetlinkIpvs.open({ timeoutMs: 60_000 });
const rec = new Reconciler(ipvs, links, owned, {
  asideIpvs,
  dummyInterface: 'kipvs-bench0',
  concurrency: Number(process.env.CONCURRENCY ?? 64),
});
let addrMs = NaN;
if (process.env.SPLIT === '1') {
  // Diagnostic: the address phase alone (the reconciler then finds them in place).
  const idx = await links.ensureDummy('kipvs-bench0');
  t0 = performance.now();
  for (let i = 0; i < plan.addresses.length; i += 64)
    await Promise.all(plan.addresses.slice(i, i + 64).map((a) => links.addAddress(idx, a)));
  addrMs = performance.now() - t0;
}
// NOADDR=1 (diagnostic): program the virtual servers without binding their addresses.
const coldPlans = new Map(
  [...planner.plans()].map(([k, p]) => [k, process.env.NOADDR === '1' ? { ...p, addresses: [] } : p]),
);
t0 = performance.now();
const cold = await profiled('cold', () =>
  rec.sync({ full: true, plans: coldPlans, addressInUse: (a) => planner.addressInUse(a) }),
);
const coldMs = performance.now() - t0;
if (cold.errors.length) throw new Error(`cold sync errors: ${JSON.stringify(cold.errors.slice(0, 3))}`);
const programmed = (await ipvs.services()).length;

// One endpoint change at a time: model -> planner -> reconciler -> kernel.
const lat: number[] = [];
for (let c = 0; c < CHANGES; c++) {
  const i = (c * 7919) % SERVICES;
  const start = performance.now();
  const r = model.apply(nextChange(i));
  const keys = planner.update(r);
  const res = await rec.sync({
    full: false,
    plans: new Map(keys.map((k) => [k, planner.servicePlan(k) ?? null])),
    addressInUse: (a) => planner.addressInUse(a),
  });
  lat.push(performance.now() - start);
  if (res.errors.length) throw new Error(`incremental sync errors: ${JSON.stringify(res.errors.slice(0, 3))}`);
}

// What reading the whole state costs ipvsadm: the floor of a resync with nothing to do.
t0 = performance.now();
const listing = execFileSync('ipvsadm', ['-Ln'], { maxBuffer: 1 << 28, encoding: 'utf8' });
const listMs = performance.now() - t0;
const listedDests = listing.split('\n').filter((l) => l.includes('->') && !l.includes('RemoteAddress')).length;

// A full resync with nothing to change (the periodic syncPeriod cost at this scale).
t0 = performance.now();
const idle = await profiled('idle', () =>
  rec.sync({ full: true, plans: new Map(planner.plans()), addressInUse: (a) => planner.addressInUse(a) }),
);
const idleMs = performance.now() - t0;

// Endpoint changes while a full resync runs, each written alongside it as the daemon does.
const during: number[] = [];
t0 = performance.now();
let resyncDone = false;
const resync = rec
  .sync({ full: true, plans: new Map(planner.plans()), addressInUse: (a) => planner.addressInUse(a) })
  .finally(() => (resyncDone = true));
// (A change that ends after the resync is not counted: it no longer ran alongside one.)
for (let c = 0; !resyncDone; c++) {
  const i = (c * 104_729 + 17) % SERVICES;
  const start = performance.now();
  const r = model.apply(nextChange(i));
  const keys = planner.update(r);
  if (keys.length !== 1) throw new Error(`a change re-planned ${keys.length} Services`);
  const aside = await rec.syncDestinations(new Map(keys.map((k) => [k, planner.servicePlan(k)!])));
  if (aside.errors.length) throw new Error(`aside errors: ${JSON.stringify(aside.errors.slice(0, 3))}`);
  if (!resyncDone) during.push(performance.now() - start);
  await new Promise((r) => setTimeout(r, 250));
}
const busy = await resync;
const busyMs = performance.now() - t0;

console.log(
  `IPVS lab benchmark: ${plan.virtualServers.length} virtual servers, ${dests} destinations, ${plan.addresses.length} addresses (kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}, TCG)`,
);
console.log(`  ipvsadm -R (services + destinations)       ${(ipvsadmMs / 1000).toFixed(1)} s`);
console.log(
  `  kube-ipvs cold start (+ dummy addresses)    ${(coldMs / 1000).toFixed(1)} s   (${cold.operations} operations, ${programmed} services in the kernel)`,
);
if (!Number.isNaN(addrMs)) console.log(`  (diagnostic) addresses alone               ${(addrMs / 1000).toFixed(1)} s`);
console.log(`  ip -batch of the same addresses             ${(ipAddrMs / 1000).toFixed(1)} s`);
console.log(`  cold start / ipvsadm -R                     ${(coldMs / ipvsadmMs).toFixed(2)}x`);
console.log(`  cold start / (ipvsadm -R + ip -batch)       ${(coldMs / (ipvsadmMs + ipAddrMs)).toFixed(2)}x`);
console.log(
  `  one endpoint change -> kernel, median       ${median(lat).toFixed(2)} ms   (p99 ${pct(lat, 0.99).toFixed(2)} ms, ${CHANGES} changes)`,
);
console.log(
  `  full resync with nothing to do              ${(idleMs / 1000).toFixed(1)} s   (${idle.operations} operations)`,
);
console.log(`  full resync / one change                    ${(idleMs / median(lat)).toFixed(0)}x`);
console.log(
  `  ipvsadm -Ln of the same state               ${(listMs / 1000).toFixed(1)} s   (${listedDests} destinations listed)`,
);
console.log(`  idle full resync / ipvsadm -Ln              ${(idleMs / listMs).toFixed(2)}x`);
if (tops.length) console.log(tops.join('\n'));
console.log(
  `  endpoint change during a full resync        ${during.length ? median(during).toFixed(2) : '-'} ms median   (p99 ${during.length ? pct(during, 0.99).toFixed(2) : '-'} ms, ${during.length} changes; the resync took ${(busyMs / 1000).toFixed(1)} s, ${busy.errors.length} errors)`,
);
await ipvs.flush();
const idx = await links.find('kipvs-bench0');
if (idx !== null) await links.deleteLink(idx);
ipvs.close();
asideIpvs.close();
links.close();
