// The iptables stage against the real tools: iptables-restore, ipset and iptables in a network
// namespace of this host (as root), so the generated text is proven to load, to be idempotent, to
// follow incremental changes and to be removed by cleanup. Packets through it are the lab's job.
// Plus the conntrack cleaner's handling of the tool's answers, with a recording exec.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConntrackCleaner } from '../../src/dataplane/conntrack.ts';
import { FakeExec, SystemExec } from '../../src/dataplane/exec.ts';
import { cleanupRestoreInput, detectBackend, NetfilterApplier } from '../../src/dataplane/netfilter.ts';
import { Logger } from '../../src/observe/log.ts';
import { Metrics } from '../../src/observe/metrics.ts';
import { ep, node, service, slice } from '../support/objects.ts';
import { planObjects } from '../support/plan.ts';

const quiet = new Logger({ sink: () => {} });

function whyNot(): string | null {
  if (process.getuid?.() !== 0) return 'not root: network namespaces, iptables and ipset need it';
  try {
    for (const tool of ['ip', 'ipset', 'iptables-nft-restore', 'ip6tables-nft-restore'])
      execFileSync('sh', ['-c', `command -v ${tool}`]);
    return null;
  } catch {
    return 'iptables (nft), ipset or iproute2 is not installed';
  }
}

const objects = [
  node('node-a', [
    ['InternalIP', '192.168.1.10'],
    ['InternalIP', 'fd00::10'],
  ]),
  service('web', {
    clusterIPs: ['10.96.0.1', 'fd00:96::1'],
    type: 'NodePort',
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }],
  }),
  slice('web-1', 'web', [ep('10.244.1.5'), ep('10.244.2.7')]),
  slice('web-6', 'web', [ep('fd00:244::5')], { addressType: 'IPv6' }),
  service('lb', {
    clusterIPs: ['10.96.0.2'],
    type: 'LoadBalancer',
    lbIngress: [{ ip: '203.0.113.50' }],
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30081 }],
    spec: { externalTrafficPolicy: 'Local', healthCheckNodePort: 32000, loadBalancerSourceRanges: ['198.51.100.0/24'] },
  }),
];

const why = whyNot();

/** A network namespace of this host for one test (removed with it), its tools' exec and a runner. */
function netns(t: { teardown: (f: () => void) => void }, tag: string) {
  const ns = `${tag}-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  return {
    exec: new SystemExec({ prefix: ['ip', 'netns', 'exec', ns] }),
    inNs: (...cmd: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8' }),
  };
}

/** Runs these iptables-legacy commands in the namespace; false (and a passing note why) where legacy does not work. */
function legacyWorks(
  t: { comment: (m: string) => void; pass: (m: string) => void },
  inNs: (...cmd: string[]) => string,
  ...cmds: string[][]
): boolean {
  try {
    for (const c of cmds) inNs('iptables-legacy', ...c);
    return true;
  } catch (e) {
    t.comment(`iptables-legacy does not work here, nothing to check: ${(e as Error).message.split('\n')[0]}`);
    t.pass('skipped: no iptables-legacy');
    return false;
  }
}
t.test(
  'ipsets and rules load, stay idempotent, follow changes and are cleaned up',
  { skip: why ?? false },
  async (t) => {
    const { exec, inNs } = netns(t, 'kipvs-nf');
    const backend = await detectBackend(exec);
    t.equal(backend, 'nft', 'an empty namespace: nft, as kube-proxy picks');
    const metrics = new Metrics({ defaultMetrics: false });
    const nf = new NetfilterApplier({ exec, log: quiet, metrics, backend, families: [4, 6] });
    const { planner } = planObjects(objects);
    planner.takeSetChanges();

    t.same(
      await nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), [], true),
      [],
      'sets created and filled',
    );
    t.same(await nf.syncRules(planner.netfilter, true), [], 'rules restored');
    const members = (set: string) =>
      inNs('ipset', 'list', set).split('Members:\n')[1]!.trim().split('\n').filter(Boolean).sort();
    t.same(members('KIPVS-CLUSTER-IP'), ['10.96.0.1,tcp:80', '10.96.0.2,tcp:80']);
    t.same(members('KIPVS6-CLUSTER-IP'), ['fd00:96::1,tcp:80']);
    t.same(members('KIPVS-LB-SRC-CIDR'), ['203.0.113.50,tcp:80,198.51.100.0/24']);
    t.same(members('KIPVS-HC-NODE-PORT'), ['32000']);
    const nat = inNs('iptables-nft-save', '-t', 'nat');
    t.match(nat, /-A PREROUTING -m comment --comment "kube-ipvs service portals" -j KIPVS-SERVICES/);
    t.match(
      nat,
      /-A KIPVS-POSTROUTING -m comment --comment "hairpin: an endpoint reaching itself" -m set --match-set KIPVS-LOOP-BACK dst,dst,src -j MASQUERADE/,
    );
    t.match(
      inNs('ip6tables-nft-save', '-t', 'filter'),
      /-A KIPVS-SVC-ADDR -m set --match-set KIPVS6-CLUSTER-IP dst,dst -j ACCEPT/,
    );
    const ruleCount = () =>
      inNs('iptables-nft-save')
        .split('\n')
        .filter((l) => l.startsWith('-A ')).length;
    const before = ruleCount();

    // Again, forced: the same rules, the jumps not duplicated.
    t.same(await nf.syncRules(planner.netfilter, true), []);
    t.same(await nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), [], true), []);
    t.equal(ruleCount(), before, 'idempotent');

    // One Service goes away: only its entries are deleted.
    planner.model.apply({ kind: 'Service', previous: objects[4]!, current: null });
    planner.update({ changedServices: ['default/lb'], nodeChanged: false, problems: [] });
    const changed = planner.takeSetChanges();
    t.ok(changed.includes('KIPVS-LB 203.0.113.50,tcp:80'));
    t.same(await nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), changed, false), []);
    t.same(members('KIPVS-CLUSTER-IP'), ['10.96.0.1,tcp:80']);
    t.same(members('KIPVS-LB').length, 0);

    // Someone empties a set behind our back: the next full sync notices and rebuilds it.
    inNs('ipset', 'flush', 'KIPVS-CLUSTER-IP');
    t.same(await nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), [], true), []);
    t.same(members('KIPVS-CLUSTER-IP'), ['10.96.0.1,tcp:80'], 'rebuilt by create-and-swap');

    // A broken restore is reported and counted, not thrown.
    const broken = new NetfilterApplier({ exec, log: quiet, metrics, backend, families: [4] });
    const errs = await broken.syncRules({ ...planner.netfilter, notLocal: { 4: '! -s not-a-cidr', 6: null } }, true);
    t.equal(errs.length, 1, 'a bad rule is refused by iptables-restore');
    t.match(await metrics.text(), /kubeproxy_sync_proxy_rules_iptables_restore_failures_total\{ip_family="IPv4"\} 1/);
    t.equal(ruleCount(), before, 'and nothing of it was applied (atomic per table)');

    // Someone else's chain, jump and set: cleanup must leave them.
    inNs('iptables-nft', '-t', 'nat', '-N', 'KUBE-SERVICES');
    inNs('iptables-nft', '-t', 'nat', '-A', 'PREROUTING', '-j', 'KUBE-SERVICES');
    inNs('iptables-nft', '-t', 'filter', '-A', 'INPUT', '-s', '192.0.2.1', '-j', 'ACCEPT');
    inNs('ipset', 'create', 'KUBE-CLUSTER-IP', 'hash:ip');
    let spawned = 0;
    const counting = { run: (cmd: string, args: string[], input?: string) => (spawned++, exec.run(cmd, args, input)) };
    t.same(await new NetfilterApplier({ exec: counting, log: quiet, backend, families: [4, 6] }).cleanup(), []);
    t.ok(spawned <= 6, `a handful of processes (${spawned}), not one per chain and jump`);
    t.notMatch(inNs('iptables-nft-save'), /KIPVS/, 'no chain or jump left');
    t.notMatch(inNs('ip6tables-nft-save'), /KIPVS/);
    t.match(inNs('iptables-nft-save', '-t', 'nat'), /-A PREROUTING -j KUBE-SERVICES/, "another proxy's jump stays");
    t.match(
      inNs('iptables-nft-save', '-t', 'filter'),
      /-A INPUT -s 192\.0\.2\.1\/32 -j ACCEPT/,
      'a rule of the node stays',
    );
    t.equal(inNs('ipset', 'list', '-n').trim(), 'KUBE-CLUSTER-IP', "no set of ours left, another's stays");
    t.same(await nf.cleanup(), [], 'a second cleanup finds nothing and says nothing');
  },
);

t.test('cleanup text: our chains flushed and deleted, jumps into them deleted, nothing else', async (t) => {
  const save = [
    '# Generated by iptables-nft-save',
    '*mangle',
    ':PREROUTING ACCEPT [0:0]',
    'COMMIT',
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':KUBE-SERVICES - [0:0]',
    ':KIPVS-SERVICES - [0:0]',
    ':KIPVS-OLD-CHAIN - [0:0]',
    '-A PREROUTING -m comment --comment "kube-ipvs service portals" -j KIPVS-SERVICES',
    '-A PREROUTING -j KUBE-SERVICES',
    '-A KUBE-SERVICES -j KIPVS-OLD-CHAIN',
    '-A KIPVS-SERVICES -j KIPVS-OLD-CHAIN',
    'COMMIT',
  ].join('\n');
  t.equal(
    cleanupRestoreInput(save),
    [
      '*nat',
      ':KIPVS-SERVICES - [0:0]',
      ':KIPVS-OLD-CHAIN - [0:0]',
      '-D PREROUTING -m comment --comment "kube-ipvs service portals" -j KIPVS-SERVICES',
      '-D KUBE-SERVICES -j KIPVS-OLD-CHAIN',
      '-X KIPVS-SERVICES',
      '-X KIPVS-OLD-CHAIN',
      'COMMIT',
      '',
    ].join('\n'),
  );
  t.equal(
    cleanupRestoreInput('*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n'),
    '',
    'nothing of ours: no input at all',
  );
});

t.test('conntrack cleanup: per family, nothing-to-delete is fine, failures logged and counted', async (t) => {
  const exec = new FakeExec();
  exec.handlers.push((_c, args) => {
    if (args.includes('10.244.0.9'))
      return { code: 1, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n' };
    if (args.includes('--reply-src'))
      return { code: 0, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted.\n' };
    if (args.includes('ipv6'))
      return { code: 1, stdout: '', stderr: 'conntrack: Operation failed: invalid parameters\n' };
    return { code: 0, stdout: '', stderr: '1 flow entries have been deleted.\n' };
  });
  const logs: string[] = [];
  const metrics = new Metrics({ defaultMetrics: false });
  const c = new ConntrackCleaner(exec, new Logger({ sink: (l) => void logs.push(l) }), metrics);
  const r = await c.clean([
    { family: 4, address: '10.96.0.10', port: 53, endpoint: '10.244.0.5' },
    { family: 4, address: '10.96.0.10', port: 53, endpoint: '10.244.0.5' },
    { family: 4, address: '10.96.0.10', port: 53, endpoint: '10.244.0.9' },
    { family: 4, address: '10.96.0.11', port: 53 },
    { family: 6, address: 'fd00::a', port: 53 },
  ]);
  t.equal(r.deleted, 3, '2 + 0 + 1');
  t.equal(r.errors.length, 1, 'the IPv6 failure');
  t.same(exec.calls[0]!.args, [
    '-D',
    '-f',
    'ipv4',
    '-p',
    'udp',
    '--orig-dst',
    '10.96.0.10',
    '--orig-port-dst',
    '53',
    '--reply-src',
    '10.244.0.5',
  ]);
  t.equal(exec.calls.length, 4, 'the duplicate asked once');
  const text = await metrics.text();
  t.match(text, /kubeproxy_conntrack_reconciler_deleted_entries_total\{ip_family="IPv4"\} 3/);
  t.match(text, /kubeproxy_conntrack_reconciler_sync_duration_seconds_count\{ip_family="IPv6"\} 1/);
  t.ok(logs.some((l) => l.includes('cannot delete stale UDP conntrack entries')));
});

t.test(
  'iptables-legacy: detected when it holds the rules, and the same text loads there',
  { skip: why ?? false },
  async (t) => {
    const { exec, inNs } = netns(t, 'kipvs-nfl');
    const setUp = [
      ['-t', 'filter', '-A', 'INPUT', '-s', '192.0.2.1', '-j', 'ACCEPT'],
      ['-t', 'nat', '-N', 'KUBE-SERVICES'],
    ];
    if (!legacyWorks(t, inNs, ...setUp)) return;
    t.equal(await detectBackend(exec), 'legacy', 'a node whose rules are in legacy stays on legacy');
    const nf = new NetfilterApplier({ exec, log: quiet, backend: 'legacy', families: [4] });
    const { planner } = planObjects(objects);
    t.same(await nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), [], true), []);
    t.same(await nf.syncRules(planner.netfilter, true), []);
    t.match(
      inNs('iptables-legacy-save', '-t', 'nat'),
      /-A POSTROUTING -m comment --comment "kube-ipvs postrouting rules" -j KIPVS-POSTROUTING/,
    );
    t.notMatch(inNs('iptables-nft-save'), /KIPVS/, 'nothing written to nft');
    t.same(await nf.cleanup(), []);
    t.notMatch(inNs('iptables-legacy-save'), /KIPVS/);
    t.match(
      inNs('iptables-legacy-save', '-t', 'filter'),
      /-A INPUT -s 192\.0\.2\.1\/32 -j ACCEPT/,
      "the node's own rule stays",
    );
    t.match(inNs('iptables-legacy-save', '-t', 'nat'), /:KUBE-SERVICES/, "another proxy's chain stays");
  },
);

t.test(
  "iptables-legacy: a restore waits for the xtables lock another writer holds (the takeover removing kube-proxy's " +
    'chains), one held past its 5 s fails whole, is counted, and the next sync puts the rules in',
  { skip: why ?? false },
  async (t) => {
    const { exec, inNs } = netns(t, 'kipvs-nfx');
    if (!legacyWorks(t, inNs, ['-t', 'nat', '-N', 'KUBE-SERVICES'])) return;
    // The lock is a file every legacy writer on the host shares (/run/xtables.lock): this test holds one of its own,
    // which the tools it starts are pointed at (XTABLES_LOCKFILE, inherited through `ip netns exec`).
    const dir = mkdtempSync(join(tmpdir(), 'kipvs-xtlock-'));
    const lock = join(dir, 'xtables.lock');
    const before = process.env.XTABLES_LOCKFILE;
    process.env.XTABLES_LOCKFILE = lock;
    const holders: ChildProcess[] = [];
    t.teardown(() => {
      for (const h of holders) {
        h.stdin?.end();
        h.kill('SIGKILL');
      }
      if (before === undefined) delete process.env.XTABLES_LOCKFILE;
      else process.env.XTABLES_LOCKFILE = before;
      rmSync(dir, { recursive: true, force: true });
    });
    const held = () => spawnSync('flock', ['--nonblock', lock, 'true']).status !== 0;
    /**
     * Another writer takes the lock (flock running `cat`, which holds it until its input ends); resolves once it has
     * it, with the release. It lets go by itself after `atMostMs`, so a restore that never gives up cannot hang here.
     */
    const hold = async (atMostMs: number) => {
      const h = spawn('flock', ['--exclusive', lock, 'cat'], { stdio: ['pipe', 'ignore', 'ignore'] });
      holders.push(h);
      const ended = new Promise<void>((r) => h.once('exit', () => r()));
      const release = () => {
        h.stdin?.end();
        return ended;
      };
      const timer = setTimeout(() => h.stdin?.end(), atMostMs);
      h.once('exit', () => clearTimeout(timer));
      while (!held()) await new Promise((r) => setTimeout(r, 20));
      return release;
    };
    const metrics = new Metrics({ defaultMetrics: false });
    const logs: string[] = [];
    const nf = new NetfilterApplier({
      exec,
      log: new Logger({ sink: (l) => void logs.push(l) }),
      metrics,
      backend: 'legacy',
      families: [4],
    });
    const { planner } = planObjects(objects);
    const rules = () =>
      inNs('iptables-legacy-save')
        .replace(/^#.*\n/gm, '')
        .replace(/\[\d+:\d+\]/g, '');

    t.same(await nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), [], true), [], 'the sets first');

    // Held for 2 s: the restore waits, then goes in.
    await hold(2000);
    let started = performance.now();
    t.same(await nf.syncRules(planner.netfilter, true), [], 'the rules went in once the lock was free');
    const waited = performance.now() - started;
    t.ok(waited >= 1500, `it waited for the lock (${Math.round(waited)} ms)`);
    const first = rules();
    t.match(first, /-A KIPVS-POSTROUTING /);
    t.match(first, /:KUBE-SERVICES/, "the other writer's chain stays");

    // Held (until it is let go below, 20 s at most) while the rules change (masquerade-all): the restore gives up after
    // its 5 s with a clear error and a count; the kernel keeps the rules it had, whole (iptables-restore commits a
    // table or nothing). A restore that waited for the lock instead would get in once it is let go: no error.
    const masqueradeAll = { ...planner.netfilter, masqueradeAll: true };
    t.not(masqueradeAll.masqueradeAll, planner.netfilter.masqueradeAll, 'the next rules differ');
    const release = await hold(20_000);
    started = performance.now();
    const errors = await nf.syncRules(masqueradeAll, true);
    const gaveUp = performance.now() - started;
    t.equal(errors.length, 1, 'one error');
    t.match(errors[0]?.message, /^iptables-legacy-restore: exit 4: [^]*the xtables lock/, 'naming the lock');
    t.ok(gaveUp >= 4500, `it gave up after its 5 s (${Math.round(gaveUp)} ms)`);
    t.match(await metrics.text(), /kubeproxy_sync_proxy_rules_iptables_restore_failures_total\{ip_family="IPv4"\} 1/);
    t.ok(
      logs.some((l) => l.includes('iptables-restore failed')),
      'logged',
    );
    t.equal(rules(), first, 'nothing half-applied: the rules are as they were');
    await release();
    t.ok(!held(), 'the other writer is done');

    // The next sync (the runner retries a failed one) puts the new rules in.
    t.same(await nf.syncRules(masqueradeAll, false), [], 'retried: in');
    const after = rules();
    t.not(after, first, 'the new rules are in');
    t.match(after, /:KUBE-SERVICES/, "and the other writer's chain still stays");
    t.same(await nf.cleanup(), []);
  },
);

t.test(
  'a full sync with nothing to change runs one save per family and one ipset list; what someone removed is put back',
  { skip: why ?? false },
  async (t) => {
    const { exec, inNs } = netns(t, 'kipvs-nfc');
    const ran: string[] = [];
    const counting = {
      run: (cmd: string, args: string[], input?: string) => (
        ran.push(`${cmd} ${args[0] ?? ''}`),
        exec.run(cmd, args, input)
      ),
    };
    const nf = new NetfilterApplier({ exec: counting, log: quiet, backend: 'nft', families: [4, 6] });
    const { planner } = planObjects(objects);
    // With the sizes the planner keeps, as the daemon passes them.
    const sets = (changed: string[], full: boolean) =>
      nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), changed, full, planner.setSizes());
    const sync = async () => {
      ran.length = 0;
      t.same(await sets([], true), []);
      t.same(await nf.syncRules(planner.netfilter, true), []);
      return [...ran];
    };
    const first = await sync();
    t.same(
      first.filter((c) => c.startsWith('ip')).map((c) => c.split(' ')[0]),
      [
        'ipset',
        'ipset',
        'iptables-nft-save',
        'iptables-nft-restore',
        'iptables-nft-save',
        'ip6tables-nft-save',
        'ip6tables-nft-restore',
        'ip6tables-nft-save',
      ],
      'first: ipset list and restore, then per family a save, one restore with the jumps in it, a save',
    );
    t.match(
      inNs('iptables-nft-save', '-t', 'filter'),
      /-A INPUT -m comment --comment "kube-ipvs service acceptance and firewall" -j KIPVS-INPUT/,
    );
    t.match(
      inNs('ip6tables-nft-save', '-t', 'mangle'),
      /-A OUTPUT -m comment --comment "kube-ipvs in-cluster traffic to Local LoadBalancers" -j KIPVS-LB-LOCAL/,
    );
    t.same(await sync(), ['ipset list', 'iptables-nft-save ', 'ip6tables-nft-save '], 'nothing to do: three processes');

    // Someone flushes one of our chains and deletes a jump: the next full sync restores once.
    inNs('iptables-nft', '-t', 'filter', '-F', 'KIPVS-FORWARD');
    inNs(
      'ip6tables-nft',
      '-t',
      'nat',
      '-D',
      'PREROUTING',
      '-m',
      'comment',
      '--comment',
      'kube-ipvs service portals',
      '-j',
      'KIPVS-SERVICES',
    );
    const repair = await sync();
    t.same(
      repair.filter((c) => c.includes('restore')).map((c) => c.split(' ')[0]),
      ['iptables-nft-restore', 'ip6tables-nft-restore'],
    );
    t.match(
      inNs('iptables-nft-save', '-t', 'filter'),
      /-A KIPVS-FORWARD -m conntrack --ctstate INVALID -j DROP/,
      'chain refilled',
    );
    const jumps = inNs('ip6tables-nft-save', '-t', 'nat')
      .split('\n')
      .filter((l) => l.endsWith('-j KIPVS-SERVICES'));
    t.equal(jumps.length, 2, 'the deleted jump is back, the other not doubled');
    t.same(await sync(), ['ipset list', 'iptables-nft-save ', 'ip6tables-nft-save '], 'and quiet again');

    // A Service goes: its entries leave over an incremental sync, and the full sync after it finds every set as
    // expected (what kube-ipvs holds in memory was counted along).
    planner.model.apply({ kind: 'Service', previous: objects[4]!, current: null });
    planner.update({ changedServices: ['default/lb'], nodeChanged: false, problems: [] });
    const gone = planner.takeSetChanges();
    t.ok(gone.length >= 2, `entries gone: ${gone.join(', ')}`);
    t.same(await sets(gone, false), []);
    t.notOk(inNs('ipset', 'list', 'KIPVS-LB').includes('203.0.113.50'), 'gone from the kernel');
    t.same(await sync(), ['ipset list', 'iptables-nft-save ', 'ip6tables-nft-save '], 'quiet after the change');

    // A change that swaps one entry for another (the port 80 -> 81: every set's count stays) taken by a full sync,
    // as the daemon does when a change and the periodic resync fall together: applied, not lost to the counts.
    const members = (set: string) =>
      inNs('ipset', 'list', set).split('Members:\n')[1]!.trim().split('\n').filter(Boolean).sort();
    const moved = service('web', {
      clusterIPs: ['10.96.0.1', 'fd00:96::1'],
      type: 'NodePort',
      ports: [{ name: 'http', protocol: 'TCP', port: 81, targetPort: 8080, nodePort: 30080 }],
    });
    planner.model.apply({ kind: 'Service', previous: objects[1]!, current: moved });
    planner.update({ changedServices: ['default/web'], nodeChanged: false, problems: [] });
    const swapped = planner.takeSetChanges();
    t.ok(swapped.includes('KIPVS-CLUSTER-IP 10.96.0.1,tcp:81'), `swapped: ${swapped.join(', ')}`);
    ran.length = 0;
    t.same(await sets(swapped, true), []);
    t.same(members('KIPVS-CLUSTER-IP'), ['10.96.0.1,tcp:81'], 'the new entry in, the old one out');
    t.same(members('KIPVS6-CLUSTER-IP'), ['fd00:96::1,tcp:81']);
    t.same(await sync(), ['ipset list', 'iptables-nft-save ', 'ip6tables-nft-save '], 'and quiet after it');

    // An entry removed behind our back: the set is rebuilt (ipset restore), the rules untouched.
    inNs('ipset', 'del', 'KIPVS-CLUSTER-IP', '10.96.0.1,tcp:81');
    t.same(await sync(), ['ipset list', 'ipset restore', 'iptables-nft-save ', 'ip6tables-nft-save ']);
    t.same(await nf.cleanup(), []);
  },
);

t.test(
  'a source range of everyone (0.0.0.0/0, ::/0) loads: ipset refuses a /0 net, so it is two halves',
  { skip: why ?? false },
  async (t) => {
    const { exec, inNs } = netns(t, 'kipvs-nf0');
    const nf = new NetfilterApplier({ exec, log: quiet, backend: 'nft', families: [4, 6] });
    const { planner } = planObjects([
      node('node-a', [['InternalIP', '192.168.1.10']]),
      service('open', {
        clusterIPs: ['10.96.0.3', 'fd00:96::3'],
        type: 'LoadBalancer',
        lbIngress: [{ ip: '203.0.113.51' }, { ip: 'fd00:113::51' }],
        ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30082 }],
        spec: { ipFamilies: ['IPv4', 'IPv6'], loadBalancerSourceRanges: ['0.0.0.0/0', '::/0', '198.51.100.0/24'] },
      }),
      slice('open-1', 'open', [ep('10.244.1.5')]),
    ]);
    t.same(
      await nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), [], true),
      [],
      'sets created and filled',
    );
    const members = (set: string) =>
      inNs('ipset', 'list', set).split('Members:\n')[1]!.trim().split('\n').filter(Boolean).sort();
    t.same(members('KIPVS-LB-SRC-CIDR'), [
      '203.0.113.51,tcp:80,0.0.0.0/1',
      '203.0.113.51,tcp:80,128.0.0.0/1',
      '203.0.113.51,tcp:80,198.51.100.0/24',
    ]);
    t.same(members('KIPVS6-LB-SRC-CIDR'), ['fd00:113::51,tcp:80,8000::/1', 'fd00:113::51,tcp:80,::/1']);
    t.same(members('KIPVS-CLUSTER-IP'), ['10.96.0.3,tcp:80'], 'the other sets loaded with it');
  },
);

t.test(
  'a set rebuild longer than a restore chunk runs in several ipset restore processes and ends the same',
  { skip: why ?? false },
  async (t) => {
    const { exec, inNs } = netns(t, 'kipvs-nfk');
    let restores = 0;
    const counting = {
      run: (cmd: string, args: string[], input?: string) => {
        if (cmd === 'ipset' && args[0] === 'restore') restores++;
        return exec.run(cmd, args, input);
      },
    };
    // 300 endpoints: 300 hairpin entries, with the other sets' lines well past three chunks of 100.
    const eps = Array.from({ length: 300 }, (_, i) => ep(`10.244.${i >> 7}.${(i & 127) + 1}`, { node: 'node-a' }));
    const { planner } = planObjects([
      node('node-a', [['InternalIP', '192.168.1.10']]),
      service('big', {
        clusterIPs: ['10.96.0.9'],
        ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
      }),
      // (in slices of 100, as the EndpointSlice controller writes them)
      slice('big-1', 'big', eps.slice(0, 100)),
      slice('big-2', 'big', eps.slice(100, 200)),
      slice('big-3', 'big', eps.slice(200)),
    ]);
    const nf = new NetfilterApplier({
      exec: counting,
      log: quiet,
      backend: 'nft',
      families: [4],
      restoreChunkLines: 100,
    });
    t.same(await nf.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), [], true), []);
    t.ok(restores >= 4, `${restores} restores of at most 100 lines`);
    const want = [...planner.setEntries()].filter((e) => e.startsWith('KIPVS-LOOP-BACK ')).length;
    t.ok(want >= 300, `${want} hairpin entries planned`);
    const saved = inNs('ipset', 'save', 'KIPVS-LOOP-BACK')
      .split('\n')
      .filter((l) => l.startsWith('add '));
    t.equal(saved.length, want, 'every entry in the kernel');
    t.notMatch(inNs('ipset', 'list', '-n'), /-T\b/, 'no temporary set left behind');
    // The same through one process (the default chunk) ends with the same members.
    const one = new NetfilterApplier({ exec, log: quiet, backend: 'nft', families: [4] });
    inNs('ipset', 'del', 'KIPVS-LOOP-BACK', saved[0]!.split(' ').slice(2).join(' '));
    t.same(await one.syncSets((e) => planner.setEntryWanted(e), planner.setEntries(), [], true), []);
    t.same(
      inNs('ipset', 'save', 'KIPVS-LOOP-BACK')
        .split('\n')
        .filter((l) => l.startsWith('add '))
        .sort(),
      [...saved].sort(),
    );
    t.same(await nf.cleanup(), []);
  },
);
