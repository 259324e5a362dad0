// IPVS programming benchmark, run inside the lab VM (npm run bench:lab):
//  1. cold start: program SERVICES x ENDPOINTS from an empty kernel through the reconciler,
//     vs `ipvsadm -R` restoring the same virtual servers on the same kernel (ratio);
//  2. one endpoint change at that scale: change seen (model.apply) -> kernel updated, median/p99;
// The /metrics scrape at that scale is perf/scrape.lab.ts (npm run bench:lab:scrape).
// Under TCG every number is inflated by emulation: read the ratios, not the absolute times.
import { execFileSync } from 'node:child_process';
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
const planner = new Planner(model, planConfigFrom(defaultConfig()));
planner.planAll();
const plan = planner.snapshot();
const dests = plan.virtualServers.reduce((n, v) => n + v.realServers.length, 0);

// ipvsadm -R of the same virtual servers.
const rules: string[] = [];
for (const vs of plan.virtualServers) {
  rules.push(`-A -t ${hostPort(vs.address, vs.port)} -s ${vs.scheduler}`);
  for (const rs of vs.realServers)
    rules.push(`-a -t ${hostPort(vs.address, vs.port)} -r ${hostPort(rs.address, rs.port)} -m -w ${rs.weight}`);
}
const ipvs = await NetlinkIpvs.open({ timeoutMs: 60_000 });
await ipvs.flush();
let t0 = performance.now();
execFileSync('ipvsadm', ['-R'], { input: rules.join('\n') + '\n', maxBuffer: 1 << 26 });
const ipvsadmMs = performance.now() - t0;
await ipvs.flush();

// kube-ipvs from cold: the same virtual servers plus their addresses on the dummy interface.
const links = new NetlinkLinks({ timeoutMs: 60_000 });
const owned = new MemoryOwnership();
const rec = new Reconciler(ipvs, links, owned, {
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
const cold = await rec.sync({ full: true, plans: coldPlans, addressInUse: (a) => planner.addressInUse(a) });
const coldMs = performance.now() - t0;
if (cold.errors.length) throw new Error(`cold sync errors: ${JSON.stringify(cold.errors.slice(0, 3))}`);
const programmed = (await ipvs.services()).length;

// One endpoint change at a time: model -> planner -> reconciler -> kernel.
const lat: number[] = [];
for (let c = 0; c < CHANGES; c++) {
  const i = (c * 7919) % SERVICES;
  const start = performance.now();
  const r = model.apply({ kind: 'EndpointSlice', previous: sliceObj(i, c), current: sliceObj(i, c + 1) });
  const keys = planner.update(r);
  const res = await rec.sync({
    full: false,
    plans: new Map(keys.map((k) => [k, planner.servicePlan(k) ?? null])),
    addressInUse: (a) => planner.addressInUse(a),
  });
  lat.push(performance.now() - start);
  if (res.errors.length) throw new Error(`incremental sync errors: ${JSON.stringify(res.errors.slice(0, 3))}`);
}

// A full resync with nothing to change (the periodic syncPeriod cost at this scale).
t0 = performance.now();
const idle = await rec.sync({
  full: true,
  plans: new Map(planner.plans()),
  addressInUse: (a) => planner.addressInUse(a),
});
const idleMs = performance.now() - t0;

console.log(
  `IPVS lab benchmark: ${plan.virtualServers.length} virtual servers, ${dests} destinations, ${plan.addresses.length} addresses (kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}, TCG)`,
);
console.log(`  ipvsadm -R (services + destinations)       ${(ipvsadmMs / 1000).toFixed(1)} s`);
console.log(
  `  kube-ipvs cold start (+ dummy addresses)    ${(coldMs / 1000).toFixed(1)} s   (${cold.operations} operations, ${programmed} services in the kernel)`,
);
if (!Number.isNaN(addrMs)) console.log(`  (diagnostic) addresses alone               ${(addrMs / 1000).toFixed(1)} s`);
console.log(`  cold start / ipvsadm -R                     ${(coldMs / ipvsadmMs).toFixed(2)}x`);
console.log(
  `  one endpoint change -> kernel, median       ${median(lat).toFixed(2)} ms   (p99 ${pct(lat, 0.99).toFixed(2)} ms, ${CHANGES} changes)`,
);
console.log(
  `  full resync with nothing to do              ${(idleMs / 1000).toFixed(1)} s   (${idle.operations} operations)`,
);
console.log(`  full resync / one change                    ${(idleMs / median(lat)).toFixed(0)}x`);
await ipvs.flush();
const idx = await links.find('kipvs-bench0');
if (idx !== null) await links.deleteLink(idx);
ipvs.close();
links.close();
