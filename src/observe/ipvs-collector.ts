// Per virtual server and per real server series read from the kernel's IPVS counters at scrape
// time: one service dump (with stats) per scrape, then destination dumps until the real-server
// series limit is reached. Only virtual servers kube-ipvs owns are exported, labelled with their
// Kubernetes Service port from the ownership record. What the limit leaves out is counted.
import type { Ipvs } from '../dataplane/ipvs/client.ts';
import { destinationId, serviceId, type IpvsDestination, type IpvsService, type IpvsStats } from '../dataplane/ipvs/types.ts';
import type { VsLabel } from '../dataplane/ownership.ts';
import type { Logger } from './log.ts';
import { labelString, type Metrics } from './metrics.ts';

export interface IpvsCollectorOptions {
  ipvs: Ipvs;
  /** Virtual server id -> Service port (the ownership record's labels). */
  labels: ReadonlyMap<string, VsLabel>;
  /** At most this many real servers get series per scrape (0: none). */
  realServerLimit: number;
  /** Virtual server id -> how many real servers the plan gives it (to count what the limit drops; read only then). */
  plannedRealServers: () => ReadonlyMap<string, number>;
  log: Logger;
}

interface Row {
  /** The label string (without braces), cached per virtual server across scrapes. */
  labels: string;
  stats: IpvsStats | undefined;
}
interface RealRow extends Row {
  d: IpvsDestination;
}
interface Snapshot {
  vs: Row[];
  rs: RealRow[];
  dropped: number;
}

const n = (b: bigint | undefined) => (b === undefined ? '0' : b.toString());

/** Metric families rendered from a snapshot: name, help, type, and the lines of one row. */
type Family<R> = [name: string, help: string, type: 'counter' | 'gauge', lines: (name: string, r: R) => string];
const one = <R extends Row>(f: (r: R) => string | number): Family<R>[3] => (name, r) => `${name}{${r.labels}} ${f(r)}\n`;
const inOut = <R extends Row>(i: (r: R) => bigint | undefined, o: (r: R) => bigint | undefined): Family<R>[3] => (name, r) =>
  `${name}{${r.labels},direction="in"} ${n(i(r))}\n${name}{${r.labels},direction="out"} ${n(o(r))}\n`;

const VS_FAMILIES: Family<Row>[] = [
  ['kubeipvs_virtual_server_connections_total', 'Connections scheduled by the IPVS virtual server (kernel counter)', 'counter', one((r) => n(r.stats?.conns))],
  ['kubeipvs_virtual_server_packets_total', 'Packets through the IPVS virtual server by direction (kernel counter)', 'counter', inOut((r) => r.stats?.inPkts, (r) => r.stats?.outPkts)],
  ['kubeipvs_virtual_server_bytes_total', 'Bytes through the IPVS virtual server by direction (kernel counter)', 'counter', inOut((r) => r.stats?.inBytes, (r) => r.stats?.outBytes)],
];
const RS_FAMILIES: Family<RealRow>[] = [
  ['kubeipvs_real_server_connections_total', 'Connections scheduled to the real server (kernel counter)', 'counter', one((r) => n(r.stats?.conns))],
  ['kubeipvs_real_server_packets_total', 'Packets to and from the real server by direction (kernel counter)', 'counter', inOut((r) => r.stats?.inPkts, (r) => r.stats?.outPkts)],
  ['kubeipvs_real_server_bytes_total', 'Bytes to and from the real server by direction (kernel counter)', 'counter', inOut((r) => r.stats?.inBytes, (r) => r.stats?.outBytes)],
  ['kubeipvs_real_server_active_connections', 'Active (established) connections to the real server', 'gauge', one((r) => r.d.activeConns ?? 0)],
  ['kubeipvs_real_server_inactive_connections', 'Inactive connections (other states) to the real server', 'gauge', one((r) => r.d.inactiveConns ?? 0)],
  ['kubeipvs_real_server_weight', 'Current IPVS weight of the real server (0: draining)', 'gauge', one((r) => r.d.weight)],
];

export class IpvsCollector {
  readonly #o: IpvsCollectorOptions;
  /** Virtual server id -> its label string and the label it was built from. */
  readonly #labelCache = new Map<string, { from: VsLabel; text: string }>();

  constructor(opts: IpvsCollectorOptions) {
    this.#o = opts;
  }

  /** Registers the series with `metrics` (rendered directly as text: tens of thousands of lines). */
  register(metrics: Metrics): void {
    metrics.addText(async () => this.render(await this.snapshot()));
  }

  render(snap: Snapshot): string {
    let out = '';
    const family = <R extends Row>([name, help, type, lines]: Family<R>, rows: R[]) => {
      out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
      for (const r of rows) out += lines(name, r);
    };
    for (const f of VS_FAMILIES) family(f, snap.vs);
    for (const f of RS_FAMILIES) family(f, snap.rs);
    out += `# HELP kubeipvs_real_server_series_dropped Real servers left out of the per-backend series at this scrape by metrics.realServerSeriesLimit\n# TYPE kubeipvs_real_server_series_dropped gauge\nkubeipvs_real_server_series_dropped ${snap.dropped}\n`;
    return out;
  }

  #labels(id: string, l: VsLabel, s: IpvsService): string {
    const c = this.#labelCache.get(id);
    if (c && c.from === l) return c.text;
    const [namespace = '', service = ''] = l.service.split('/');
    const text = labelString({ namespace, service, port_name: l.portName, kind: l.kind, protocol: s.protocol ?? 'FWM', address: s.address ?? `0x${(s.fwmark ?? 0).toString(16)}`, port: s.port ?? 0 });
    this.#labelCache.set(id, { from: l, text });
    return text;
  }

  /** One read of the kernel: our virtual servers with stats, destinations up to the limit. */
  async snapshot(): Promise<Snapshot> {
    const { ipvs, labels, log } = this.#o;
    let services: IpvsService[];
    try {
      services = await ipvs.services();
    } catch (e) {
      log.warn('metrics: cannot read IPVS services', { error: (e as Error).message }, 'metrics:services');
      return { vs: [], rs: [], dropped: 0 };
    }
    const ours = services
      .map((s) => ({ s, id: serviceId(s), l: labels.get(serviceId(s)) }))
      .filter((x): x is { s: IpvsService; id: string; l: VsLabel } => x.l !== undefined)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const vs: Row[] = [];
    const rs: RealRow[] = [];
    let budget = Math.max(0, this.#o.realServerLimit);
    let dropped = 0;
    let planned: ReadonlyMap<string, number> | null = null;
    for (const { s, id, l } of ours) {
      const vsLabels = this.#labels(id, l, s);
      vs.push({ labels: vsLabels, stats: s.stats });
      if (budget === 0) {
        planned ??= this.#o.plannedRealServers();
        dropped += planned.get(id) ?? 0;
        continue;
      }
      let dests: IpvsDestination[];
      try {
        dests = await ipvs.destinations(s);
      } catch (e) {
        log.warn('metrics: cannot read IPVS destinations', { virtualServer: id, error: (e as Error).message }, `metrics:dests:${id}`);
        continue;
      }
      dests.sort((a, b) => (destinationId(a) < destinationId(b) ? -1 : 1));
      for (const d of dests) {
        if (budget === 0) {
          dropped++;
          continue;
        }
        budget--;
        rs.push({ labels: `${vsLabels},backend="${destinationId(d)}"`, stats: d.stats, d });
      }
    }
    // Forget label strings of virtual servers that are gone.
    if (this.#labelCache.size > ours.length) {
      const live = new Set(ours.map((x) => x.id));
      for (const id of this.#labelCache.keys()) if (!live.has(id)) this.#labelCache.delete(id);
    }
    return { vs, rs, dropped };
  }
}
