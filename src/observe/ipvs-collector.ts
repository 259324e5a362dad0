// Per virtual server and per real server series read from the kernel's IPVS counters at scrape
// time: one service dump per scrape (keys and counters only), then destination dumps until the
// real-server series limit is reached. Only virtual servers kube-ipvs owns are exported, labelled
// with their Kubernetes Service port from the ownership record. What the limit leaves out is
// counted. A scrape of 10 000 virtual servers is on the node's hot path every 15-60 s: label
// strings, each row's lines (rendered again only when one of its values changed) and the sorted order
// are kept across scrapes.
import type { Ipvs } from '../dataplane/ipvs/client.ts';
import {
  serviceKeyOf,
  type Counters,
  type DestinationCounters,
  type ServiceCounters,
  type ServiceKey,
} from '../dataplane/ipvs/types.ts';
import type { VsLabel } from '../dataplane/ownership.ts';
import type { Logger } from './log.ts';
import { nextTurn, turnEvery } from '../util/turn.ts';
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

/**
 * A metric family: name, help, type and the field(s) of a row's counters it shows (a pair is
 * rendered as direction="in" and direction="out").
 */
interface Family<C> {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  fields: readonly [keyof C] | readonly [keyof C, keyof C];
}

const VS_FAMILIES: Family<ServiceCounters>[] = [
  {
    name: 'kubeipvs_virtual_server_connections_total',
    help: 'Connections scheduled by the IPVS virtual server (kernel counter)',
    type: 'counter',
    fields: ['conns'],
  },
  {
    name: 'kubeipvs_virtual_server_packets_total',
    help: 'Packets through the IPVS virtual server by direction (kernel counter)',
    type: 'counter',
    fields: ['inPkts', 'outPkts'],
  },
  {
    name: 'kubeipvs_virtual_server_bytes_total',
    help: 'Bytes through the IPVS virtual server by direction (kernel counter)',
    type: 'counter',
    fields: ['inBytes', 'outBytes'],
  },
];
const RS_FAMILIES: Family<DestinationCounters>[] = [
  {
    name: 'kubeipvs_real_server_connections_total',
    help: 'Connections scheduled to the real server (kernel counter)',
    type: 'counter',
    fields: ['conns'],
  },
  {
    name: 'kubeipvs_real_server_packets_total',
    help: 'Packets to and from the real server by direction (kernel counter)',
    type: 'counter',
    fields: ['inPkts', 'outPkts'],
  },
  {
    name: 'kubeipvs_real_server_bytes_total',
    help: 'Bytes to and from the real server by direction (kernel counter)',
    type: 'counter',
    fields: ['inBytes', 'outBytes'],
  },
  {
    name: 'kubeipvs_real_server_active_connections',
    help: 'Active (established) connections to the real server',
    type: 'gauge',
    fields: ['activeConns'],
  },
  {
    name: 'kubeipvs_real_server_inactive_connections',
    help: 'Inactive connections (other states) to the real server',
    type: 'gauge',
    fields: ['inactiveConns'],
  },
  {
    name: 'kubeipvs_real_server_weight',
    help: 'Current IPVS weight of the real server (0: draining)',
    type: 'gauge',
    fields: ['weight'],
  },
];

const ASCII = /^[\x00-\x7f]*$/;

/** Rows a scrape updates or writes out between two turns of the event loop. */
const ROWS_PER_TURN = 2000;

/**
 * One row of series (a virtual or a real server): its label string and its lines, one string per
 * family, kept across scrapes and re-rendered only when a value changed. Most virtual servers of
 * a big cluster are idle between two scrapes, so most of a scrape is copying these strings.
 */
class Row<C extends Counters> {
  readonly id: string;
  from: VsLabel | null;
  labels: string;
  /** The values the lines show, in family and field order (NaN: never rendered). */
  readonly #shown: Float64Array;
  /**
   * Strings, written into one buffer per scrape. (Not a small Buffer each: those are slices of
   * 8 KiB pool chunks, and a chunk lives while any of its slices does; with lines rendered again
   * at random, 5 MB of lines held 50 MB of chunks.)
   */
  readonly lines: string[];
  /** Their lengths in bytes. */
  readonly bytes: number[];
  /** The labels are ASCII (Kubernetes names are), so are the lines: written as latin1, length = bytes. */
  ascii = true;
  seen = 0;

  constructor(id: string, families: readonly Family<C>[], from: VsLabel | null, labels: string) {
    this.id = id;
    this.from = from;
    this.labels = labels;
    this.#shown = new Float64Array(families.reduce((n, f) => n + f.fields.length, 0)).fill(NaN);
    this.lines = families.map(() => '');
    this.bytes = families.map(() => 0);
    this.ascii = ASCII.test(labels);
  }

  relabel(from: VsLabel | null, labels: string): void {
    this.from = from;
    this.labels = labels;
    this.ascii = ASCII.test(labels);
    this.#shown.fill(NaN);
  }

  #set(f: number, line: string): void {
    this.lines[f] = line;
    this.bytes[f] = this.ascii ? line.length : Buffer.byteLength(line);
  }

  /** Brings the lines up to date with `c`. */
  update(families: readonly Family<C>[], c: C): void {
    let k = 0;
    for (let f = 0; f < families.length; f++) {
      const { name, fields } = families[f]!;
      let same = true;
      for (const field of fields) if ((c[field] as number) !== this.#shown[k++]) same = false;
      if (same) continue;
      k -= fields.length;
      if (fields.length === 1) {
        const v = c[fields[0]] as number;
        this.#shown[k++] = v;
        this.#set(f, `${name}{${this.labels}} ${v}\n`);
      } else {
        const i = c[fields[0]] as number;
        const o = c[fields[1]] as number;
        this.#shown[k++] = i;
        this.#shown[k++] = o;
        this.#set(f, `${name}{${this.labels},direction="in"} ${i}\n${name}{${this.labels},direction="out"} ${o}\n`);
      }
    }
  }
}

/** A virtual server of ours, with the real servers that got series at the last scrape. */
interface VsRow extends Row<ServiceCounters> {
  from: VsLabel;
  /**
   * Its key for destination dumps, from the scrape that first saw it (a scrape's counters are not
   * kept: 10 000 objects that survive until the next scrape would all be promoted to V8's old
   * generation and make every few scrapes pay for a full collection).
   */
  key: ServiceKey;
  real: Map<string, Row<DestinationCounters>> | null;
}
interface Snapshot {
  vs: Row<ServiceCounters>[];
  rs: Row<DestinationCounters>[];
  dropped: number;
}

const byId = <T extends { id: string }>(a: T, b: T) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class IpvsCollector {
  readonly #o: IpvsCollectorOptions;
  /** Our virtual servers by id, and the same sorted by id (re-sorted only when the set changes). */
  readonly #rows = new Map<string, VsRow>();
  #order: VsRow[] = [];
  #scrape = 0;

  constructor(opts: IpvsCollectorOptions) {
    this.#o = opts;
  }

  /** Registers the series with `metrics` (rendered directly as text: tens of thousands of lines). */
  register(metrics: Metrics): void {
    metrics.addText(() => this.scrape());
  }

  #inFlight: Promise<Buffer[]> | null = null;

  /**
   * One scrape: a snapshot, rendered. The rows are shared by every scrape (a scrape marks the ones it saw and forgets
   * the rest), and a scrape lets the event loop turn: a scrape asked for while one runs (two Prometheus servers) gets
   * that one's result instead of starting another over the same rows.
   */
  scrape(): Promise<Buffer[]> {
    this.#inFlight ??= (async () => {
      try {
        return await this.render(await this.snapshot());
      } finally {
        this.#inFlight = null;
      }
    })();
    return this.#inFlight;
  }

  /**
   * The snapshot's series as text, in pieces of at most ROWS_PER_TURN rows' lines each (one buffer per piece: no
   * intermediate string or buffer per line). The event loop turns between pieces: 10 000 virtual servers' lines are
   * 0.1-0.2 s of copying natively, seconds under emulation, and a scrape must not hold an endpoint change that long.
   */
  async render(snap: Snapshot): Promise<Buffer[]> {
    const header = (f: { name: string; help: string; type: string }) =>
      Buffer.from(`# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`);
    const parts: Buffer[] = [];
    let written = 0;
    const family = async <C extends Counters>(f: Family<C>, i: number, rows: readonly Row<C>[]) => {
      parts.push(header(f));
      for (let from = 0; from < rows.length; from += ROWS_PER_TURN) {
        if (written >= ROWS_PER_TURN) {
          written = 0;
          await nextTurn();
        }
        const to = Math.min(rows.length, from + ROWS_PER_TURN);
        // One pass for the size, one to write, with nothing in between: the lines measured are the lines written.
        let size = 0;
        for (let k = from; k < to; k++) size += rows[k]!.bytes[i]!;
        const out = Buffer.allocUnsafe(size);
        let o = 0;
        for (let k = from; k < to; k++) {
          const r = rows[k]!;
          o += out.write(r.lines[i]!, o, r.ascii ? 'latin1' : 'utf8');
        }
        parts.push(out.subarray(0, o));
        written += to - from;
      }
    };
    for (const [i, f] of VS_FAMILIES.entries()) await family(f, i, snap.vs);
    for (const [i, f] of RS_FAMILIES.entries()) await family(f, i, snap.rs);
    parts.push(
      header({
        name: 'kubeipvs_real_server_series_dropped',
        help: 'Real servers left out of the per-backend series at this scrape by metrics.realServerSeriesLimit',
        type: 'gauge',
      }),
      Buffer.from(`kubeipvs_real_server_series_dropped ${snap.dropped}\n`),
    );
    return parts;
  }

  static #labels(l: VsLabel, c: ServiceCounters): string {
    const [namespace = '', service = ''] = l.service.split('/');
    return labelString({
      namespace,
      service,
      port_name: l.portName,
      kind: l.kind,
      protocol: c.protocol ?? 'FWM',
      address: c.address ?? `0x${(c.fwmark ?? 0).toString(16)}`,
      port: c.port ?? 0,
    });
  }

  /** One read of the kernel: our virtual servers' counters, destinations up to the limit. */
  async snapshot(): Promise<Snapshot> {
    const { ipvs, labels, log } = this.#o;
    let counters: ServiceCounters[];
    try {
      counters = await ipvs.serviceCounters();
    } catch (e) {
      log.warn('metrics: cannot read IPVS services', { error: (e as Error).message }, 'metrics:services');
      return { vs: [], rs: [], dropped: 0 };
    }
    const scrape = ++this.#scrape;
    let reorder = false;
    let seen = 0;
    const tick = turnEvery(ROWS_PER_TURN);
    for (const c of counters) {
      const turn = tick();
      if (turn) await turn;
      const l = labels.get(c.id);
      if (!l) continue;
      let row = this.#rows.get(c.id);
      if (!row) {
        row = Object.assign(new Row(c.id, VS_FAMILIES, l, IpvsCollector.#labels(l, c)), {
          from: l,
          key: serviceKeyOf(c),
          real: null,
        });
        this.#rows.set(c.id, row);
        reorder = true;
      } else if (row.from !== l) {
        row.relabel(l, IpvsCollector.#labels(l, c));
        row.real = null;
      }
      row.seen = scrape;
      row.update(VS_FAMILIES, c);
      seen++;
    }
    // Forget virtual servers that are gone (or no longer ours).
    if (seen !== this.#rows.size) {
      for (const [id, row] of this.#rows) if (row.seen !== scrape) this.#rows.delete(id);
      reorder = true;
    }
    if (reorder) this.#order = [...this.#rows.values()].sort(byId);

    const vs = this.#order;
    const rs: Row<DestinationCounters>[] = [];
    let budget = Math.max(0, this.#o.realServerLimit);
    let dropped = 0;
    let planned: ReadonlyMap<string, number> | null = null;
    for (const row of vs) {
      if (budget === 0) {
        row.real = null;
        planned ??= this.#o.plannedRealServers();
        dropped += planned.get(row.id) ?? 0;
        continue;
      }
      let dests: DestinationCounters[];
      try {
        dests = await ipvs.destinationCounters(row.key);
      } catch (e) {
        log.warn(
          'metrics: cannot read IPVS destinations',
          { virtualServer: row.id, error: (e as Error).message },
          `metrics:dests:${row.id}`,
        );
        continue;
      }
      dests.sort(byId);
      const before = row.real;
      row.real = new Map();
      for (const d of dests) {
        if (budget === 0) {
          dropped++;
          continue;
        }
        budget--;
        const r = before?.get(d.id) ?? new Row(d.id, RS_FAMILIES, null, `${row.labels},backend="${d.id}"`);
        r.update(RS_FAMILIES, d);
        row.real.set(d.id, r);
        rs.push(r);
      }
    }
    return { vs, rs, dropped };
  }
}
