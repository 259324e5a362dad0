// The dummy interface that holds service addresses (kube-ipvs0), over rtnetlink, and its
// in-memory twin. Like kube-proxy, the interface stays down with NOARP: the kernel still treats
// its addresses as local, which is what IPVS needs, and never answers ARP for them.
import { FlagsGet, type RtNetlinkSocket } from 'netlink';
import { openRtNetlink, type NetlinkRequestOptions } from './netlink.ts';
import { formatIP, parseIP } from '../util/ip.ts';
import { turnEvery } from '../util/turn.ts';
import { attr, cstr, eachAttr } from './nlattr.ts';

export interface Links {
  /** The interface index, or null when there is no such interface. */
  find(name: string): Promise<number | null>;
  /** Creates the dummy interface if missing (refusing to adopt a non-dummy one); returns its index. */
  ensureDummy(name: string): Promise<number>;
  /** Canonical addresses on the interface. */
  addresses(index: number): Promise<string[]>;
  /** Every interface's addresses, by interface index (lo included). */
  allAddresses(): Promise<Map<number, string[]>>;
  /** Adds a host address (/32 or /128); an address already there is not an error. */
  addAddress(index: number, address: string): Promise<void>;
  /** Removes an address; one already gone is not an error. */
  deleteAddress(index: number, address: string): Promise<void>;
  deleteLink(index: number): Promise<void>;
  close(): void;
}

export class LinkError extends Error {
  readonly op: string;
  readonly code: string;
  constructor(op: string, code: string, detail?: string) {
    super(`rtnetlink ${op}: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'LinkError';
    this.op = op;
    this.code = code;
  }
}

const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const IFLA_INFO_KIND = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const RTM_NEWADDR = 20;
const RTM_GETADDR = 22;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
/** struct ifaddrmsg: family, prefix length, flags, scope (a byte each), interface index (u32). */
const IFADDRMSG_BYTES = 8;
/**
 * Address messages decoded between two turns of the event loop: the dummy interface holds every Service address (tens
 * of thousands), and a full resync reads them all (the netlink package's decoder took 2.5 s in one piece for 10 000
 * under emulation; this one is several times cheaper, and still lets endpoint changes in).
 */
const ADDRESSES_PER_TURN = 2000;
const codeOf = (e: unknown) =>
  /Request rejected: (\w+)/.exec((e as Error).message)?.[1] ??
  (/Timeout/.test((e as Error).message) ? 'ETIMEDOUT' : 'EIO');

export class NetlinkLinks implements Links {
  readonly #rt: RtNetlinkSocket;
  readonly #timeout: number;

  /** `rt`: the rtnetlink socket to use (tests); by default one of its own. */
  constructor(opts: { timeoutMs?: number; rt?: RtNetlinkSocket } = {}) {
    this.#rt = opts.rt ?? openRtNetlink();
    this.#timeout = opts.timeoutMs ?? 5000;
  }

  async #call<T>(op: string, f: () => Promise<T>, ok: string[] = []): Promise<T | null> {
    try {
      return await f();
    } catch (e) {
      const code = codeOf(e);
      if (ok.includes(code)) return null;
      throw new LinkError(op, code);
    }
  }

  async find(name: string): Promise<number | null> {
    const r = await this.#call(
      `get link ${name}`,
      () => this.#rt.getLink({}, { ifname: name }, { timeout: this.#timeout }),
      ['ENODEV'],
    );
    return r?.[0]?.data.index ?? null;
  }

  async #kind(name: string): Promise<string | null> {
    const r = await this.#call(
      `get link ${name}`,
      () => this.#rt.getLink({}, { ifname: name }, { timeout: this.#timeout }),
      ['ENODEV'],
    );
    const info = r?.[0]?.attrs.linkinfo;
    if (!info || info.length < 8) return null;
    // The first nested attribute of IFLA_LINKINFO is IFLA_INFO_KIND.
    return info.readUInt16LE(2) === IFLA_INFO_KIND
      ? info.subarray(4, info.readUInt16LE(0)).toString('utf8').replace(/\0.*$/s, '')
      : null;
  }

  async ensureDummy(name: string): Promise<number> {
    const existing = await this.find(name);
    if (existing !== null) {
      const kind = await this.#kind(name);
      if (kind !== 'dummy')
        throw new LinkError(
          `adopt ${name}`,
          'EEXIST',
          `an interface named ${name} exists and is a ${kind ?? 'non-dummy'} interface`,
        );
      return existing;
    }
    await this.#call(
      `create dummy ${name}`,
      () =>
        this.#rt.newLink(
          { flags: { noarp: true }, change: { noarp: true } },
          { ifname: name, linkinfo: attr(IFLA_INFO_KIND, cstr('dummy')) },
          { flags: NLM_F_CREATE | NLM_F_EXCL, timeout: this.#timeout },
        ),
      ['EEXIST'],
    );
    const index = await this.find(name);
    if (index === null) throw new LinkError(`create dummy ${name}`, 'ENODEV', 'created but not found');
    return index;
  }

  async addresses(index: number): Promise<string[]> {
    return (await this.allAddresses()).get(index) ?? [];
  }

  async allAddresses(): Promise<Map<number, string[]>> {
    // An ifaddrmsg of zeros: every address of every family, on every interface. The replies are decoded here, not by
    // the netlink package (its decoder builds several objects per attribute).
    const request = Buffer.alloc(IFADDRMSG_BYTES);
    const op = 'list addresses';
    const reply = await this.#call(op, () =>
      this.#rt.socket.request(RTM_GETADDR, [request], { flags: FlagsGet.DUMP, timeout: this.#timeout }),
    );
    const out = new Map<number, string[]>();
    const tick = turnEvery(ADDRESSES_PER_TURN);
    for (const m of reply?.[0] ?? []) {
      const turn = tick();
      if (turn) await turn;
      if (m.type !== RTM_NEWADDR) continue;
      let a;
      try {
        a = decodeAddressMessage(m.data);
      } catch (e) {
        throw new LinkError(op, 'EBADMSG', (e as Error).message);
      }
      if (!a) continue;
      const list = out.get(a.index);
      if (list) list.push(a.address);
      else out.set(a.index, [a.address]);
    }
    return out;
  }

  /** An address change's options: batched with the others of this turn (DemuxNetlinkSocket.request). */
  #change(flags: number): NetlinkRequestOptions {
    return { flags, timeout: this.#timeout, batch: true };
  }

  #addr(address: string) {
    const p = parseIP(address);
    if (!p) throw new LinkError('address', 'EINVAL', `${JSON.stringify(address)} is not an IP address`);
    return {
      family: p.family === 4 ? AF_INET : AF_INET6,
      prefixlen: p.family === 4 ? 32 : 128,
      bytes: Buffer.from(p.bytes),
    };
  }

  async addAddress(index: number, address: string): Promise<void> {
    const a = this.#addr(address);
    await this.#call(
      `add address ${address}`,
      // nodad: an IPv6 service address must be usable at once, not after duplicate detection.
      () =>
        this.#rt.newAddress(
          { family: a.family, prefixlen: a.prefixlen, index, flags: a.family === AF_INET6 ? { nodad: true } : {} },
          { local: a.bytes, address: a.bytes },
          this.#change(NLM_F_CREATE | NLM_F_EXCL),
        ),
      ['EEXIST'],
    );
  }

  async deleteAddress(index: number, address: string): Promise<void> {
    const a = this.#addr(address);
    await this.#call(
      `delete address ${address}`,
      () =>
        this.#rt.delAddress(
          { family: a.family, prefixlen: a.prefixlen, index },
          { local: a.bytes, address: a.bytes },
          this.#change(0),
        ),
      ['EADDRNOTAVAIL', 'ENOENT', 'ENODEV'],
    );
  }

  async deleteLink(index: number): Promise<void> {
    await this.#call(`delete link ${index}`, () => this.#rt.delLink({ index }, {}, { timeout: this.#timeout }), [
      'ENODEV',
    ]);
  }

  close(): void {
    this.#rt.socket.close();
  }
}

/** In-memory links: one namespace's worth of interfaces and addresses. */
export class FakeLinks implements Links {
  #next = 10;
  readonly links = new Map<string, { index: number; kind: string; addresses: Set<string> }>();

  #byIndex(index: number) {
    for (const l of this.links.values()) if (l.index === index) return l;
    throw new LinkError(`link ${index}`, 'ENODEV');
  }
  async find(name: string) {
    return this.links.get(name)?.index ?? null;
  }
  async ensureDummy(name: string) {
    const l = this.links.get(name);
    if (l && l.kind !== 'dummy')
      throw new LinkError(`adopt ${name}`, 'EEXIST', `an interface named ${name} exists and is a ${l.kind} interface`);
    if (l) return l.index;
    const index = this.#next++;
    this.links.set(name, { index, kind: 'dummy', addresses: new Set() });
    return index;
  }
  /** addresses() and allAddresses() calls so far (an address dump each on a real kernel). */
  addressDumps = 0;
  async addresses(index: number) {
    this.addressDumps++;
    return [...this.#byIndex(index).addresses];
  }
  async allAddresses() {
    this.addressDumps++;
    return new Map([...this.links.values()].map((l) => [l.index, [...l.addresses]]));
  }
  async addAddress(index: number, address: string) {
    this.#byIndex(index).addresses.add(address);
  }
  async deleteAddress(index: number, address: string) {
    this.#byIndex(index).addresses.delete(address);
  }
  async deleteLink(index: number) {
    for (const [name, l] of this.links) if (l.index === index) this.links.delete(name);
  }
  close() {}
}

/**
 * One RTM_NEWADDR message's payload: the interface index and the address (IFA_LOCAL, which is the interface's own
 * address on a point-to-point link, else IFA_ADDRESS), canonical; null when it carries neither as 4 or 16 bytes.
 * Throws on a payload that does not parse (what the kernel answers is checked like anything from outside).
 */
export function decodeAddressMessage(b: Uint8Array): { index: number; address: string } | null {
  if (b.length < IFADDRMSG_BYTES) throw new Error(`an address message of ${b.length} bytes`);
  const index = (b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)) >>> 0;
  let local = null as Uint8Array | null;
  let address = null as Uint8Array | null;
  eachAttr(b, IFADDRMSG_BYTES, b.length, (type, o) => {
    const len = b[o]! | (b[o + 1]! << 8);
    if (type === IFA_LOCAL) local = b.subarray(o + 4, o + len);
    else if (type === IFA_ADDRESS) address = b.subarray(o + 4, o + len);
  });
  const raw = local ?? address;
  if (!raw || (raw.length !== 4 && raw.length !== 16)) return null;
  return { index, address: formatIP({ family: raw.length === 4 ? 4 : 6, bytes: Uint8Array.from(raw) }) };
}
