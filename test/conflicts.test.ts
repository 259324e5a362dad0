// Services that want the same virtual server, service address or node port (CVE-2020-8554, a
// duplicate ClusterIP, a NodePort used twice): the holder is decided by who claims what, never by
// the order changes came in; the loser is reported and gets nothing of what it lost, and its
// changes never touch the holder's virtual servers in the kernel.
import t from 'tap';
import { defaultConfig } from '../src/config/config.ts';
import { Daemon } from '../src/daemon.ts';
import { FakeIpvs } from '../src/dataplane/ipvs/fake.ts';
import { FakeLinks } from '../src/dataplane/links.ts';
import { MemoryOwnership } from '../src/dataplane/ownership.ts';
import { Model, type Change } from '../src/model/model.ts';
import { Logger } from '../src/observe/log.ts';
import { daemonStatus } from '../src/observe/server.ts';
import { planConfigFrom } from '../src/plan/config.ts';
import { Planner } from '../src/plan/plan.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { planObjects } from './support/plan.ts';
import { PushSource } from './support/source.ts';

type Obj = Record<string, unknown>;
/** A Service created at minute `minute` of the day (older claims win). */
const aged = (o: Obj, minute: number | null): Obj => ({
  ...o,
  metadata: {
    ...(o.metadata as Obj),
    ...(minute === null ? {} : { creationTimestamp: `2026-11-01T00:${String(minute).padStart(2, '0')}:00Z` }),
  },
});
const vsIds = (
  plan: { virtualServers: { service: string; protocol: string; address: string; port: number; fwmark?: number }[] },
  svc: string,
) =>
  plan.virtualServers
    .filter((v) => v.service === svc)
    .map((v) => `${v.fwmark !== undefined ? 'FWM ' : ''}${v.protocol}/${v.address}:${v.port}`)
    .sort();
const theNode = node('node-a', [['InternalIP', '192.168.1.10']]);

t.test("CVE-2020-8554: an externalIP on another Service's ClusterIP gets nothing there, however old", async (t) => {
  for (const evilMinute of [1, 30, null]) {
    const good = aged(service('good', { clusterIPs: ['10.96.0.10'] }), 10);
    const evil = aged(
      service('grab', {
        ns: 'zz-evil',
        clusterIPs: ['10.96.0.99'],
        externalIPs: ['10.96.0.10'],
        ports: [
          { name: 'http', port: 80 },
          { name: 'other', port: 81 },
        ],
      }),
      evilMinute,
    );
    const { plan, problems } = planObjects([
      theNode,
      good,
      slice('good-1', 'good', [ep('10.0.0.1')]),
      evil,
      slice('grab-1', 'grab', [ep('10.66.6.6')], { ns: 'zz-evil' }),
    ]);
    t.same(
      vsIds(plan, 'default/good'),
      ['TCP/10.96.0.10:80'],
      `created at minute ${evilMinute}: the victim keeps its virtual server`,
    );
    t.same(
      plan.virtualServers.find((v) => v.address === '10.96.0.10')?.realServers.map((r) => r.address),
      ['10.0.0.1'],
      'with its own endpoints',
    );
    t.same(
      vsIds(plan, 'zz-evil/grab'),
      ['TCP/10.96.0.99:80', 'TCP/10.96.0.99:81'],
      'the attacker keeps only its own ClusterIP: not even a port the victim does not use',
    );
    t.notOk(
      plan.ipsets['KIPVS-EXTERNAL-IP']?.entries.some((e) => e.startsWith('10.96.0.10,')),
      'no externalIP set entry on the victim address',
    );
    const lines = problems.filter((p) => p.code === 'KIPVS_SERVICE_CONFLICT');
    t.same(
      lines.map((p) => [p.name, p.severity]),
      [
        ['zz-evil/grab', 'error'],
        ['zz-evil/grab', 'error'],
      ],
      'reported against the attacker, twice (one per port)',
    );
    t.match(lines[0]?.message, /ExternalIP TCP\/10\.96\.0\.10:80 is held by Service default\/good/);
  }
});

t.test('a duplicate ClusterIP: the older Service keeps it, by creationTimestamp, then namespace/name', async (t) => {
  const a = (m: number | null) => aged(service('a', { clusterIPs: ['10.96.0.20'] }), m);
  const b = (m: number | null) =>
    aged(
      service('b', {
        clusterIPs: ['10.96.0.20'],
        ports: [
          { name: 'http', port: 80 },
          { name: 'admin', port: 9000 },
        ],
      }),
      m,
    );
  const holder = (objs: Obj[]) => {
    const { plan } = planObjects([theNode, ...objs]);
    return [...new Set(plan.virtualServers.filter((v) => v.address === '10.96.0.20').map((v) => v.service))];
  };
  t.same(holder([a(5), b(9)]), ['default/a'], 'a is older');
  t.same(holder([b(9), a(5)]), ['default/a'], 'in any file order');
  t.same(holder([a(9), b(5)]), ['default/b'], 'b is older: all of the address is b’s, port 9000 too');
  t.same(holder([a(null), b(null)]), ['default/a'], 'no timestamps: by namespace/name');
  t.same(holder([a(null), b(3)]), ['default/b'], 'a known time beats an unknown one');
});

t.test('a NodePort used twice, and a healthCheckNodePort on it: the older keeps the node port', async (t) => {
  const np = (name: string, m: number, protocol = 'TCP', nodePort = 30080) =>
    aged(
      service(name, {
        clusterIPs: [`10.96.1.${m}`],
        type: 'NodePort',
        ports: [{ name: 'p', protocol, port: 80, nodePort }],
      }),
      m,
    );
  let r = planObjects([theNode, np('first', 1), np('second', 2)]);
  t.same(vsIds(r.plan, 'default/first'), ['TCP/10.96.1.1:80', 'TCP/192.168.1.10:30080']);
  t.same(vsIds(r.plan, 'default/second'), ['TCP/10.96.1.2:80'], 'the newer one keeps its ClusterIP only');
  t.match(
    r.problems.find((p) => p.code === 'KIPVS_SERVICE_CONFLICT')?.message,
    /nodePort TCP\/30080 is held by Service default\/first/,
  );
  r = planObjects([theNode, np('first', 1), np('second', 2, 'UDP')]);
  t.same(
    vsIds(r.plan, 'default/second'),
    ['UDP/10.96.1.2:80', 'UDP/192.168.1.10:30080'],
    'the same number over UDP is another node port',
  );
  const lb = aged(
    service('lb', {
      clusterIPs: ['10.96.1.9'],
      type: 'LoadBalancer',
      ports: [{ name: 'p', port: 80, nodePort: 30090 }],
      spec: { externalTrafficPolicy: 'Local', healthCheckNodePort: 30080 },
    }),
    9,
  );
  r = planObjects([theNode, np('first', 1), lb]);
  t.equal(
    r.planner.servicePlan('default/lb')?.healthCheckNodePort,
    0,
    'a healthCheckNodePort on a held node port is not served',
  );
  t.match(
    r.problems.find((p) => p.name === 'default/lb')?.message,
    /healthCheckNodePort 30080 is held by Service default\/first/,
  );
});

t.test('an externalIP shared on different ports is fine; on the same port the older wins', async (t) => {
  const ext = (name: string, m: number, port: number) =>
    aged(
      service(name, { clusterIPs: [`10.96.2.${m}`], externalIPs: ['203.0.113.5'], ports: [{ name: 'p', port }] }),
      m,
    );
  let r = planObjects([theNode, ext('web', 1, 80), ext('tls', 2, 443)]);
  t.same(vsIds(r.plan, 'default/web'), ['TCP/10.96.2.1:80', 'TCP/203.0.113.5:80']);
  t.same(vsIds(r.plan, 'default/tls'), ['TCP/10.96.2.2:443', 'TCP/203.0.113.5:443']);
  t.same(
    r.problems.filter((p) => p.code === 'KIPVS_SERVICE_CONFLICT'),
    [],
  );
  r = planObjects([theNode, ext('new', 7, 80), ext('old', 2, 80)]);
  t.same(vsIds(r.plan, 'default/old'), ['TCP/10.96.2.2:80', 'TCP/203.0.113.5:80']);
  t.same(vsIds(r.plan, 'default/new'), ['TCP/10.96.2.7:80']);
  t.same(
    r.plan.addresses.filter((a) => a === '203.0.113.5'),
    ['203.0.113.5'],
    'one address on the dummy interface',
  );
});

t.test('one Service cannot hold the same port twice: refused as the API server refuses it', async (t) => {
  const { problems, plan } = planObjects([
    theNode,
    service('twice', {
      clusterIPs: ['10.96.3.1'],
      ports: [
        { name: 'a', port: 80 },
        { name: 'b', port: 80 },
      ],
    }),
    service('np', {
      clusterIPs: ['10.96.3.2'],
      type: 'NodePort',
      ports: [
        { name: 'a', port: 80, nodePort: 30001 },
        { name: 'b', port: 81, nodePort: 30001 },
      ],
    }),
    service('ok', {
      clusterIPs: ['10.96.3.3'],
      ports: [
        { name: 'dns', protocol: 'UDP', port: 53 },
        { name: 'dns-tcp', protocol: 'TCP', port: 53 },
      ],
    }),
  ]);
  t.match(
    problems.find((p) => p.name === 'default/twice'),
    { code: 'KIPVS_OBJECT_INVALID', field: 'spec.ports[1].port', message: /TCP port 80 is already spec\.ports\[0\]/ },
  );
  t.match(
    problems.find((p) => p.name === 'default/np'),
    { code: 'KIPVS_OBJECT_INVALID', field: 'spec.ports[1].nodePort' },
  );
  t.same(
    vsIds(plan, 'default/ok'),
    ['TCP/10.96.3.3:53', 'UDP/10.96.3.3:53'],
    'TCP and UDP on one number are two ports',
  );
  t.same(vsIds(plan, 'default/twice'), []);
});

t.test('incremental planning equals planning from scratch through random changes with collisions', async (t) => {
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >>> 16) % n;
  const cfg = planConfigFrom(defaultConfig());
  const m = new Model({ nodeName: 'node-a', proxyName: 'kube-ipvs' });
  m.apply({ kind: 'Node', previous: null, current: node('node-a', [['InternalIP', '192.168.1.10']]) });
  const planner = new Planner(m, cfg);
  planner.planAll();
  const live = new Map<string, Obj>();
  let conflictsSeen = 0;
  for (let step = 0; step < 600; step++) {
    const i = rand(6);
    const key = `s${i}`;
    const prev = live.get(key) ?? null;
    let change: Change;
    if (prev && rand(5) === 0) {
      change = { kind: 'Service', previous: prev, current: null };
      live.delete(key);
    } else {
      // Few addresses and ports, so Services collide all the time.
      const obj = aged(
        service(key, {
          clusterIPs: [`10.96.0.${1 + rand(4)}`],
          type: rand(2) ? 'NodePort' : 'LoadBalancer',
          externalIPs: rand(2) ? [`10.96.0.${1 + rand(4)}`] : [`203.0.113.${rand(2)}`],
          lbIngress: [{ ip: `198.51.100.${rand(2)}` }],
          ports: [{ name: 'p', port: 80 + rand(2), nodePort: 30000 + rand(3) }],
          spec: { externalTrafficPolicy: rand(2) ? 'Local' : 'Cluster', healthCheckNodePort: 30000 + rand(4) },
        }),
        rand(3) ? rand(60) : null,
      );
      change = { kind: 'Service', previous: prev, current: obj };
      live.set(key, obj);
    }
    planner.update(m.apply(change));
    if (rand(4) === 0) {
      const s = `s${rand(6)}`;
      planner.update(
        m.apply({
          kind: 'EndpointSlice',
          previous: null,
          current: slice(`${s}-1`, s, [ep(`10.1.${rand(3)}.${rand(3) + 1}`)]),
        }),
      );
    }
    conflictsSeen += planner.conflicts().length;
    if (step % 50 === 49) {
      const scratch = new Planner(m, cfg);
      scratch.planAll();
      t.same(planner.snapshot(), scratch.snapshot(), `step ${step}: same plan`);
      t.same(planner.conflicts(), scratch.conflicts(), `step ${step}: same conflicts`);
      const ids = planner
        .snapshot()
        .virtualServers.map((v) =>
          v.fwmark !== undefined ? `FWM/${v.fwmark}` : `${v.protocol}/${v.address}:${v.port}`,
        );
      t.equal(new Set(ids).size, ids.length, `step ${step}: no virtual server planned twice`);
    }
  }
  t.ok(conflictsSeen > 100, `the walk really collided (${conflictsSeen} refused claims seen)`);
});

t.test(
  "in the daemon: the loser's changes and its deletion never touch the holder's virtual server; the loser is reported",
  async (t) => {
    const ipvs = new FakeIpvs();
    const logs: string[] = [];
    const cfg = defaultConfig();
    cfg.ipvs.minSyncPeriodSeconds = 0;
    const source = new PushSource();
    const good = aged(service('good', { clusterIPs: ['10.96.0.10'] }), 10);
    source.initial = [
      { kind: 'Node', previous: null, current: theNode },
      { kind: 'Service', previous: null, current: good },
      { kind: 'EndpointSlice', previous: null, current: slice('good-1', 'good', [ep('10.0.0.1')]) },
    ];
    const daemon = new Daemon(
      { source, config: cfg, nodeName: 'node-a' },
      {
        ipvs,
        links: new FakeLinks(),
        owned: new MemoryOwnership(),
        sysctl: { read: () => null, write: () => {} },
        log: new Logger({ sink: (l) => void logs.push(l), format: 'json' }),
        kernelRelease: '6.1.0',
      },
    );
    t.teardown(() => daemon.stop());
    await daemon.start();
    await daemon.runner.whenIdle();
    const touchedGood = () =>
      ipvs.ops.filter((o) => o.service === 'TCP/10.96.0.10:80' && o.op !== 'addService' && o.op !== 'addDestination');
    const start = ipvs.ops.length;
    const evil = (port: number, minute: number) =>
      aged(
        service('grab', {
          ns: 'zz-evil',
          clusterIPs: ['10.96.0.99'],
          externalIPs: ['10.96.0.10'],
          ports: [{ name: 'http', port }],
        }),
        minute,
      );
    source.push({ kind: 'Service', previous: null, current: evil(80, 1) });
    await daemon.runner.whenIdle();
    source.push({
      kind: 'EndpointSlice',
      previous: null,
      current: slice('grab-1', 'grab', [ep('10.66.6.6')], { ns: 'zz-evil' }),
    });
    await daemon.runner.whenIdle();
    source.push({ kind: 'Service', previous: evil(80, 1), current: evil(81, 1) });
    await daemon.runner.whenIdle();
    source.push({ kind: 'Service', previous: evil(81, 1), current: null });
    await daemon.runner.whenIdle();
    t.same(
      ipvs.ops.slice(start).filter((o) => o.service === 'TCP/10.96.0.10:80'),
      [],
      'not one kernel operation on the holder’s virtual server',
    );
    t.same(touchedGood(), [], 'never deleted or changed');
    t.same(
      (await ipvs.destinations({ family: 4, protocol: 'TCP', address: '10.96.0.10', port: 80 })).map((d) => d.address),
      ['10.0.0.1'],
      'and it still has its own endpoint',
    );
    t.ok(
      logs.some((l) => l.includes('KIPVS_SERVICE_CONFLICT') && l.includes('zz-evil/grab')),
      'the conflict was logged',
    );
    t.ok(
      logs.some((l) => l.includes('conflict over')),
      'and its end',
    );

    source.push({ kind: 'Service', previous: null, current: evil(80, 1) });
    await daemon.runner.whenIdle();
    t.same(
      daemonStatus(daemon).conflicts,
      [{ service: 'zz-evil/grab', what: 'ExternalIP TCP/10.96.0.10:80', heldBy: 'default/good' }],
      '/status lists it',
    );
    t.match(
      await daemon.metrics.text(),
      /kubeipvs_service_conflicts\{namespace="zz-evil",service="grab"\} 1/,
      'and the metric counts it',
    );
    // The holder goes away: the address is free, the former loser gets it (incrementally, as from scratch).
    const handover = ipvs.ops.length;
    source.push({ kind: 'Service', previous: good, current: null });
    await daemon.runner.whenIdle();
    t.same(
      ipvs.ops
        .slice(handover)
        .filter((o) => o.op === 'deleteService')
        .map((o) => o.service),
      [],
      'handed over in place: the virtual server is not deleted and made again',
    );
    t.same(
      (await ipvs.destinations({ family: 4, protocol: 'TCP', address: '10.96.0.10', port: 80 })).map((d) => d.address),
      ['10.66.6.6'],
      'the remaining claimant is served',
    );
    t.same(daemonStatus(daemon).conflicts, []);
  },
);
