// Per virtual server and per real server series read from the kernel's IPVS counters at scrape
// time: one service dump (with stats) per scrape, then destination dumps until the real-server
// series limit is reached. Only virtual servers kube-ipvs owns are exported, labelled with their
// Kubernetes Service port from the ownership record. What the limit leaves out is counted.
import type { Ipvs } from '../dataplane/ipvs/client.ts';
import { destinationId, serviceId, type IpvsDestination, type IpvsService, type IpvsStats } from '../dataplane/ipvs/types.ts';
import type { VsLabel } from '../dataplane/ownership.ts';
import type { Logger } from './log.ts';
import { ScrapeMetric, type CollectedValue, type Metrics } from './metrics.ts';

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
  labels: Record<string, string | number>;
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

const n = (b: bigint | undefined) => (b === undefined ? 0 : Number(b));

export class IpvsCollector {
  readonly #o: IpvsCollectorOptions;
  #inflight: Promise<Snapshot> | null = null;

  constructor(opts: IpvsCollectorOptions) {
    this.#o = opts;
  }

  /** Registers the series with `metrics`. */
  register(metrics: Metrics): void {
    const vs = (name: string, help: string, type: 'counter' | 'gauge', f: (r: Row) => CollectedValue[]) =>
      metrics.add(new ScrapeMetric(name, help, type, async () => (await this.snapshot()).vs.flatMap(f)));
    const rs = (name: string, help: string, type: 'counter' | 'gauge', f: (r: RealRow) => CollectedValue[]) =>
      metrics.add(new ScrapeMetric(name, help, type, async () => (await this.snapshot()).rs.flatMap(f)));
    const inOut = (labels: Row['labels'], i: bigint | undefined, o: bigint | undefined) => [
      { labels: { ...labels, direction: 'in' }, value: n(i) },
      { labels: { ...labels, direction: 'out' }, value: n(o) },
    ];
    vs('kubeipvs_virtual_server_connections_total', 'Connections scheduled by the IPVS virtual server (kernel counter)', 'counter', (r) => [{ labels: r.labels, value: n(r.stats?.conns) }]);
    vs('kubeipvs_virtual_server_packets_total', 'Packets through the IPVS virtual server by direction (kernel counter)', 'counter', (r) => inOut(r.labels, r.stats?.inPkts, r.stats?.outPkts));
    vs('kubeipvs_virtual_server_bytes_total', 'Bytes through the IPVS virtual server by direction (kernel counter)', 'counter', (r) => inOut(r.labels, r.stats?.inBytes, r.stats?.outBytes));
    rs('kubeipvs_real_server_connections_total', 'Connections scheduled to the real server (kernel counter)', 'counter', (r) => [{ labels: r.labels, value: n(r.stats?.conns) }]);
    rs('kubeipvs_real_server_packets_total', 'Packets to and from the real server by direction (kernel counter)', 'counter', (r) => inOut(r.labels, r.stats?.inPkts, r.stats?.outPkts));
    rs('kubeipvs_real_server_bytes_total', 'Bytes to and from the real server by direction (kernel counter)', 'counter', (r) => inOut(r.labels, r.stats?.inBytes, r.stats?.outBytes));
    rs('kubeipvs_real_server_active_connections', 'Active (established) connections to the real server', 'gauge', (r) => [{ labels: r.labels, value: r.d.activeConns ?? 0 }]);
    rs('kubeipvs_real_server_inactive_connections', 'Inactive connections (other states) to the real server', 'gauge', (r) => [{ labels: r.labels, value: r.d.inactiveConns ?? 0 }]);
    rs('kubeipvs_real_server_weight', 'Current IPVS weight of the real server (0: draining)', 'gauge', (r) => [{ labels: r.labels, value: r.d.weight }]);
    metrics.add(
      new ScrapeMetric('kubeipvs_real_server_series_dropped', 'Real servers left out of the per-backend series at the last scrape by metrics.realServerSeriesLimit', 'gauge', async () => [
        { labels: {}, value: (await this.snapshot()).dropped },
      ]),
    );
  }

  /** One kernel read shared by every metric of a scrape. */
  snapshot(): Promise<Snapshot> {
    if (!this.#inflight) {
      this.#inflight = this.#read().finally(() => {
        // Metrics of one scrape ask within the same tick; the next scrape reads again.
        setImmediate(() => (this.#inflight = null));
      });
    }
    return this.#inflight;
  }

  async #read(): Promise<Snapshot> {
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
      const [namespace = '', service = ''] = l.service.split('/');
      const vsLabels = { namespace, service, port_name: l.portName, kind: l.kind, protocol: s.protocol ?? '', address: s.address ?? '', port: s.port ?? 0 };
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
        rs.push({ labels: { ...vsLabels, backend: destinationId(d) }, stats: d.stats, d });
      }
    }
    return { vs, rs, dropped };
  }
}
