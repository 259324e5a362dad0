import t from 'tap';
import { applySysctls, ipvsSysctls, kernelVersion } from '../../src/dataplane/sysctl.ts';

const paths = (l: { path: string; value: string }[]) => l.map((s) => `${s.path}=${s.value}`);

t.test('kube-proxy IPVS sysctls', async (t) => {
  const modern = paths(ipvsSysctls({ strictARP: false, kernelRelease: '6.1.0-56-amd64' }));
  t.same(modern, ['net/ipv4/vs/conntrack=1', 'net/ipv4/vs/expire_nodest_conn=1', 'net/ipv4/vs/expire_quiescent_template=1', 'net/ipv4/ip_forward=1']);
  t.ok(paths(ipvsSysctls({ strictARP: false, kernelRelease: '5.4.0-150-generic' })).includes('net/ipv4/vs/conn_reuse_mode=0'), 'conn_reuse_mode=0 before 5.9');
  t.notOk(paths(ipvsSysctls({ strictARP: false, kernelRelease: '5.9.0' })).some((p) => p.includes('conn_reuse_mode')), 'left alone from 5.9');
  t.notOk(paths(ipvsSysctls({ strictARP: false, kernelRelease: '3.10.0' })).some((p) => p.includes('conn_reuse_mode')), 'does not exist before 4.1');
  const strict = paths(ipvsSysctls({ strictARP: true, kernelRelease: '6.1.0' }));
  t.ok(strict.includes('net/ipv4/conf/all/arp_ignore=1') && strict.includes('net/ipv4/conf/all/arp_announce=2'), 'strictARP');
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
