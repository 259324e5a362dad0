// What SREs read: each metric's meaning, /healthz and /livez with kube-proxy's semantics and
// bodies, healthCheckNodePort answers, kernel operation counting, the IPVS series and their cap,
// and the daemon feeding all of them. Kernel and time are in-memory twins.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import t from 'tap';
import { defaultConfig } from '../src/config/config.ts';
import { Daemon } from '../src/daemon.ts';
import { IpvsError, type Ipvs } from '../src/dataplane/ipvs/client.ts';
import { FakeIpvs } from '../src/dataplane/ipvs/fake.ts';
import { destinationCountersOf, serviceCountersOf, type IpvsStats } from '../src/dataplane/ipvs/types.ts';
import { FakeLinks } from '../src/dataplane/links.ts';
import { MemoryOwnership } from '../src/dataplane/ownership.ts';
import type { Change } from '../src/model/model.ts';
import { goTime, ProxyHealth, serviceHealthBody } from '../src/observe/health.ts';
import { instrumentKernel } from '../src/observe/instrument.ts';
import { IpvsCollector } from '../src/observe/ipvs-collector.ts';
import { Logger } from '../src/observe/log.ts';
import {
  EVENT_LOOP_MONITORING_PRECISION_MS,
  Metrics,
  PROGRAMMING_BUCKETS,
  SYNC_BUCKETS,
} from '../src/observe/metrics.ts';
import { daemonStatus, healthHandler, listen, metricsHandler, parseBindAddress } from '../src/observe/server.ts';
import { ServiceHealthServers } from '../src/observe/service-health.ts';
import { ManualClock } from './support/clock.ts';
import { PushSource } from './support/source.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { countTurns } from './support/turns.ts';

/** The value of one series in Prometheus text, or undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (.+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[3] ?? '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (
      Object.entries(labels).every(([k, v]) => have[k] === v) &&
      Object.keys(have).length === Object.keys(labels).length
    )
      return Number(m[4]);
  }
  return undefined;
}

function get(
  port: number,
  path: string,
  host = '127.0.0.1',
): Promise<{ code: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ code: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const quiet = () => new Logger({ sink: () => {} });

t.test('kubeipvs_build_info: 1, labelled with the version and the Node.js it runs on', async (t) => {
  const text = await new Metrics({ defaultMetrics: false }).registry.metrics();
  const want = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
  t.match(text, `kubeipvs_build_info{version="${want}",nodejs_version="${process.version}"} 1\n`);
});

t.test('the default metrics wake an idle process about 10 times a second, not 100', async (t) => {
  // prom-client's event-loop delay monitor is a timer at its sampling precision (10 ms unless told): on an idle
  // daemon that was nearly all the CPU it used. Counted in a process of its own: event-loop turns over 2 s.
  const script = [
    `import { Metrics } from ${JSON.stringify(new URL('../src/observe/metrics.ts', import.meta.url).href)};`,
    'const m = new Metrics();',
    // Counted once start-up is over (module loading turns the loop too; the test runner adds its loaders).
    'await new Promise((r) => setTimeout(r, 1000));',
    'const before = performance.nodeTiming.uvMetricsInfo.loopCount;',
    'setTimeout(async () => {',
    '  const turns = performance.nodeTiming.uvMetricsInfo.loopCount - before;',
    '  const text = await m.registry.metrics();',
    '  console.log(JSON.stringify({ turns, lag: /^nodejs_eventloop_lag_p99_seconds /m.test(text) }));',
    '  process.exit(0);',
    '}, 2000);',
  ].join('\n');
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    timeout: 30_000,
  });
  const r = JSON.parse(stdout) as { turns: number; lag: boolean };
  t.ok(r.lag, 'the event-loop lag series are still there');
  t.ok(r.turns >= 4, `the monitor samples (${r.turns} turns in 2 s; a loaded machine may delay some)`);
  t.ok(r.turns <= (2 * 2000) / 100 + 5, `${r.turns} turns in 2 s`);
  t.ok(EVENT_LOOP_MONITORING_PRECISION_MS >= 100, "not prom-client's 10 ms");
});

t.test("kube-proxy's buckets", async (t) => {
  t.equal(SYNC_BUCKETS.length, 15);
  t.equal(SYNC_BUCKETS[0], 0.001);
  t.equal(SYNC_BUCKETS[14], 0.001 * 2 ** 14);
  t.equal(PROGRAMMING_BUCKETS.length, 2 + 59 + 12 + 7);
  t.same(PROGRAMMING_BUCKETS.slice(0, 4), [0.25, 0.5, 1, 2]);
  t.same(PROGRAMMING_BUCKETS.slice(60, 63), [59, 60, 65]);
  t.equal(PROGRAMMING_BUCKETS.at(-1), 300);
  t.ok(
    PROGRAMMING_BUCKETS.every((b, i) => i === 0 || b > PROGRAMMING_BUCKETS[i - 1]!),
    'strictly increasing',
  );
});

t.test('proxy health: queued changes older than the timeout make it unhealthy, an update heals it', async (t) => {
  const clock = new ManualClock();
  const h = new ProxyHealth(60_000, clock);
  t.ok(h.healthy, 'healthy while starting');
  h.queued();
  const first = clock.now();
  await clock.advance(30_000);
  h.queued(); // a later change does not move the oldest
  t.ok(h.healthy, 'pending, not late');
  t.equal(h.oldestPendingQueued, first);
  await clock.advance(30_000);
  t.notOk(h.healthy, 'pending for the whole timeout');
  h.updated();
  t.ok(h.healthy);
  t.equal(h.lastUpdated, clock.now());
  h.syncNode({ name: 'n', labels: {}, zone: '', addresses: [], podCIDRs: [], deleting: false, toBeDeleted: true });
  t.notOk(h.nodeEligible, 'autoscaler taint');
  h.syncNode({ name: 'n', labels: {}, zone: '', addresses: [], podCIDRs: [], deleting: true, toBeDeleted: false });
  t.notOk(h.nodeEligible, 'being deleted');
  h.syncNode({ name: 'n', labels: {}, zone: '', addresses: [], podCIDRs: [], deleting: false, toBeDeleted: false });
  t.ok(h.nodeEligible);
  t.equal(goTime(Date.UTC(2026, 10, 25, 13, 4, 5, 123)), '2026-11-25 13:04:05.123 +0000 UTC');
});

t.test(
  'proxy health: a change queued while a sync runs stays pending after it; a failed sync keeps its own',
  async (t) => {
    const clock = new ManualClock();
    const h = new ProxyHealth(4_000, clock);
    h.queued();
    h.syncStarted();
    await clock.advance(1_000);
    h.queued(); // arrives during the sync: not in it
    const during = clock.now();
    await clock.advance(1_000);
    h.updated();
    t.equal(h.oldestPendingQueued, during, 'the sync covered the first change only');
    await clock.advance(3_500);
    t.notOk(h.healthy, 'the late change waited 4.5 s');
    h.syncStarted();
    h.updated();
    t.equal(h.oldestPendingQueued, 0, 'the next sync covered it');
    t.ok(h.healthy);

    // A sync not tied to a Service fails: its changes stay pending, from when they came.
    h.queued();
    const queuedAt = clock.now();
    h.syncStarted();
    await clock.advance(1_000);
    h.syncFailed();
    t.equal(h.oldestPendingQueued, queuedAt, 'still pending since it was queued');
    // ... and with nothing queued (a periodic resync that cannot mend the kernel), pending from the failure.
    h.updated();
    h.syncStarted();
    h.syncFailed();
    t.equal(h.oldestPendingQueued, clock.now(), 'a failed resync counts as pending');
    await clock.advance(4_000);
    t.notOk(h.healthy, 'failing for 2 x syncPeriod');
  },
);

t.test('healthCheckNodePort body and code, as kube-proxy', async (t) => {
  const ok = serviceHealthBody('shop/web', 2, true);
  t.equal(ok.code, 200);
  t.same(JSON.parse(ok.body), {
    service: { namespace: 'shop', name: 'web' },
    localEndpoints: 2,
    serviceProxyHealthy: true,
  });
  t.equal(ok.headers['X-Load-Balancing-Endpoint-Weight'], '2');
  t.equal(serviceHealthBody('shop/web', 0, true).code, 503, 'no local endpoint');
  t.equal(serviceHealthBody('shop/web', 3, false).code, 503, 'proxy unhealthy');
});

t.test('kernel operations are counted by operation, failures by errno', async (t) => {
  const m = new Metrics({ defaultMetrics: false });
  const fake = new FakeIpvs();
  const ipvs = instrumentKernel<Ipvs>(fake, 'ipvs', m);
  const svc = {
    family: 4 as const,
    protocol: 'TCP' as const,
    address: '10.0.0.1',
    port: 80,
    scheduler: 'rr',
    flags: 0,
    timeout: 0,
    netmask: 0xffffffff,
  };
  await ipvs.addService(svc);
  await t.rejects(ipvs.addService(svc), IpvsError, 'EEXIST from the kernel twin');
  await ipvs.services();
  const text = await m.text();
  t.equal(sample(text, 'kubeipvs_kernel_operations_total', { operation: 'ipvs.addService' }), 2);
  t.equal(sample(text, 'kubeipvs_kernel_operations_total', { operation: 'ipvs.services' }), 1);
  t.equal(
    sample(text, 'kubeipvs_kernel_operation_failures_total', { operation: 'ipvs.addService', errno: 'EEXIST' }),
    1,
  );
  t.equal(
    sample(text, 'kubeipvs_kernel_operation_failures_total', { operation: 'ipvs.services', errno: 'EEXIST' }),
    undefined,
  );
  // close() reaches the target's private state through the proxy.
  class Priv {
    #open = true;
    close() {
      this.#open = false;
      return this.#open;
    }
    async op() {}
  }
  t.equal(instrumentKernel(new Priv(), 'p', m).close(), false, 'close is bound to the target');
});

/** A kernel twin whose dumps carry stats (the fake's do not). */
function statsKernel(vsCount: number, destsPer: number): Ipvs {
  const st = (k: number): IpvsStats => ({
    conns: BigInt(k),
    inPkts: BigInt(10 * k),
    outPkts: BigInt(9 * k),
    inBytes: BigInt(1000 * k),
    outBytes: BigInt(900 * k),
    cps: 0n,
    inPps: 0n,
    outPps: 0n,
    inBps: 0n,
    outBps: 0n,
  });
  const services = Array.from({ length: vsCount }, (_, i) => ({
    family: 4 as const,
    protocol: 'TCP' as const,
    address: `10.96.0.${i + 1}`,
    port: 80,
    scheduler: 'rr',
    flags: 0,
    timeout: 0,
    netmask: 0xffffffff,
    stats: st(i + 1),
  }));
  const destinations = (k: { address?: string }) =>
    Array.from({ length: destsPer }, (_, j) => ({
      family: 4 as const,
      address: `10.244.${k.address!.split('.')[3]}.${j + 1}`,
      port: 8080,
      fwdMethod: 0,
      weight: j === 0 ? 0 : 1,
      upperThreshold: 0,
      lowerThreshold: 0,
      activeConns: j,
      inactiveConns: 1,
      stats: st(j + 1),
    }));
  return {
    services: async () => services,
    destinations: async (k: { address?: string }) => destinations(k),
    serviceCounters: async () => services.map(serviceCountersOf),
    destinationCounters: async (k: { address?: string }) => destinations(k).map(destinationCountersOf),
  } as unknown as Ipvs;
}

t.test('IPVS series: labelled with the Service port, only ours, capped, drops counted', async (t) => {
  const labels = new Map([
    ['TCP/10.96.0.1:80', { service: 'shop/web', portName: 'http', kind: 'ClusterIP' }],
    ['TCP/10.96.0.2:80', { service: 'shop/api', portName: '', kind: 'ClusterIP' }],
  ]);
  const m = new Metrics({ defaultMetrics: false });
  // Three virtual servers in the kernel, one not ours; three destinations each; room for four series.
  new IpvsCollector({
    ipvs: statsKernel(3, 3),
    labels,
    realServerLimit: 4,
    plannedRealServers: () => new Map([['TCP/10.96.0.2:80', 3]]),
    log: quiet(),
  }).register(m);
  const text = await m.text();
  const web = {
    namespace: 'shop',
    service: 'web',
    port_name: 'http',
    kind: 'ClusterIP',
    protocol: 'TCP',
    address: '10.96.0.1',
    port: '80',
  };
  t.equal(sample(text, 'kubeipvs_virtual_server_connections_total', web), 1);
  t.equal(sample(text, 'kubeipvs_virtual_server_packets_total', { ...web, direction: 'in' }), 10);
  t.equal(sample(text, 'kubeipvs_virtual_server_bytes_total', { ...web, direction: 'out' }), 900);
  t.equal(
    sample(text, 'kubeipvs_virtual_server_connections_total', {
      ...web,
      service: 'api',
      port_name: '',
      address: '10.96.0.2',
    }),
    2,
  );
  t.notMatch(text, /10\.96\.0\.3/, 'a virtual server kube-ipvs does not own is not exported');
  const rs = (backend: string) => ({ ...web, backend });
  t.equal(sample(text, 'kubeipvs_real_server_weight', rs('10.244.1.1:8080')), 0, 'draining weight');
  t.equal(sample(text, 'kubeipvs_real_server_weight', rs('10.244.1.2:8080')), 1);
  t.equal(sample(text, 'kubeipvs_real_server_active_connections', rs('10.244.1.3:8080')), 2);
  t.equal(sample(text, 'kubeipvs_real_server_inactive_connections', rs('10.244.1.3:8080')), 1);
  t.equal(sample(text, 'kubeipvs_real_server_connections_total', rs('10.244.1.2:8080')), 2);
  t.equal(
    text.split('\n').filter((l) => l.startsWith('kubeipvs_real_server_weight{')).length,
    4,
    'four real servers within the limit',
  );
  t.equal(sample(text, 'kubeipvs_real_server_series_dropped'), 2, 'two of api left out (read, not exported)');

  const none = new Metrics({ defaultMetrics: false });
  new IpvsCollector({
    ipvs: statsKernel(3, 3),
    labels,
    realServerLimit: 0,
    plannedRealServers: () =>
      new Map([
        ['TCP/10.96.0.1:80', 3],
        ['TCP/10.96.0.2:80', 5],
      ]),
    log: quiet(),
  }).register(none);
  const t2 = await none.text();
  t.equal(
    sample(t2, 'kubeipvs_real_server_series_dropped'),
    8,
    'limit 0: every planned real server counted as dropped',
  );
  t.notMatch(t2, /^kubeipvs_real_server_weight\{/m);
});

t.test('IPVS series kept across scrapes follow the kernel: changed counters, weights, labels, removals', async (t) => {
  // A kernel whose counters and destinations the test changes between scrapes.
  const conns = new Map([
    ['10.96.0.1', 1],
    ['10.96.0.2', 2],
  ]);
  let weight = 1;
  let dests = ['10.244.0.1', '10.244.0.2'];
  const stats = (k: number): IpvsStats => ({
    conns: BigInt(k),
    inPkts: BigInt(k),
    outPkts: 0n,
    inBytes: BigInt(100 * k),
    outBytes: 0n,
    cps: 0n,
    inPps: 0n,
    outPps: 0n,
    inBps: 0n,
    outBps: 0n,
  });
  const services = () =>
    [...conns].map(([address, k]) => ({
      family: 4 as const,
      protocol: 'TCP' as const,
      address,
      port: 80,
      scheduler: 'rr',
      flags: 0,
      timeout: 0,
      netmask: 0xffffffff,
      stats: stats(k),
    }));
  const destinations = () =>
    dests.map((address) => ({
      family: 4 as const,
      address,
      port: 8080,
      fwdMethod: 0,
      weight,
      upperThreshold: 0,
      lowerThreshold: 0,
      activeConns: 0,
      inactiveConns: 0,
      stats: stats(1),
    }));
  const kernel = {
    serviceCounters: async () => services().map(serviceCountersOf),
    destinationCounters: async () => destinations().map(destinationCountersOf),
  } as unknown as Ipvs;
  const labels = new Map([
    ['TCP/10.96.0.1:80', { service: 'shop/web', portName: 'http', kind: 'ClusterIP' }],
    ['TCP/10.96.0.2:80', { service: 'shop/api', portName: 'http', kind: 'ClusterIP' }],
  ]);
  const m = new Metrics({ defaultMetrics: false });
  new IpvsCollector({
    ipvs: kernel,
    labels,
    realServerLimit: 10,
    plannedRealServers: () => new Map(),
    log: quiet(),
  }).register(m);
  const web = {
    namespace: 'shop',
    service: 'web',
    port_name: 'http',
    kind: 'ClusterIP',
    protocol: 'TCP',
    address: '10.96.0.1',
    port: '80',
  };
  const api = { ...web, service: 'api', address: '10.96.0.2' };
  let text = await m.text();
  t.equal(sample(text, 'kubeipvs_virtual_server_connections_total', web), 1);
  t.equal(sample(text, 'kubeipvs_real_server_weight', { ...web, backend: '10.244.0.1:8080' }), 1);

  conns.set('10.96.0.1', 5);
  weight = 0;
  text = await m.text();
  t.equal(
    sample(text, 'kubeipvs_virtual_server_connections_total', web),
    5,
    'a changed counter is shown at the next scrape',
  );
  t.equal(sample(text, 'kubeipvs_virtual_server_bytes_total', { ...web, direction: 'in' }), 500);
  t.equal(sample(text, 'kubeipvs_virtual_server_connections_total', api), 2, 'an unchanged one still is');
  t.equal(
    sample(text, 'kubeipvs_real_server_weight', { ...web, backend: '10.244.0.2:8080' }),
    0,
    'a weight set to 0 is shown',
  );

  labels.set('TCP/10.96.0.2:80', { service: 'shop/api-v2', portName: 'grpc', kind: 'ClusterIP' });
  dests = ['10.244.0.2', '10.244.0.3'];
  conns.delete('10.96.0.1');
  conns.set('10.96.0.3', 7); // in the kernel, not ours
  text = await m.text();
  t.notMatch(text, /service="web"/, 'a virtual server gone from the kernel is gone from the series');
  t.notMatch(text, /service="api",/, 'the old labels of a relabelled virtual server are gone');
  t.equal(
    sample(text, 'kubeipvs_virtual_server_connections_total', { ...api, service: 'api-v2', port_name: 'grpc' }),
    2,
    'relabelled',
  );
  t.equal(
    sample(text, 'kubeipvs_real_server_connections_total', {
      ...api,
      service: 'api-v2',
      port_name: 'grpc',
      backend: '10.244.0.3:8080',
    }),
    1,
    'its real servers carry the new labels',
  );
  t.notMatch(text, /10\.244\.0\.1:8080/, 'a real server gone from the kernel is gone from the series');
  t.notMatch(text, /10\.96\.0\.3/, 'not ours: not exported');
  t.equal(text.split('\n').filter((l) => l.startsWith('kubeipvs_virtual_server_connections_total{')).length, 1);
});

t.test('IPVS series with labels outside ASCII are written whole (UTF-8)', async (t) => {
  const labels = new Map([
    ['TCP/10.96.0.1:80', { service: 'café/wéb', portName: 'http', kind: 'ClusterIP' }],
    ['TCP/10.96.0.2:80', { service: 'shop/api', portName: 'http', kind: 'ClusterIP' }],
  ]);
  const m = new Metrics({ defaultMetrics: false });
  new IpvsCollector({
    ipvs: statsKernel(2, 1),
    labels,
    realServerLimit: 10,
    plannedRealServers: () => new Map(),
    log: quiet(),
  }).register(m);
  const text = await m.text();
  const web = {
    namespace: 'café',
    service: 'wéb',
    port_name: 'http',
    kind: 'ClusterIP',
    protocol: 'TCP',
    address: '10.96.0.1',
    port: '80',
  };
  t.equal(sample(text, 'kubeipvs_virtual_server_connections_total', web), 1);
  t.equal(sample(text, 'kubeipvs_real_server_weight', { ...web, backend: '10.244.1.1:8080' }), 0);
  t.equal(
    sample(text, 'kubeipvs_virtual_server_connections_total', {
      ...web,
      namespace: 'shop',
      service: 'api',
      address: '10.96.0.2',
    }),
    2,
    'the ASCII row after it is intact',
  );
  t.notMatch(text, /\uFFFD|\0/, 'no mangled or unwritten bytes');
});

t.test('IPVS series: a scrape of thousands lets the event loop turn; scrapes at once share one read', async (t) => {
  const n = 5000;
  const services = Array.from({ length: n }, (_, i) => ({
    family: 4 as const,
    protocol: 'TCP' as const,
    address: `10.96.${i >> 8}.${i & 255}`,
    port: 80,
    scheduler: 'rr',
    flags: 0,
    timeout: 0,
    netmask: 0xffffffff,
  }));
  let reads = 0;
  const kernel = {
    serviceCounters: async () => {
      reads++;
      return services.map(serviceCountersOf);
    },
    destinationCounters: async () => [],
  } as unknown as Ipvs;
  const labels = new Map(
    services.map((s, i) => [`TCP/${s.address}:80`, { service: `shop/s${i}`, portName: '', kind: 'ClusterIP' }]),
  );
  const m = new Metrics({ defaultMetrics: false });
  new IpvsCollector({
    ipvs: kernel,
    labels,
    realServerLimit: 0,
    plannedRealServers: () => new Map(),
    log: quiet(),
  }).register(m);
  const count = (text: string) =>
    text.split('\n').filter((l) => l.startsWith('kubeipvs_virtual_server_connections_total{')).length;
  // Something else on the event loop (an endpoint change, a health transition): how often it got a turn.
  const loop = countTurns();
  const [a, b] = await Promise.all([m.text(), m.text()]);
  loop.stop();
  t.ok(loop.turns >= 5, `the loop turned during the scrape (${loop.turns} times)`);
  t.equal(reads, 1, "the scrape asked for meanwhile got the running one's result");
  t.equal(a, b);
  t.equal(count(a), n, 'every virtual server in it');
  t.equal(
    sample(a, 'kubeipvs_virtual_server_packets_total', {
      namespace: 'shop',
      service: 's4999',
      port_name: '',
      kind: 'ClusterIP',
      protocol: 'TCP',
      address: '10.96.19.135',
      port: '80',
      direction: 'in',
    }),
    0,
    'the last row of a family whole',
  );
  const c = await m.text();
  t.equal(reads, 2, 'the next scrape reads the kernel again');
  t.equal(count(c), n, 'and still has every row');
  t.equal(c, a, 'the same text for the same counters');
});

function daemonSetup(t: { teardown: (f: () => void) => void }) {
  const clock = new ManualClock();
  const cfg = defaultConfig();
  cfg.ipvs.minSyncPeriodSeconds = 0;
  cfg.ipvs.syncPeriodSeconds = 10;
  const source = new PushSource();
  const links = new FakeLinks();
  const ipvs = new FakeIpvs();
  const hc: Map<number, { service: string; localEndpoints: number }>[] = [];
  const daemon = new Daemon(
    { source, config: cfg, nodeName: 'node-a' },
    {
      ipvs,
      links,
      owned: new MemoryOwnership(),
      sysctl: { read: () => null, write: () => {} },
      log: quiet(),
      kernelRelease: '6.1.0',
      clock,
      onHealthCheckTargets: (m) => void hc.push(new Map(m)),
    },
  );
  t.teardown(() => daemon.stop());
  return { clock, source, links, ipvs, daemon, hc };
}

const add = (kind: Change['kind'], current: Record<string, unknown>): Change => ({ kind, previous: null, current });

/** The daemon started on one Service (default/web, 10.96.0.1), its first sync done. */
async function startWithWeb(source: PushSource, daemon: Daemon, clock: ManualClock): Promise<void> {
  source.initial = [add('Service', service('web', { clusterIPs: ['10.96.0.1'] }))];
  await daemon.start();
  await clock.advance(0);
  await daemon.runner.whenIdle();
}

/** Another kind of interface takes the dummy interface's name (a new index): every sync fails for the node. */
function bridgeTakesDummy(links: FakeLinks): void {
  const index = links.links.get('kube-ipvs0')!.index;
  links.links.set('kube-ipvs0', { index: index + 100, kind: 'bridge', addresses: new Set() });
}

t.test('the daemon feeds the sync, change and health metrics', async (t) => {
  const { clock, source, links, daemon } = daemonSetup(t);
  source.initial = [
    add('Node', node('node-a', [['InternalIP', '192.168.1.10']])),
    add('Service', service('web', { clusterIPs: ['10.96.0.1'] })),
    add('EndpointSlice', slice('web-1', 'web', [ep('10.0.0.1')])),
  ];
  await daemon.start();
  await clock.advance(0);
  await daemon.runner.whenIdle();
  let text = await daemon.metrics.text();
  t.equal(
    sample(text, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count', { ip_family: 'IPv4' }),
    1,
    'one full sync',
  );
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_service_changes_total'), 1);
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 1);
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0, 'synced');
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds', { ip_family: 'IPv4' }), clock.now() / 1000);
  t.equal(sample(text, 'kubeipvs_syncs_total', { type: 'full', result: 'success' }), 1);
  t.equal(sample(text, 'kubeipvs_watch_reconnects_total'), 2, 'source counters read at scrape');
  t.ok((sample(text, 'kubeipvs_watch_last_event_age_seconds') ?? 0) >= 5);

  // An endpoint change: a partial sync, counted; pending while not yet synced.
  source.push({
    kind: 'EndpointSlice',
    previous: slice('web-1', 'web', [ep('10.0.0.1')]),
    current: slice('web-1', 'web', [ep('10.0.0.1'), ep('10.0.0.2')]),
  });
  text = await daemon.metrics.text();
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 1, 'pending before the sync');
  t.equal(
    sample(text, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', { ip_family: 'IPv4' }),
    clock.now() / 1000,
  );
  await clock.advance(0);
  await daemon.runner.whenIdle();
  text = await daemon.metrics.text();
  t.equal(sample(text, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count', { ip_family: 'IPv4' }), 1);
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_duration_seconds_count', { ip_family: 'IPv4' }), 2, 'all syncs');
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0);
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 2);

  // A broken object: rejected and counted by kind.
  source.push(add('Service', service('bad', { clusterIPs: ['10.96.0.300'] })));
  text = await daemon.metrics.text();
  t.equal(sample(text, 'kubeipvs_rejected_objects_total', { kind: 'Service' }), 1);

  // The dummy interface is taken over by another kind of interface: syncs fail (not tied to a
  // Service), changes wait; after 2 x syncPeriod /healthz and /livez turn 503; back when it heals.
  bridgeTakesDummy(links);
  source.push(add('Service', service('dns', { clusterIPs: ['10.96.0.10'] })));
  await clock.advance(0);
  t.ok(daemon.proxyHealth.healthy, 'not late yet');
  await clock.advance(19_000);
  t.ok(daemon.proxyHealth.healthy, 'still within 2 x syncPeriod');
  await clock.advance(2_000);
  t.notOk(daemon.proxyHealth.healthy, 'a change waited longer than 2 x syncPeriod');
  text = await daemon.metrics.text();
  t.ok((sample(text, 'kubeipvs_syncs_total', { type: 'full', result: 'error' }) ?? 0) >= 1, 'failed syncs counted');
  t.equal(sample(text, 'kubeproxy_sync_proxy_rules_service_changes_pending'), 1, 'dns still pending');
  t.equal(daemonStatus(daemon).healthy, false);
  t.ok(
    daemonStatus(daemon).recentErrors.some((e) => e.code === 'EEXIST'),
    'the failure is in the status view',
  );
  links.links.delete('kube-ipvs0');
  await clock.advance(10_000);
  await daemon.runner.whenIdle();
  t.ok(daemon.proxyHealth.healthy, 'healthy again once the kernel caught up');
  t.equal(sample(await daemon.metrics.text(), 'kubeproxy_sync_proxy_rules_service_changes_pending'), 0);
});

t.test('a change that arrives during a sync, then syncs that fail for the node: /healthz turns 503', async (t) => {
  // The lab's case: another interface takes the dummy interface's name while a partial sync runs; that sync
  // succeeds (it does not look at the interface), the change that came meanwhile is never written.
  const { clock, source, links, ipvs, daemon } = daemonSetup(t);
  await startWithWeb(source, daemon, clock);
  let release = () => {};
  const gate = new Promise<void>((r) => (release = r));
  const get = ipvs.service.bind(ipvs);
  let held = false;
  ipvs.service = async (key) => {
    if (!held && key.address === '10.96.0.2') {
      held = true;
      await gate;
    }
    return get(key);
  };
  source.push(add('Service', service('first', { clusterIPs: ['10.96.0.2'] })));
  await clock.advance(0);
  t.ok(held, 'a partial sync is running');
  bridgeTakesDummy(links);
  source.push(add('Service', service('late', { clusterIPs: ['10.96.0.50'] })));
  release();
  for (let i = 0; i < 5; i++) await clock.advance(0); // the held sync ends, the next one (late's) fails
  t.ok(daemon.proxyHealth.oldestPendingQueued > 0, 'the change that came during the sync is still pending');
  await clock.advance(21_000);
  t.notOk(daemon.proxyHealth.healthy, 'pending longer than 2 x syncPeriod while every sync fails');
  t.ok(
    (sample(await daemon.metrics.text(), 'kubeipvs_syncs_total', { type: 'partial', result: 'error' }) ?? 0) >= 1,
    'the failed syncs counted',
  );
  links.links.delete('kube-ipvs0');
  await clock.advance(30_000);
  await daemon.runner.whenIdle();
  t.ok(daemon.proxyHealth.healthy, 'healthy once the kernel caught up');
  t.ok(
    (await ipvs.services()).some((v) => v.address === '10.96.0.50'),
    'and the late change is in the kernel',
  );
});

t.test('a resync that fails for the node with nothing queued: /healthz turns 503 after 2 x syncPeriod', async (t) => {
  const { clock, source, links, daemon } = daemonSetup(t);
  await startWithWeb(source, daemon, clock);
  bridgeTakesDummy(links);
  await clock.advance(10_000); // the periodic full sync: fails (and is retried with backoff)
  t.ok(daemon.proxyHealth.healthy, 'one failed resync');
  await clock.advance(21_000);
  t.notOk(daemon.proxyHealth.healthy, 'resyncs failing for 2 x syncPeriod');
});

t.test('a failure tied to one Service does not make the node unhealthy', async (t) => {
  const { clock, source, ipvs, daemon } = daemonSetup(t);
  await startWithWeb(source, daemon, clock);
  ipvs.failures.set('addService TCP/10.96.0.2:80', 'EINVAL');
  source.push(add('Service', service('odd', { clusterIPs: ['10.96.0.2'] })));
  await clock.advance(60_000);
  t.ok(daemon.proxyHealth.healthy, 'one broken Service keeps being retried; the node stays in rotation');
  t.ok(daemon.recentErrors.some((e) => e.service === 'default/odd'));
});

t.test('no-local-endpoints gauge and healthCheckNodePort targets follow the plan', async (t) => {
  const { clock, source, daemon, hc } = daemonSetup(t);
  const lb = service('lb', {
    clusterIPs: ['10.96.0.5'],
    type: 'LoadBalancer',
    spec: {
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32100,
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30100 }],
    },
  });
  const local = slice('lb-1', 'lb', [ep('10.0.0.1', { node: 'node-a' }), ep('10.0.0.2', { node: 'node-b' })]);
  const remote = slice('lb-1', 'lb', [ep('10.0.0.2', { node: 'node-b' })]);
  source.initial = [
    add('Node', node('node-a', [['InternalIP', '192.168.1.10']])),
    add('Service', lb),
    add('EndpointSlice', local),
  ];
  await daemon.start();
  await clock.advance(0);
  t.same([...daemon.healthCheckTargets()], [[32100, { service: 'default/lb', localEndpoints: 1 }]]);
  let text = await daemon.metrics.text();
  t.equal(
    sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', {
      ip_family: 'IPv4',
      traffic_policy: 'external',
    }),
    0,
  );

  source.push({ kind: 'EndpointSlice', previous: local, current: remote });
  t.same(hc.at(-1), new Map([[32100, { service: 'default/lb', localEndpoints: 0 }]]), 'told of the new count');
  text = await daemon.metrics.text();
  t.equal(
    sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', {
      ip_family: 'IPv4',
      traffic_policy: 'external',
    }),
    1,
    'endpoints elsewhere, none here',
  );
  t.equal(
    sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total', {
      ip_family: 'IPv4',
      traffic_policy: 'internal',
    }),
    0,
  );

  source.push({ kind: 'Service', previous: lb, current: null });
  t.same(hc.at(-1), new Map(), 'the Service is gone: no health check port');
});

t.test('HTTP: /healthz, /livez, /status, /metrics and healthCheckNodePort servers', async (t) => {
  const { clock, source, daemon } = daemonSetup(t);
  await startWithWeb(source, daemon, clock);
  const log = quiet();
  const hp = await freePort();
  const mp = await freePort();
  const health = await listen(`127.0.0.1:${hp}`, 'healthz', healthHandler(daemon), log);
  const metrics = await listen(`127.0.0.1:${mp}`, 'metrics', metricsHandler(daemon, log), log);
  t.teardown(() => {
    health?.close();
    metrics?.close();
  });
  t.ok(health && metrics);
  let r = await get(hp, '/healthz');
  t.equal(r.code, 200);
  t.equal(r.headers['content-type'], 'application/json');
  t.equal(r.headers['x-content-type-options'], 'nosniff');
  t.match(r.body, /^\{"lastUpdated": "[0-9-]+ [0-9:.]+ \+0000 UTC","currentTime": "[^"]+", "nodeEligible": true\}$/);
  r = await get(hp, '/livez');
  t.match(r.body, /^\{"lastUpdated": "[^"]+","currentTime": "[^"]+"\}$/);
  // The Node gets the autoscaler's taint: /healthz 503, /livez still 200.
  const tainted = node('node-a', [['InternalIP', '192.168.1.10']]);
  (tainted as { spec?: unknown }).spec = { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] };
  source.push(add('Node', tainted));
  r = await get(hp, '/healthz');
  t.equal(r.code, 503);
  t.match(r.body, /"nodeEligible": false/);
  t.equal((await get(hp, '/livez')).code, 200);
  t.equal(
    (await get(hp, '/status')).code,
    404,
    '/status is not on the health port, which anyone who reaches the node reaches',
  );
  const status = JSON.parse((await get(mp, '/status')).body);
  t.equal(status.node, 'node-a');
  t.equal(status.services, 1);
  t.equal((await get(hp, '/nope')).code, 404);

  const text = (await get(mp, '/metrics')).body;
  t.equal(sample(text, 'kubeproxy_proxy_healthz_total', { code: '200' }), 1);
  t.equal(sample(text, 'kubeproxy_proxy_healthz_total', { code: '503' }), 1);
  t.equal(sample(text, 'kubeproxy_proxy_livez_total', { code: '200' }), 2);

  // healthCheckNodePort servers open, answer from the current count, and close.
  const servers = new ServiceHealthServers({
    health: daemon.proxyHealth,
    log,
    metrics: daemon.metrics,
    addresses: () => ['127.0.0.1'],
  });
  t.teardown(() => servers.close());
  const p = await freePort();
  await servers.update(new Map([[p, { service: 'default/web', localEndpoints: 1 }]]));
  r = await get(p, '/');
  t.equal(r.code, 200);
  t.same(JSON.parse(r.body), {
    service: { namespace: 'default', name: 'web' },
    localEndpoints: 1,
    serviceProxyHealthy: true,
  });
  await servers.update(new Map([[p, { service: 'default/web', localEndpoints: 0 }]]));
  t.equal((await get(p, '/')).code, 503, 'no local endpoint: 503, same listener');
  await servers.update(new Map());
  t.same(servers.ports(), []);
  await t.rejects(get(p, '/'), /ECONNREFUSED/, 'closed with the Service');
  // A port already taken: logged and counted, retried at the next update.
  const taken = await listen(`127.0.0.1:${p}`, 'squatter', (_q, s) => s.end(), log);
  await servers.update(new Map([[p, { service: 'default/web', localEndpoints: 1 }]]));
  t.same(servers.ports(), []);
  t.equal(sample(await daemon.metrics.text(), 'kubeipvs_health_check_node_port_errors_total'), 1);
  taken?.close();

  t.same(parseBindAddress('[::1]:10249'), { host: '::1', port: 10249 });
  t.same(parseBindAddress(':10256'), { host: undefined, port: 10256 });
  t.equal(parseBindAddress('nope'), null);
  t.equal(await listen('127.0.0.1:0', 'off', () => {}, log), null, 'port 0 disables');
});
