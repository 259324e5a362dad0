// A planned virtual server in IPVS terms (src/dataplane/desired.ts): what is kept for every one (the compact IPv4 form
// a resync compares) and the destinations a sync writes, built on demand.
import t from 'tap';
import { destinationsOf, toDesired, v4DestinationsOf } from '../../src/dataplane/desired.ts';
import { FwdMethod } from '../../src/dataplane/ipvs/constants.ts';
import { destinationsByService, parseIpvsProc, renderIpvsProc } from '../../src/dataplane/ipvs/procfs.ts';
import { v4Key } from '../../src/dataplane/ipvs/types.ts';
import type { RealServer, VirtualServer } from '../../src/plan/types.ts';

const vs = (realServers: RealServer[], family: 4 | 6 = 4): VirtualServer => ({
  service: 'default/web',
  portName: 'http',
  kind: 'ClusterIP',
  protocol: 'TCP',
  family,
  address: family === 4 ? '10.96.0.1' : 'fd00::1',
  port: 80,
  scheduler: 'rr',
  persistenceTimeoutSeconds: 0,
  realServers,
});
const key = (a: string, port: number) => {
  const [p, q, r, s] = a.split('.').map(Number) as [number, number, number, number];
  return v4Key(((p << 24) | (q << 16) | (r << 8) | s) >>> 0, port);
};

t.test(
  'the IPv4 form: sorted by address and port, a repeated one as its last mention, as destinationsOf',
  async (t) => {
    const v = vs([
      { address: '10.0.0.2', port: 8080, weight: 1 },
      { address: '10.0.0.1', port: 8080, weight: 2 },
      { address: '10.0.0.2', port: 8080, weight: 3 },
      { address: '10.0.0.1', port: 80, weight: 4 },
    ]);
    const d = toDesired(v);
    t.equal(toDesired(v), d, 'computed once per planned virtual server');
    const v4 = v4DestinationsOf(d);
    t.equal(v4DestinationsOf(toDesired(v)), v4, 'the IPv4 form too: made once, on its first use');
    t.same(
      [...v4!],
      [
        ...[key('10.0.0.1', 80), 4, FwdMethod.MASQ],
        ...[key('10.0.0.1', 8080), 2, FwdMethod.MASQ],
        ...[key('10.0.0.2', 8080), 3, FwdMethod.MASQ],
      ],
    );
    const ds = destinationsOf(d);
    t.same(
      [...ds].map(([id, x]) => `${id}=${x.weight}`),
      ['10.0.0.2:8080=3', '10.0.0.1:8080=2', '10.0.0.1:80=4'],
      'the same three destinations, the repeated one at its last weight',
    );
    t.not(destinationsOf(d), ds, 'built anew on each call (nothing kept per destination)');
    t.ok(
      [...ds.values()].every((x) => x.upperThreshold === 0 && x.lowerThreshold === 0 && x.fwdMethod === FwdMethod.MASQ),
      'no threshold and masquerading, which is all the IPv4 form (and same()) can say',
    );
    t.equal(d.evicted.size, 0);
  },
);

t.test('what a resync reads from the kernel compares equal to it, and unequal after any change', async (t) => {
  const servers = [
    { address: '10.0.0.1', port: 8080, weight: 1 },
    { address: '10.0.0.3', port: 8080, weight: 0 },
    { address: '10.0.0.2', port: 8080, weight: 1 },
  ];
  const d = toDesired(vs(servers));
  const table = (rs: RealServer[]) =>
    destinationsByService(
      parseIpvsProc(renderIpvsProc([{ svc: d.service, dests: [...destinationsOf(toDesired(vs(rs))).values()] }])),
      [d.service],
    ).get(d.id)!;
  t.ok(table(servers).same(v4DestinationsOf(d)!), 'the kernel as planned');
  t.notOk(table(servers.slice(1)).same(v4DestinationsOf(d)!), 'one missing');
  t.notOk(table([...servers, { address: '10.0.0.4', port: 8080, weight: 1 }]).same(v4DestinationsOf(d)!), 'one more');
  t.notOk(
    table([{ ...servers[0]!, weight: 2 }, servers[1]!, servers[2]!]).same(v4DestinationsOf(d)!),
    'a weight differs',
  );
  t.notOk(
    table([{ ...servers[0]!, port: 8081 }, servers[1]!, servers[2]!]).same(v4DestinationsOf(d)!),
    'a port differs',
  );
});

t.test('IPv6 has no compact form; evictions are kept by destination', async (t) => {
  const six = toDesired(vs([{ address: 'fd00::a', port: 80, weight: 1 }], 6));
  t.equal(v4DestinationsOf(six), null);
  t.same([...destinationsOf(six).keys()], ['[fd00::a]:80']);
  const evicting = toDesired({
    ...vs([{ address: '10.0.0.1', port: 80, weight: 0 }]),
    evicted: [{ address: '10.0.0.2', port: 80 }],
  });
  t.same([...evicting.evicted], ['10.0.0.2:80']);
});
