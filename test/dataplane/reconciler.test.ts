// The reconciler against the in-memory kernel: minimal operations, ownership, graceful
// termination, restart behaviour and failure isolation.
import t from 'tap';
import { defaultConfig } from '../../src/config/config.ts';
import { FakeIpvs } from '../../src/dataplane/ipvs/fake.ts';
import { serviceId } from '../../src/dataplane/ipvs/types.ts';
import { FakeLinks } from '../../src/dataplane/links.ts';
import { MemoryOwnership } from '../../src/dataplane/ownership.ts';
import { Reconciler, type SyncResult } from '../../src/dataplane/reconciler.ts';
import { Model, type Change } from '../../src/model/model.ts';
import { planConfigFrom } from '../../src/plan/config.ts';
import { Planner } from '../../src/plan/plan.ts';
import type { ServicePlan } from '../../src/plan/types.ts';
import { ManualClock } from '../support/clock.ts';
import { ep, node, service, slice } from '../support/objects.ts';

class Harness {
  model = new Model({ nodeName: 'node-a', proxyName: 'kube-ipvs' });
  planner = new Planner(this.model, planConfigFrom(defaultConfig()));
  ipvs: FakeIpvs;
  links: FakeLinks;
  owned: MemoryOwnership;
  clock: ManualClock;
  rec: Reconciler;
  dirty = new Set<string>();
  live = new Map<string, Record<string, unknown>>();

  constructor(shared?: Harness) {
    this.ipvs = shared?.ipvs ?? new FakeIpvs();
    this.links = shared?.links ?? new FakeLinks();
    this.owned = shared?.owned ?? new MemoryOwnership();
    this.clock = shared?.clock ?? new ManualClock();
    this.rec = new Reconciler(this.ipvs, this.links, this.owned, {
      dummyInterface: 'kube-ipvs0',
      clock: this.clock,
      gracefulTerminationSeconds: 60,
      excludeCIDRs: ['10.99.0.0/16'],
    });
    this.planner.planAll();
  }
  put(obj: Record<string, unknown>) {
    const md = obj.metadata as { name: string; namespace?: string };
    const id = `${String(obj.kind)}/${md.namespace ?? ''}/${md.name}`;
    const change: Change = { kind: obj.kind as Change['kind'], previous: this.live.get(id) ?? null, current: obj };
    this.live.set(id, obj);
    for (const k of this.planner.update(this.model.apply(change))) this.dirty.add(k);
  }
  remove(obj: Record<string, unknown>) {
    const md = obj.metadata as { name: string; namespace?: string };
    const id = `${String(obj.kind)}/${md.namespace ?? ''}/${md.name}`;
    for (const k of this.planner.update(
      this.model.apply({ kind: obj.kind as Change['kind'], previous: obj, current: null }),
    ))
      this.dirty.add(k);
    this.live.delete(id);
  }
  async full(): Promise<SyncResult> {
    this.dirty.clear();
    return this.rec.sync({
      full: true,
      plans: new Map(this.planner.plans()),
      addressInUse: (a) => this.planner.addressInUse(a),
    });
  }
  async incremental(): Promise<SyncResult> {
    const plans = new Map<string, ServicePlan | null>(
      [...this.dirty].map((k) => [k, this.planner.servicePlan(k) ?? null]),
    );
    this.dirty.clear();
    return this.rec.sync({ full: false, plans, addressInUse: (a) => this.planner.addressInUse(a) });
  }
  /** The kernel as "service -> sorted dest:weight" for comparisons. */
  async kernel(): Promise<Record<string, string[]>> {
    const out: Record<string, string[]> = {};
    for (const s of await this.ipvs.services())
      out[serviceId(s)] = (await this.ipvs.destinations(s)).map((d) => `${d.address}:${d.port}=${d.weight}`).sort();
    return out;
  }
  opsSince(n: number) {
    return this.ipvs.ops
      .slice(n)
      .map((o) =>
        `${o.op} ${o.service ?? ''}${o.destination ? ` ${o.destination}` : ''}${o.weight !== undefined ? ` w${o.weight}` : ''}`.trim(),
      );
  }
}

const NODE = node('node-a', [['InternalIP', '192.168.1.10']], 'zone-a');
const web = service('web', {
  clusterIPs: ['10.96.0.1'],
  type: 'NodePort',
  ports: [{ name: 'http', port: 80, nodePort: 30080 }],
});
const webEps = (ips: string[]) =>
  slice(
    'web-1',
    'web',
    ips.map((ip) => ep(ip, { node: 'node-b' })),
  );
const dns = service('dns', { clusterIPs: ['10.96.0.10'], ports: [{ name: 'dns', protocol: 'UDP', port: 53 }] });
const dnsEps = (ips: string[]) =>
  slice(
    'dns-1',
    'dns',
    ips.map((ip) => ep(ip)),
    { ports: [{ name: 'dns', protocol: 'UDP', port: 53 }] },
  );

async function started() {
  const h = new Harness();
  h.put(NODE);
  h.put(web);
  h.put(webEps(['10.0.0.1', '10.0.0.2']));
  h.put(dns);
  h.put(dnsEps(['10.0.1.1', '10.0.1.2']));
  const r = await h.full();
  return { h, r };
}

t.test('cold start programs the plan; a second full sync does nothing', async (t) => {
  const { h, r } = await started();
  t.same(r.errors, []);
  t.same(await h.kernel(), {
    'TCP/10.96.0.1:80': ['10.0.0.1:8080=1', '10.0.0.2:8080=1'],
    'TCP/192.168.1.10:30080': ['10.0.0.1:8080=1', '10.0.0.2:8080=1'],
    'UDP/10.96.0.10:53': ['10.0.1.1:53=1', '10.0.1.2:53=1'],
  });
  t.same(
    [...h.links.links.get('kube-ipvs0')!.addresses].sort(),
    ['10.96.0.1', '10.96.0.10'],
    'service addresses on the dummy interface, node addresses not',
  );
  const n = h.ipvs.ops.length;
  const again = await h.full();
  t.equal(again.operations, 0, 'nothing to do');
  t.same(h.opsSince(n), []);
});

t.test('a replaced endpoint: the add and the removal are issued together, the add first', async (t) => {
  // On the netlink socket, writes issued in one turn go in one datagram, applied by the kernel in order: capacity is
  // still added before any is taken away, in one round trip instead of two.
  const { h } = await started();
  const order: string[] = [];
  let addAnswered = false;
  const add = h.ipvs.addDestination.bind(h.ipvs);
  h.ipvs.addDestination = async (k, d) => {
    order.push(`add ${d.address}`);
    await add(k, d);
    await new Promise((r) => setImmediate(r)); // the answer comes a turn later
    addAnswered = true;
  };
  const del = h.ipvs.deleteDestination.bind(h.ipvs);
  let deleteWaitedForAdd: boolean | null = null;
  h.ipvs.deleteDestination = async (k, d) => {
    order.push(`delete ${d.address}`);
    deleteWaitedForAdd = addAnswered;
    await del(k, d);
  };
  h.put(webEps(['10.0.0.2', '10.0.0.3']));
  const r = await h.incremental();
  t.same(r.errors, []);
  t.same(
    order,
    ['add 10.0.0.3', 'delete 10.0.0.1', 'add 10.0.0.3', 'delete 10.0.0.1'],
    'per virtual server: add, then delete',
  );
  t.equal(deleteWaitedForAdd, false, "the removal did not wait for the add's answer");
  t.same((await h.kernel())['TCP/10.96.0.1:80'], ['10.0.0.2:8080=1', '10.0.0.3:8080=1']);
});

t.test('an added endpoint is one operation per virtual server; a TCP removal drains first', async (t) => {
  const { h } = await started();
  let n = h.ipvs.ops.length;
  h.put(webEps(['10.0.0.1', '10.0.0.2', '10.0.0.3']));
  t.same([...h.dirty], ['default/web'], 'only the web Service is dirty');
  await h.incremental();
  t.same(h.opsSince(n).sort(), [
    'addDestination TCP/10.96.0.1:80 10.0.0.3:8080 w1',
    'addDestination TCP/192.168.1.10:30080 10.0.0.3:8080 w1',
  ]);

  // 10.0.0.1 goes away while it still has connections on the ClusterIP.
  h.ipvs.setConnections(
    { family: 4, protocol: 'TCP', address: '10.96.0.1', port: 80 },
    { address: '10.0.0.1', port: 8080 },
    2,
    1,
  );
  n = h.ipvs.ops.length;
  h.put(webEps(['10.0.0.2', '10.0.0.3']));
  await h.incremental();
  t.same(
    h.opsSince(n).sort(),
    ['deleteDestination TCP/192.168.1.10:30080 10.0.0.1:8080', 'updateDestination TCP/10.96.0.1:80 10.0.0.1:8080 w0'],
    'idle one deleted, busy one drained',
  );
  t.same(h.rec.drainingServices(), ['default/web']);

  // Next sync: still busy, nothing to do.
  n = h.ipvs.ops.length;
  h.dirty.add('default/web');
  await h.incremental();
  t.same(h.opsSince(n), [], 'a draining destination with connections is left alone');

  // Connections close: deleted at the next sync.
  h.ipvs.setConnections(
    { family: 4, protocol: 'TCP', address: '10.96.0.1', port: 80 },
    { address: '10.0.0.1', port: 8080 },
    0,
    0,
  );
  h.dirty.add('default/web');
  await h.incremental();
  t.same(h.opsSince(n), ['deleteDestination TCP/10.96.0.1:80 10.0.0.1:8080']);
  t.same(h.rec.drainingServices(), []);
});

t.test('a draining destination is deleted when the bound passes, and restored if it comes back', async (t) => {
  const { h } = await started();
  const vip = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
  h.ipvs.setConnections(vip, { address: '10.0.0.1', port: 8080 }, 5, 0);
  h.put(webEps(['10.0.0.2']));
  await h.incremental();
  t.same((await h.kernel())['TCP/10.96.0.1:80'], ['10.0.0.1:8080=0', '10.0.0.2:8080=1']);

  // It comes back (a rollout reverted): weight restored, not re-added.
  let n = h.ipvs.ops.length;
  h.put(webEps(['10.0.0.1', '10.0.0.2']));
  await h.incremental();
  t.same(
    h.opsSince(n).filter((o) => o.includes('10.96.0.1:80')),
    ['updateDestination TCP/10.96.0.1:80 10.0.0.1:8080 w1'],
  );

  // Gone again, and connections never close: deleted once the bound (60 s) passes.
  h.put(webEps(['10.0.0.2']));
  await h.incremental();
  await h.clock.advance(30_000);
  n = h.ipvs.ops.length;
  h.dirty.add('default/web');
  await h.incremental();
  t.same(h.opsSince(n), [], 'still within the bound');
  await h.clock.advance(31_000);
  h.dirty.add('default/web');
  await h.incremental();
  t.same(h.opsSince(n), ['deleteDestination TCP/10.96.0.1:80 10.0.0.1:8080'], 'deleted after the bound');
});

t.test('UDP destinations are deleted at once', async (t) => {
  const { h } = await started();
  h.ipvs.setConnections(
    { family: 4, protocol: 'UDP', address: '10.96.0.10', port: 53 },
    { address: '10.0.1.1', port: 53 },
    3,
    3,
  );
  const n = h.ipvs.ops.length;
  h.put(dnsEps(['10.0.1.2']));
  await h.incremental();
  t.same(h.opsSince(n), ['deleteDestination UDP/10.96.0.10:53 10.0.1.1:53']);
});

t.test(
  'a deleted Service loses its virtual servers and its address, unless another Service shares the address',
  async (t) => {
    const { h } = await started();
    h.put(service('web2', { clusterIPs: ['10.96.0.2'], externalIPs: ['198.51.100.1'] }));
    h.put(
      service('web3', {
        clusterIPs: ['10.96.0.3'],
        externalIPs: ['198.51.100.1'],
        ports: [{ name: 'https', port: 443 }],
      }),
    );
    await h.incremental();
    const addrs = () => [...h.links.links.get('kube-ipvs0')!.addresses].sort();
    t.ok(addrs().includes('198.51.100.1'));
    h.remove(service('web2', { clusterIPs: ['10.96.0.2'], externalIPs: ['198.51.100.1'] }));
    const n = h.ipvs.ops.length;
    await h.incremental();
    t.same(h.opsSince(n).sort(), ['deleteService TCP/10.96.0.2:80', 'deleteService TCP/198.51.100.1:80']);
    t.notOk(addrs().includes('10.96.0.2'), 'its ClusterIP is unbound');
    t.ok(addrs().includes('198.51.100.1'), 'the shared ExternalIP stays for web3');
  },
);

t.test('foreign state is never touched', async (t) => {
  const { h } = await started();
  // Another load balancer's service, on an address that is not ours, and one in excludeCIDRs
  // on our interface; plus an address someone else put on our interface.
  await h.ipvs.addService({
    family: 4,
    protocol: 'TCP',
    address: '172.16.0.1',
    port: 80,
    scheduler: 'wlc',
    flags: 0,
    timeout: 0,
    netmask: 0xffffffff,
  });
  await h.ipvs.addDestination(
    { family: 4, protocol: 'TCP', address: '172.16.0.1', port: 80 },
    { family: 4, address: '172.16.1.1', port: 80, fwdMethod: 0, weight: 7, upperThreshold: 0, lowerThreshold: 0 },
  );
  await h.ipvs.addService({ family: 4, fwmark: 77, scheduler: 'rr', flags: 0, timeout: 0, netmask: 0xffffffff });
  const idx = (await h.links.find('kube-ipvs0'))!;
  await h.links.addAddress(idx, '10.99.0.5');
  await h.ipvs.addService({
    family: 4,
    protocol: 'TCP',
    address: '10.99.0.5',
    port: 80,
    scheduler: 'rr',
    flags: 0,
    timeout: 0,
    netmask: 0xffffffff,
  });
  await h.links.addAddress(idx, '10.98.0.9');
  h.remove(web);
  await h.incremental();
  await h.full();
  const k = await h.kernel();
  t.same(k['TCP/172.16.0.1:80'], ['172.16.1.1:80=7'], 'foreign service and destination untouched');
  t.ok('FWM/77' in k, 'foreign fwmark service untouched');
  t.ok('TCP/10.99.0.5:80' in k, 'excludeCIDRs service untouched');
  t.ok(h.links.links.get('kube-ipvs0')!.addresses.has('10.98.0.9'), 'an address we did not add stays');
  t.notOk('TCP/10.96.0.1:80' in k, 'our own deleted service is gone');
});

t.test(
  'after a restart, weights come back to what the plan says (kubernetes#92019) and nothing is flushed',
  async (t) => {
    const { h } = await started();
    const vip = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
    // The previous process died while these were at weight 0.
    await h.ipvs.updateDestination(vip, {
      family: 4,
      address: '10.0.0.1',
      port: 8080,
      fwdMethod: 0,
      weight: 0,
      upperThreshold: 0,
      lowerThreshold: 0,
    });
    const fresh = new Harness(h);
    fresh.put(NODE);
    fresh.put(web);
    fresh.put(webEps(['10.0.0.1', '10.0.0.2']));
    fresh.put(dns);
    fresh.put(dnsEps(['10.0.1.1', '10.0.1.2']));
    const n = h.ipvs.ops.length;
    await fresh.full();
    t.same(
      fresh.opsSince(n),
      ['updateDestination TCP/10.96.0.1:80 10.0.0.1:8080 w1'],
      'one repair, no flush, no re-creation',
    );
  },
);

t.test('one failing operation does not block the others, and the next sync repairs it', async (t) => {
  const h = new Harness();
  h.put(NODE);
  h.put(web);
  h.put(webEps(['10.0.0.1']));
  h.put(dns);
  h.put(dnsEps(['10.0.1.1']));
  h.ipvs.failures.set('addService TCP/10.96.0.1:80', 'ENOMEM');
  const r = await h.full();
  t.equal(r.errors.length, 1);
  t.match(r.errors[0], { code: 'ENOMEM', service: 'default/web', op: 'add service TCP/10.96.0.1:80' });
  const k = await h.kernel();
  t.ok('UDP/10.96.0.10:53' in k && 'TCP/192.168.1.10:30080' in k, 'everything else was programmed');
  h.ipvs.failures.clear();
  const r2 = await h.full();
  t.same(r2.errors, []);
  t.same((await h.kernel())['TCP/10.96.0.1:80'], ['10.0.0.1:8080=1']);
});

t.test("the in-memory kernel keeps no record of its writes when asked not to (a dry-run daemon's)", async (t) => {
  const ipvs = new FakeIpvs({ recordOps: false });
  const vs = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
  await ipvs.addService({ ...vs, scheduler: 'rr', flags: 0, timeout: 0, netmask: 0xffffffff });
  await ipvs.addDestination(vs, {
    family: 4,
    address: '10.0.0.1',
    port: 8080,
    weight: 1,
    fwdMethod: 0,
    upperThreshold: 0,
    lowerThreshold: 0,
  });
  t.same(ipvs.ops, []);
  t.equal((await ipvs.destinations(vs)).length, 1, 'what it holds is kept');
});

t.test('a scheduler or affinity change is one service update', async (t) => {
  const { h } = await started();
  const n = h.ipvs.ops.length;
  h.put(
    service('web', {
      clusterIPs: ['10.96.0.1'],
      type: 'NodePort',
      ports: [{ name: 'http', port: 80, nodePort: 30080 }],
      annotations: { 'kube-ipvs.io/scheduler': 'wlc' },
      spec: { sessionAffinity: 'ClientIP' },
    }),
  );
  await h.incremental();
  t.same(h.opsSince(n).sort(), ['updateService TCP/10.96.0.1:80', 'updateService TCP/192.168.1.10:30080']);
  const s = await h.ipvs.service({ family: 4, protocol: 'TCP', address: '10.96.0.1', port: 80 });
  t.equal(s?.scheduler, 'wlc');
  t.equal(s?.timeout, 10800);
});

t.test(
  'destinations written alongside a sync: a scheduler change goes in before the weights that assume it',
  async (t) => {
    const { h } = await started();
    // What a slow-start ramp plans: rr becomes wrr, the recovering endpoint at 1 of 10 (health.test.ts tests the plan).
    const ramp = (p: ServicePlan, scheduler: string, weights: number[]): ServicePlan => ({
      ...p,
      virtualServers: p.virtualServers.map((vs) => ({
        ...vs,
        scheduler,
        realServers: vs.realServers.map((r, i) => ({ ...r, weight: weights[i]! })),
      })),
    });
    // Virtual servers are written side by side: the order that counts is each one's own.
    const ofEach = (ops: string[]) => {
      const out: Record<string, string[]> = {};
      for (const o of ops) {
        const [op, vs, dest, w] = o.split(' ');
        (out[vs!] ??= []).push([op, dest, w].filter(Boolean).join(' '));
      }
      return out;
    };
    const plan = h.planner.servicePlan('default/web')!;
    // 10.0.0.2 ejected (weight 0 needs no scheduler change), then recovering.
    await h.rec.syncDestinations(new Map([['default/web', ramp(plan, 'rr', [1, 0])]]));
    let n = h.ipvs.ops.length;
    let r = await h.rec.syncDestinations(new Map([['default/web', ramp(plan, 'wrr', [10, 1])]]));
    t.same(r.errors, []);
    const rampStart = ['updateService', 'updateDestination 10.0.0.1:8080 w10', 'updateDestination 10.0.0.2:8080 w1'];
    t.same(
      ofEach(h.opsSince(n)),
      { 'TCP/10.96.0.1:80': rampStart, 'TCP/192.168.1.10:30080': rampStart },
      'each virtual server: wrr first, then the weights',
    );
    const clusterIP = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
    t.equal((await h.ipvs.service(clusterIP))?.scheduler, 'wrr');
    n = h.ipvs.ops.length;
    await h.rec.syncDestinations(new Map([['default/web', ramp(plan, 'wrr', [10, 5])]]));
    t.same(
      ofEach(h.opsSince(n)),
      {
        'TCP/10.96.0.1:80': ['updateDestination 10.0.0.2:8080 w5'],
        'TCP/192.168.1.10:30080': ['updateDestination 10.0.0.2:8080 w5'],
      },
      'the scheduler as wanted already: not asked for again',
    );
    // The ramp over: rr again. An update the kernel refuses is reported, and the weights go in anyway.
    h.ipvs.failures.set('updateService TCP/10.96.0.1:80', 'EIO');
    n = h.ipvs.ops.length;
    r = await h.rec.syncDestinations(new Map([['default/web', plan]]));
    t.same(
      r.errors.map((e) => `${e.op} ${e.code} ${e.service}`),
      ['update service TCP/10.96.0.1:80 EIO default/web'],
    );
    const rampEnd = ['updateDestination 10.0.0.1:8080 w1', 'updateDestination 10.0.0.2:8080 w1'];
    t.same(ofEach(h.opsSince(n)), {
      'TCP/10.96.0.1:80': rampEnd,
      'TCP/192.168.1.10:30080': ['updateService', ...rampEnd],
    });
    t.equal((await h.ipvs.service(clusterIP))?.scheduler, 'wrr', 'still wrr where the update failed');
    h.ipvs.failures.clear();
    h.dirty.add('default/web');
    n = h.ipvs.ops.length;
    await h.incremental();
    t.same(
      ofEach(h.opsSince(n)),
      { 'TCP/10.96.0.1:80': ['updateService'] },
      'the next sync puts rr back there, and only there',
    );
    t.equal((await h.ipvs.service(clusterIP))?.scheduler, 'rr');
  },
);

t.test(
  'a Local LoadBalancer gets a firewall-mark virtual server with every endpoint; TCP endpoints drain there too',
  async (t) => {
    const h = new Harness();
    const lb = service('lb', {
      clusterIPs: ['10.96.0.5'],
      type: 'LoadBalancer',
      lbIngress: [{ ip: '203.0.113.50' }],
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }],
      spec: { externalTrafficPolicy: 'Local' },
    });
    h.put(node('node-a', [['InternalIP', '192.168.1.10']]));
    h.put(lb);
    h.put(slice('lb-1', 'lb', [ep('10.0.0.1', { node: 'node-a' }), ep('10.0.0.2', { node: 'node-b' })]));
    await h.full();
    const k = await h.kernel();
    const fwm = Object.keys(k).filter((id) => id.startsWith('FWM/'));
    t.equal(fwm.length, 1, 'one firewall-mark service');
    t.same(k[fwm[0]!], ['10.0.0.1:8080=1', '10.0.0.2:8080=1'], 'every endpoint');
    t.same(k['TCP/203.0.113.50:80'], ['10.0.0.1:8080=1'], 'the LoadBalancer IP itself: the local one');
    t.ok(h.owned.services.has(fwm[0]!) && h.owned.labels.get(fwm[0]!)?.kind === 'LoadBalancer', 'owned and labelled');
    // The remote endpoint goes: weight 0 while it drains (TCP), not deleted at once.
    h.put(slice('lb-1', 'lb', [ep('10.0.0.1', { node: 'node-a' })]));
    h.ipvs.setConnections({ family: 4, fwmark: Number(fwm[0]!.slice(4)) }, { address: '10.0.0.2', port: 8080 }, 1, 0);
    await h.incremental();
    t.same(
      (await h.kernel())[fwm[0]!],
      ['10.0.0.1:8080=1', '10.0.0.2:8080=0'],
      'a held connection: drained at weight 0',
    );
    // The Service goes: the firewall-mark service goes with it.
    h.remove(lb);
    await h.full();
    t.notOk(
      Object.keys(await h.kernel()).some((id) => id.startsWith('FWM/')),
      'removed',
    );
  },
);

t.test('a full sync reads every destination in one table read and repairs drift from it', async (t) => {
  const { h } = await started();
  const expected = await h.kernel();
  const vip = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
  const np = { family: 4 as const, protocol: 'TCP' as const, address: '192.168.1.10', port: 30080 };
  const udp = { family: 4 as const, protocol: 'UDP' as const, address: '10.96.0.10', port: 53 };
  const d = (address: string, port: number, weight = 1) => ({
    family: 4 as const,
    address,
    port,
    fwdMethod: 0,
    weight,
    upperThreshold: 0,
    lowerThreshold: 0,
  });
  // Behind our back: a weight changed, a destination deleted, a stranger added to one of ours.
  await h.ipvs.updateDestination(vip, d('10.0.0.1', 8080, 5));
  await h.ipvs.deleteDestination(np, d('10.0.0.2', 8080));
  await h.ipvs.addDestination(udp, d('10.0.1.9', 53));
  const reads = h.ipvs.tableReads;
  const dumps = h.ipvs.destinationListings;
  const n = h.ipvs.ops.length;
  const r = await h.full();
  t.same(r.errors, []);
  t.equal(r.kernelRead, 'table', 'said how it read the kernel');
  t.equal(h.ipvs.tableReads, reads + 1, 'one table read');
  t.equal(h.ipvs.destinationListings, dumps, 'and no dump per virtual server');
  t.same(
    h.opsSince(n).sort(),
    [
      'addDestination TCP/192.168.1.10:30080 10.0.0.2:8080 w1',
      'deleteDestination UDP/10.96.0.10:53 10.0.1.9:53',
      'updateDestination TCP/10.96.0.1:80 10.0.0.1:8080 w1',
    ],
    'exactly the three repairs',
  );
  t.same(await h.kernel(), expected, 'the kernel as planned again');
});

t.test('a table that cannot be read: each virtual server is dumped instead, and the sync says why', async (t) => {
  const { h } = await started();
  const vip = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
  await h.ipvs.updateDestination(vip, {
    family: 4,
    address: '10.0.0.2',
    port: 8080,
    fwdMethod: 0,
    weight: 7,
    upperThreshold: 0,
    lowerThreshold: 0,
  });
  h.ipvs.tableFailure = 'EBADMSG';
  const dumps = h.ipvs.destinationListings;
  const withStats = h.ipvs.destinationListingsWithStats;
  const r = await h.full();
  t.same(r.errors, [], 'not a failed sync');
  t.equal(h.ipvs.destinationListingsWithStats, withStats, 'the dumps without their counters');
  t.equal(r.kernelRead, 'dumps');
  t.match(r.tableProblem, /EBADMSG/);
  t.equal(h.ipvs.destinationListings, dumps + 3, 'one dump per virtual server');
  t.same((await h.kernel())['TCP/10.96.0.1:80'], ['10.0.0.1:8080=1', '10.0.0.2:8080=1'], 'and the drift repaired');
  h.ipvs.tableFailure = null;
  const again = await h.full();
  t.equal(again.kernelRead, 'table', 'back to the table once it reads');
  t.equal(again.tableProblem, undefined);
});

t.test(
  'a long full sync with nothing to do lets the event loop turn (an endpoint change is not held back)',
  async (t) => {
    const h = new Harness();
    h.put(NODE);
    for (let i = 0; i < 800; i++) {
      h.put(service(`s${i}`, { clusterIPs: [`10.97.${i >> 8}.${i & 255}`], ports: [{ name: 'http', port: 80 }] }));
      h.put(slice(`s${i}-1`, `s${i}`, [ep(`10.1.${i >> 8}.${i & 255}`)]));
    }
    await h.full();
    // A ticker on the event loop: how many turns it gets while a resync (all in memory: nothing awaits the kernel)
    // runs through 800 virtual servers.
    let turns = 0;
    let running = true;
    const tick = () => {
      if (!running) return;
      turns++;
      setImmediate(tick);
    };
    setImmediate(tick);
    const r = await h.full();
    running = false;
    t.equal(r.operations, 0);
    t.ok(turns >= 3, `the loop turned ${turns} times during the resync`);
  },
);

t.test(
  'an endpoint change reads only destinations; a virtual server deleted behind our back is made again',
  async (t) => {
    const { h } = await started();
    const vip = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
    let lookups = h.ipvs.serviceLookups;
    h.put(webEps(['10.0.0.1', '10.0.0.2', '10.0.0.3']));
    const r = await h.incremental();
    t.same(r.errors, []);
    t.equal(h.ipvs.serviceLookups, lookups, 'no service looked up: the last sync left them as wanted');
    t.same((await h.kernel())['TCP/10.96.0.1:80'], ['10.0.0.1:8080=1', '10.0.0.2:8080=1', '10.0.0.3:8080=1']);
    // Someone deletes the ClusterIP's virtual server; the next endpoint change finds it gone and makes it again.
    await h.ipvs.deleteService(vip);
    lookups = h.ipvs.serviceLookups;
    h.put(webEps(['10.0.0.2', '10.0.0.3']));
    const again = await h.incremental();
    t.same(again.errors, [], 'no error: found missing, made again');
    t.ok(h.ipvs.serviceLookups > lookups, 'looked up once its destinations could not be read');
    t.same((await h.kernel())['TCP/10.96.0.1:80'], ['10.0.0.2:8080=1', '10.0.0.3:8080=1']);
    // A scheduler change is a change of attributes: looked up and updated.
    lookups = h.ipvs.serviceLookups;
    const n = h.ipvs.ops.length;
    h.put(
      service('web', {
        clusterIPs: ['10.96.0.1'],
        type: 'NodePort',
        ports: [{ name: 'http', port: 80, nodePort: 30080 }],
        annotations: { 'kube-ipvs.io/scheduler': 'lc' },
      }),
    );
    await h.incremental();
    t.ok(h.ipvs.serviceLookups > lookups, 'looked up');
    t.match(h.opsSince(n).join('\n'), /updateService TCP\/10\.96\.0\.1:80/, 'and updated');
  },
);

t.test(
  'probe: the periodic check looks up a few virtual servers in turn and the interface; writes nothing',
  async (t) => {
    const { h } = await started();
    const n = h.ipvs.ops.length;
    t.equal(await h.rec.probe(8), null, 'all as left');
    t.equal(h.ipvs.ops.length, n, 'nothing written');
    // One of the three virtual servers removed behind our back: found within three probes of one lookup each.
    const [gone] = await h.ipvs.services();
    await h.ipvs.deleteService(gone!);
    const found: unknown[] = [];
    for (let k = 0; k < 3; k++) found.push(await h.rec.probe(1));
    t.same(
      found.filter((f) => f !== null),
      [{ what: 'virtual_server', detail: `virtual server ${serviceId(gone!)} is gone` }],
      'seen once in a round of one lookup a probe',
    );
    await h.full();
    t.equal(await h.rec.probe(8), null, 'a full sync put it back');
    // Its scheduler changed by someone else.
    const [changed] = await h.ipvs.services();
    await h.ipvs.updateService({ ...changed!, scheduler: 'sh' });
    t.same(await h.rec.probe(8), {
      what: 'virtual_server',
      detail: `virtual server ${serviceId(changed!)} was changed`,
    });
    await h.full();
    // The dummy interface deleted: the interface is looked at first.
    await h.links.deleteLink(h.links.links.get('kube-ipvs0')!.index);
    t.same(await h.rec.probe(8), { what: 'interface', detail: 'the dummy interface kube-ipvs0 is gone' });
    await h.full();
    t.equal(await h.rec.probe(8), null, 'and made again by the full sync');
    t.equal(await new Harness().rec.probe(8), null, 'nothing to look at before the first sync');
  },
);
