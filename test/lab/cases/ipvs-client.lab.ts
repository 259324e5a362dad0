// Inside the lab VM: the IPVS client and the dummy interface against the real kernel,
// cross-checked with ipvsadm and iproute2.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { IpvsError, NetlinkIpvs } from '../../../src/dataplane/ipvs/client.ts';
import { FwdMethod, SvcFlag } from '../../../src/dataplane/ipvs/constants.ts';
import type { IpvsService } from '../../../src/dataplane/ipvs/types.ts';
import { NetlinkLinks } from '../../../src/dataplane/links.ts';

const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });

const tcp: IpvsService = {
  family: 4,
  protocol: 'TCP',
  address: '10.200.0.1',
  port: 80,
  scheduler: 'rr',
  flags: 0,
  timeout: 0,
  netmask: 0xffffffff,
};

t.test('IPVS over generic netlink', async (t) => {
  const ipvs = await NetlinkIpvs.open();
  t.teardown(() => ipvs.close());
  await ipvs.flush();

  const info = await ipvs.info();
  t.match(info.version, /^1\.\d+\.\d+$/, `kernel IPVS ${info.version}`);
  t.ok(info.connTableSize > 0);

  await ipvs.addService(tcp);
  await t.rejects(ipvs.addService(tcp), { name: 'IpvsError', code: 'EEXIST' }, 'adding twice: EEXIST');
  const persistent: IpvsService = {
    family: 6,
    protocol: 'UDP',
    address: 'fd00:200::1',
    port: 53,
    scheduler: 'sh',
    flags: SvcFlag.PERSISTENT | SvcFlag.SCHED1 | SvcFlag.SCHED2,
    timeout: 600,
    netmask: 128,
  };
  await ipvs.addService(persistent);
  await ipvs.addService({ family: 4, fwmark: 4242, scheduler: 'wlc', flags: 0, timeout: 0, netmask: 0xffffffff });
  await ipvs.addService({
    family: 4,
    protocol: 'SCTP',
    address: '10.200.0.2',
    port: 3868,
    scheduler: 'mh',
    flags: 0,
    timeout: 0,
    netmask: 0xffffffff,
  });

  const listed = await ipvs.services();
  t.equal(listed.length, 4, 'dump lists every service');
  const p = listed.find((s) => s.address === 'fd00:200::1');
  t.equal(p?.scheduler, 'sh');
  t.equal(p?.timeout, 600);
  t.equal(
    (p?.flags ?? 0) & (SvcFlag.PERSISTENT | SvcFlag.SCHED1 | SvcFlag.SCHED2),
    SvcFlag.PERSISTENT | SvcFlag.SCHED1 | SvcFlag.SCHED2,
    'persistence and scheduler flags',
  );
  t.ok(
    listed.some((s) => s.fwmark === 4242),
    'fwmark service listed',
  );

  await ipvs.addDestination(tcp, {
    family: 4,
    address: '10.200.1.1',
    port: 8080,
    fwdMethod: FwdMethod.MASQ,
    weight: 1,
    upperThreshold: 0,
    lowerThreshold: 0,
  });
  await ipvs.addDestination(tcp, {
    family: 4,
    address: '10.200.1.2',
    port: 8080,
    fwdMethod: FwdMethod.MASQ,
    weight: 5,
    upperThreshold: 100,
    lowerThreshold: 10,
  });
  await t.rejects(
    ipvs.addDestination(tcp, {
      family: 4,
      address: '10.200.1.2',
      port: 8080,
      fwdMethod: 0,
      weight: 1,
      upperThreshold: 0,
      lowerThreshold: 0,
    }),
    { code: 'EEXIST' },
  );
  await ipvs.updateDestination(tcp, {
    family: 4,
    address: '10.200.1.1',
    port: 8080,
    fwdMethod: FwdMethod.MASQ,
    weight: 0,
    upperThreshold: 0,
    lowerThreshold: 0,
  });
  const dests = await ipvs.destinations(tcp);
  t.same(dests.map((d) => [d.address, d.port, d.weight, d.upperThreshold, d.lowerThreshold]).sort(), [
    ['10.200.1.1', 8080, 0, 0, 0],
    ['10.200.1.2', 8080, 5, 100, 10],
  ]);
  t.equal(dests[0]?.activeConns, 0, 'connection counts decoded');
  t.ok(dests[0]?.stats, 'stats decoded');

  const text = sh('ipvsadm', '-Ln');
  t.match(text, /TCP {2}10\.200\.0\.1:80 rr/, 'ipvsadm sees the TCP service');
  t.match(text, /-> 10\.200\.1\.2:8080 +Masq +5/, 'ipvsadm sees the weight');
  t.match(
    text,
    /UDP {2}\[fd00:200::1\]:53 sh \(sh-fallback,sh-port\) persistent 600/,
    'ipvsadm sees IPv6, flags and persistence',
  );
  t.match(text, /FWM {2}4242 wlc/);
  t.match(text, /SCTP 10\.200\.0\.2:3868 mh/);

  await ipvs.updateService({ ...tcp, scheduler: 'wrr' });
  t.equal((await ipvs.service(tcp))?.scheduler, 'wrr', 'SET_SERVICE changes the scheduler');
  await ipvs.deleteDestination(tcp, { family: 4, address: '10.200.1.1', port: 8080 });
  await t.rejects(
    ipvs.deleteDestination(tcp, { family: 4, address: '10.200.1.1', port: 8080 }),
    { code: 'ENOENT' },
    'deleting a missing destination: ENOENT',
  );
  const missing = { ...tcp, port: 81 };
  await t.rejects(ipvs.deleteService(missing), { code: 'ESRCH' }, 'deleting a missing service: ESRCH');
  await t.rejects(
    ipvs.addDestination(missing, {
      family: 4,
      address: '10.200.1.1',
      port: 1,
      fwdMethod: 0,
      weight: 1,
      upperThreshold: 0,
      lowerThreshold: 0,
    }),
    { code: 'ESRCH' },
  );
  await t.rejects(ipvs.addService({ ...tcp, port: 82, scheduler: 'nosuch' }), IpvsError, 'unknown scheduler refused');
  t.equal(await ipvs.service(missing), null, 'GET of a missing service is null');

  await ipvs.setTimeouts({ tcp: 901, tcpFin: 121, udp: 301 });
  t.same(await ipvs.timeouts(), { tcp: 901, tcpFin: 121, udp: 301 });
  t.match(sh('ipvsadm', '-L', '--timeout'), /901 121 301/);
  await ipvs.zero(tcp);
  await ipvs.zero();
  await ipvs.deleteService(tcp);
  await ipvs.flush();
  t.same(await ipvs.services(), [], 'flush empties the table');
});

t.test('dummy interface and addresses over rtnetlink', async (t) => {
  const links = new NetlinkLinks();
  t.teardown(() => links.close());
  const index = await links.ensureDummy('kipvs-test0');
  t.equal(await links.ensureDummy('kipvs-test0'), index, 'idempotent');
  const show = sh('ip', '-d', 'link', 'show', 'kipvs-test0');
  t.match(show, /NOARP/, 'NOARP');
  t.notMatch(show, /[<,]UP[,>]/, 'left down');
  t.match(show, /dummy/);
  await links.addAddress(index, '10.201.0.1');
  await links.addAddress(index, '10.201.0.1');
  await links.addAddress(index, 'fd00:201::1');
  t.same((await links.addresses(index)).sort(), ['10.201.0.1', 'fd00:201::1']);
  t.match(
    sh('ip', 'route', 'get', '10.201.0.1'),
    /^local 10\.201\.0\.1 dev lo/,
    'the address is local although the interface is down',
  );
  await links.deleteAddress(index, '10.201.0.1');
  await links.deleteAddress(index, '10.201.0.1');
  t.same(await links.addresses(index), ['fd00:201::1']);
  sh('ip', 'link', 'add', 'kipvs-br0', 'type', 'bridge');
  await t.rejects(
    links.ensureDummy('kipvs-br0'),
    { name: 'LinkError', code: 'EEXIST' },
    'never adopts a non-dummy interface',
  );
  await links.deleteLink(index);
  t.equal(await links.find('kipvs-test0'), null);
});

t.test(
  'dumps on a socket that is also sending changes come back whole (the kernel queues ACKs between chunks)',
  async (t) => {
    const ipvs = await NetlinkIpvs.open();
    t.teardown(async () => {
      await ipvs.flush();
      ipvs.close();
    });
    await ipvs.flush();
    const a: IpvsService = { ...tcp, address: '10.202.0.1' };
    const b: IpvsService = { ...tcp, address: '10.202.0.2' };
    await ipvs.addService(a);
    await ipvs.addService(b);
    const dest = (i: number, port = 8080) => ({
      family: 4 as const,
      address: `10.203.${i >> 8}.${i & 255}`,
      port,
      fwdMethod: FwdMethod.MASQ,
      weight: 1,
      upperThreshold: 0,
      lowerThreshold: 0,
    });
    // 300 destinations: a dump of them spans several chunks (one page each by default).
    for (let i = 0; i < 300; i++) await ipvs.addDestination(a, dest(i));
    const short: number[] = [];
    for (let round = 0; round < 10; round++) {
      // Three dumps of A queued on the socket while 60 changes to B are sent on it.
      const dumps = [0, 1, 2].map(() => ipvs.destinations(a).then((l) => l.length));
      const changes: Promise<void>[] = [];
      for (let i = 0; i < 60; i++) {
        const d = dest(i, 9000 + round);
        changes.push(ipvs.addDestination(b, d).then(() => ipvs.deleteDestination(b, d)));
        if (i % 10 === 0) await new Promise((r) => setImmediate(r));
      }
      const [counts] = await Promise.all([Promise.all(dumps), Promise.all(changes)]);
      for (const c of counts) if (c !== 300) short.push(c);
    }
    t.same(short, [], '30 dumps, each with all 300 destinations, while 1 200 changes went over the same socket');
    t.same(await ipvs.destinations(b), [], 'every change was applied (and undone)');
    t.equal(
      sh('ipvsadm', '-Ln', '-t', '10.202.0.1:80')
        .split('\n')
        .filter((l) => l.includes('->') && l.includes('10.203.')).length,
      300,
      'ipvsadm agrees',
    );
  },
);
