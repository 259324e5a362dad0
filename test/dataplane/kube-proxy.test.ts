// kube-proxy's leftovers (src/dataplane/kube-proxy.ts): what is removed and what is not, with the real tools in a
// network namespace of this host; whether kube-proxy still runs, on a made-up /proc.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cleanup } from '../../src/dataplane/cleanup.ts';
import { FakeExec, SystemExec } from '../../src/dataplane/exec.ts';
import { FakeIpvs } from '../../src/dataplane/ipvs/fake.ts';
import { serviceId } from '../../src/dataplane/ipvs/types.ts';
import { FakeLinks } from '../../src/dataplane/links.ts';
import { MemoryOwnership } from '../../src/dataplane/ownership.ts';

import { isKubeProxyChain, kubeProxyRunning, removeKubeProxyNetfilter } from '../../src/dataplane/kube-proxy.ts';

const has = (tool: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const why =
  process.getuid?.() !== 0
    ? 'not root: network namespaces, iptables and ipset need it'
    : ['ip', 'ipset', 'iptables-nft-restore'].every(has)
      ? null
      : 'iptables (nft), ipset or iproute2 is not installed';

// What kube-proxy v1.35 makes in its ipvs and iptables modes (abridged, names and hooks as it writes them), next
// to kubelet's chains, another program's, and kube-ipvs' own.
const NAT = `*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SVC-ABCDEF0123456789 - [0:0]
:KUBE-SEP-0123456789ABCDEF - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-MARK-DROP - [0:0]
:KIPVS-SERVICES - [0:0]
:OTHER-NAT - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m comment --comment "kube-ipvs service portals" -j KIPVS-SERVICES
-A PREROUTING -j OTHER-NAT
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -j KUBE-SVC-ABCDEF0123456789
-A KUBE-SVC-ABCDEF0123456789 -j KUBE-SEP-0123456789ABCDEF
-A KUBE-SEP-0123456789ABCDEF -p tcp -j DNAT --to-destination 10.244.0.11:8080
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
-A OTHER-NAT -p tcp --dport 9999 -j RETURN
COMMIT
`;
const FILTER = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:OTHER-FILTER - [0:0]
-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -j KUBE-FIREWALL
-A INPUT -j OTHER-FILTER
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
`;
const MANGLE = `*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-IPTABLES-HINT - [0:0]
COMMIT
`;

t.test('isKubeProxyChain: kube-proxy chains only, never kubelet, kube-ipvs or another program', async (t) => {
  for (const [table, chain] of [
    ['nat', 'KUBE-SERVICES'],
    ['nat', 'KUBE-SVC-ABCDEF0123456789'],
    ['nat', 'KUBE-EXT-ABCDEF0123456789'],
    ['filter', 'KUBE-PROXY-FIREWALL'],
    ['filter', 'KUBE-IPVS-OUT-FILTER'],
    ['mangle', 'KUBE-PROXY-CANARY'],
  ] as const)
    t.ok(isKubeProxyChain(table, chain), `${table} ${chain}`);
  for (const [table, chain] of [
    ['filter', 'KUBE-FIREWALL'],
    ['nat', 'KUBE-KUBELET-CANARY'],
    ['nat', 'KUBE-MARK-DROP'],
    ['mangle', 'KUBE-IPTABLES-HINT'],
    ['nat', 'KIPVS-SERVICES'],
    ['filter', 'KUBE-SVC-ABCDEF0123456789'],
    ['nat', 'KUBE-SVC-lower'],
    ['nat', 'OTHER-NAT'],
  ] as const)
    t.notOk(isKubeProxyChain(table, chain), `not ${table} ${chain}`);
});

t.test(
  "kube-proxy's chains, jumps, ipsets and nftables tables go; everything else stays (real tools, a netns)",
  { skip: why ?? false },
  async (t) => {
    const ns = `kipvs-kp-${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
    const inNs = (cmd: string[], input?: string) =>
      execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', ...(input ? { input } : {}) });
    inNs(['ipset', 'create', 'KUBE-CLUSTER-IP', 'hash:ip,port']);
    inNs(['ipset', 'create', 'KUBE-NODE-PORT-TCP', 'bitmap:port', 'range', '0-65535']);
    inNs(['ipset', 'create', 'KIPVS-CLUSTER-IP', 'hash:ip,port']);
    inNs(['ipset', 'create', 'OTHER-SET', 'hash:ip']);
    inNs(['iptables-nft-restore'], NAT + FILTER + MANGLE);
    const nft = has('nft');
    if (nft) inNs(['nft', '-f', '-'], 'table ip kube-proxy {}\ntable ip6 kube-proxy {}\ntable inet other {}\n');

    const exec = new SystemExec({ prefix: ['ip', 'netns', 'exec', ns] });
    const r = await removeKubeProxyNetfilter(exec);
    t.same(r.errors, [], 'no errors');
    t.same(
      r.removed.filter((x) => x.startsWith('iptables-nft ')).sort(),
      [
        'iptables-nft filter KUBE-FORWARD',
        'iptables-nft filter KUBE-IPVS-FILTER',
        'iptables-nft filter KUBE-NODE-PORT',
        'iptables-nft filter KUBE-PROXY-FIREWALL',
        'iptables-nft mangle KUBE-PROXY-CANARY',
        'iptables-nft nat KUBE-LOAD-BALANCER',
        'iptables-nft nat KUBE-MARK-MASQ',
        'iptables-nft nat KUBE-NODE-PORT',
        'iptables-nft nat KUBE-NODEPORTS',
        'iptables-nft nat KUBE-POSTROUTING',
        'iptables-nft nat KUBE-PROXY-CANARY',
        'iptables-nft nat KUBE-SEP-0123456789ABCDEF',
        'iptables-nft nat KUBE-SERVICES',
        'iptables-nft nat KUBE-SVC-ABCDEF0123456789',
      ],
      'every kube-proxy chain, reported',
    );
    const save = inNs(['iptables-nft-save']);
    t.notMatch(save, /KUBE-(SERVICES|POSTROUTING|MARK-MASQ|NODE-PORT|SVC-|SEP-|FORWARD|PROXY|IPVS-FILTER)/);
    for (const kept of [
      '-A PREROUTING -m comment --comment "kube-ipvs service portals" -j KIPVS-SERVICES',
      '-A PREROUTING -j OTHER-NAT',
      '-A OTHER-NAT -p tcp -m tcp --dport 9999 -j RETURN',
      '-A INPUT -j KUBE-FIREWALL',
      '-A INPUT -j OTHER-FILTER',
      ':KUBE-KUBELET-CANARY',
      ':KUBE-MARK-DROP',
      ':KUBE-IPTABLES-HINT',
    ])
      t.ok(save.includes(kept), `kept: ${kept}`);
    t.match(save, /-A KUBE-FIREWALL .*-j DROP/, "kubelet's KUBE-FIREWALL keeps its rule");
    const sets = inNs(['ipset', 'list', '-n']).split('\n').filter(Boolean).sort();
    t.same(sets, ['KIPVS-CLUSTER-IP', 'OTHER-SET'], "kube-proxy's ipsets gone (after the rules that used them)");
    if (nft) {
      t.same(r.unchecked, []);
      t.ok(r.removed.includes('nftables ip kube-proxy') && r.removed.includes('nftables ip6 kube-proxy'));
      t.match(inNs(['nft', 'list', 'tables']), /table inet other/, "another program's table stays");
      t.notMatch(inNs(['nft', 'list', 'tables']), /kube-proxy/);
    } else {
      t.match(r.unchecked.join(), /nft is not installed/, 'no nft here: said, not an error');
    }
    const again = await removeKubeProxyNetfilter(exec);
    t.same([again.removed, again.errors], [[], []], 'a second run finds nothing');
  },
);

t.test('a tool that fails is reported on one bounded line; the rest still goes', async (t) => {
  const exec = new FakeExec();
  exec.handlers.push((cmd) => (cmd === 'iptables-nft-save' ? { code: 0, stdout: NAT, stderr: '' } : undefined));
  exec.handlers.push((cmd) =>
    cmd === 'iptables-nft-restore' ? { code: 4, stdout: '', stderr: `line 1\nfailed\n${'x'.repeat(1000)}` } : undefined,
  );
  exec.handlers.push((cmd, args) =>
    cmd === 'ipset' && args[0] === 'list' ? { code: 0, stdout: 'KUBE-LOOP-BACK\nOTHER\n', stderr: '' } : undefined,
  );
  exec.handlers.push((cmd) => (cmd === 'nft' ? { code: 127, stdout: '', stderr: 'spawn nft ENOENT' } : undefined));
  exec.handlers.push((cmd) => (cmd.includes('save') ? { code: 1, stdout: '', stderr: 'no such backend' } : undefined));
  const r = await removeKubeProxyNetfilter(exec);
  t.equal(r.errors.length, 1);
  t.match(r.errors[0], /^iptables-nft-restore \(kube-proxy's chains\): exit 4: line 1 failed x+\.\.\.$/);
  t.ok(r.errors[0]!.length < 400, 'bounded');
  t.same(r.removed, ['ipset KUBE-LOOP-BACK'], 'only the ipset that was destroyed');
  t.same(
    exec.calls.filter((c) => c.cmd === 'ipset' && c.args[0] === 'destroy').map((c) => c.args[1]),
    ['KUBE-LOOP-BACK'],
    'never another program set',
  );
});

t.test('kubeProxyRunning: its process, or another listener on its ports; ours do not count', async (t) => {
  const proc = mkdtempSync(join(tmpdir(), 'kipvs-proc-'));
  t.teardown(() => rmSync(proc, { recursive: true, force: true }));
  mkdirSync(join(proc, 'net'));
  mkdirSync(join(proc, 'self', 'fd'), { recursive: true });
  mkdirSync(join(proc, '1'));
  writeFileSync(join(proc, '1', 'comm'), 'systemd\n');
  symlinkSync('socket:[555]', join(proc, 'self', 'fd', '7'));
  symlinkSync('/dev/null', join(proc, 'self', 'fd', '0'));
  const header = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
  const line = (port: number, st: string, inode: number) =>
    `   0: 00000000:${port.toString(16).toUpperCase().padStart(4, '0')} 00000000:0000 ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 100 0 0 10 0\n`;
  // Our own healthz listener on 10256 (socket 555), a connection (not listening) on 10249, another on 8080.
  writeFileSync(
    join(proc, 'net', 'tcp'),
    header + line(10256, '0A', 555) + line(10249, '01', 556) + line(8080, '0A', 557),
  );
  writeFileSync(join(proc, 'net', 'tcp6'), header);
  t.equal(kubeProxyRunning(proc), null, 'nothing else on its ports, no process of that name');
  writeFileSync(join(proc, 'net', 'tcp6'), header + line(10249, '0A', 900));
  t.match(kubeProxyRunning(proc), /another process listens on port 10249 \(kube-proxy's metrics port\)/);
  writeFileSync(join(proc, 'net', 'tcp6'), header);
  mkdirSync(join(proc, '4242'));
  writeFileSync(join(proc, '4242', 'comm'), 'kube-proxy\n');
  t.equal(kubeProxyRunning(proc), 'process 4242 is kube-proxy');
  t.equal(kubeProxyRunning(join(proc, 'missing')), null, 'no /proc: nothing to tell');
});

t.test('cleanup on the way back to kube-proxy ipvs mode leaves it the virtual servers and addresses', async (t) => {
  const build = async () => {
    const ipvs = new FakeIpvs();
    const links = new FakeLinks();
    const index = await links.ensureDummy('kube-ipvs0');
    await links.addAddress(index, '10.96.0.1');
    const owned = new MemoryOwnership();
    owned.addresses.add('10.96.0.1');
    const base = { family: 4 as const, scheduler: 'rr', flags: 0, timeout: 0, netmask: 0xffffffff };
    await ipvs.addService({ ...base, protocol: 'TCP', address: '10.96.0.1', port: 80 });
    const mark = { ...base, fwmark: 0x100001 };
    await ipvs.addService(mark);
    owned.services.add(serviceId(mark));
    return { ipvs, links, owned };
  };
  const a = await build();
  const left = await cleanup(a.ipvs, a.links, a.owned, { dummyInterface: 'kube-ipvs0', leaveToKubeProxy: true });
  t.same((await a.ipvs.services()).map(serviceId), ['TCP/10.96.0.1:80'], 'its virtual server stays; our mark goes');
  t.same(await a.links.addresses((await a.links.find('kube-ipvs0'))!), ['10.96.0.1'], 'so does the address');
  t.same([left.interfaceRemoved, a.owned.addresses.size, a.owned.services.size], [false, 0, 0], 'our record is gone');
  const b = await build();
  await cleanup(b.ipvs, b.links, b.owned, { dummyInterface: 'kube-ipvs0' });
  t.same(await b.ipvs.services(), [], 'without kube-proxy everything of ours goes');
  t.equal(await b.links.find('kube-ipvs0'), null);
});

t.test('cleanup --drain waits for the established connections through what it deletes, up to its limit', async (t) => {
  const build = async () => {
    const ipvs = new FakeIpvs();
    const links = new FakeLinks();
    await links.addAddress(await links.ensureDummy('kube-ipvs0'), '10.96.0.1');
    const vs = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
    await ipvs.addService({ ...vs, scheduler: 'rr', flags: 0, timeout: 0, netmask: 0xffffffff });
    const dest = { family: 4 as const, address: '10.244.0.11', port: 8080 };
    await ipvs.addDestination(vs, { ...dest, fwdMethod: 0, weight: 1, upperThreshold: 0, lowerThreshold: 0 });
    ipvs.setConnections(vs, dest, 1, 7);
    let clock = 0;
    const waits: number[] = [];
    const drain = {
      now: () => (clock += 1), // time passes while it lists, too
      sleep: async (ms: number) => {
        clock += ms;
        // The held connection ends after 3 s; the closing ones (inactive) are never waited for.
        if (clock >= 3000) ipvs.setConnections(vs, dest, 0, 7);
        t.ok((await ipvs.services()).length === 1, 'nothing deleted while it waits');
      },
      onWait: (n: number) => waits.push(n),
    };
    return { ipvs, links, drain, waits };
  };
  const a = await build();
  const r = await cleanup(a.ipvs, a.links, new MemoryOwnership(), {
    dummyInterface: 'kube-ipvs0',
    drain: { ms: 60_000, ...a.drain },
  });
  t.equal(r.drained?.connections, 0, 'waited until the connection ended');
  t.ok(r.drained!.waitedMs >= 3000 && r.drained!.waitedMs < 3100, `${r.drained?.waitedMs} ms: 3 s`);
  t.same(a.waits, [1], 'and said once what it waits for');
  t.same(await a.ipvs.services(), [], 'then deleted');
  const b = await build();
  let later = 0;
  const r2 = await cleanup(b.ipvs, b.links, new MemoryOwnership(), {
    dummyInterface: 'kube-ipvs0',
    drain: { ms: 2000, now: () => later, sleep: async (ms) => void (later += ms) },
  });
  t.same(r2.drained, { waitedMs: 2000, connections: 1 }, 'its limit ends the wait');
  t.same(await b.ipvs.services(), [], 'and the rest is removed all the same');
});
