import t from 'tap';
import { canonicalIP, cidrContains, compareIP, hostPort, ipv4Number, parseCIDR, parseIP } from '../src/util/ip.ts';

t.test('canonical text', async (t) => {
  const cases: [string, string | null][] = [
    ['10.0.0.1', '10.0.0.1'],
    ['010.000.000.001', '10.0.0.1'], // ParseIPSloppy: leading zeros are decimal
    ['256.0.0.1', null],
    ['1.2.3', null],
    ['', null],
    ['FD00:0:0:0:0:0:0:1', 'fd00::1'],
    ['fd00:0:0:1:0:0:0:1', 'fd00:0:0:1::1'], // first of two equal zero runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['::', '::'],
    ['::1', '::1'],
    ['::ffff:10.1.2.3', '::ffff:a01:203'],
    ['1::2::3', null],
    ['fe80::1%eth0', null],
    ['12345::1', null],
  ];
  for (const [input, want] of cases) t.equal(canonicalIP(input), want, input);
});

t.test('a dotted quad as a number, without allocating', async (t) => {
  const cases: [string, number][] = [
    ['10.0.0.1', 0x0a000001],
    ['255.255.255.255', 0xffffffff],
    ['0.0.0.0', 0],
    ['192.168.100.1', 0xc0a86401],
    ['010.000.000.001', 0x0a000001], // sloppy: leading zeros are decimal
    ['256.0.0.1', -1],
    ['1.2.3.256', -1],
    ['1.2.3', -1],
    ['1.2.3.4.5', -1],
    ['1..3.4', -1],
    ['.1.2.3', -1],
    ['1.2.3.', -1],
    ['1.2.3.0004', -1],
    ['1.2.3.a', -1],
    ['fd00::1', -1],
    ['', -1],
  ];
  for (const [input, want] of cases) t.equal(ipv4Number(input), want, input);
  // parseIP reads IPv4 through it: the same bytes.
  t.same([...parseIP('192.168.100.1')!.bytes], [192, 168, 100, 1]);
  t.same([...parseIP('::ffff:10.1.2.3')!.bytes.slice(12)], [10, 1, 2, 3]);
});

t.test('CIDRs', async (t) => {
  const c = parseCIDR('10.0.0.7/8')!;
  t.equal(c.text, '10.0.0.0/8', 'host bits cleared');
  t.ok(cidrContains(c, '10.255.1.1'));
  t.notOk(cidrContains(c, '11.0.0.1'));
  t.notOk(cidrContains(c, 'fd00::1'), 'other family never matches');
  const v6 = parseCIDR('fd00:49::/33')!;
  t.ok(cidrContains(v6, 'fd00:49::2'));
  t.ok(cidrContains(v6, 'fd00:49:7fff::1'));
  t.notOk(cidrContains(v6, 'fd00:49:8000::1'));
  t.ok(cidrContains(parseCIDR('0.0.0.0/0')!, '1.2.3.4'));
  t.equal(parseCIDR('10.0.0.0/33'), null);
  t.equal(parseCIDR('10.0.0.0'), null);
  t.equal(parseCIDR('x/8'), null);
});

t.test('ordering and printing', async (t) => {
  t.same(['10.0.0.10', 'fd00::1', '10.0.0.9', '9.0.0.1'].sort(compareIP), [
    '9.0.0.1',
    '10.0.0.9',
    '10.0.0.10',
    'fd00::1',
  ]);
  t.equal(hostPort('fd00::1', 80), '[fd00::1]:80');
  t.equal(hostPort('10.0.0.1', 80), '10.0.0.1:80');
  t.equal(parseIP('10.0.0.1')?.family, 4);
});
