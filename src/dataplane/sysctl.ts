// The kernel settings kube-proxy's IPVS mode makes, decided here and written through an
// injected writer (the real one writes /proc/sys; tests and dry runs record).
import { readFileSync, writeFileSync } from 'node:fs';
import type { Config } from '../config/config.ts';

export interface Sysctl {
  path: string;
  value: string;
  why: string;
}

export interface SysctlWriter {
  read(path: string): string | null;
  write(path: string, value: string): void;
}

/**
 * Reads and writes the files under `root` (default /proc/sys). In a container /proc/sys is mounted
 * read-only; the Helm chart mounts the host's /proc/sys/net writable at /host/proc/sys/net and
 * passes `--proc-sys /host/proc/sys` (every setting kube-ipvs makes is under net/).
 */
export function procSysctlAt(root = '/proc/sys'): SysctlWriter {
  return {
    read(path) {
      try {
        return readFileSync(`${root}/${path}`, 'utf8').trim();
      } catch {
        return null;
      }
    },
    write(path, value) {
      writeFileSync(`${root}/${path}`, value);
    },
  };
}
export const procSysctl: SysctlWriter = procSysctlAt();

/** `--proc-sys DIR`: an absolute, plain path (no `..`, no control characters), or why not. */
export function checkProcSysRoot(dir: string): string | null {
  if (!dir.startsWith('/')) return 'must be an absolute path';
  if (/[\x00-\x1f\x7f]/.test(dir)) return 'contains control characters';
  if (dir.split('/').includes('..')) return 'must not contain ..';
  return null;
}

/** Kernel release "6.1.0-56-amd64" -> [6, 1]. */
export function kernelVersion(release: string): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

export function ipvsSysctls(opts: { strictARP: boolean; kernelRelease: string }): Sysctl[] {
  const out: Sysctl[] = [
    {
      path: 'net/ipv4/vs/conntrack',
      value: '1',
      why: 'keep conntrack entries for IPVS connections (needed for SNAT/masquerade)',
    },
    {
      path: 'net/ipv4/vs/expire_nodest_conn',
      value: '1',
      why: 'drop connections whose destination was deleted instead of black-holing them',
    },
    {
      path: 'net/ipv4/vs/expire_quiescent_template',
      value: '1',
      why: 'expire affinity templates of weight-0 destinations',
    },
    { path: 'net/ipv4/ip_forward', value: '1', why: 'forward packets to backends' },
  ];
  const [maj, min] = kernelVersion(opts.kernelRelease);
  // Before 5.9, conn_reuse_mode=1 made reused ports stall for a second; kube-proxy sets 0 there.
  if (maj > 4 || (maj === 4 && min >= 1)) {
    if (maj < 5 || (maj === 5 && min < 9))
      out.push({
        path: 'net/ipv4/vs/conn_reuse_mode',
        value: '0',
        why: 'kernels before 5.9 stall reused source ports with mode 1',
      });
  }
  if (opts.strictARP) {
    out.push({
      path: 'net/ipv4/conf/all/arp_ignore',
      value: '1',
      why: 'strictARP: answer ARP only for addresses on the receiving interface',
    });
    out.push({
      path: 'net/ipv4/conf/all/arp_announce',
      value: '2',
      why: 'strictARP: never announce service addresses from the dummy interface',
    });
  }
  return out;
}

/** Writes what differs; returns the settings that could not be written (with why). */
export function applySysctls(list: Sysctl[], w: SysctlWriter): { path: string; error: string }[] {
  const failed: { path: string; error: string }[] = [];
  for (const s of list) {
    if (w.read(s.path) === s.value) continue;
    try {
      w.write(s.path, s.value);
    } catch (e) {
      failed.push({ path: s.path, error: (e as Error).message });
    }
  }
  return failed;
}

/** The config's conntrack.* (one shape, defined and validated in `src/config/config.ts`). */
export type ConntrackSettings = Config['conntrack'];

/**
 * kube-proxy's conntrack settings (KubeProxyConfiguration conntrack.*), as it applies them: the
 * table size raised to maxPerCore x CPUs (at least `min`) but never lowered, each timeout only
 * when set (0 leaves the kernel's), tcp_be_liberal only when true. The hash table size
 * (/sys/module/nf_conntrack/parameters/hashsize) is left to the kernel.
 */
export function conntrackSysctls(
  c: ConntrackSettings,
  cpus: number,
  current: (path: string) => string | null,
): Sysctl[] {
  const out: Sysctl[] = [];
  if (c.maxPerCore > 0) {
    const want = Math.max(c.maxPerCore * Math.max(1, cpus), c.min);
    const have = Number(current('net/netfilter/nf_conntrack_max') ?? NaN);
    if (!(have >= want))
      out.push({
        path: 'net/netfilter/nf_conntrack_max',
        value: String(want),
        why: `conntrack.maxPerCore ${c.maxPerCore} x ${cpus} CPUs (min ${c.min})`,
      });
  }
  const timeout = (secs: number, path: string, field: string) => {
    if (secs > 0)
      out.push({ path: `net/netfilter/${path}`, value: String(Math.round(secs)), why: `conntrack.${field}` });
  };
  timeout(c.tcpEstablishedTimeoutSeconds, 'nf_conntrack_tcp_timeout_established', 'tcpEstablishedTimeout');
  timeout(c.tcpCloseWaitTimeoutSeconds, 'nf_conntrack_tcp_timeout_close_wait', 'tcpCloseWaitTimeout');
  timeout(c.udpTimeoutSeconds, 'nf_conntrack_udp_timeout', 'udpTimeout');
  timeout(c.udpStreamTimeoutSeconds, 'nf_conntrack_udp_timeout_stream', 'udpStreamTimeout');
  if (c.tcpBeLiberal)
    out.push({ path: 'net/netfilter/nf_conntrack_tcp_be_liberal', value: '1', why: 'conntrack.tcpBeLiberal' });
  return out;
}
