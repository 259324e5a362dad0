import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  applySysctls,
  checkProcSysRoot,
  ipvsSysctls,
  kernelVersion,
  procSysctlAt,
} from '../../src/dataplane/sysctl.ts';

const paths = (l: { path: string; value: string }[]) => l.map((s) => `${s.path}=${s.value}`);

t.test('kube-proxy IPVS sysctls', async (t) => {
  const modern = paths(ipvsSysctls({ strictARP: false, kernelRelease: '6.1.0-56-amd64' }));
  t.same(modern, [
    'net/ipv4/vs/conntrack=1',
    'net/ipv4/vs/expire_nodest_conn=1',
    'net/ipv4/vs/expire_quiescent_template=1',
    'net/ipv4/ip_forward=1',
  ]);
  t.ok(
    paths(ipvsSysctls({ strictARP: false, kernelRelease: '5.4.0-150-generic' })).includes(
      'net/ipv4/vs/conn_reuse_mode=0',
    ),
    'conn_reuse_mode=0 before 5.9',
  );
  t.notOk(
    paths(ipvsSysctls({ strictARP: false, kernelRelease: '5.9.0' })).some((p) => p.includes('conn_reuse_mode')),
    'left alone from 5.9',
  );
  t.notOk(
    paths(ipvsSysctls({ strictARP: false, kernelRelease: '3.10.0' })).some((p) => p.includes('conn_reuse_mode')),
    'does not exist before 4.1',
  );
  const strict = paths(ipvsSysctls({ strictARP: true, kernelRelease: '6.1.0' }));
  t.ok(
    strict.includes('net/ipv4/conf/all/arp_ignore=1') && strict.includes('net/ipv4/conf/all/arp_announce=2'),
    'strictARP',
  );
  t.same(kernelVersion('garbage'), [0, 0]);
});

t.test('only differing values are written; failures are reported, not thrown', async (t) => {
  const state: Record<string, string> = { 'net/ipv4/ip_forward': '1' };
  const writes: string[] = [];
  const failed = applySysctls(ipvsSysctls({ strictARP: false, kernelRelease: '6.1.0' }), {
    read: (p) => state[p] ?? null,
    write: (p, v) => {
      if (p.includes('expire_nodest')) throw new Error('EACCES');
      writes.push(`${p}=${v}`);
    },
  });
  t.same(writes, ['net/ipv4/vs/conntrack=1', 'net/ipv4/vs/expire_quiescent_template=1']);
  t.same(failed, [{ path: 'net/ipv4/vs/expire_nodest_conn', error: 'EACCES' }]);
});

// The writer's root (`run --proc-sys DIR`): in the chart's pod /proc/sys is read-only and the
// host's /proc/sys/net is mounted writable at /host/proc/sys/net.
t.test('procSysctlAt reads and writes under its root only', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'kipvs-procsys-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'net/ipv4/vs'), { recursive: true });
  mkdirSync(join(root, 'net/ipv4/conf/all'), { recursive: true });
  for (const f of [
    'net/ipv4/vs/conntrack',
    'net/ipv4/vs/expire_nodest_conn',
    'net/ipv4/vs/expire_quiescent_template',
    'net/ipv4/ip_forward',
  ])
    writeFileSync(join(root, f), '0\n');
  const w = procSysctlAt(root);
  t.equal(w.read('net/ipv4/vs/conntrack'), '0');
  t.equal(w.read('net/ipv4/vs/nonexistent'), null);
  const failed = applySysctls(ipvsSysctls({ strictARP: false, kernelRelease: '6.12.0' }), w);
  t.same(failed, []);
  t.equal(readFileSync(join(root, 'net/ipv4/vs/conntrack'), 'utf8'), '1');
  t.equal(readFileSync(join(root, 'net/ipv4/ip_forward'), 'utf8'), '1');
  // A setting whose folder is not there (the module not loaded) is reported, not thrown.
  const strict = applySysctls([{ path: 'net/ipv4/conf/none/arp_ignore', value: '1', why: 'x' }], w);
  t.equal(strict.length, 1);
  t.match(strict[0]!.error, /ENOENT/);
});

t.test('checkProcSysRoot', async (t) => {
  t.equal(checkProcSysRoot('/host/proc/sys'), null);
  t.equal(checkProcSysRoot('/proc/sys'), null);
  t.match(checkProcSysRoot('proc/sys'), /absolute/);
  t.match(checkProcSysRoot('/a/../b'), /\.\./);
  t.match(checkProcSysRoot('/a\u0000b'), /control/);
});
