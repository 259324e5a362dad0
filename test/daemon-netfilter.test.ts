// The daemon drives the iptables stage and conntrack cleanup: sets and rules before IPVS on the
// first sync, only changed entries afterwards, failures retried and not tied to one Service,
// stale UDP flows deleted when a UDP endpoint goes away. Tools are recorded, not run.
import t from 'tap';
import { defaultConfig, type Config } from '../src/config/config.ts';
import { Daemon } from '../src/daemon.ts';
import { ConntrackCleaner } from '../src/dataplane/conntrack.ts';
import { FakeExec } from '../src/dataplane/exec.ts';
import { FakeIpvs } from '../src/dataplane/ipvs/fake.ts';
import { FakeLinks } from '../src/dataplane/links.ts';
import { NetfilterApplier } from '../src/dataplane/netfilter.ts';
import { MemoryOwnership } from '../src/dataplane/ownership.ts';
import type { Change } from '../src/model/model.ts';
import { Logger } from '../src/observe/log.ts';
import { ManualClock } from './support/clock.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { PushSource } from './support/source.ts';

const add = (kind: Change['kind'], current: Record<string, unknown>): Change => ({ kind, previous: null, current });

/** A daemon on in-memory twins whose netfilter tools are recorded by `exec` (IPv4 only, the nft backend). */
function netfilterDaemon(
  t: { teardown: (f: () => void) => void },
  cfg: Config,
  exec: FakeExec,
  clock = new ManualClock(),
  logs: string[] = [],
) {
  const log = new Logger({ sink: (l) => void logs.push(l) });
  const source = new PushSource();
  const ipvs = new FakeIpvs();
  const daemon = new Daemon(
    { source, config: cfg, nodeName: 'node-a' },
    {
      ipvs,
      links: new FakeLinks(),
      owned: new MemoryOwnership(),
      sysctl: { read: () => null, write: () => {} },
      log,
      kernelRelease: '6.1.0',
      clock,
      netfilter: new NetfilterApplier({ exec, log, backend: 'nft', families: [4] }),
      conntrack: new ConntrackCleaner(exec, log),
    },
  );
  t.teardown(() => daemon.stop());
  return { clock, source, ipvs, daemon };
}

t.test('sets and rules first, then only what changed; UDP endpoint removal cleans conntrack', async (t) => {
  const cfg = defaultConfig();
  cfg.ipvs.minSyncPeriodSeconds = 0;
  const exec = new FakeExec();
  let failRestore = false;
  exec.handlers.push((cmd) =>
    failRestore && cmd.endsWith('-restore') && cmd.startsWith('iptables')
      ? { code: 2, stdout: '', stderr: 'iptables-restore: line 3 failed' }
      : undefined,
  );
  const { clock, source, ipvs, daemon } = netfilterDaemon(t, cfg, exec);
  // 10.244.0.x on this node (node-a), 10.244.1.x on another: only this node's endpoints get a hairpin entry.
  const dnsSlice = (...ips: string[]) =>
    slice(
      'dns-1',
      'dns',
      ips.map((ip) => ep(ip, { node: ip.startsWith('10.244.0.') ? 'node-a' : 'node-b' })),
      { ports: [{ name: 'dns', protocol: 'UDP', port: 53 }] },
    );
  source.initial = [
    add('Node', node('node-a', [['InternalIP', '192.168.1.10']])),
    add('Service', service('dns', { clusterIPs: ['10.96.0.10'], ports: [{ name: 'dns', protocol: 'UDP', port: 53 }] })),
    add('EndpointSlice', dnsSlice('10.244.0.5', '10.244.0.6')),
  ];
  await daemon.start();
  await clock.advance(0);
  await daemon.runner.whenIdle();
  const cmds = exec.calls.map((c) => c.cmd);
  t.ok(cmds.indexOf('ipset') < cmds.indexOf('iptables-nft-restore'), 'sets before the rules that use them');
  const restore = exec.calls.find((c) => c.cmd === 'ipset' && c.args[0] === 'restore')!;
  t.match(restore.input!, /add KIPVS-CLUSTER-IP-T 10\.96\.0\.10,udp:53\n/, 'first sync: filled off to the side');
  t.match(restore.input!, /swap KIPVS-CLUSTER-IP-T KIPVS-CLUSTER-IP\n/);
  t.ok(
    exec.calls.some((c) => c.cmd === 'iptables-nft-save'),
    'jumps checked (one save)',
  );
  t.match(
    exec.calls.find((c) => c.cmd === 'iptables-nft-restore')?.input ?? '',
    /-I PREROUTING 1 -m comment --comment "kube-ipvs service portals" -j KIPVS-SERVICES\n/,
    'and the missing ones inserted by the same restore',
  );
  t.notOk(
    exec.calls.some((c) => c.args.includes('-C')),
    'no process per jump',
  );
  t.equal(Object.keys(await ipvs.services()).length, 1, 'IPVS programmed too');

  // One endpoint goes: its loop-back entry is deleted, nothing is rebuilt, its UDP flows are cleaned.
  exec.calls.length = 0;
  source.push({
    kind: 'EndpointSlice',
    previous: dnsSlice('10.244.0.5', '10.244.0.6'),
    current: dnsSlice('10.244.0.5'),
  });
  await clock.advance(0);
  await daemon.runner.whenIdle();
  const inc = exec.calls.filter((c) => c.cmd === 'ipset');
  t.equal(inc.length, 1);
  t.equal(inc[0]!.input, 'del KIPVS-LOOP-BACK 10.244.0.6,udp:53,10.244.0.6 -exist\n', 'just the change');
  t.notOk(
    exec.calls.some((c) => c.cmd.includes('iptables')),
    'constant rules not restored or checked again until the next full sync',
  );
  t.same(exec.calls.find((c) => c.cmd === 'conntrack')?.args, [
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
    '10.244.0.6',
  ]);

  // An endpoint on another node comes and goes: IPVS only, no ipset request (a hairpin through this node's IPVS is
  // only ever from a pod on this node).
  exec.calls.length = 0;
  source.push({
    kind: 'EndpointSlice',
    previous: dnsSlice('10.244.0.5'),
    current: dnsSlice('10.244.0.5', '10.244.1.7'),
  });
  await clock.advance(0);
  await daemon.runner.whenIdle();
  t.same(
    (await ipvs.destinations({ family: 4, protocol: 'UDP', address: '10.96.0.10', port: 53 })).map((d) => d.address),
    ['10.244.0.5', '10.244.1.7'],
    'the remote endpoint is in IPVS',
  );
  t.same(
    exec.calls.filter((c) => c.cmd === 'ipset'),
    [],
    'and in no ipset',
  );

  // iptables-restore fails on a full sync: an error not tied to a Service, retried until it works.
  failRestore = true;
  await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
  t.ok(daemon.recentErrors.some((e) => e.code === 'NETFILTER' && /iptables-restore/.test(e.message)));
  t.ok(
    daemon.lastSync!.errors.some((e) => !e.service),
    'not attributed to a Service',
  );
  failRestore = false;
  exec.calls.length = 0;
  await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
  await daemon.runner.whenIdle();
  t.ok(
    exec.calls.some((c) => c.cmd === 'iptables-nft-restore'),
    'restored on the retry',
  );
  t.equal(daemon.lastSync!.errors.length, 0);
});

t.test("detectLocalMode NodeCIDR: the rules follow the Node's podCIDR when it changes", async (t) => {
  // The rules' text is rendered once per set of inputs (src/dataplane/netfilter.ts): a Node change must still reach it.
  const cfg = defaultConfig();
  cfg.detectLocalMode = 'NodeCIDR';
  const exec = new FakeExec();
  const { clock, source, daemon } = netfilterDaemon(t, cfg, exec);
  const withCIDR = (cidr: string) => ({
    ...node('node-a', [['InternalIP', '192.168.1.10']]),
    spec: { podCIDRs: [cidr] },
  });
  source.initial = [add('Node', withCIDR('10.244.1.0/24'))];
  await daemon.start();
  await clock.advance(0);
  await daemon.runner.whenIdle();
  const restores = () => exec.calls.filter((c) => c.cmd === 'iptables-nft-restore').map((c) => c.input ?? '');
  t.match(restores().at(-1), /! -s 10\.244\.1\.0\/24 /, 'the first rules: traffic from outside 10.244.1.0/24');
  const before = restores().length;
  source.push({ kind: 'Node', previous: withCIDR('10.244.1.0/24'), current: withCIDR('10.244.9.0/24') });
  await clock.advance(0);
  await daemon.runner.whenIdle();
  t.equal(restores().length, before + 1, 'restored again');
  t.match(restores().at(-1), /! -s 10\.244\.9\.0\/24 /, 'with the new podCIDR');
  t.notMatch(restores().at(-1), /10\.244\.1\.0\/24/);
  // A Node change that leaves the rules' inputs alone (a label) restores nothing.
  const labelled = withCIDR('10.244.9.0/24') as { metadata?: { labels?: Record<string, string> } };
  labelled.metadata = { ...labelled.metadata, labels: { team: 'a' } };
  const rules = daemon.planner.netfilter;
  source.push({ kind: 'Node', previous: withCIDR('10.244.9.0/24'), current: labelled });
  await clock.advance(0);
  await daemon.runner.whenIdle();
  t.equal(daemon.planner.netfilter, rules, 'the same rules inputs, the same object');
  t.equal(restores().length, before + 1, 'no restore');
});

t.test(
  'between full resyncs spaced far apart, a check every syncPeriod: netfilter compared, IPVS looked up, a flush repaired',
  async (t) => {
    /** A clock on which each full sync's read of IPVS takes 100 s, so the next full resync is an hour away. */
    class SlowFullClock extends ManualClock {
      skew = 0;
      override now() {
        return super.now() + this.skew;
      }
    }
    const cfg = defaultConfig();
    cfg.ipvs.minSyncPeriodSeconds = 0;
    const exec = new FakeExec();
    const clock = new SlowFullClock();
    const logs: string[] = [];
    const { source, ipvs, daemon } = netfilterDaemon(t, cfg, exec, clock, logs);
    let fullReads = 0;
    const services = ipvs.services.bind(ipvs);
    ipvs.services = async (...a: Parameters<FakeIpvs['services']>) => {
      fullReads++;
      clock.skew += 100_000;
      return services(...a);
    };
    source.initial = [
      add('Node', node('node-a', [['InternalIP', '192.168.1.10']])),
      add(
        'Service',
        service('dns', { clusterIPs: ['10.96.0.10'], ports: [{ name: 'dns', protocol: 'UDP', port: 53 }] }),
      ),
      add(
        'EndpointSlice',
        slice('dns-1', 'dns', [ep('10.244.0.5', { node: 'node-a' })], {
          ports: [{ name: 'dns', protocol: 'UDP', port: 53 }],
        }),
      ),
    ];
    await daemon.start();
    await clock.advance(0);
    await daemon.runner.whenIdle();
    t.equal(fullReads, 1, 'the cold sync');
    t.equal(daemon.runner.fullIntervalMs, 3_600_000, 'the next full resync an hour away');

    exec.calls.length = 0;
    await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
    await daemon.runner.whenIdle();
    t.equal(fullReads, 1, 'syncPeriod later: no full resync');
    t.ok(
      exec.calls.some((c) => c.cmd === 'iptables-nft-save'),
      'but the rules compared',
    );
    t.ok(
      exec.calls.some((c) => c.cmd === 'ipset' && c.args[0] === 'list'),
      "and the sets' sizes",
    );

    // IPVS flushed behind our back (ipvsadm -C): the next check sees it and a full resync follows at once.
    await ipvs.deleteService({ family: 4, protocol: 'UDP', address: '10.96.0.10', port: 53 });
    await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
    await daemon.runner.whenIdle();
    t.equal(fullReads, 2, 'a full resync');
    t.same(
      (await ipvs.destinations({ family: 4, protocol: 'UDP', address: '10.96.0.10', port: 53 })).map((d) => d.address),
      ['10.244.0.5'],
      'the virtual server and its destination back',
    );
    t.match(logs.join('\n'), /periodic check: virtual server UDP\/10\.96\.0\.10:53 is gone; full resync now/);
    t.match(
      await daemon.metrics.registry.getSingleMetricAsString('kubeipvs_periodic_check_drift_total'),
      /kubeipvs_periodic_check_drift_total\{what="virtual_server"\} 1/,
    );

    // A lookup that fails says nothing either way: a full resync too.
    const lookup = ipvs.service.bind(ipvs);
    ipvs.service = async () => {
      ipvs.service = lookup;
      throw Object.assign(new Error('genl: EIO'), { code: 'EIO' });
    };
    await clock.advance(cfg.ipvs.syncPeriodSeconds * 1000);
    await daemon.runner.whenIdle();
    t.equal(fullReads, 3, 'a full resync after a failed lookup');
    t.match(logs.join('\n'), /periodic check: IPVS lookup failed; full resync now/);
  },
);
