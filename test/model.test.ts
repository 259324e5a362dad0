// Change tracking: each change reports exactly the Services whose plan may have changed, and
// the incremental planner always agrees with planning from scratch.
import t from 'tap';
import { defaultConfig } from '../src/config/config.ts';
import { Model, sameSlice, type Change } from '../src/model/model.ts';
import { parseEndpointSlice } from '../src/model/validate.ts';
import type { EndpointSlice } from '../src/model/types.ts';
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

t.test('sameSlice tells every field of a parsed slice apart, as comparing them as JSON does', async (t) => {
  const raw = slice('s-1', 's', [
    ep('10.0.0.1', { node: 'n1', zone: 'z1', zones: ['z1'], nodes: ['n1'] }),
    ep('10.0.0.2', { node: 'n2', zone: 'z2', zones: ['z2', 'z3'], nodes: ['n2'] }),
  ]);
  const parse = () => {
    const r = parseEndpointSlice(raw, { proxyName: 'kube-ipvs' });
    if (r.status !== 'ok') throw new Error(r.status);
    return r.value;
  };
  const a = parse();
  t.ok(sameSlice(a, parse()), 'two readings of one object');
  t.ok(sameSlice(undefined, undefined));
  t.notOk(sameSlice(a, undefined));
  t.notOk(sameSlice(undefined, a));
  // Every field the parser fills (read off a parsed slice: a new one is covered without editing this list).
  const other = (v: unknown): unknown =>
    typeof v === 'string'
      ? `${v}x`
      : typeof v === 'number'
        ? v + 1
        : typeof v === 'boolean'
          ? !v
          : v === null
            ? ['x']
            : Array.isArray(v)
              ? [...v, 'x']
              : { changed: true };
  let fields = 0;
  const each = (path: string, get: (s: EndpointSlice) => Record<string, unknown>) => {
    for (const k of Object.keys(get(a))) {
      const b = parse();
      get(b)[k] = other(get(b)[k]);
      fields++;
      t.equal(sameSlice(a, b), false, `${path}${k} differs`);
      t.equal(sameSlice(a, b), JSON.stringify(a) === JSON.stringify(b), `${path}${k}: as the JSON comparison`);
    }
  };
  each('', (s) => s as unknown as Record<string, unknown>);
  each('ports[0].', (s) => s.ports[0] as unknown as Record<string, unknown>);
  each('endpoints[1].', (s) => s.endpoints[1] as unknown as Record<string, unknown>);
  t.ok(fields >= 3 + 3 + 9, `${fields} fields changed one at a time`);
  const hint = parse();
  hint.endpoints[1]!.zoneHints = ['z2', 'z4'];
  t.notOk(sameSlice(a, hint), 'a hint list of the same length, one name changed');
  const fewer = parse();
  fewer.endpoints.pop();
  t.notOk(sameSlice(a, fewer), 'one endpoint fewer');
});

t.test(
  'a slice read with its version in force reads as it does alone (addresses reused only as written)',
  async (t) => {
    const opts = { proxyName: 'kube-ipvs' };
    const read = (raw: unknown, previous?: EndpointSlice) => parseEndpointSlice(raw, opts, previous);
    const v1 = read(slice('s-1', 's', [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')]));
    if (v1.status !== 'ok') throw new Error('v1');
    const prev = v1.value;
    const cases: [string, unknown][] = [
      ['one address replaced', slice('s-1', 's', [ep('10.0.0.9'), ep('10.0.0.2'), ep('10.0.0.3')])],
      ['reordered', slice('s-1', 's', [ep('10.0.0.3'), ep('10.0.0.1'), ep('10.0.0.2')])],
      ['written another way (not reused: read again)', slice('s-1', 's', [ep('10.0.0.01'), ep('010.0.0.2')])],
      ['now invalid', slice('s-1', 's', [ep('10.0.0.1'), ep('127.0.0.1')])],
      ['now IPv6 with the same text', slice('s-1', 's', [ep('10.0.0.1')], { addressType: 'IPv6' })],
      ['an endpoint without addresses before the others', slice('s-1', 's', [{ addresses: [] }, ep('10.0.0.1')])],
      ['not a string', slice('s-1', 's', [{ addresses: [167772161] }, ep('10.0.0.2')])],
    ];
    for (const [name, raw] of cases) t.same(read(raw, prev), read(raw), name);
    const sameAgain = read(slice('s-1', 's', [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')]), prev);
    t.ok(sameAgain.status === 'ok' && sameSlice(prev, sameAgain.value), 'the same slice again reads the same');
  },
);
