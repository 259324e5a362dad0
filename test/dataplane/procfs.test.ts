// /proc/net/ip_vs: the whole IPVS table in one read (src/dataplane/ipvs/procfs.ts). The kernel's own text (captured
// in the lab VM, Linux 6.1), the in-memory kernel's rendering of the same format, and hostile variations of it.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { CodecError } from '../../src/dataplane/ipvs/codec.ts';
import { FakeIpvs } from '../../src/dataplane/ipvs/fake.ts';
import {
  destinationsByService,
  parseIpvsProc,
  parseIpvsProcInTurns,
  renderIpvsProc,
} from '../../src/dataplane/ipvs/procfs.ts';
import { serviceId, v4Key, type IpvsDestination, type IpvsService } from '../../src/dataplane/ipvs/types.ts';
import { countTurns } from '../support/turns.ts';

const dest = (address: string, port: number, weight = 1, more: Partial<IpvsDestination> = {}): IpvsDestination => ({
  family: address.includes(':') ? 6 : 4,
  address,
  port,
  fwdMethod: 0,
  weight,
  upperThreshold: 0,
  lowerThreshold: 0,
  activeConns: 0,
  inactiveConns: 0,
  ...more,
});
const svc = (s: Partial<IpvsService> & Pick<IpvsService, 'family'>): IpvsService =>
  ({ scheduler: 'rr', flags: 0, timeout: 0, netmask: 0xffffffff, ...s }) as IpvsService;

t.test("the kernel's own text, as the lab VM printed it", async (t) => {
  const text = readFileSync(new URL('../fixtures/ip_vs.proc.txt', import.meta.url), 'latin1');
  const table = parseIpvsProc(text);
  t.same(
    [...table.services.keys()].sort(),
    [
      'FWM/16385',
      'SCTP/10.96.0.4:36412',
      'TCP/10.96.0.1:80',
      'TCP/10.96.0.2:443',
      'TCP/[fd00::1]:80',
      'UDP/10.96.0.3:53',
    ],
    'every service, keyed as serviceId keys them',
  );
  t.same(
    table.services
      .get('TCP/10.96.0.1:80')!
      .list()
      .map((d) => [d.address, d.port, d.weight, d.fwdMethod]),
    [
      ['10.0.0.3', 80, 3, 3],
      ['10.0.0.2', 8080, 0, 0],
      ['10.0.0.1', 8080, 1, 0],
    ],
    'destinations, newest first, with weight and forwarding method (Route: the service port; Masq)',
  );
  t.same(
    table.services
      .get('TCP/[fd00::1]:80')!
      .list()
      .map((d) => `${d.family} ${d.address}:${d.port}`),
    ['6 fd00::10:8080'],
    'IPv6, canonical text',
  );
  t.same(table.services.get('TCP/10.96.0.2:443')!.list(), [], 'a persistent service without destinations');
  t.equal(table.fwmarks.get(16385), 1);
});

t.test('what the in-memory kernel renders parses back to what it holds, less what the file leaves out', async (t) => {
  const services = [
    svc({ family: 4, protocol: 'TCP', address: '10.96.0.1', port: 80 }),
    svc({ family: 4, protocol: 'UDP', address: '10.96.0.10', port: 53, flags: 0x4 /* one-packet */ }),
    svc({ family: 4, protocol: 'SCTP', address: '10.96.0.7', port: 9999 }),
    svc({ family: 6, protocol: 'TCP', address: 'fd00::1', port: 443, flags: 0x1, timeout: 10800, netmask: 128 }),
    svc({ family: 4, fwmark: 0x4001, scheduler: 'mh', flags: 0x1, timeout: 60 }),
    svc({ family: 6, fwmark: 0x4002 }),
  ];
  const dests: IpvsDestination[][] = [
    [dest('10.0.0.1', 8080, 1, { activeConns: 3, inactiveConns: 4 }), dest('10.0.0.2', 8080, 0)],
    [dest('10.0.1.1', 53, 65535)],
    [],
    [dest('fd00::a', 8443), dest('2001:db8::ffff:1', 1, 2)],
    [dest('10.0.0.9', 80, 1, { upperThreshold: 50, lowerThreshold: 5, fwdMethod: 3 })],
    [dest('fd00::b', 80)],
  ];
  const text = renderIpvsProc(services.map((s, i) => ({ svc: s, dests: dests[i]! })));
  const got = destinationsByService(parseIpvsProc(text), services);
  services.forEach((s, i) =>
    t.same(
      got.get(serviceId(s))?.list(),
      dests[i]!.map((d) => ({ ...d, upperThreshold: 0, lowerThreshold: 0 })),
      `${serviceId(s)}: as held (thresholds are not in the file)`,
    ),
  );
});

t.test('a firewall mark two services share, or a service the file does not show, is left to a dump', async (t) => {
  const v4 = svc({ family: 4, fwmark: 7 });
  const v6 = svc({ family: 6, fwmark: 7 });
  const late = svc({ family: 4, protocol: 'TCP', address: '10.96.0.99', port: 80 });
  const text = renderIpvsProc([
    { svc: v4, dests: [dest('10.0.0.1', 80)] },
    { svc: v6, dests: [dest('fd00::1', 80)] },
  ]);
  const got = destinationsByService(parseIpvsProc(text), [v4, v6, late]);
  t.same([...got.keys()], [], 'neither mark is attributed, nor the service made after the read');
  // One service with the mark in the file but a family its destinations contradict: not attributed either.
  const lone = renderIpvsProc([{ svc: v4, dests: [dest('10.0.0.1', 80)] }]);
  t.same([...destinationsByService(parseIpvsProc(lone), [v6]).keys()], []);
  t.same([...destinationsByService(parseIpvsProc(lone), [v4]).keys()], ['FWM/7']);
});

const good = renderIpvsProc([
  {
    svc: svc({ family: 4, protocol: 'TCP', address: '10.96.0.1', port: 80 }),
    dests: [dest('10.0.0.1', 8080)],
  },
]);

t.test('anything of another shape fails the whole read with a CodecError, naming the line', async (t) => {
  const cases: [string, string][] = [
    ['no heading', good.split('\n').slice(1).join('\n')],
    ['a destination first', good.split('\n').slice(0, 3).join('\n') + '\n  -> 0A000001:1F90      Masq    1 0 0\n'],
    ['a short address', good.replace('0A000001:1F90', '0A0001:1F90')],
    ['lower-case hex', good.replace('0A000001', '0a000001')],
    ['a fifth field missing', good.replace(/ 0 +\n$/, '\n')],
    ['an unknown method', good.replace('Masq', 'Magic')],
    ["an Object method's name", good.replace('Masq', 'constructor')],
    ['a negative weight', good.replace('Masq    1', 'Masq    -1')],
    ['a huge count', good.replace(/Masq {4}1 {6}0/, 'Masq    1      99999999999')],
    ['a bad IPv6 address', good.replace('0A600001:0050', '[fd00::zz]:0050')],
    ['a bad protocol', good.replace('TCP  ', 'T-P  ')],
    ['a lone word', good + 'garbage\n'],
    ['a tab between fields', good.replace(/Masq {4}/, 'Masq\t')],
    ['a carriage return at a line end', good.replace(/(Masq[^\n]*)\n/, '$1\r\n')],
    ['a second line end in a destination', good.replace(/(Masq {4}1 {6}0)/, '$1\n')],
  ];
  for (const [what, text] of cases) {
    t.not(text, good, `${what}: the case changes the text`);
    t.throws(() => parseIpvsProc(text), CodecError, what);
  }
  t.match(
    t.throws(() => parseIpvsProc(good.replace('Masq', 'Magic'))),
    { message: /line 5/ },
    'the line is named',
  );
});

t.test('random damage never throws anything but a CodecError, and never hangs', async (t) => {
  let seed = 42;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const alphabet = ' \n:[]-0123456789ABCDEFaf>TCPUDFWMasqxyz\0\u00ff';
  let other = 0;
  for (let i = 0; i < 2000; i++) {
    const chars = [...good];
    for (let k = 1 + rnd(4); k > 0; k--) chars[rnd(chars.length)] = alphabet[rnd(alphabet.length)]!;
    try {
      parseIpvsProc(chars.join(''));
    } catch (e) {
      if (!(e instanceof CodecError)) other++;
    }
  }
  t.equal(other, 0, 'every failure a CodecError');
});

t.test('FakeIpvs answers destinationTable through the same text', async (t) => {
  const ipvs = new FakeIpvs();
  const s = svc({ family: 4, protocol: 'TCP', address: '10.96.0.1', port: 80 });
  await ipvs.addService(s);
  await ipvs.addDestination(s, { ...dest('10.0.0.1', 8080, 2), upperThreshold: 9 });
  ipvs.setConnections(s, { address: '10.0.0.1', port: 8080 }, 4, 5);
  const got = await ipvs.destinationTable(await ipvs.services());
  t.same(
    got.get('TCP/10.96.0.1:80')?.list(),
    [dest('10.0.0.1', 8080, 2, { activeConns: 4, inactiveConns: 5 })],
    'weight and connections as held; the threshold is not seen, as on a node',
  );
  ipvs.tableFailure = 'EACCES';
  await t.rejects(ipvs.destinationTable([]), { code: 'EACCES' });
});

/** `ds` as a resync's desired virtual server holds its IPv4 destinations: (v4Key, weight, fwdMethod), sorted. */
const byV4 = (ds: IpvsDestination[]) => {
  const rows = ds
    .map((d) => {
      const [a, b, c, e] = d.address.split('.').map(Number) as [number, number, number, number];
      return [v4Key(((a << 24) | (b << 16) | (c << 8) | e) >>> 0, d.port), d.weight, d.fwdMethod];
    })
    .sort((x, y) => x[0]! - y[0]!);
  return Float64Array.from(rows.flat());
};

t.test('same(): exactly the wanted IPv4 destinations, told without building them', async (t) => {
  const s4 = svc({ family: 4, protocol: 'TCP', address: '10.96.0.1', port: 80 });
  const held = [dest('10.0.0.1', 8080, 1), dest('10.0.0.2', 8080, 0), dest('255.255.255.255', 65535, 2147483647)];
  const table = (ds: IpvsDestination[]) =>
    destinationsByService(parseIpvsProc(renderIpvsProc([{ svc: s4, dests: ds }])), [s4]).get(serviceId(s4))!;
  t.ok(table(held).same(byV4(held)), 'the same set at the same weights');
  t.notOk(table(held).same(byV4([held[0]!, held[1]!])), 'one more in the kernel');
  t.notOk(table([held[0]!, held[1]!]).same(byV4(held)), 'one missing');
  t.notOk(table(held).same(byV4([held[0]!, { ...held[1]!, weight: 1 }, held[2]!])), 'a weight differs');
  t.notOk(table(held).same(byV4([held[0]!, held[1]!, { ...held[2]!, fwdMethod: 3 }])), 'a forwarding method differs');
  t.notOk(table(held).same(byV4([held[0]!, held[1]!, { ...held[2]!, port: 65534 }])), 'a port differs');
  const s6 = svc({ family: 6, protocol: 'TCP', address: 'fd00::1', port: 80 });
  const six = destinationsByService(parseIpvsProc(renderIpvsProc([{ svc: s6, dests: [dest('fd00::a', 80)] }])), [s6]);
  t.notOk(six.get(serviceId(s6))!.same(new Float64Array()), 'IPv6: not told this way (list() is compared instead)');
  t.equal(six.get(serviceId(s6))!.size, 1);
});

t.test('IPv4 lines read in place round-trip over their whole range', async (t) => {
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const edge = [0, 1, 255, 65535, 2147483647];
  const ds: IpvsDestination[] = [];
  for (let i = 0; i < 500; i++) {
    const pick = (max: number) => (rnd(4) === 0 ? Math.min(max, edge[rnd(edge.length)]!) : rnd(max + 1));
    const address = [pick(255), pick(255), pick(255), pick(255)].join('.');
    ds.push(
      dest(address, pick(65535), pick(2147483647), {
        fwdMethod: [0, 1, 2, 3][rnd(4)]!,
        activeConns: pick(2147483647),
        inactiveConns: pick(2147483647),
      }),
    );
  }
  // One service per destination: the same address and port twice in one service cannot happen.
  const services = ds.map((_, i) =>
    svc({ family: 4, protocol: 'UDP', address: `10.96.${i >> 8}.${i & 255}`, port: 53 }),
  );
  const got = destinationsByService(
    parseIpvsProc(renderIpvsProc(services.map((s, i) => ({ svc: s, dests: [ds[i]!] })))),
    services,
  );
  let wrong = 0;
  services.forEach((s, i) => {
    const l = got.get(serviceId(s))?.list();
    if (JSON.stringify(l) !== JSON.stringify([ds[i]])) wrong++;
  });
  t.equal(wrong, 0, 'every value as written');
  const text = renderIpvsProc(services.map((s, i) => ({ svc: s, dests: [ds[i]!] })));
  const lists = (x: string) => [...parseIpvsProc(x).services].map(([id, d]) => [id, d.list()]);
  t.ok(text.endsWith('\n'), 'the text ends with a line end');
  t.same(lists(text.slice(0, -1)), lists(text), 'the last line read in place without its line end too');
  t.throws(
    () =>
      parseIpvsProc(
        renderIpvsProc([{ svc: services[0]!, dests: [dest('10.0.0.1', 80, 2147483647)] }]).replace(
          '2147483647',
          '2147483648',
        ),
      ),
    CodecError,
    'a count past what %d prints is refused',
  );
});

t.test('read in turns: the same table, and the event loop turns between pieces of it', async (t) => {
  // 200 virtual servers x 10 destinations: 2 203 lines.
  const entries = Array.from({ length: 200 }, (_, i) => ({
    svc: svc({ family: 4, protocol: 'TCP', address: `10.96.${i >> 8}.${i & 255}`, port: 80 }),
    dests: Array.from({ length: 10 }, (_, j) => dest(`10.1.${i}.${j + 1}`, 8080, j)),
  }));
  const text = renderIpvsProc(entries);
  const whole = parseIpvsProc(text);
  const loop = countTurns();
  const inTurns = await parseIpvsProcInTurns(text, 100);
  loop.stop();
  t.ok(loop.turns >= 20, `the loop turned while it was read (${loop.turns} times for 23 pieces)`);
  t.same([...inTurns.services.keys()], [...whole.services.keys()], 'the same virtual servers');
  for (const [id, d] of whole.services)
    t.same(inTurns.services.get(id)!.list(), d.list(), `${id}: the same destinations`);
  t.same(inTurns.fwmarks, whole.fwmarks);

  let turned = false;
  setImmediate(() => (turned = true));
  await parseIpvsProcInTurns(renderIpvsProc(entries.slice(0, 150)));
  t.notOk(turned, 'by default 1 653 lines are read in one piece (2 000 lines a turn)');

  const bad = `${text}  -> not a destination\n`;
  await t.rejects(parseIpvsProcInTurns(bad, 100), CodecError, 'a bad line in a later piece fails the whole read');
});
