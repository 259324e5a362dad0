// ipset entries over nfnetlink (src/dataplane/ipset-netlink.ts): the encoding refuses what it
// cannot say; and, as root in a network namespace of this host, random adds and deletes over
// netlink leave every kind of set kube-ipvs makes exactly as `ipset restore` of the same lines does.
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import t from 'tap';
import type tap from 'tap';
import { FakeExec } from '../../src/dataplane/exec.ts';
import {
  bulkPayload,
  entryData,
  requestPayload,
  type IpsetOp,
  type IpsetType,
  type IpsetWriter,
} from '../../src/dataplane/ipset-netlink.ts';
import { NetfilterApplier } from '../../src/dataplane/netfilter.ts';
import { Logger } from '../../src/observe/log.ts';
import { Metrics } from '../../src/observe/metrics.ts';
import { canonicalIP } from '../../src/util/ip.ts';
import { EXIT_DEADLOCK_V8_FLAGS } from '../../src/util/v8-flags.ts';

const repo = resolve(import.meta.dirname, '../..');

/** An IPv4 nft NetfilterApplier over a recording exec and `writer`, logging into `logs`. */
const applierWith = (exec: FakeExec, writer: IpsetWriter, logs: string[], metrics: Metrics) =>
  new NetfilterApplier({
    exec,
    log: new Logger({ sink: (l) => void logs.push(l) }),
    metrics,
    backend: 'nft',
    families: [4],
    ipset: writer,
  });

t.test('encoding: the bytes of an entry, and what is refused', async (t) => {
  // bitmap:port 32000: one attribute, PORT (4) in network byte order (0x4000), 0x7d00.
  t.same([...entryData('bitmap:port', '32000').data], [6, 0, 4, 0x40, 0x7d, 0x00, 0, 0]);
  // hash:ip 10.0.0.1: IP (1, nested 0x8000) holding IPADDR_IPV4 (1, network order) 10.0.0.1.
  t.same([...entryData('hash:ip', '10.0.0.1').data], [12, 0, 1, 0x80, 8, 0, 1, 0x40, 10, 0, 0, 1]);
  t.equal(entryData('hash:ip,port', 'fd00::1,udp:53').family, 6);
  t.same(
    [...entryData('hash:ip', 'fd00::102:304').data.subarray(8, 24)],
    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
  );
  // A hairpin entry's whole ADD request: nfgenmsg (AF_INET), PROTOCOL 7, SETNAME "KUBE-LOOP-BACK\0" (padded), then
  // DATA (7, nested) of IP 10.1.2.3, PORT 8080 (network order), PROTO 6 (tcp), IP2 (20, nested) 10.1.2.3.
  t.same(
    [
      ...requestPayload({
        op: 'add',
        set: 'KUBE-LOOP-BACK',
        type: 'hash:ip,port,ip',
        entry: '10.1.2.3,tcp:8080,10.1.2.3',
      }),
    ],
    [
      ...[2, 0, 0, 0, 5, 0, 1, 0, 7, 0, 0, 0],
      ...[19, 0, 2, 0, ...Buffer.from('KUBE-LOOP-BACK'), 0, 0],
      ...[44, 0, 7, 128, 12, 0, 1, 128, 8, 0, 1, 64, 10, 1, 2, 3, 6, 0, 4, 64, 31, 144, 0, 0, 5, 0, 7, 0, 6, 0, 0, 0],
      ...[12, 0, 20, 128, 8, 0, 1, 64, 10, 1, 2, 3],
    ],
  );
  // A mark with its mask: SKBMARK (27, network order) as two 32-bit words.
  t.same(
    [...entryData('hash:ip,port', '10.1.2.3,tcp:80 skbmark 0x4000/0x4000').data],
    [12, 0, 1, 128, 8, 0, 1, 64, 10, 1, 2, 3, 6, 0, 4, 64, 0, 80, 0, 0, 5, 0, 7, 0, 6, 0, 0, 0].concat([
      12, 0, 27, 64, 0, 0, 64, 0, 0, 0, 64, 0,
    ]),
  );
  // A bulk ADD: LINENO (9, host order) 1, then ADT (8, nested) of DATA nests.
  t.same(
    [...bulkPayload('S', 'hash:ip', ['10.0.0.1'])],
    [2, 0, 0, 0, 5, 0, 1, 0, 7, 0, 0, 0, 6, 0, 2, 0, 83, 0, 0, 0, 8, 0, 9, 0, 1, 0, 0, 0].concat([
      20, 0, 8, 128, 16, 0, 7, 128, 12, 0, 1, 128, 8, 0, 1, 64, 10, 0, 0, 1,
    ]),
  );
  // A request longer than the writer's first buffer, and an IPv6 one: nfgenmsg's family AF_INET6 (10).
  const many = Array.from({ length: 40 }, (_, i) => `10.0.${i}.7,tcp:${1000 + i},10.0.${i}.7`);
  const bulk = bulkPayload('S', 'hash:ip,port,ip', many);
  t.equal(bulk.length, 28 + 4 + 40 * 44, 'every entry in');
  t.same([...bulk.subarray(bulk.length - 8)], [8, 0, 1, 64, 10, 0, 39, 7], 'the last entry last, intact');
  t.equal(requestPayload({ op: 'del', set: 'S', type: 'hash:ip', entry: 'fd00::1' })[0], 10);
  t.throws(() => bulkPayload('S', 'hash:ip', ['10.0.0.1', 'fd00::1']), /mixed address families/);
  for (const [type, entry] of [
    ['hash:ip', '10.0.0.256'],
    ['hash:ip', '10.00.0.1'],
    ['hash:ip', '10.0.0.01'],
    ['hash:ip', 'fe80::1%eth0'],
    ['hash:ip', '010.0.0.1'],
    ['hash:ip', 'FD00::1'],
    ['hash:ip', '10.0.0.1,tcp:80'],
    ['hash:ip,port', '10.0.0.1,icmp:80'],
    ['hash:ip,port', '10.0.0.1,tcp:65536'],
    ['hash:ip,port', '10.0.0.1,tcp:80 timeout 5'],
    ['hash:ip,port', '10.0.0.1,tcp:80 skbmark zz'],
    ['hash:ip,port,ip', '10.0.0.1,tcp:80,fd00::1'],
    ['hash:ip,port,net', '10.0.0.1,tcp:80,10.0.0.0/33'],
    ['hash:ip,port,net', '10.0.0.1,tcp:80,10.0.0.0/0'],
    ['bitmap:port', '-1'],
    ['bitmap:port', '80\n'],
  ] as [IpsetType, string][])
    t.throws(() => entryData(type, entry), `${type} ${JSON.stringify(entry)} refused`);
  t.throws(() => requestPayload({ op: 'add', set: 'a b', type: 'hash:ip', entry: '10.0.0.1' }), /set name/);
  t.throws(() => requestPayload({ op: 'add', set: 'X'.repeat(32), type: 'hash:ip', entry: '10.0.0.1' }), /set name/);
});

t.test("a set's request start, kept per set name, is the same bytes as written afresh", async (t) => {
  // The set name at bytes 16.. (nfgenmsg 4, protocol attribute 8, then the name's attribute header 4), the family
  // in nfgenmsg's first byte: written per request into the request's own copy.
  const name = (b: Buffer) => b.subarray(16, b.indexOf(0, 16)).toString();
  for (let round = 0; round < 2; round++)
    for (let i = 0; i < 100; i++) {
      // Past the bound (64 names) each is encoded every time; both ways must give the same bytes.
      const set = `SET-${i}`;
      const v4 = requestPayload({ op: 'add', set, type: 'hash:ip', entry: '10.0.0.1' });
      const v6 = requestPayload({ op: 'add', set, type: 'hash:ip', entry: 'fd00::1' });
      if (name(v4) !== set || name(v6) !== set || v4[0] !== 2 || v6[0] !== 10) {
        t.fail(`${set} in round ${round}: ${v4.toString('hex')} / ${v6.toString('hex')}`);
        return;
      }
    }
  const again = requestPayload({ op: 'add', set: 'SET-1', type: 'hash:ip', entry: '10.0.0.1' });
  t.same(again, requestPayload({ op: 'add', set: 'SET-1', type: 'hash:ip', entry: '10.0.0.1' }));
  t.equal(requestPayload({ op: 'add', set: 'SET-1', type: 'hash:ip', entry: 'fd00::1' })[0], 10, 'v6 after v4');
  t.equal(again[0], 2, 'an earlier request keeps its own family: the start is copied, never shared');
  t.throws(() => requestPayload({ op: 'add', set: 'a b', type: 'hash:ip', entry: '10.0.0.1' }), /set name/);
  t.throws(() => requestPayload({ op: 'add', set: 'a b', type: 'hash:ip', entry: '10.0.0.1' }), /set name/, 'again');
});

t.test('NetfilterApplier: incremental entries over the writer; a refusal falls back to ipset restore', async (t) => {
  const exec = new FakeExec();
  const calls: IpsetOp[][] = [];
  let fail = false;
  const writer: IpsetWriter = {
    apply: async (ops) => {
      calls.push(ops);
      return fail ? [{ op: ops[0]!, message: 'element exists' }] : [];
    },
    close: () => {},
  };
  const logs: string[] = [];
  const metrics = new Metrics({ defaultMetrics: false });
  const nf = applierWith(exec, writer, logs, metrics);
  const entries = new Set(['KIPVS-CLUSTER-IP 10.96.0.1,tcp:80']);
  t.same(await nf.syncSets((e) => entries.has(e), entries, [], true), []);
  const restores = () => exec.calls.filter((c) => c.cmd === 'ipset' && c.args[0] === 'restore').length;
  const first = restores();
  t.equal(first, 1, 'a full sync is one ipset restore');
  entries.add('KIPVS-LOOP-BACK 10.244.0.5,tcp:8080,10.244.0.5');
  entries.delete('KIPVS-CLUSTER-IP 10.96.0.1,tcp:80');
  entries.add('KIPVS-LB-LOCAL-MARK 203.0.113.1,tcp:443 skbmark 0x10');
  t.same(
    await nf.syncSets(
      (e) => entries.has(e),
      entries,
      [
        'KIPVS-LOOP-BACK 10.244.0.5,tcp:8080,10.244.0.5',
        'KIPVS-CLUSTER-IP 10.96.0.1,tcp:80',
        'KIPVS-LB-LOCAL-MARK 203.0.113.1,tcp:443 skbmark 0x10',
      ],
      false,
    ),
    [],
  );
  t.equal(restores(), first, 'an incremental change runs no process');
  t.same(
    calls.at(-1),
    [
      { op: 'del', set: 'KIPVS-CLUSTER-IP', type: 'hash:ip,port', entry: '10.96.0.1,tcp:80' },
      { op: 'add', set: 'KIPVS-LOOP-BACK', type: 'hash:ip,port,ip', entry: '10.244.0.5,tcp:8080,10.244.0.5' },
      { op: 'add', set: 'KIPVS-LB-LOCAL-MARK', type: 'hash:ip,port', entry: '203.0.113.1,tcp:443 skbmark 0x10' },
    ],
    'deletes first, entries as the plan wrote them',
  );
  fail = true;
  entries.add('KIPVS-CLUSTER-IP 10.96.0.2,tcp:80');
  t.same(
    await nf.syncSets((e) => entries.has(e), entries, ['KIPVS-CLUSTER-IP 10.96.0.2,tcp:80'], false),
    [],
    'the fallback succeeded',
  );
  t.equal(restores(), first + 1, 'the refused change went to ipset restore');
  t.match(exec.calls.at(-1)!.input, /^add KIPVS-CLUSTER-IP 10\.96\.0\.2,tcp:80 -exist\n$/);
  t.match(logs.join('\n'), /ipset over netlink failed.*element exists/);
  t.match(await metrics.registry.metrics(), /kubeipvs_ipset_netlink_failures_total 1/);
});

t.test(
  'NetfilterApplier: it records what it sent, not what the plan wants by the time the kernel answers',
  async (t) => {
    const exec = new FakeExec();
    const calls: IpsetOp[][] = [];
    const entries = new Set(['KIPVS-CLUSTER-IP 10.96.0.1,tcp:80']);
    const x = 'KIPVS-CLUSTER-IP 10.96.0.2,tcp:80';
    let onApply = () => {};
    const writer: IpsetWriter = {
      apply: async (ops) => {
        calls.push(ops);
        onApply(); // a change planned while the request is out
        return [];
      },
      close: () => {},
    };
    const nf = applierWith(exec, writer, [], new Metrics({ defaultMetrics: false }));
    t.same(await nf.syncSets((e) => entries.has(e), entries, [], true), []);
    entries.add(x);
    onApply = () => entries.delete(x);
    t.same(await nf.syncSets((e) => entries.has(e), entries, [x], false), []);
    t.same(calls.at(-1), [{ op: 'add', set: 'KIPVS-CLUSTER-IP', type: 'hash:ip,port', entry: '10.96.0.2,tcp:80' }]);
    onApply = () => {};
    t.same(await nf.syncSets((e) => entries.has(e), entries, [x], false), []);
    t.same(
      calls.at(-1),
      [{ op: 'del', set: 'KIPVS-CLUSTER-IP', type: 'hash:ip,port', entry: '10.96.0.2,tcp:80' }],
      'the entry sent is known to be in the kernel: the change after it deletes it',
    );
  },
);

/** A network namespace of its own for test `t` (deleted at its end): runs a command in it, stdin `input`. */
function netns(t: Pick<typeof tap, 'teardown'>, name: string): (cmd: string[], input?: string) => string {
  const ns = `kipvs-${name}-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  return (cmd, input) =>
    execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', input, timeout: 60_000 });
}

function whyNot(): string | null {
  if (process.getuid?.() !== 0) return 'not root: network namespaces and ipset need it';
  try {
    execFileSync('sh', ['-c', 'command -v ipset && command -v ip']);
    return null;
  } catch {
    return 'ipset or iproute2 is not installed';
  }
}

const SETS: { name: string; type: IpsetType; create: string }[] = [
  { name: 'IP4', type: 'hash:ip', create: 'hash:ip family inet' },
  { name: 'IP6', type: 'hash:ip', create: 'hash:ip family inet6' },
  { name: 'IPPORT4', type: 'hash:ip,port', create: 'hash:ip,port family inet' },
  { name: 'IPPORT6', type: 'hash:ip,port', create: 'hash:ip,port family inet6' },
  { name: 'MARK4', type: 'hash:ip,port', create: 'hash:ip,port family inet skbinfo' },
  { name: 'LOOP4', type: 'hash:ip,port,ip', create: 'hash:ip,port,ip family inet' },
  { name: 'LOOP6', type: 'hash:ip,port,ip', create: 'hash:ip,port,ip family inet6' },
  { name: 'NET4', type: 'hash:ip,port,net', create: 'hash:ip,port,net family inet' },
  { name: 'NET6', type: 'hash:ip,port,net', create: 'hash:ip,port,net family inet6' },
  { name: 'PORTS', type: 'bitmap:port', create: 'bitmap:port range 0-65535' },
];

t.test(
  'random adds and deletes over netlink leave every set as ipset restore does',
  { skip: whyNot() ?? false },
  async (t) => {
    const inNs = netns(t, 'ipnl');
    // Each set twice: N- fed over netlink, R- by ipset restore.
    inNs(
      ['ipset', 'restore'],
      SETS.flatMap((s) => [`create N-${s.name} ${s.create}`, `create R-${s.name} ${s.create}`]).join('\n') + '\n',
    );
    let seed = 7;
    // The high bits of a linear congruential generator (its low bits cycle quickly).
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >>> 16) % n;
    const v4 = () => `10.${rnd(2)}.${rnd(3)}.${1 + rnd(4)}`;
    // Addresses as the plan writes them: canonical text.
    const v6 = () => canonicalIP(`fd00:${rnd(2).toString(16)}::${(1 + rnd(4)).toString(16)}`)!;
    const pp = () => `${['tcp', 'udp', 'sctp'][rnd(3)]}:${[53, 80, 8080][rnd(3)]}`;
    const entry = (s: (typeof SETS)[number]): { add: string; del: string } => {
      const six = s.name.endsWith('6');
      const ip = six ? v6 : v4;
      switch (s.name.replace(/[46]$/, '')) {
        case 'IP':
          return { add: ip(), del: '' };
        case 'IPPORT':
          return { add: `${ip()},${pp()}`, del: '' };
        case 'MARK': {
          const e = `${ip()},${pp()}`;
          return { add: `${e} skbmark 0x${(1 + rnd(3)).toString(16)}`, del: e };
        }
        case 'LOOP': {
          const a = ip();
          return { add: `${a},${pp()},${rnd(2) ? a : ip()}`, del: '' };
        }
        case 'NET':
          return {
            add: `${ip()},${pp()},${six ? `${canonicalIP(`fd00:${rnd(3)}::`)}/${[32, 48, 64][rnd(3)]}` : `10.${rnd(3)}.0.0/${[8, 16, 24][rnd(3)]}`}`,
            del: '',
          };
        default:
          return { add: String([80, 443, 30000, 65535][rnd(4)]), del: '' };
      }
    };
    for (let round = 0; round < 4; round++) {
      const ops: IpsetOp[] = [];
      const lines: string[] = [];
      for (let i = 0; i < 150; i++) {
        const s = SETS[rnd(SETS.length)]!;
        const e = entry(s);
        const op = rnd(3) === 0 ? 'del' : 'add';
        const text = op === 'del' ? e.del || e.add.split(' ')[0]! : e.add;
        ops.push({ op, set: `N-${s.name}`, type: s.type, entry: text });
        lines.push(`${op} R-${s.name} ${text} -exist`);
      }
      const failed = JSON.parse(
        inNs(
          [process.execPath, ...EXIT_DEADLOCK_V8_FLAGS, join(repo, 'test/support/ipset-netlink-child.ts')],
          JSON.stringify(ops),
        ),
      ) as unknown[];
      t.same(failed, [], `round ${round}: every op acknowledged`);
      inNs(['ipset', 'restore'], lines.join('\n') + '\n');
      const members = (name: string) =>
        inNs(['ipset', 'save', name])
          .split('\n')
          .filter((l) => l.startsWith('add '))
          .map((l) => l.slice(l.indexOf(' ', 4) + 1))
          .sort();
      for (const s of SETS)
        t.same(
          members(`N-${s.name}`),
          members(`R-${s.name}`),
          `round ${round}: ${s.name} (${members(`R-${s.name}`).length} members)`,
        );
    }
    // The kernel's refusals come back in words, per op, and the rest still apply.
    const failed = JSON.parse(
      inNs(
        [process.execPath, ...EXIT_DEADLOCK_V8_FLAGS, join(repo, 'test/support/ipset-netlink-child.ts')],
        JSON.stringify([
          { op: 'add', set: 'MISSING', type: 'hash:ip', entry: '10.0.0.1' },
          { op: 'add', set: 'N-IP4', type: 'hash:ip,port', entry: '10.0.0.1,tcp:80' },
          { op: 'add', set: 'N-IP6', type: 'hash:ip', entry: '10.0.0.1' },
          { op: 'add', set: 'N-IP4', type: 'hash:ip', entry: '10.200.0.1' },
        ]),
      ),
    ) as { op: IpsetOp; message: string }[];
    t.same(
      failed.map((f) => f.op.set),
      ['MISSING', 'N-IP4', 'N-IP6'],
      'three refused',
    );
    t.match(failed.map((f) => f.message).join(' | '), /ENOENT.*\|.*\|/);
    t.match(inNs(['ipset', 'save', 'N-IP4']), /add N-IP4 10\.200\.0\.1/, 'the good one applied');
  },
);

t.test(
  'many entries per request (ADT): a set filled over netlink holds what ipset restore puts in; refusals say why',
  { skip: whyNot() ?? false },
  async (t) => {
    const inNs = netns(t, 'ipnlb');
    const child = (input: unknown) =>
      JSON.parse(
        inNs(
          [process.execPath, ...EXIT_DEADLOCK_V8_FLAGS, join(repo, 'test/support/ipset-netlink-child.ts')],
          JSON.stringify(input),
        ),
      ) as (string | null)[];
    inNs(
      ['ipset', 'restore'],
      [
        'create N-LOOP hash:ip,port,ip family inet hashsize 1024 maxelem 1048576',
        'create R-LOOP hash:ip,port,ip family inet hashsize 1024 maxelem 1048576',
        'create N-MARK hash:ip,port family inet skbinfo',
        'create R-MARK hash:ip,port family inet skbinfo',
        'create N-PORTS bitmap:port range 0-65535',
        'create R-PORTS bitmap:port range 0-65535',
      ].join('\n') + '\n',
    );
    // 3 000 hairpin entries: twelve requests, more than the four in flight.
    const loop = Array.from({ length: 3000 }, (_, n) => {
      const a = `10.200.${n >> 8}.${n & 255}`;
      return `${a},tcp:${8000 + (n % 7)},${a}`;
    });
    const marks = ['203.0.113.1,tcp:443 skbmark 0x10', '203.0.113.2,udp:53 skbmark 0x4000/0xc000'];
    const ports = ['30080', '32000'];
    t.same(
      child({
        bulk: [
          { set: 'N-LOOP', type: 'hash:ip,port,ip', entries: loop },
          { set: 'N-MARK', type: 'hash:ip,port', entries: marks },
          { set: 'N-PORTS', type: 'bitmap:port', entries: ports },
        ],
      }),
      [null, null, null],
      'every request acknowledged',
    );
    inNs(
      ['ipset', 'restore'],
      [
        ...loop.map((e) => `add R-LOOP ${e}`),
        ...marks.map((e) => `add R-MARK ${e}`),
        ...ports.map((e) => `add R-PORTS ${e}`),
      ].join('\n') + '\n',
    );
    const members = (name: string) =>
      inNs(['ipset', 'save', name])
        .split('\n')
        .filter((l) => l.startsWith('add '))
        .map((l) => l.slice(l.indexOf(' ', 4) + 1))
        .sort();
    for (const s of ['LOOP', 'MARK', 'PORTS']) t.same(members(`N-${s}`), members(`R-${s}`), `${s}: the same members`);
    t.equal(members('N-LOOP').length, 3000);
    const refused = child({
      bulk: [
        { set: 'MISSING', type: 'hash:ip', entries: ['10.0.0.1'] },
        { set: 'N-LOOP', type: 'hash:ip,port,ip', entries: ['10.0.0.1,tcp:80,fd00::1'] },
        { set: 'N-PORTS', type: 'hash:ip', entries: ['10.0.0.1'] },
      ],
    });
    t.equal(refused.length, 3);
    t.ok(
      refused.every((r) => typeof r === 'string' && r.length > 0),
      `each refusal in words: ${JSON.stringify(refused)}`,
    );
    t.match(refused[1], /mixed address families|family/);
  },
);

t.test(
  'NetfilterApplier: a rebuilt set is filled through addMany between two restores; a refusal falls back',
  async (t) => {
    const exec = new FakeExec();
    const filled: { set: string; type: string; entries: readonly string[] }[] = [];
    let refuse = false;
    const writer: IpsetWriter = {
      apply: async () => [],
      addMany: async (set, type, entries) => {
        filled.push({ set, type, entries });
        return refuse ? 'set type mismatch (4101)' : null;
      },
      close: () => {},
    };
    const logs: string[] = [];
    const metrics = new Metrics({ defaultMetrics: false });
    const nf = applierWith(exec, writer, logs, metrics);
    const entries = new Set(['KIPVS-CLUSTER-IP 10.96.0.1,tcp:80', 'KIPVS-CLUSTER-IP 10.96.0.2,tcp:80']);
    t.same(await nf.syncSets((e) => entries.has(e), entries, [], true), []);
    const restores = () => exec.calls.filter((c) => c.cmd === 'ipset' && c.args[0] === 'restore');
    const [head, tail] = restores().map((c) => c.input!);
    t.equal(restores().length, 2, 'two restores around the netlink fill');
    t.match(head, /create KIPVS-CLUSTER-IP-T hash:ip,port .*\nflush KIPVS-CLUSTER-IP-T\n/);
    t.notMatch(head, /^add /m, 'no entry through ipset restore');
    t.notMatch(head, /swap/, 'nothing swapped before it is filled');
    t.same(
      filled.find((f) => f.set === 'KIPVS-CLUSTER-IP-T'),
      { set: 'KIPVS-CLUSTER-IP-T', type: 'hash:ip,port', entries: ['10.96.0.1,tcp:80', '10.96.0.2,tcp:80'] },
    );
    t.ok(!filled.some((f) => f.entries.length === 0), 'an empty set needs no request');
    t.match(tail, /swap KIPVS-CLUSTER-IP-T KIPVS-CLUSTER-IP\ndestroy KIPVS-CLUSTER-IP-T\n/);
    t.notMatch(tail, /^add /m);

    // The writer refuses: the second restore fills that set itself, said and counted.
    refuse = true;
    exec.calls.length = 0;
    const nf2 = applierWith(exec, writer, logs, metrics);
    t.same(await nf2.syncSets((e) => entries.has(e), entries, [], true), []);
    const tail2 = restores()[1]!.input!;
    t.match(
      tail2,
      /flush KIPVS-CLUSTER-IP-T\nadd KIPVS-CLUSTER-IP-T 10\.96\.0\.1,tcp:80\nadd KIPVS-CLUSTER-IP-T 10\.96\.0\.2,tcp:80\nswap KIPVS-CLUSTER-IP-T KIPVS-CLUSTER-IP\n/,
    );
    t.match(logs.join('\n'), /ipset over netlink failed; the set is filled by ipset restore.*set type mismatch/);
    t.match(await metrics.registry.metrics(), /kubeipvs_ipset_netlink_failures_total 1/);
  },
);

t.test(
  'thousands of ops at once: the answers owed never overflow the socket (the addon aborted the process when one did)',
  { skip: whyNot() ?? false },
  async (t) => {
    const inNs = netns(t, 'ipnlo');
    inNs(['ipset', 'create', 'MANY', 'hash:ip,port', 'maxelem', '100000']);
    // Each ACK carries its request back and waits in the receive buffer (212 992 bytes by default) until read:
    // 300 sent at once were enough to overflow it, and the addon's poll error path then ended the process
    // (SIGABRT, "Error in native callback"): execFileSync would throw here with the child's signal.
    const ops: IpsetOp[] = Array.from({ length: 5000 }, (_, i) => ({
      op: 'add',
      set: 'MANY',
      type: 'hash:ip,port',
      entry: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255},tcp:${1 + (i % 1000)}`,
    }));
    const failed = JSON.parse(
      inNs(
        [process.execPath, ...EXIT_DEADLOCK_V8_FLAGS, join(repo, 'test/support/ipset-netlink-child.ts')],
        JSON.stringify(ops),
      ),
    ) as unknown[];
    t.same(failed, [], 'every op acknowledged');
    const members = inNs(['ipset', 'save', 'MANY'])
      .split('\n')
      .filter((l) => l.startsWith('add ')).length;
    t.equal(members, 5000, 'and every entry is in the set');
  },
);
