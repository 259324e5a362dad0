// The IPVS kernel interface: one small async API, implemented over generic netlink here and in
// memory by fake.ts. Every request has a timeout; kernel errors become IpvsError with the errno
// and the operation, never a hang and never a bare string.
import { open } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { FlagsGet, genl, parseError, type GenericNetlinkSocket } from 'netlink';
import {
  NLM_F_DUMP_INTR,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  openGenericNetlink,
  type DemuxNetlinkSocket,
  type NetlinkRequestOptions,
  type RawSocket,
} from '../netlink.ts';
import {
  decodeDestination,
  decodeDestinationCounters,
  decodeGenl,
  decodeInfo,
  decodeService,
  decodeServiceCounters,
  decodeServiceReply,
  decodeTimeouts,
  destinationAttr,
  destinationKeyAttr,
  encodeRequest,
  serviceAttr,
  serviceKeyAttr,
  timeoutAttrs,
  type GenlMessage,
} from './codec.ts';
import { Cmd, CmdAttr, IPVS_GENL_NAME } from './constants.ts';
import { destinationsByService, IPVS_PROC_PATH, parseIpvsProcInTurns } from './procfs.ts';
import {
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
import { turnEvery } from '../../util/turn.ts';

/**
 * Replies of a service dump decoded between two turns of the event loop: a resync and every scrape dump all virtual
 * servers (10 000 decoded in one piece held the loop 2-5 s under emulation; endpoint changes go alongside).
 */
const REPLIES_PER_TURN = 1000;

export interface Ipvs {
  info(): Promise<IpvsInfo>;
  /** Every service; `stats: false` leaves their counters out (what a resync compares has none). */
  services(opts?: { stats?: boolean }): Promise<IpvsService[]>;
  service(key: ServiceKey): Promise<IpvsService | null>;
  addService(s: IpvsService): Promise<void>;
  updateService(s: IpvsService): Promise<void>;
  deleteService(key: ServiceKey): Promise<void>;
  /** `stats: false` leaves their counters out (a sync compares none; the connection counts are not counters). */
  destinations(key: ServiceKey, opts?: { stats?: boolean }): Promise<IpvsDestination[]>;
  /**
   * The destinations of each of `services` (a service dump) read in one go from /proc/net/ip_vs (procfs.ts says what
   * that view leaves out), by serviceId; a service it does not show unambiguously is missing from the map. Fails
   * when the table cannot be read or parsed: the caller then dumps destinations per service.
   */
  destinationTable(services: IpvsService[]): Promise<Map<string, KnownDestinations>>;
  /** The services' keys and counters only: what a metrics scrape reads (cheaper than services()). */
  serviceCounters(): Promise<ServiceCounters[]>;
  /** One service's destinations' counters and state only. */
  destinationCounters(key: ServiceKey): Promise<DestinationCounters[]>;
  addDestination(key: ServiceKey, d: IpvsDestination): Promise<void>;
  updateDestination(key: ServiceKey, d: IpvsDestination): Promise<void>;
  deleteDestination(key: ServiceKey, d: Pick<IpvsDestination, 'family' | 'address' | 'port'>): Promise<void>;
  timeouts(): Promise<IpvsTimeouts>;
  setTimeouts(t: IpvsTimeouts): Promise<void>;
  /** Zero the counters of one service, or of everything. */
  zero(key?: ServiceKey): Promise<void>;
  /** Remove every service. Never called by the reconciler: only by tests and explicit tools. */
  flush(): Promise<void>;
  close(): void;
}

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** A kernel (or transport) error for one IPVS operation. */
export class IpvsError extends Error {
  readonly op: string;
  /** Positive errno (EEXIST = 17...), or 0 for a timeout or a transport failure. */
  readonly errno: number;
  /** "EEXIST", "ENOENT", "ESRCH", "ETIMEDOUT"... */
  readonly code: string;
  constructor(op: string, errno: number, code?: string, detail?: string) {
    const c = code ?? errnoNames.get(errno) ?? `errno ${errno}`;
    super(`IPVS ${op}: ${c}${detail ? ` (${detail})` : ''}`);
    this.name = 'IpvsError';
    this.op = op;
    this.errno = errno;
    this.code = c;
  }
}

export interface NetlinkIpvsOptions {
  /** Per-request timeout in ms (default 5000). */
  timeoutMs?: number;
  /**
   * Read each reply into a buffer of this many bytes instead of peeking at its size first. The
   * kernel sizes a dump's chunks after the largest read it has seen (up to 32 KiB): peeking keeps
   * them at one page, so a 10 000-service dump comes in ~1 000 chunks, each re-walking the
   * kernel's service table from the start; 64 KiB reads make them 8x fewer. Every read allocates
   * this much, so it suits a socket that mostly dumps (the metrics collector), not one sending
   * 100 000 single commands (the reconciler). Default: peek.
   */
  readBufferBytes?: number;
  /** An open raw netlink socket to talk over (tests: an in-memory kernel). */
  raw?: RawSocket;
  /** Where destinationTable reads the whole table (default /proc/net/ip_vs). */
  procPath?: string;
}

/** `readBufferBytes` for a socket that mostly dumps (metrics scrapes, `kube-ipvs status`). */
export const DUMP_READ_BYTES = 64 * 1024;

export class NetlinkIpvs implements Ipvs {
  readonly #sock: GenericNetlinkSocket;
  readonly #family: number;
  readonly #timeout: number;
  readonly #procPath: string;
  /** The kernel runs one dump per netlink socket at a time (a second one gets EBUSY): queue them. */
  #dumpQueue: Promise<unknown> = Promise.resolve();

  private constructor(sock: GenericNetlinkSocket, family: number, timeout: number, procPath: string) {
    this.#sock = sock;
    this.#family = family;
    this.#timeout = timeout;
    this.#procPath = procPath;
  }

  /** Opens a socket and resolves the IPVS family; fails with ENOENT when ip_vs is not loaded. */
  static async open(opts: NetlinkIpvsOptions = {}): Promise<NetlinkIpvs> {
    const timeout = opts.timeoutMs ?? 5000;
    const sock = openGenericNetlink({
      ...(opts.readBufferBytes ? { readBufferBytes: opts.readBufferBytes } : {}),
      ...(opts.raw ? { raw: opts.raw } : {}),
    });
    try {
      // Large buffers: a dump of tens of thousands of services arrives in one burst.
      sock.socket.setRecvBufferSize(8 * 1024 * 1024);
      sock.socket.setSendBufferSize(4 * 1024 * 1024);
    } catch {
      /* best effort: the kernel caps these at net.core.[rw]mem_max */
    }
    try {
      const fams = await sock.ctrlRequest(genl.Commands.GET_FAMILY, { familyName: IPVS_GENL_NAME }, { timeout });
      const id = fams[0]?.familyId;
      if (!id) throw new IpvsError('resolve family', 2, 'ENOENT', 'no IPVS generic netlink family');
      return new NetlinkIpvs(sock, id, timeout, opts.procPath ?? IPVS_PROC_PATH);
    } catch (e) {
      sock.socket.close();
      if (e instanceof IpvsError) throw e;
      const msg = (e as Error).message;
      if (/ENOENT/.test(msg))
        throw new IpvsError('resolve family', 2, 'ENOENT', 'IPVS is not available: load the ip_vs kernel module');
      if (/Timeout/.test(msg)) throw new IpvsError('resolve family', 0, 'ETIMEDOUT', `no answer within ${timeout} ms`);
      throw new IpvsError('resolve family', 0, 'EIO', msg);
    }
  }

  async #request(
    op: string,
    cmd: number,
    attrs: Parameters<typeof encodeRequest>[1],
    dump = false,
  ): Promise<GenlMessage[]> {
    return (await this.#requestRaw(op, cmd, attrs, dump)).map(decodeGenl);
  }

  /** A change (add, set, delete, zero, flush): batched with the others of this turn (DemuxNetlinkSocket.request). */
  async #change(op: string, cmd: number, attrs: Parameters<typeof encodeRequest>[1]): Promise<void> {
    await this.#send(op, cmd, attrs, false, true);
  }

  /** The replies' genl payloads, undecoded. */
  #requestRaw(op: string, cmd: number, attrs: Parameters<typeof encodeRequest>[1], dump = false): Promise<Buffer[]> {
    if (!dump) return this.#send(op, cmd, attrs, false);
    const run = this.#dumpQueue.then(() => this.#send(op, cmd, attrs, true));
    this.#dumpQueue = run.catch(() => {});
    return run;
  }

  async #send(
    op: string,
    cmd: number,
    attrs: Parameters<typeof encodeRequest>[1],
    dump: boolean,
    batch = false,
  ): Promise<Buffer[]> {
    let msgs;
    try {
      const options: NetlinkRequestOptions = {
        flags: dump ? FlagsGet.DUMP : 0,
        timeout: this.#timeout,
        checkError: false,
        batch,
      };
      [msgs] = await this.#sock.socket.request(this.#family, encodeRequest(cmd, attrs), options);
    } catch (e) {
      const m = (e as Error).message;
      if (/Timeout/.test(m)) throw new IpvsError(op, 0, 'ETIMEDOUT', `no answer within ${this.#timeout} ms`);
      const errno = Math.abs(Number((e as { errno?: number }).errno ?? 0));
      throw new IpvsError(op, errno, errno ? undefined : 'EIO', m);
    }
    const out: Buffer[] = [];
    for (const msg of msgs) {
      if (msg.type === NLMSG_ERROR) {
        const { errno } = parseError(msg.data, msg.flags);
        if (errno !== 0) throw new IpvsError(op, Math.abs(errno));
        continue; // the ACK
      }
      // (DONE never gets here: the socket takes it off, or fails the request with its errno.)
      if (msg.type === NLMSG_DONE || msg.type === NLMSG_NOOP) continue;
      // The kernel's table changed under a running dump: what was read may skip or repeat entries.
      if (msg.flags & NLM_F_DUMP_INTR) throw new IpvsError(op, 4, 'EINTR', 'dump interrupted by a concurrent change');
      out.push(msg.data);
    }
    return out;
  }

  async info(): Promise<IpvsInfo> {
    const [m] = await this.#request('get info', Cmd.GET_INFO, []);
    if (!m) throw new IpvsError('get info', 0, 'EIO', 'empty reply');
    return decodeInfo(m);
  }

  async services(opts: { stats?: boolean } = {}): Promise<IpvsService[]> {
    const out: IpvsService[] = [];
    const tick = turnEvery(REPLIES_PER_TURN);
    for (const p of await this.#requestRaw('list services', Cmd.GET_SERVICE, [], true)) {
      const turn = tick();
      if (turn) await turn;
      const s = decodeServiceReply(p, opts.stats !== false);
      if (s) out.push(s);
    }
    return out;
  }

  async service(key: ServiceKey): Promise<IpvsService | null> {
    try {
      const [m] = await this.#request(`get service ${serviceId(key)}`, Cmd.GET_SERVICE, [serviceKeyAttr(key)]);
      const a = m?.attrs.get(CmdAttr.SERVICE);
      return a ? decodeService(a) : null;
    } catch (e) {
      if (e instanceof IpvsError && (e.code === 'ESRCH' || e.code === 'ENOENT')) return null;
      throw e;
    }
  }

  async addService(s: IpvsService): Promise<void> {
    await this.#change(`add service ${serviceId(s)}`, Cmd.NEW_SERVICE, [serviceAttr(s)]);
  }

  async updateService(s: IpvsService): Promise<void> {
    await this.#change(`update service ${serviceId(s)}`, Cmd.SET_SERVICE, [serviceAttr(s)]);
  }

  async deleteService(key: ServiceKey): Promise<void> {
    await this.#change(`delete service ${serviceId(key)}`, Cmd.DEL_SERVICE, [serviceKeyAttr(key)]);
  }

  async destinations(key: ServiceKey, opts: { stats?: boolean } = {}): Promise<IpvsDestination[]> {
    const msgs = await this.#request(
      `list destinations of ${serviceId(key)}`,
      Cmd.GET_DEST,
      [serviceKeyAttr(key)],
      true,
    );
    return msgs.flatMap((m) => {
      const a = m.attrs.get(CmdAttr.DEST);
      return a ? [decodeDestination(a, key.family, opts.stats !== false)] : [];
    });
  }

  async destinationTable(services: IpvsService[]): Promise<Map<string, KnownDestinations>> {
    const op = `read ${this.#procPath}`;
    let text: string;
    try {
      text = await readProcText(this.#procPath);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
      throw new IpvsError(op, Number(osConstants.errno[code as keyof typeof osConstants.errno] ?? 5), code);
    }
    try {
      return destinationsByService(await parseIpvsProcInTurns(text), services);
    } catch (e) {
      throw new IpvsError(op, 74, 'EBADMSG', (e as Error).message);
    }
  }

  async serviceCounters(): Promise<ServiceCounters[]> {
    const out: ServiceCounters[] = [];
    const tick = turnEvery(REPLIES_PER_TURN);
    for (const p of await this.#requestRaw('list service counters', Cmd.GET_SERVICE, [], true)) {
      const turn = tick();
      if (turn) await turn;
      const c = decodeServiceCounters(p);
      if (c) out.push(c);
    }
    return out;
  }

  async destinationCounters(key: ServiceKey): Promise<DestinationCounters[]> {
    const out: DestinationCounters[] = [];
    for (const p of await this.#requestRaw(
      `list destination counters of ${serviceId(key)}`,
      Cmd.GET_DEST,
      [serviceKeyAttr(key)],
      true,
    )) {
      const c = decodeDestinationCounters(p, key.family);
      if (c) out.push(c);
    }
    return out;
  }

  async addDestination(key: ServiceKey, d: IpvsDestination): Promise<void> {
    await this.#change(`add destination ${d.address}:${d.port} to ${serviceId(key)}`, Cmd.NEW_DEST, [
      serviceKeyAttr(key),
      destinationAttr(d),
    ]);
  }

  async updateDestination(key: ServiceKey, d: IpvsDestination): Promise<void> {
    await this.#change(`update destination ${d.address}:${d.port} of ${serviceId(key)}`, Cmd.SET_DEST, [
      serviceKeyAttr(key),
      destinationAttr(d),
    ]);
  }

  async deleteDestination(key: ServiceKey, d: Pick<IpvsDestination, 'family' | 'address' | 'port'>): Promise<void> {
    await this.#change(`delete destination ${d.address}:${d.port} of ${serviceId(key)}`, Cmd.DEL_DEST, [
      serviceKeyAttr(key),
      destinationKeyAttr(d),
    ]);
  }

  async timeouts(): Promise<IpvsTimeouts> {
    const [m] = await this.#request('get timeouts', Cmd.GET_CONFIG, []);
    if (!m) throw new IpvsError('get timeouts', 0, 'EIO', 'empty reply');
    return decodeTimeouts(m);
  }

  async setTimeouts(t: IpvsTimeouts): Promise<void> {
    await this.#request('set timeouts', Cmd.SET_CONFIG, timeoutAttrs(t));
  }

  async zero(key?: ServiceKey): Promise<void> {
    await this.#request(key ? `zero ${serviceId(key)}` : 'zero all', Cmd.ZERO, key ? [serviceKeyAttr(key)] : []);
  }

  async flush(): Promise<void> {
    await this.#request('flush', Cmd.FLUSH, []);
  }

  /** The netlink socket underneath (its counters: batches sent, requests waiting...). */
  get socket(): DemuxNetlinkSocket {
    return this.#sock.socket as DemuxNetlinkSocket;
  }

  close(): void {
    this.#sock.socket.close();
  }
}

/** Cap on the table's text: about 60 bytes a destination, so room for over a million. */
const PROC_MAX_BYTES = 64 * 1024 * 1024;

/**
 * A /proc file's whole text, read in large pieces: the kernel walks its tables from the start at every read of a
 * seq_file, so few reads of much beat many small ones.
 */
async function readProcText(path: string): Promise<string> {
  const f = await open(path, 'r');
  try {
    // One buffer, grown by doubling: a seq_file read returns about a page however much is asked for, so the
    // table comes in thousands of reads.
    let buf = Buffer.allocUnsafe(1 << 20);
    let len = 0;
    for (;;) {
      if (buf.length - len < 64 * 1024) {
        if (buf.length >= PROC_MAX_BYTES)
          throw Object.assign(new Error(`${path}: over ${PROC_MAX_BYTES} bytes`), { code: 'EFBIG' });
        const bigger = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(bigger, 0, 0, len);
        buf = bigger;
      }
      const { bytesRead } = await f.read(buf, len, buf.length - len, null);
      if (bytesRead === 0) break;
      len += bytesRead;
    }
    return buf.toString('latin1', 0, len);
  } finally {
    await f.close();
  }
}
