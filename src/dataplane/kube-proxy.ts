// kube-proxy's leftovers on a node kube-ipvs takes over, from any of its modes (iptables, ipvs, nftables), and
// whether kube-proxy still runs there. Names are kube-proxy v1.35's (pkg/proxy/{iptables,ipvs,nftables}): only
// what kube-proxy itself creates, never kubelet's chains (KUBE-FIREWALL in filter, KUBE-KUBELET-CANARY,
// KUBE-IPTABLES-HINT) and never another program's. The IPVS side (virtual servers and addresses on the dummy
// interface) is the reconciler's (Reconciler.takeOver): it knows which of them a Service still wants.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Exec } from './exec.ts';
import { cleanupRestoreInput, type IptablesBackend } from './netfilter.ts';

/** Chains kube-proxy creates, per table (the ipvs mode's and the iptables mode's together). */
const CHAINS: Record<string, ReadonlySet<string>> = {
  nat: new Set([
    'KUBE-SERVICES',
    'KUBE-POSTROUTING',
    'KUBE-MARK-MASQ',
    'KUBE-NODEPORTS',
    'KUBE-NODE-PORT',
    'KUBE-LOAD-BALANCER',
    'KUBE-PROXY-CANARY',
  ]),
  filter: new Set([
    'KUBE-SERVICES',
    'KUBE-EXTERNAL-SERVICES',
    'KUBE-FORWARD',
    'KUBE-NODEPORTS',
    'KUBE-NODE-PORT',
    'KUBE-PROXY-FIREWALL',
    'KUBE-SOURCE-RANGES-FIREWALL',
    'KUBE-IPVS-FILTER',
    'KUBE-IPVS-OUT-FILTER',
    'KUBE-PROXY-CANARY',
  ]),
  mangle: new Set(['KUBE-PROXY-CANARY']),
};

/** The iptables mode's per-Service and per-endpoint chains (nat): KUBE-SVC-<hash> and the like. */
const SERVICE_CHAIN = /^KUBE-(SVC|SVL|SEP|FW|EXT)-[A-Z0-9]+$/;

/** Whether kube-proxy creates this chain in this table. */
export function isKubeProxyChain(table: string, chain: string): boolean {
  return CHAINS[table]?.has(chain) === true || (table === 'nat' && SERVICE_CHAIN.test(chain));
}

/** The ipvs mode's ipsets. */
export const KUBE_PROXY_SETS: ReadonlySet<string> = new Set([
  'KUBE-LOOP-BACK',
  'KUBE-CLUSTER-IP',
  'KUBE-EXTERNAL-IP',
  'KUBE-EXTERNAL-IP-LOCAL',
  'KUBE-LOAD-BALANCER',
  'KUBE-LOAD-BALANCER-LOCAL',
  'KUBE-LOAD-BALANCER-FW',
  'KUBE-LOAD-BALANCER-SOURCE-IP',
  'KUBE-LOAD-BALANCER-SOURCE-CIDR',
  'KUBE-NODE-PORT-TCP',
  'KUBE-NODE-PORT-LOCAL-TCP',
  'KUBE-NODE-PORT-UDP',
  'KUBE-NODE-PORT-LOCAL-UDP',
  'KUBE-NODE-PORT-SCTP-HASH',
  'KUBE-NODE-PORT-LOCAL-SCTP-HASH',
  'KUBE-HEALTH-CHECK-NODE-PORT',
  'KUBE-IPVS-IPS',
]);

/** The nftables mode's tables (per family). */
const NFT_TABLES = ['ip kube-proxy', 'ip6 kube-proxy'];

/** The ports kube-proxy listens on by default: metrics (127.0.0.1:10249) and healthz (0.0.0.0:10256). */
export const KUBE_PROXY_PORTS = [10249, 10256];

export interface LeftoverResult {
  /** What was removed: "iptables-nft nat KUBE-SERVICES", "ipset KUBE-CLUSTER-IP", "nftables ip kube-proxy". */
  removed: string[];
  errors: string[];
  /** What could not be looked at (no nft on this node): said once, not retried. */
  unchecked: string[];
}

/**
 * Removes kube-proxy's iptables chains (and the jumps into them; both backends, both families), then its ipsets
 * (which its rules referenced), then its nftables tables. Idempotent: a second call finds nothing.
 */
export async function removeKubeProxyNetfilter(exec: Exec): Promise<LeftoverResult> {
  const res: LeftoverResult = { removed: [], errors: [], unchecked: [] };
  const backends: IptablesBackend[] = ['nft', 'legacy'];
  for (const backend of backends) {
    for (const base of ['iptables', 'ip6tables']) {
      const save = await exec.run(`${base}-${backend}-save`, []);
      if (save.code !== 0) continue; // this backend or family does not work here: kube-proxy used none of it
      const input = cleanupRestoreInput(save.stdout, isKubeProxyChain);
      if (!input) continue;
      const r = await exec.run(`${base}-${backend}-restore`, ['--noflush', '-w', '5'], input);
      if (r.code !== 0) {
        res.errors.push(`${base}-${backend}-restore (kube-proxy's chains): exit ${r.code}: ${oneLine(r.stderr)}`);
        continue;
      }
      let table = '';
      for (const l of input.split('\n')) {
        if (l.startsWith('*')) table = l.slice(1);
        else if (l.startsWith('-X ')) res.removed.push(`${base}-${backend} ${table} ${l.slice(3)}`);
      }
    }
  }
  const list = await exec.run('ipset', ['list', '-n']);
  if (list.code === 0) {
    for (const name of list.stdout.split('\n').map((l) => l.trim())) {
      if (!KUBE_PROXY_SETS.has(name)) continue;
      const r = await exec.run('ipset', ['destroy', name]);
      if (r.code === 0) res.removed.push(`ipset ${name}`);
      else if (!/does not exist/.test(r.stderr)) res.errors.push(`ipset destroy ${name}: ${oneLine(r.stderr)}`);
    }
  }
  const tables = await exec.run('nft', ['list', 'tables']);
  if (tables.code === 0) {
    const have = new Set(tables.stdout.split('\n').map((l) => l.trim().replace(/^table /, '')));
    for (const t of NFT_TABLES) {
      if (!have.has(t)) continue;
      const r = await exec.run('nft', ['delete', 'table', ...t.split(' ')]);
      if (r.code === 0) res.removed.push(`nftables ${t}`);
      else res.errors.push(`nft delete table ${t}: ${oneLine(r.stderr)}`);
    }
  } else if (tables.code === 127 || /ENOENT|No such file|not found|not supported/.test(tables.stderr)) {
    res.unchecked.push("nft is not installed: kube-proxy's nftables tables (its nftables mode) were not looked for");
  } else {
    res.errors.push(`nft list tables: exit ${tables.code}: ${oneLine(tables.stderr)}`);
  }
  return res;
}

/** A tool's message on one line, bounded (it goes into a log line). */
function oneLine(s: string): string {
  const t = s.trim().replace(/\s+/g, ' ');
  return t.length > 300 ? `${t.slice(0, 300)}...` : t;
}

/**
 * Why kube-proxy looks alive on this node, or null: a process named kube-proxy (seen when kube-ipvs shares the
 * host's process namespace, or runs on the node itself), or a socket that is not ours listening on one of
 * kube-proxy's default ports (kube-ipvs runs in the host's network namespace, as kube-proxy does).
 */
export function kubeProxyRunning(procRoot = '/proc'): string | null {
  let pids: string[] = [];
  try {
    pids = readdirSync(procRoot).filter((d) => /^[0-9]+$/.test(d));
  } catch {
    // no /proc: nothing to tell
  }
  for (const pid of pids) {
    try {
      if (readFileSync(join(procRoot, pid, 'comm'), 'utf8').trim() === 'kube-proxy')
        return `process ${pid} is kube-proxy`;
    } catch {
      // gone meanwhile
    }
  }
  const mine = new Set<string>();
  try {
    for (const fd of readdirSync(join(procRoot, 'self', 'fd'))) {
      try {
        const m = /^socket:\[([0-9]+)\]$/.exec(readlinkSync(join(procRoot, 'self', 'fd', fd)));
        if (m) mine.add(m[1]!);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // cannot list our own descriptors: every listener counts as another's
  }
  for (const file of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(join(procRoot, 'net', file), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A') continue; // 0A: LISTEN
      const port = parseInt(f[1]!.split(':').pop() ?? '', 16);
      if (KUBE_PROXY_PORTS.includes(port) && !mine.has(f[9]!))
        return `another process listens on port ${port} (kube-proxy's ${port === 10249 ? 'metrics' : 'healthz'} port)`;
    }
  }
  return null;
}
