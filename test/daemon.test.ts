// The daemon end to end against in-memory kernel twins: a folder of manifests changes, the
// kernel follows, incrementally.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type tap from 'tap';
import { stringify } from 'yaml';
import { defaultConfig, type Config } from '../src/config/config.ts';
import { Daemon, LONG_SYNC_SERVICES, type DaemonDeps } from '../src/daemon.ts';
import { FakeIpvs } from '../src/dataplane/ipvs/fake.ts';
import { serviceId } from '../src/dataplane/ipvs/types.ts';
import { FakeLinks } from '../src/dataplane/links.ts';
import { MemoryOwnership } from '../src/dataplane/ownership.ts';
import type { LeftoverResult } from '../src/dataplane/kube-proxy.ts';
import type { Change } from '../src/model/model.ts';
import { Logger } from '../src/observe/log.ts';
import { ManifestSource } from '../src/sources/manifest-source.ts';
import type { Source, SourceBatch } from '../src/sources/source.ts';
import { ManualClock } from './support/clock.ts';
import { holdNextDestinationDump, holdNextServiceDump, otherSocket } from './support/hold.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { PushSource } from './support/source.ts';

function setup(t: { teardown: (f: () => void) => void }) {
  const dir = mkdtempSync(join(tmpdir(), 'kipvs-daemon-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ipvs = new FakeIpvs();
  const links = new FakeLinks();
  const logs: string[] = [];
  const cfg = defaultConfig();
  cfg.ipvs.minSyncPeriodSeconds = 0;
  const sysctls: string[] = [];
  const daemon = new Daemon(
    { source: new ManifestSource(dir), config: cfg, nodeName: 'node-a' },
    {
      ipvs,
      links,
      owned: new MemoryOwnership(),
      sysctl: { read: () => null, write: (p, v) => void sysctls.push(`${p}=${v}`) },
      log: new Logger({ sink: (l) => void logs.push(l) }),
      kernelRelease: '6.1.0',
    },
  );
  t.teardown(() => daemon.stop());
  const write = (name: string, objs: Record<string, unknown>[]) =>
    writeFileSync(join(dir, name), objs.map((o) => stringify(o)).join('---\n'));
  const kernel = async () => {
    const out: Record<string, string[]> = {};
    for (const s of await ipvs.services())
      out[serviceId(s)] = (await ipvs.destinations(s)).map((d) => `${d.address}:${d.port}=${d.weight}`).sort();
    return out;
  };
  return { dir, ipvs, links, logs, daemon, write, kernel, sysctls };
}

t.test('the kernel follows the folder', async (t) => {
  const { daemon, write, kernel, ipvs, logs, sysctls } = setup(t);
  write('node.yaml', [node('node-a', [['InternalIP', '192.168.1.10']])]);
  write('web.yaml', [
    service('web', { clusterIPs: ['10.96.0.1'] }),
    slice('web-1', 'web', [ep('10.0.0.1'), ep('10.0.0.2')]),
  ]);
  await daemon.start();
  await daemon.runner.whenIdle();
  t.same(await kernel(), { 'TCP/10.96.0.1:80': ['10.0.0.1:8080=1', '10.0.0.2:8080=1'] });
  t.ok(sysctls.includes('net/ipv4/vs/conntrack=1') && sysctls.includes('net/ipv4/ip_forward=1'), 'IPVS sysctls set');
  t.notOk(
    sysctls.some((s) => s.startsWith('net/ipv4/vs/conn_reuse_mode')),
    'conn_reuse_mode left alone on 6.1',
  );

  // An endpoint is added: one incremental sync, one operation.
  const before = ipvs.ops.length;
  write('web.yaml', [
    service('web', { clusterIPs: ['10.96.0.1'] }),
    slice('web-1', 'web', [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')]),
  ]);
  await daemon.reload();
  await daemon.runner.whenIdle();
  t.same(
    ipvs.ops.slice(before).map((o) => `${o.op} ${o.destination}`),
    ['addDestination 10.0.0.3:8080'],
  );
  t.equal(daemon.lastSync?.full, false, 'incremental');

  // A broken file next to it: logged, the rest keeps working.
  write('broken.yaml', [service('bad', { clusterIPs: ['10.96.0.300'] })]);
  write('dns.yaml', [
    service('dns', { clusterIPs: ['10.96.0.10'], ports: [{ name: 'dns', protocol: 'UDP', port: 53 }] }),
  ]);
  await daemon.reload();
  await daemon.runner.whenIdle();
  t.ok('UDP/10.96.0.10:53' in (await kernel()));
  t.ok(
    logs.some((l) => l.includes('KIPVS_OBJECT_INVALID') && l.includes('broken.yaml')),
    'the broken object is logged with its file',
  );
});

t.test('a Service removed from the folder is removed from the kernel', async (t) => {
  const { dir, daemon, write, kernel, links } = setup(t);
  write('web.yaml', [service('web', { clusterIPs: ['10.96.0.1'] }), slice('web-1', 'web', [ep('10.0.0.1')])]);
  write('dns.yaml', [service('dns', { clusterIPs: ['10.96.0.10'] })]);
  await daemon.start();
  await daemon.runner.whenIdle();
  t.same(Object.keys(await kernel()).sort(), ['TCP/10.96.0.10:80', 'TCP/10.96.0.1:80']);
  rmSync(join(dir, 'web.yaml'));
  await daemon.reload();
  await daemon.runner.whenIdle();
  t.same(Object.keys(await kernel()), ['TCP/10.96.0.10:80']);
  t.same([...links.links.get('kube-ipvs0')!.addresses], ['10.96.0.10']);
});

t.test('a file that stops parsing keeps its last objects serving', async (t) => {
  const { daemon, write, kernel, dir, logs } = setup(t);
  write('web.yaml', [service('web', { clusterIPs: ['10.96.0.1'] }), slice('web-1', 'web', [ep('10.0.0.1')])]);
  await daemon.start();
  await daemon.runner.whenIdle();
  // Half-written by an editor or a config-management tool.
  writeFileSync(join(dir, 'web.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: web\n');
  await daemon.reload();
  await daemon.runner.whenIdle();
  t.same(await kernel(), { 'TCP/10.96.0.1:80': ['10.0.0.1:8080=1'] }, 'still programmed');
  t.ok(
    logs.some((l) => l.includes('KIPVS_MANIFEST_UNPARSABLE')),
    'the parse error is logged',
  );
  write('web.yaml', [service('web', { clusterIPs: ['10.96.0.1'] }), slice('web-1', 'web', [ep('10.0.0.2')])]);
  await daemon.reload();
  await daemon.runner.whenIdle();
  t.same(await kernel(), { 'TCP/10.96.0.1:80': ['10.0.0.2:8080=1'] }, 'and follows the file again once it parses');
});

t.test('network programming latency: trigger time to kernel updated', async (t) => {
  let deliver: ((b: SourceBatch) => void) | null = null;
  const source: Source = { start: async (d) => void (deliver = d), refresh: async () => {}, stop: () => {} };
  const cfg = defaultConfig();
  cfg.ipvs.minSyncPeriodSeconds = 0;
  const daemon = new Daemon(
    { source, config: cfg, nodeName: 'node-a' },
    {
      ipvs: new FakeIpvs(),
      links: new FakeLinks(),
      owned: new MemoryOwnership(),
      sysctl: { read: () => null, write: () => {} },
      log: new Logger({ sink: () => {} }),
      kernelRelease: '6.1.0',
    },
  );
  t.teardown(() => daemon.stop());
  await daemon.start();
  await daemon.runner.whenIdle();
  const changed = Date.now() - 1500;
  deliver!({
    changes: [
      { kind: 'Service', previous: null, current: service('web', { clusterIPs: ['10.96.0.1'] }) },
      { kind: 'EndpointSlice', previous: null, current: slice('web-1', 'web', [ep('10.0.0.1')]) },
    ],
    problems: [],
    triggerTimes: new Map([['default/web', changed]]),
  });
  await daemon.runner.whenIdle();
  t.equal(daemon.programmingLatencyMs.length, 1, 'one latency recorded');
  t.ok(
    daemon.programmingLatencyMs[0]! >= 1500 && daemon.programmingLatencyMs[0]! < 10_000,
    `${daemon.programmingLatencyMs[0]} ms`,
  );
});

/** A daemon on a manual clock fed by a PushSource, kube-proxy's minSyncPeriod; `deps` adds to its dependencies. */
async function clockedDaemon(
  t: { teardown: (f: () => void) => void },
  initial: Change[],
  deps: (ipvs: FakeIpvs, cfg: Config) => Partial<DaemonDeps> = () => ({}),
) {
  const clock = new ManualClock();
  const ipvs = new FakeIpvs();
  const source = new PushSource();
  source.initial = [
    { kind: 'Node', previous: null, current: node('node-a', [['InternalIP', '192.168.1.10']]) },
    ...initial,
  ];
  const cfg = defaultConfig();
  cfg.ipvs.minSyncPeriodSeconds = 1;
  const daemon = new Daemon(
    { source, config: cfg, nodeName: 'node-a' },
    {
      ipvs,
      links: new FakeLinks(),
      owned: new MemoryOwnership(),
      sysctl: { read: () => null, write: () => {} },
      log: new Logger({ sink: () => {} }),
      kernelRelease: '6.1.0',
      clock,
      ...deps(ipvs, cfg),
    },
  );
  t.teardown(() => daemon.stop());
  await daemon.start();
  await clock.advance(0);
  return { clock, ipvs, source, cfg, daemon };
}

t.test('an endpoint change during a long full resync is in the kernel before the resync ends', async (t) => {
  const webSlice = (...ips: string[]) =>
    slice(
      'web-1',
      'web',
      ips.map((a) => ep(a)),
    );
  const initialSlice = webSlice('10.0.0.1', '10.0.0.2');
  // The same kernel through the socket for writes alongside a sync (run.ts opens one of its own).
  const asideCalls: string[] = [];
  const { clock, ipvs, source, cfg, daemon } = await clockedDaemon(
    t,
    [
      { kind: 'Service', previous: null, current: service('web', { clusterIPs: ['10.96.0.1'] }) },
      { kind: 'EndpointSlice', previous: null, current: initialSlice },
    ],
    (ipvs) => ({
      asideIpvs: new Proxy(ipvs, {
        get(target, prop, receiver) {
          const v = Reflect.get(target, prop, receiver) as unknown;
          if (typeof v !== 'function') return v;
          return (...args: unknown[]) => {
            asideCalls.push(String(prop));
            return (v as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      }),
    }),
  );
  const vs = (await ipvs.services())[0]!;
  const dests = async () =>
    Object.fromEntries((await ipvs.destinations(vs)).map((d) => [d.address, d.weight] as const));
  t.same(await dests(), { '10.0.0.1': 1, '10.0.0.2': 1 });
  // The next full resync hangs in its first dump until released (as one of 10 000 Services would).
  const { held, release } = holdNextServiceDump(ipvs);
  await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
  t.ok(held(), 'a full resync is running');
  const before = daemon.programmingLatencyMs.length;
  // One endpoint added, one gone.
  source.deliver!({
    changes: [{ kind: 'EndpointSlice', previous: initialSlice, current: webSlice('10.0.0.1', '10.0.0.3') }],
    problems: [],
    triggerTimes: new Map([['default/web', clock.now()]]),
  });
  await clock.advance(0);
  t.same(
    await dests(),
    { '10.0.0.1': 1, '10.0.0.2': 0, '10.0.0.3': 1 },
    'the new endpoint serves and the gone one takes no new connection, while the resync still runs',
  );
  t.equal(daemon.programmingLatencyMs.length, before + 1, 'its programming latency is recorded then');
  t.same(
    [...new Set(asideCalls)].sort(),
    ['addDestination', 'destinations', 'updateDestination'],
    'through the socket for writes alongside a sync, not the one the resync waits on',
  );
  t.match(await daemon.metrics.text(), /kubeipvs_sync_aside_writes_total\{result="success"\} 1/);
  release();
  await clock.advance(100);
  await clock.advance(2000);
  t.same(
    await dests(),
    { '10.0.0.1': 1, '10.0.0.3': 1 },
    'and the syncs after it finish the job (the gone one deleted)',
  );
});

t.test('a change to a Service not in the kernel yet waits for the sync: nothing is written aside for it', async (t) => {
  const { clock, ipvs, source, cfg, daemon } = await clockedDaemon(t, []);
  const { held, release, services } = holdNextServiceDump(ipvs);
  await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
  t.ok(held(), 'a full resync is running');
  source.deliver!({
    changes: [
      { kind: 'Service', previous: null, current: service('web', { clusterIPs: ['10.96.0.1'] }) },
      { kind: 'EndpointSlice', previous: null, current: slice('web-1', 'web', [ep('10.0.0.1')]) },
    ],
    problems: [],
    triggerTimes: new Map([['default/web', clock.now()]]),
  });
  await clock.advance(0);
  t.same(await services(), [], 'no virtual server created alongside');
  t.equal(daemon.programmingLatencyMs.length, 0, 'and no latency recorded for a change not in the kernel');
  release();
  await clock.advance(100);
  await clock.advance(2000);
  t.equal((await services()).length, 1, 'the sync after the resync creates it');
  t.equal(daemon.programmingLatencyMs.length, 1, 'and records its latency');
});

t.test(
  'an endpoint change during a long incremental sync goes alongside it, and that sync does not turn it back',
  async (t) => {
    // LONG_SYNC_SERVICES Services: the sync after a full resync checks every one changed meanwhile.
    const n = LONG_SYNC_SERVICES;
    const name = (i: number) => `svc${i}`;
    const sliceOf = (i: number, last: string) => slice(`${name(i)}-1`, name(i), [ep('10.0.0.1'), ep(last)]);
    const initial: Change[] = [];
    for (let i = 0; i < n; i++) {
      initial.push({
        kind: 'Service',
        previous: null,
        current: service(name(i), { clusterIPs: [`10.96.1.${i + 1}`] }),
      });
      initial.push({ kind: 'EndpointSlice', previous: null, current: sliceOf(i, '10.0.1.1') });
    }
    // Writes alongside go through a socket of their own: here the same kernel, its methods as the class has them (the
    // sync's `destinations` is held below, the aside's is not).
    const { clock, ipvs, source, daemon } = await clockedDaemon(t, initial, (ipvs) => ({
      asideIpvs: otherSocket(ipvs),
    }));
    t.equal((await ipvs.services()).length, n, 'every Service in');
    const vsOf = (i: number) => ({
      family: 4 as const,
      protocol: 'TCP' as const,
      address: `10.96.1.${i + 1}`,
      port: 80,
    });
    const dests = async (i: number) =>
      Object.fromEntries((await ipvs.destinations(vsOf(i))).map((d) => [d.address, d.weight] as const));
    // Every Service changes at once (one batch): one incremental sync over all of them, held in its first dump.
    const { held, release } = holdNextDestinationDump(ipvs);
    await clock.advance(1000); // past minSyncPeriod
    source.deliver!({
      changes: Array.from({ length: n }, (_, i) => ({
        kind: 'EndpointSlice' as const,
        previous: sliceOf(i, '10.0.1.1'),
        current: sliceOf(i, '10.0.2.1'),
      })),
      problems: [],
    });
    await clock.advance(0);
    t.ok(held(), `an incremental sync over ${n} Services is running`);
    // The last of them changes again while that sync has not got to it.
    const last = n - 1;
    const opsBefore = ipvs.ops.length;
    const latencies = daemon.programmingLatencyMs.length;
    source.deliver!({
      changes: [{ kind: 'EndpointSlice', previous: sliceOf(last, '10.0.2.1'), current: sliceOf(last, '10.0.3.1') }],
      problems: [],
      triggerTimes: new Map([[`default/${name(last)}`, clock.now()]]),
    });
    await clock.advance(0);
    t.same(
      await dests(last),
      { '10.0.0.1': 1, '10.0.1.1': 0, '10.0.3.1': 1 },
      'its new endpoint serves while the long sync still runs',
    );
    t.equal(daemon.programmingLatencyMs.length, latencies + 1, 'and its programming latency is recorded then');
    release();
    await clock.advance(100);
    await clock.advance(2000);
    const stale = ipvs.ops
      .slice(opsBefore)
      .filter(
        (o) =>
          o.service === serviceId(vsOf(last)) && o.destination?.startsWith('10.0.2.1:') && o.op !== 'deleteDestination',
      );
    t.same(stale, [], 'the long sync never wrote the endpoint that change replaced');
    t.same(await dests(last), { '10.0.0.1': 1, '10.0.3.1': 1 }, 'and the syncs after it finish the job');
    t.same(await dests(0), { '10.0.0.1': 1, '10.0.2.1': 1 }, 'the others as their batch asked');
  },
);

t.test('an endpoint change during a short incremental sync waits for it: nothing is written twice', async (t) => {
  const asideCalls: string[] = [];
  const { clock, ipvs, source } = await clockedDaemon(
    t,
    [
      { kind: 'Service', previous: null, current: service('web', { clusterIPs: ['10.96.0.1'] }) },
      { kind: 'EndpointSlice', previous: null, current: slice('web-1', 'web', [ep('10.0.0.1')]) },
      { kind: 'Service', previous: null, current: service('api', { clusterIPs: ['10.96.0.2'] }) },
      { kind: 'EndpointSlice', previous: null, current: slice('api-1', 'api', [ep('10.0.1.1')]) },
    ],
    (ipvs) => ({ asideIpvs: otherSocket(ipvs, (m) => asideCalls.push(m)) }),
  );
  /** Service `svc`'s one endpoint becomes `to`. */
  const move = (svc: string, from: string, to: string) =>
    source.deliver!({
      changes: [
        {
          kind: 'EndpointSlice',
          previous: slice(`${svc}-1`, svc, [ep(from)]),
          current: slice(`${svc}-1`, svc, [ep(to)]),
        },
      ],
      problems: [],
    });
  const { held, release } = holdNextDestinationDump(ipvs);
  await clock.advance(1000);
  move('web', '10.0.0.1', '10.0.0.2');
  await clock.advance(0);
  t.ok(held(), "the web Service's sync is running");
  move('api', '10.0.1.1', '10.0.1.2');
  await clock.advance(0);
  t.same(asideCalls, [], 'nothing is written alongside a sync of one Service');
  release();
  await clock.advance(100);
  await clock.advance(2000);
  const api = await ipvs.destinations({ family: 4, protocol: 'TCP', address: '10.96.0.2', port: 80 });
  t.same(
    api.filter((d) => d.weight > 0).map((d) => d.address),
    ['10.0.1.2'],
    'the next sync brings the change',
  );
});

/**
 * A node kube-proxy's ipvs mode served: the node's address on eth0, the web Service's ClusterIP and a gone Service's on
 * the shared dummy interface, and in IPVS (`leftovers`) kube-proxy's NodePort for a Service gone since, another
 * program's virtual server off the node's addresses and one on a node address that is not a NodePort.
 */
function kubeProxyNode() {
  const links = new FakeLinks();
  links.links.set('eth0', { index: 2, kind: 'device', addresses: new Set(['192.168.1.10']) });
  links.links.set('kube-ipvs0', { index: 3, kind: 'dummy', addresses: new Set(['10.96.0.1', '10.96.0.99']) });
  const vs = (address: string, port: number) => ({
    family: 4 as const,
    protocol: 'TCP' as const,
    address,
    port,
    scheduler: 'rr',
    flags: 0,
    timeout: 0,
    netmask: 0xffffffff,
  });
  const initial: Change[] = [
    { kind: 'Service', previous: null, current: service('web', { clusterIPs: ['10.96.0.1'] }) },
    { kind: 'EndpointSlice', previous: null, current: slice('web-1', 'web', [ep('10.0.0.1')]) },
  ];
  const leftovers = [vs('192.168.1.10', 30123), vs('10.99.0.1', 80), vs('192.168.1.10', 8080)];
  return { links, owned: new MemoryOwnership(), initial, leftovers };
}

/** What a takeover leaves of kubeProxyNode(). */
async function assertTakenOver(
  t: Pick<typeof tap, 'same' | 'ok'>,
  ipvs: FakeIpvs,
  node: ReturnType<typeof kubeProxyNode>,
): Promise<void> {
  t.same(
    (await ipvs.services()).map(serviceId).sort(),
    ['TCP/10.96.0.1:80', 'TCP/10.99.0.1:80', 'TCP/192.168.1.10:8080'],
    "its NodePort leftover is gone; the other program's virtual servers stay",
  );
  t.same([...node.links.links.get('kube-ipvs0')!.addresses], ['10.96.0.1'], 'the address no Service wants is removed');
  t.ok(node.owned.addresses.has('10.96.0.1'), 'the one a Service wants is adopted');
}

t.test("kube-proxy's leftovers: kept while it runs, taken over once it stops, foreign state kept", async (t) => {
  let running: string | null = 'process 42 is kube-proxy';
  let netfilterCalls = 0;
  const kpNode = kubeProxyNode();
  const { links, owned } = kpNode;
  const { clock, ipvs, source, daemon } = await clockedDaemon(t, kpNode.initial, () => ({
    links,
    owned,
    kubeProxy: {
      running: () => running,
      removeNetfilter: async () => {
        netfilterCalls++;
        return { removed: ['iptables-nft nat KUBE-SERVICES', 'ipset KUBE-CLUSTER-IP'], errors: [], unchecked: [] };
      },
    },
  }));
  // What kube-proxy and another program had in IPVS before kube-ipvs' first sync would have been there already; the
  // twin starts empty, so they are added now and a full sync is run over them.
  for (const s of kpNode.leftovers) await ipvs.addService(s);
  daemon.runner.request();
  await clock.advance(30_000);
  const ids = async () => (await ipvs.services()).map(serviceId).sort();
  t.equal(netfilterCalls, 0, 'nothing of kube-proxy is touched while it runs');
  t.ok((await ids()).includes('TCP/192.168.1.10:30123'), 'its NodePort virtual server stays while it runs');
  t.same([...links.links.get('kube-ipvs0')!.addresses].sort(), ['10.96.0.1', '10.96.0.99'], 'so do its addresses');
  t.match(await daemon.metrics.text(), /kubeipvs_kube_proxy_running 1/);

  running = null;
  await clock.advance(1000); // the next look at /proc
  await clock.advance(1000); // the sync it asks for (minSyncPeriod)
  t.equal(netfilterCalls, 1, 'once it stopped, its chains, ipsets and tables are removed');
  await assertTakenOver(t, ipvs, kpNode);
  const m = await daemon.metrics.text();
  t.match(m, /kubeipvs_kube_proxy_running 0/);
  t.match(m, /kubeipvs_kube_proxy_leftovers_removed_total\{kind="virtual_server"\} 1/);
  t.match(m, /kubeipvs_kube_proxy_leftovers_removed_total\{kind="address"\} 1/);
  t.match(m, /kubeipvs_kube_proxy_leftovers_removed_total\{kind="iptables_chain"\} 1/);
  t.match(m, /kubeipvs_kube_proxy_leftovers_removed_total\{kind="ipset"\} 1/);

  await clock.advance(30_000);
  t.equal(netfilterCalls, 1, 'done once: later syncs do not look again');
  source.deliver!({
    changes: [{ kind: 'Service', previous: service('web', { clusterIPs: ['10.96.0.1'] }), current: null }],
    problems: [],
    triggerTimes: new Map(),
  });
  await clock.advance(1000);
  t.same([...links.links.get('kube-ipvs0')!.addresses], [], 'the adopted address goes with its Service');
});

t.test("kube-proxy gone before the first full sync: the takeover uses that sync's reading of the kernel", async (t) => {
  const kpNode = kubeProxyNode();
  const { links, owned } = kpNode;
  let dumpsBefore = { services: -1, addresses: -1 };
  let removed = 0;
  const { ipvs, daemon } = await clockedDaemon(t, kpNode.initial, (fake) => {
    // In the kernel before kube-ipvs starts (the fake's add is synchronous: they are in before start).
    for (const s of kpNode.leftovers) fake.addService(s).catch((e: unknown) => t.fail(String(e)));
    return {
      links,
      owned,
      kubeProxy: {
        // Its last look at /proc comes right before the takeover: what IPVS and the interface were read for so far.
        running: () => ((dumpsBefore = { services: fake.serviceDumps, addresses: links.addressDumps }), null),
        removeNetfilter: async () => {
          removed++;
          return { removed: [], errors: [], unchecked: [] };
        },
      },
    };
  });
  t.equal(removed, 1, 'taken over after the first full sync');
  const dumps = ipvs.serviceDumps;
  await assertTakenOver(t, ipvs, kpNode);
  t.equal(dumps, dumpsBefore.services, 'no dump of the virtual servers of its own');
  t.equal(
    links.addressDumps,
    dumpsBefore.addresses + 1,
    "one address dump of its own: the node's addresses, for the NodePort-shaped one",
  );
  t.match(await daemon.metrics.text(), /kubeipvs_kube_proxy_leftovers_removed_total\{kind="virtual_server"\} 1/);
});

t.test('the netfilter part of a takeover runs beside the syncs: a change is not held behind it', async (t) => {
  const kpNode = kubeProxyNode();
  const { links, owned } = kpNode;
  let calls = 0;
  let release: (r: LeftoverResult) => void = () => {};
  const lines: string[] = [];
  const { clock, ipvs, source, cfg, daemon } = await clockedDaemon(t, kpNode.initial, (fake) => {
    for (const s of kpNode.leftovers) fake.addService(s).catch((e: unknown) => t.fail(String(e)));
    return {
      links,
      owned,
      log: new Logger({ sink: (l) => void lines.push(l) }),
      kubeProxy: {
        running: () => null,
        // kube-proxy's rules at scale: its save and restore take long; here until released.
        removeNetfilter: () => (calls++, new Promise<LeftoverResult>((r) => (release = r))),
      },
    };
  });
  t.equal(calls, 1, 'its netfilter part started after the first full sync');
  await assertTakenOver(t, ipvs, kpNode);
  let settled = false;
  daemon.takeoverSettled().then(
    () => (settled = true),
    (e: unknown) => t.fail(String(e)),
  );
  // A new Service: nothing of it is in the kernel, so it is not written aside (as a running sync's are): only a sync
  // makes it, and the runner must be free for one.
  source.deliver!({
    changes: [
      { kind: 'Service', previous: null, current: service('api', { clusterIPs: ['10.96.0.2'] }) },
      { kind: 'EndpointSlice', previous: null, current: slice('api-1', 'api', [ep('10.0.0.2')]) },
    ],
    problems: [],
    triggerTimes: new Map([['default/api', clock.now()]]),
  });
  await clock.advance(1000);
  const api = (await ipvs.services()).find((s) => serviceId(s) === 'TCP/10.96.0.2:80');
  t.ok(api, 'a Service made while it runs is in the kernel');
  t.same(api ? (await ipvs.destinations(api)).map((d) => d.address) : [], ['10.0.0.2'], 'with its endpoint');
  await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
  t.equal(calls, 1, 'a full sync while it runs does not start another');
  t.notOk(settled, 'still under way');
  t.notMatch(lines.join('\n'), /removed kube-proxy's leftovers/, 'nothing reported before it ends');
  release({ removed: ['iptables-nft nat KUBE-SERVICES'], errors: [], unchecked: [] });
  await daemon.takeoverSettled();
  t.ok(settled, 'settled once it ends');
  t.match(lines.join('\n'), /removed kube-proxy's leftovers/, 'and reported then, with the IPVS part');
  const m = await daemon.metrics.text();
  t.match(m, /kubeipvs_kube_proxy_leftovers_removed_total\{kind="iptables_chain"\} 1/);
  t.match(m, /kubeipvs_kube_proxy_leftovers_removed_total\{kind="virtual_server"\} 1/);
  await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
  t.equal(calls, 1, 'done: the next full sync does not look again');
});

t.test(
  "kube-proxy's leftovers: kubeProxyLeftovers keep leaves them; a failed removal is retried at the next full sync",
  async (t) => {
    let calls = 0;
    const { clock, cfg } = await clockedDaemon(t, [], () => ({
      kubeProxy: {
        running: () => null,
        removeNetfilter: async () => {
          calls++;
          return calls === 1
            ? { removed: [], errors: ['iptables-nft-restore: exit 4: busy'], unchecked: [] }
            : { removed: [], errors: [], unchecked: [] };
        },
      },
    }));
    t.equal(calls, 1, 'looked for after the first full sync');
    await clock.advance(5000);
    t.equal(calls, 1, 'a failure is not retried by every sync');
    await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
    t.equal(calls, 2, 'but by the next full one');
    await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
    t.equal(calls, 2, 'and not again once it succeeded');

    let kept = 0;
    const keep = await clockedDaemon(t, [], (_ipvs, cfg) => {
      cfg.kubeProxyLeftovers = 'keep';
      return {
        kubeProxy: {
          running: () => null,
          removeNetfilter: async () => (kept++, { removed: [], errors: [], unchecked: [] }),
        },
      };
    });
    await keep.clock.advance(keep.cfg.ipvs.syncPeriodSeconds * 1000);
    t.equal(kept, 0, 'kubeProxyLeftovers: keep never removes them');
  },
);
