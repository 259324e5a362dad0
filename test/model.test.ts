// Change tracking: each change reports exactly the Services whose plan may have changed, and
// the incremental planner always agrees with planning from scratch.
import t from 'tap';
import { defaultConfig } from '../src/config/config.ts';
import { Model, type Change } from '../src/model/model.ts';
import { planConfigFrom } from '../src/plan/config.ts';
import { Planner } from '../src/plan/plan.ts';
import { ep, node, service, slice } from './support/objects.ts';

const add = (kind: Change['kind'], current: Record<string, unknown>): Change => ({ kind, previous: null, current });
const del = (kind: Change['kind'], previous: Record<string, unknown>): Change => ({ kind, previous, current: null });
const upd = (kind: Change['kind'], previous: Record<string, unknown>, current: Record<string, unknown>): Change => ({
  kind,
  previous,
  current,
});

function fresh() {
  return new Model({ nodeName: 'node-a', proxyName: 'kube-ipvs' });
}

t.test('services and slices report the Service they touch', async (t) => {
  const m = fresh();
  const a = service('a', { clusterIPs: ['10.96.0.1'] });
  t.same(m.apply(add('Service', a)).changedServices, ['default/a']);
  t.same(m.apply(add('Service', a)).changedServices, [], 'the same object again changes nothing');
  const withRV = { ...a, metadata: { ...(a.metadata as object), resourceVersion: '7' } };
  t.same(m.apply(upd('Service', a, withRV)).changedServices, [], 'metadata-only updates change nothing');

  const s1 = slice('a-1', 'a', [ep('10.0.0.1')]);
  t.same(m.apply(add('EndpointSlice', s1)).changedServices, ['default/a']);
  t.same(
    m.apply(add('EndpointSlice', slice('b-1', 'b', [ep('10.0.0.2')]))).changedServices,
    ['default/b'],
    'a slice may arrive before its Service',
  );
  t.equal(m.slicesFor('default/a').length, 1);

  // A slice relabelled to another Service changes both.
  const moved = slice('a-1', 'b', [ep('10.0.0.1')]);
  t.same(m.apply(upd('EndpointSlice', s1, moved)).changedServices.sort(), ['default/a', 'default/b']);
  t.equal(m.slicesFor('default/a').length, 0);
  t.equal(m.slicesFor('default/b').length, 2);

  t.same(m.apply(del('EndpointSlice', moved)).changedServices, ['default/b']);
  t.same(m.apply(del('Service', a)).changedServices, ['default/a']);
  t.equal(m.service('default/a'), undefined);
  t.same(m.apply(del('Service', a)).changedServices, [], 'deleting twice is harmless');
});

t.test('an invalid update keeps the last valid version and reports why', async (t) => {
  const m = fresh();
  const good = service('a', { clusterIPs: ['10.96.0.1'] });
  m.apply(add('Service', good));
  const bad = service('a', { clusterIPs: ['10.96.0.1'], ports: [{ port: 99999 }] });
  const r = m.apply(upd('Service', good, bad));
  t.same(r.changedServices, []);
  t.equal(r.problems[0]?.code, 'KIPVS_OBJECT_INVALID');
  t.equal(r.problems[0]?.field, 'spec.ports[0].port');
  t.equal(m.service('default/a')?.ports[0]?.port, 80, 'still serving the last valid ports');
  t.same(m.apply(del('Service', bad)).changedServices, ['default/a'], 'a delete always removes');
});

t.test('a Service becoming ignored is removed', async (t) => {
  const m = fresh();
  const a = service('a', { clusterIPs: ['10.96.0.1'] });
  m.apply(add('Service', a));
  const theirs = service('a', {
    clusterIPs: ['10.96.0.1'],
    labels: { 'service.kubernetes.io/service-proxy-name': 'other' },
  });
  t.same(m.apply(upd('Service', a, theirs)).changedServices, ['default/a']);
  t.equal(m.serviceCount, 0);
});

t.test('only the local Node matters, and its changes replan everything', async (t) => {
  const m = fresh();
  t.equal(m.apply(add('Node', node('node-b', [['InternalIP', '10.1.0.2']]))).nodeChanged, false);
  const n1 = node('node-a', [['InternalIP', '10.1.0.1']], 'zone-a');
  t.equal(m.apply(add('Node', n1)).nodeChanged, true);
  t.equal(m.apply(add('Node', n1)).nodeChanged, false, 'unchanged node');
  const n2 = node('node-a', [['InternalIP', '10.1.0.1']], 'zone-b');
  t.equal(m.apply(upd('Node', n1, n2)).nodeChanged, true);
  t.equal(m.node?.zone, 'zone-b');
});

t.test('incremental planning equals planning from scratch, through many random changes', async (t) => {
  // A small deterministic PRNG, so a failure reproduces.
  let seed = 42;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >>> 16) % n;
  const cfg = planConfigFrom(defaultConfig());
  const m = fresh();
  const planner = new Planner(m, cfg);
  planner.planAll();
  const live = new Map<string, { kind: Change['kind']; obj: Record<string, unknown> }>();
  const nodes = ['node-a', 'node-b', 'node-c'];
  const zones = ['zone-a', 'zone-b'];

  for (let step = 0; step < 400; step++) {
    const i = rand(8);
    let change: Change;
    const pick = rand(10);
    if (pick < 3) {
      const key = `Service/s${i}`;
      const obj = service(`s${i}`, {
        clusterIPs: [`10.96.0.${i + 1}`],
        type: rand(2) ? 'NodePort' : 'ClusterIP',
        ports: [{ name: 'http', port: 80, nodePort: 30000 + i }],
        spec: {
          internalTrafficPolicy: rand(3) ? 'Cluster' : 'Local',
          externalTrafficPolicy: rand(2) ? 'Cluster' : 'Local',
        },
      });
      const prev = live.get(key);
      if (prev && rand(4) === 0) {
        change = del('Service', prev.obj);
        live.delete(key);
      } else {
        change = { kind: 'Service', previous: prev?.obj ?? null, current: obj };
        live.set(key, { kind: 'Service', obj });
      }
    } else if (pick < 9) {
      const j = rand(2);
      const key = `EndpointSlice/s${i}-${j}`;
      const eps = Array.from({ length: rand(4) }, (_, k) =>
        ep(`10.${i}.${j}.${k + rand(3)}`, {
          ready: rand(4) > 0,
          serving: rand(2) > 0,
          terminating: rand(3) === 0,
          node: nodes[rand(3)]!,
          zones: rand(2) ? [zones[rand(2)]!] : undefined,
        }),
      );
      const obj = slice(`s${i}-${j}`, `s${rand(5) ? i : rand(8)}`, eps);
      const prev = live.get(key);
      if (prev && rand(5) === 0) {
        change = del('EndpointSlice', prev.obj);
        live.delete(key);
      } else {
        change = { kind: 'EndpointSlice', previous: prev?.obj ?? null, current: obj };
        live.set(key, { kind: 'EndpointSlice', obj });
      }
    } else {
      const obj = node('node-a', [['InternalIP', `192.168.0.${1 + rand(2)}`]], zones[rand(2)]);
      change = { kind: 'Node', previous: live.get('Node')?.obj ?? null, current: obj };
      live.set('Node', { kind: 'Node', obj });
    }
    planner.update(m.apply(change));
  }
  const incremental = planner.snapshot();
  const scratch = new Planner(m, cfg);
  scratch.planAll();
  t.same(incremental, scratch.snapshot(), 'same plan');
  t.ok(incremental.virtualServers.length > 0, 'the random walk produced virtual servers');
  t.ok(
    incremental.virtualServers.some((v) => v.realServers.length > 0),
    'and real servers',
  );
});
