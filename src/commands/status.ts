// `kube-ipvs status`: what the kernel does with each Service on this node, in Kubernetes terms —
// like `ipvsadm -Ln --stats --rate` with Service names. It reads IPVS directly (so it works with
// the daemon down, and says so) and names virtual servers from the ownership record the daemon
// keeps; when the daemon answers on its health port, its own view (last sync, pending changes,
// recent errors) comes first.
import { get } from 'node:http';
import { join } from 'node:path';
import type { Config } from '../config/config.ts';
import { Codes, escapeText } from '../errors.ts';
import type { HealthView } from '../health/stage.ts';
import { DUMP_READ_BYTES, NetlinkIpvs, type Ipvs } from '../dataplane/ipvs/client.ts';
import { SvcFlag } from '../dataplane/ipvs/constants.ts';
import { destinationId, serviceId, type IpvsStats } from '../dataplane/ipvs/types.ts';
import { FileOwnership, type VsLabel } from '../dataplane/ownership.ts';
import { parseBindAddress, type DaemonStatus } from '../observe/server.ts';
import { hostPort } from '../util/ip.ts';
import { isRoot, loadConfig, report, type IO } from './common.ts';

export interface StatusArgs {
  config?: string;
  namespace?: string;
  /** "name" (with --namespace) or "namespace/name". */
  service?: string;
  output: 'table' | 'json';
}

export interface StatusDeps {
  /** The kernel; opened over netlink when not given. */
  ipvs?: Ipvs;
  /** Asks the daemon for /status; over HTTP to metricsBindAddress when not given. */
  fetchDaemon?: (config: Config) => Promise<DaemonStatus>;
  /** Virtual server names; from the ownership record in stateDirectory when not given. */
  labels?: ReadonlyMap<string, VsLabel>;
}

interface Stats {
  conns: number;
  inPkts: number;
  outPkts: number;
  inBytes: number;
  outBytes: number;
  cps: number;
  inPps: number;
  outPps: number;
  inBps: number;
  outBps: number;
}

export interface StatusRealServer {
  address: string;
  port: number;
  weight: number;
  activeConns: number;
  inactiveConns: number;
  stats: Stats;
}

export interface StatusVirtualServer {
  /** "namespace/name"; "" for a virtual server kube-ipvs does not own. */
  service: string;
  portName: string;
  kind: string;
  protocol: string;
  address: string;
  port: number;
  scheduler: string;
  persistenceTimeoutSeconds: number;
  stats: Stats;
  realServers: StatusRealServer[];
}

export interface StatusReport {
  daemon: DaemonStatus | null;
  /** Why the daemon's view is missing. */
  daemonError: string | null;
  virtualServers: StatusVirtualServer[];
}

const ZERO: Stats = {
  conns: 0,
  inPkts: 0,
  outPkts: 0,
  inBytes: 0,
  outBytes: 0,
  cps: 0,
  inPps: 0,
  outPps: 0,
  inBps: 0,
  outBps: 0,
};
function stats(s: IpvsStats | undefined): Stats {
  if (!s) return { ...ZERO };
  return {
    conns: Number(s.conns),
    inPkts: Number(s.inPkts),
    outPkts: Number(s.outPkts),
    inBytes: Number(s.inBytes),
    outBytes: Number(s.outBytes),
    cps: Number(s.cps),
    inPps: Number(s.inPps),
    outPps: Number(s.outPps),
    inBps: Number(s.inBps),
    outBps: Number(s.outBps),
  };
}

/** The most of the daemon's answer read (it describes every Service: generous, but bounded). */
const MAX_STATUS_BYTES = 32 * 1024 * 1024;

/** GET /status on the daemon's metrics port (loopback when it listens on every address). */
export function fetchDaemonStatus(config: Config, timeoutMs = 1500): Promise<DaemonStatus> {
  const b = parseBindAddress(config.metricsBindAddress);
  if (!b || b.port === 0)
    return Promise.reject(
      new Error(`the metrics port is disabled (metricsBindAddress ${JSON.stringify(config.metricsBindAddress)})`),
    );
  const host = !b.host || b.host === '0.0.0.0' ? '127.0.0.1' : b.host === '::' ? '::1' : b.host;
  return new Promise((resolve, reject) => {
    const req = get({ host, port: b.port, path: '/status', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
        if (body.length > MAX_STATUS_BYTES) req.destroy(new Error(`more than ${MAX_STATUS_BYTES} bytes`));
      });
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode} from ${host}:${b.port}/status`));
        try {
          resolve(JSON.parse(body) as DaemonStatus);
        } catch (e) {
          reject(new Error(`unreadable answer from ${host}:${b.port}/status: ${(e as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${host}:${b.port} within ${timeoutMs} ms`)));
    req.on('error', (e) => reject(new Error(`${host}:${b.port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
  });
}

/** Reads the kernel and the labels; filters by namespace / Service. */
export async function collectStatus(
  ipvs: Ipvs,
  labels: ReadonlyMap<string, VsLabel>,
  filter: { namespace?: string; service?: string },
): Promise<StatusVirtualServer[]> {
  const out: StatusVirtualServer[] = [];
  const filtered = filter.namespace !== undefined || filter.service !== undefined;
  for (const s of await ipvs.services()) {
    const id = serviceId(s);
    const l = labels.get(id);
    if (filtered) {
      if (!l) continue;
      const [ns, name] = l.service.split('/');
      if (filter.namespace !== undefined && ns !== filter.namespace) continue;
      if (filter.service !== undefined && l.service !== filter.service && name !== filter.service) continue;
    }
    const dests = await ipvs.destinations(s);
    out.push({
      service: l?.service ?? '',
      portName: l?.portName ?? '',
      kind: l?.kind ?? '',
      // A firewall-mark virtual server (in-cluster traffic to a Local LoadBalancer) shows its mark.
      protocol: s.protocol ?? 'FWM',
      address: s.address ?? `0x${s.fwmark.toString(16)}`,
      port: s.port ?? 0,
      scheduler: s.scheduler,
      persistenceTimeoutSeconds: s.flags & SvcFlag.PERSISTENT ? s.timeout : 0,
      stats: stats(s.stats),
      realServers: dests
        .map((d) => ({
          address: d.address,
          port: d.port,
          weight: d.weight,
          activeConns: d.activeConns ?? 0,
          inactiveConns: d.inactiveConns ?? 0,
          stats: stats(d.stats),
        }))
        .sort((a, b) => (destinationId(a) < destinationId(b) ? -1 : 1)),
    });
  }
  const kinds = ['ClusterIP', 'ExternalIP', 'LoadBalancer', 'NodePort', ''];
  return out.sort(
    (a, b) =>
      (a.service === '' ? 1 : 0) - (b.service === '' ? 1 : 0) ||
      a.service.localeCompare(b.service) ||
      a.portName.localeCompare(b.portName) ||
      kinds.indexOf(a.kind) - kinds.indexOf(b.kind) ||
      a.address.localeCompare(b.address) ||
      a.port - b.port,
  );
}

/** What health says of a real server, for the table: '' when it is healthy at full weight. */
function healthNote(h: HealthView, now: number): string {
  if (h.state === 'unhealthy')
    return ` (${h.refused ? `unhealthy, kept in by ${h.refused === 'cap' ? 'the ejection cap' : 'fail-open'}` : 'ejected'}: ${esc(h.reason)} since ${ago(h.since, now)})`;
  if (h.slowStart !== null) return ` (slow start ${h.slowStart}%)`;
  return '';
}

/** Text from the daemon or the ownership record (Service names, errors) as the table prints it. */
const esc = (s: string) => escapeText(String(s), 300);
const ago = (iso: string | null, now: number) =>
  iso === null ? 'never' : `${Math.max(0, Math.round((now - Date.parse(iso)) / 1000))}s ago`;
/** "addr:port" (util/ip.ts), or the mark of a firewall-mark virtual server as it is. */
const where = (address: string, port: number) => (address.startsWith('0x') ? address : hostPort(address, port));

export function formatStatus(r: StatusReport, now = Date.now()): string {
  const lines: string[] = [];
  const d = r.daemon;
  if (d) {
    const ls = d.lastSync;
    lines.push(
      `kube-ipvs on node ${esc(d.node)}: ${d.healthy ? 'healthy' : 'UNHEALTHY (changes waiting longer than 2 x syncPeriod)'}${d.nodeEligible ? '' : ', node being deleted (healthz 503)'}`,
    );
    lines.push(
      `  last sync ${ago(d.lastSyncAt, now)}${ls ? ` (${ls.full ? 'full' : 'partial'}, ${ls.services} services, ${ls.operations} kernel operations, ${ls.errors} errors, ${ls.durationMs} ms)` : ''}; last without errors ${ago(d.lastSuccessfulSyncAt, now)}`,
    );
    lines.push(
      `  pending: ${d.pending.services} Service changes, ${d.pending.endpoints} endpoint changes${d.oldestPendingChangeAt ? ` (oldest ${ago(d.oldestPendingChangeAt, now)})` : ''}; ${d.services} Services, ${d.virtualServers} virtual servers planned`,
    );
    if (d.source)
      lines.push(
        `  watch: ${d.source.events} events, ${d.source.reconnects} reconnects, ${d.source.relists} relists, ${d.source.errors} errors; last event ${ago(d.source.lastEventAt as string | null, now)}`,
      );
    for (const c of d.conflicts ?? [])
      lines.push(`  conflict: ${esc(c.service)} does not get ${esc(c.what)}: held by ${esc(c.heldBy)}`);
    if (d.health && d.health.endpoints.length > 0) {
      const h = d.health;
      const down = h.endpoints.filter((e) => e.state === 'unhealthy').length;
      lines.push(
        `  health: ${h.endpoints.length + h.endpointsNotListed} endpoints checked, ${down} unhealthy; ${Math.round(h.probeDemand)} probes/s asked${h.probeStretch > 1 ? `, intervals stretched x${h.probeStretch.toFixed(1)} to fit the budget` : ''}${h.failingOpen ? '; FAILING OPEN: nearly every probe from this node fails, nothing is ejected' : ''}`,
      );
    }
    for (const e of d.recentErrors.slice(-5))
      lines.push(`  error ${esc(e.at)} ${esc(e.op)}: ${esc(e.code)}${e.service ? ` (${esc(e.service)})` : ''}`);
  } else {
    lines.push(
      `kube-ipvs daemon: not reachable (${esc(r.daemonError ?? 'unknown')}); the kernel view below is read directly`,
    );
  }
  lines.push('');
  if (r.virtualServers.length === 0) {
    lines.push('no IPVS virtual servers' + (d ? '' : ' (or none matching the filter)'));
    return lines.join('\n') + '\n';
  }
  // Health, per Service and endpoint, to annotate the kernel's real servers.
  const health = new Map<string, HealthView>();
  const evictedOf = new Map<string, HealthView[]>();
  for (const h of d?.health?.endpoints ?? []) {
    health.set(`${h.service}|${h.endpoint}`, h);
    if (h.evicted) evictedOf.set(h.service, [...(evictedOf.get(h.service) ?? []), h]);
  }
  lines.push(
    'SERVICE / PORT / KIND          VIRTUAL SERVER              SCHED  AFFINITY   CONNS    CPS  INPPS  OUTPPS  INBPS  OUTBPS',
  );
  for (const vs of r.virtualServers) {
    const name = vs.service
      ? `${esc(vs.service)}${vs.portName ? `:${esc(vs.portName)}` : ''} ${esc(vs.kind)}`
      : '(not kube-ipvs)';
    const s = vs.stats;
    lines.push(
      `${name.padEnd(30)} ${`${vs.protocol} ${where(vs.address, vs.port)}`.padEnd(27)} ${vs.scheduler.padEnd(6)} ${(vs.persistenceTimeoutSeconds ? `${vs.persistenceTimeoutSeconds}s` : 'none').padEnd(8)} ${String(s.conns).padStart(7)} ${String(s.cps).padStart(6)} ${String(s.inPps).padStart(6)} ${String(s.outPps).padStart(7)} ${String(s.inBps).padStart(6)} ${String(s.outBps).padStart(7)}`,
    );
    if (vs.realServers.length === 0) lines.push('  -> (no real servers: connections are refused)');
    for (const rs of vs.realServers) {
      const h = health.get(`${vs.service}|${hostPort(rs.address, rs.port)}`);
      const why = h ? healthNote(h, now) : '';
      lines.push(
        `  -> ${hostPort(rs.address, rs.port).padEnd(24)} weight ${String(rs.weight).padEnd(3)}${rs.weight === 0 && !why ? ' (draining)' : ''}${why} active ${rs.activeConns} inactive ${rs.inactiveConns} conns ${rs.stats.conns} cps ${rs.stats.cps}`,
      );
    }
    for (const h of evictedOf.get(vs.service) ?? [])
      if (h.evicted)
        lines.push(`  -> ${esc(h.endpoint).padEnd(24)} (evicted by health: ${esc(h.reason)}; its connections ended)`);
  }
  return lines.join('\n') + '\n';
}

export async function statusCommand(args: StatusArgs, io: IO, deps: StatusDeps = {}): Promise<number> {
  const config = await loadConfig(io, args.config);
  if (!config) return 1;
  let ipvs = deps.ipvs;
  if (!ipvs) {
    if (!isRoot()) {
      report(io, [
        {
          code: Codes.NEEDS_PRIVILEGE,
          severity: 'error',
          message: 'kube-ipvs status reads IPVS over netlink: it needs root (CAP_NET_ADMIN)',
        },
      ]);
      return 1;
    }
    try {
      ipvs = await NetlinkIpvs.open({ readBufferBytes: DUMP_READ_BYTES });
    } catch (e) {
      report(io, [
        {
          code: Codes.KERNEL_UNAVAILABLE,
          severity: 'error',
          message: `${(e as Error).message}. Is the ip_vs module loaded?`,
        },
      ]);
      return 1;
    }
  }
  let labels = deps.labels;
  if (!labels) {
    const owned = new FileOwnership(join(config.stateDirectory, 'owned.json'));
    if (owned.problem)
      report(io, [
        {
          code: Codes.OWNERSHIP_RECORD_INVALID,
          severity: 'error',
          message: `${owned.problem}: virtual servers below are not named`,
        },
      ]);
    labels = owned.labels;
  }
  const [daemon, kernel] = await Promise.allSettled([
    (deps.fetchDaemon ?? fetchDaemonStatus)(config),
    collectStatus(ipvs, labels, { namespace: args.namespace, service: args.service }),
  ]);
  if (kernel.status === 'rejected') {
    report(io, [
      {
        code: Codes.KERNEL_UNAVAILABLE,
        severity: 'error',
        message: `cannot read IPVS: ${(kernel.reason as Error).message}`,
      },
    ]);
    return 1;
  }
  const r: StatusReport = {
    daemon: daemon.status === 'fulfilled' ? daemon.value : null,
    daemonError: daemon.status === 'rejected' ? (daemon.reason as Error).message : null,
    virtualServers: kernel.value,
  };
  io.stdout(args.output === 'json' ? JSON.stringify(r, null, 2) + '\n' : formatStatus(r));
  // Closed here; cli.ts lets the event loop turn once before exiting so the addon's handles finish closing.
  if (!deps.ipvs) ipvs.close();
  return 0;
}
