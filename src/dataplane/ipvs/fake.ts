// An in-memory IPVS with the kernel's semantics and error codes, for tests and dry runs.
// It records every mutating call, so tests can assert "the minimal set of operations".
import { IpvsError, type Ipvs } from './client.ts';
import { destinationsByService, parseIpvsProcInTurns, renderIpvsProc } from './procfs.ts';
import {
  destinationCountersOf,
  destinationId,
  serviceCountersOf,
  serviceId,
  type DestinationCounters,
  type IpvsDestination,
  type IpvsInfo,
  type IpvsService,
  type KnownDestinations,
  type IpvsTimeouts,
  type ServiceCounters,
  type ServiceKey,
} from './types.ts';

const ESRCH = 3;
const ENOENT = 2;
const EEXIST = 17;
const EINVAL = 22;

export interface FakeOp {
  op:
    | 'addService'
    | 'updateService'
    | 'deleteService'
    | 'addDestination'
    | 'updateDestination'
    | 'deleteDestination'
    | 'setTimeouts'
    | 'zero'
    | 'flush';
  service?: string;
  destination?: string;
  weight?: number;
}

interface Entry {
  svc: IpvsService;
  dests: Map<string, IpvsDestination>;
}

const KNOWN_SCHEDULERS = new Set([
  'rr',
  'wrr',
  'lc',
  'wlc',
  'lblc',
  'lblcr',
  'dh',
  'sh',
  'sed',
  'nq',
  'mh',
  'fo',
  'ovf',
  'twos',
]);

export class FakeIpvs implements Ipvs {
  /** Every write so far, unless made with `recordOps: false` (a dry-run daemon's, which would keep them forever). */
  readonly ops: FakeOp[] = [];
  readonly #record: boolean;
  constructor(opts: { recordOps?: boolean } = {}) {
    this.#record = opts.recordOps ?? true;
  }
  #op(op: FakeOp): void {
    if (this.#record) this.ops.push(op);
  }
  #svcs = new Map<string, Entry>();
  #timeouts: IpvsTimeouts = { tcp: 900, tcpFin: 120, udp: 300 };
  /** Make the next matching call fail: `failures.set('addService TCP/10.0.0.1:80', 'EEXIST')`. */
  readonly failures = new Map<string, string>();
  closed = false;

  #fail(op: string, id: string): void {
    const code = this.failures.get(`${op} ${id}`) ?? this.failures.get(op);
    if (code) throw new IpvsError(op, 0, code, 'injected');
  }

  #get(op: string, key: ServiceKey): Entry {
    const e = this.#svcs.get(serviceId(key));
    if (!e) throw new IpvsError(`${op} ${serviceId(key)}`, ESRCH);
    return e;
  }

  async info(): Promise<IpvsInfo> {
    return { version: '1.2.1', connTableSize: 4096 };
  }

  /** services() calls so far (a dump of every virtual server on a real kernel). */
  serviceDumps = 0;

  async services(): Promise<IpvsService[]> {
    this.serviceDumps++;
    return [...this.#svcs.values()].map((e) => structuredClone(e.svc));
  }

  /** service() calls so far (a GET request on a real kernel). */
  serviceLookups = 0;

  async service(key: ServiceKey): Promise<IpvsService | null> {
    this.serviceLookups++;
    const e = this.#svcs.get(serviceId(key));
    return e ? structuredClone(e.svc) : null;
  }

  async addService(s: IpvsService): Promise<void> {
    const id = serviceId(s);
    this.#fail('addService', id);
    if (!KNOWN_SCHEDULERS.has(s.scheduler))
      throw new IpvsError(`add service ${id}`, ENOENT, 'ENOENT', `no scheduler ${s.scheduler}`);
    if (this.#svcs.has(id)) throw new IpvsError(`add service ${id}`, EEXIST);
    this.#svcs.set(id, { svc: structuredClone(s), dests: new Map() });
    this.#op({ op: 'addService', service: id });
  }

  async updateService(s: IpvsService): Promise<void> {
    const id = serviceId(s);
    this.#fail('updateService', id);
    const e = this.#get('update service', s);
    e.svc = structuredClone(s);
    this.#op({ op: 'updateService', service: id });
  }

  async deleteService(key: ServiceKey): Promise<void> {
    const id = serviceId(key);
    this.#fail('deleteService', id);
    this.#get('delete service', key);
    this.#svcs.delete(id);
    this.#op({ op: 'deleteService', service: id });
  }

  /** destinations() calls so far (a dump per virtual server on a real kernel). */
  destinationListings = 0;
  /** Of those, the ones that asked for the counters too. */
  destinationListingsWithStats = 0;

  async destinations(key: ServiceKey, opts: { stats?: boolean } = {}): Promise<IpvsDestination[]> {
    this.destinationListings++;
    if (opts.stats !== false) this.destinationListingsWithStats++;
    return [...this.#get('list destinations of', key).dests.values()].map((full) => {
      const { stats: _counters, ...bare } = full;
      return structuredClone(opts.stats === false ? bare : full);
    });
  }

  /** Make destinationTable fail with this code (a node whose /proc/net/ip_vs cannot be read or parsed). */
  tableFailure: string | null = null;
  /** destinationTable calls so far. */
  tableReads = 0;

  /** Through the kernel's /proc/net/ip_vs text (procfs.ts), so what that view leaves out is left out here too. */
  async destinationTable(services: IpvsService[]): Promise<Map<string, KnownDestinations>> {
    this.tableReads++;
    if (this.tableFailure) throw new IpvsError('read /proc/net/ip_vs', 0, this.tableFailure, 'injected');
    const entries = [...this.#svcs.values()].map((e) => ({ svc: e.svc, dests: e.dests.values() }));
    return destinationsByService(await parseIpvsProcInTurns(renderIpvsProc(entries)), services);
  }

  async serviceCounters(): Promise<ServiceCounters[]> {
    return (await this.services()).map(serviceCountersOf);
  }

  async destinationCounters(key: ServiceKey): Promise<DestinationCounters[]> {
    return (await this.destinations(key)).map(destinationCountersOf);
  }

  async addDestination(key: ServiceKey, d: IpvsDestination): Promise<void> {
    const id = serviceId(key);
    this.#fail('addDestination', `${id} ${destinationId(d)}`);
    const e = this.#get('add destination to', key);
    if (d.weight < 0) throw new IpvsError('add destination', EINVAL);
    if (e.dests.has(destinationId(d))) throw new IpvsError(`add destination ${destinationId(d)} to ${id}`, EEXIST);
    e.dests.set(destinationId(d), { activeConns: 0, inactiveConns: 0, persistConns: 0, ...structuredClone(d) });
    this.#op({ op: 'addDestination', service: id, destination: destinationId(d), weight: d.weight });
  }

  async updateDestination(key: ServiceKey, d: IpvsDestination): Promise<void> {
    const id = serviceId(key);
    this.#fail('updateDestination', `${id} ${destinationId(d)}`);
    const e = this.#get('update destination of', key);
    const old = e.dests.get(destinationId(d));
    if (!old) throw new IpvsError(`update destination ${destinationId(d)} of ${id}`, ENOENT);
    e.dests.set(destinationId(d), {
      ...old,
      ...structuredClone(d),
      activeConns: old.activeConns,
      inactiveConns: old.inactiveConns,
    });
    this.#op({ op: 'updateDestination', service: id, destination: destinationId(d), weight: d.weight });
  }

  async deleteDestination(key: ServiceKey, d: Pick<IpvsDestination, 'family' | 'address' | 'port'>): Promise<void> {
    const id = serviceId(key);
    this.#fail('deleteDestination', `${id} ${destinationId(d)}`);
    const e = this.#get('delete destination of', key);
    if (!e.dests.delete(destinationId(d)))
      throw new IpvsError(`delete destination ${destinationId(d)} of ${id}`, ENOENT);
    this.#op({ op: 'deleteDestination', service: id, destination: destinationId(d) });
  }

  async timeouts(): Promise<IpvsTimeouts> {
    return { ...this.#timeouts };
  }

  async setTimeouts(t: IpvsTimeouts): Promise<void> {
    // As the kernel: a zero leaves that timeout unchanged.
    this.#timeouts = {
      tcp: t.tcp || this.#timeouts.tcp,
      tcpFin: t.tcpFin || this.#timeouts.tcpFin,
      udp: t.udp || this.#timeouts.udp,
    };
    this.#op({ op: 'setTimeouts' });
  }

  async zero(key?: ServiceKey): Promise<void> {
    if (key) this.#get('zero', key);
    this.#op({ op: 'zero', ...(key ? { service: serviceId(key) } : {}) });
  }

  async flush(): Promise<void> {
    this.#svcs.clear();
    this.#op({ op: 'flush' });
  }

  close(): void {
    this.closed = true;
  }

  /** Test helper: a virtual server's or a destination's counters, as the kernel would have counted them. */
  setCounters(
    key: ServiceKey,
    dest: { address: string; port: number } | null,
    c: { conns?: number; inPkts?: number; outPkts?: number },
  ): void {
    const e = this.#get('set counters', key);
    const target = dest ? e.dests.get(destinationId(dest)) : e.svc;
    if (!target) throw new Error(`no destination ${dest ? destinationId(dest) : ''}`);
    const z = 0n;
    const old = target.stats ?? {
      conns: z,
      inPkts: z,
      outPkts: z,
      inBytes: z,
      outBytes: z,
      cps: z,
      inPps: z,
      outPps: z,
      inBps: z,
      outBps: z,
    };
    target.stats = {
      ...old,
      ...(c.conns !== undefined ? { conns: BigInt(c.conns) } : {}),
      ...(c.inPkts !== undefined ? { inPkts: BigInt(c.inPkts) } : {}),
      ...(c.outPkts !== undefined ? { outPkts: BigInt(c.outPkts) } : {}),
    };
  }

  /** Test helper: pretend connections exist on a destination (what graceful termination waits for). */
  setConnections(key: ServiceKey, dest: { address: string; port: number }, active: number, inactive: number): void {
    const d = this.#get('set connections', key).dests.get(destinationId(dest));
    if (!d) throw new Error(`no destination ${destinationId(dest)}`);
    d.activeConns = active;
    d.inactiveConns = inactive;
  }
}
