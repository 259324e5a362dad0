// ipset entries added and deleted over nfnetlink (the protocol the `ipset` tool speaks to the
// kernel), for the incremental path: one endpoint change used to cost an `ipset restore` process
// (its hairpin LOOP-BACK entries), 170-230 ms of a one-endpoint sync under emulation. Sets are still
// created, rebuilt and swapped by `ipset restore` (src/dataplane/netfilter.ts); only `add` and
// `del` of entries go here, each request acknowledged by the kernel, many in flight at once.
//
// Entries are the text the plan writes (the `ipset restore` syntax of src/plan/netfilter.ts):
//   hash:ip            ADDR
//   hash:ip,port       ADDR,PROTO:PORT [skbmark 0xMARK[/0xMASK]]
//   hash:ip,port,ip    ADDR,PROTO:PORT,ADDR
//   hash:ip,port,net   ADDR,PROTO:PORT,ADDR/LEN
//   bitmap:port        PORT
// Anything else is refused with a reason before a byte is sent.
import { Flags } from 'netlink';
import { formatIP, parseIP, type ParsedIP } from '../util/ip.ts';
import { AttrWriter } from './nlattr.ts';
import { openNetfilterNetlink, type DemuxNetlinkSocket, type SocketOptions } from './netlink.ts';

const NFNL_SUBSYS_IPSET = 6;
export const IPSET_CMD = { PROTOCOL: 1, ADD: 9, DEL: 10 } as const;
const IPSET_PROTOCOL = 7;
const A = { PROTOCOL: 1, SETNAME: 2, DATA: 7, ADT: 8, LINENO: 9 } as const;
const D = { IP: 1, CIDR: 3, PORT: 4, PROTO: 7, IP2: 20, CIDR2: 21, SKBMARK: 27 } as const;
const IPADDR_IPV4 = 1;
const IPADDR_IPV6 = 2;
const NLA_F_NESTED = 0x8000;
const NLA_F_NET_BYTEORDER = 0x4000;
const PROTOS: Record<string, number> = { tcp: 6, udp: 17, sctp: 132 };
/** ipset's own errno values (IPSET_ERR_PRIVATE and up), as the ipset tool words them. */
const IPSET_ERRORS: Record<number, string> = {
  4097: 'kernel and ipset protocols differ',
  4098: 'set type not supported',
  4099: 'set of that name exists',
  4101: 'set type mismatch',
  4102: 'set is full',
  4103: 'element exists',
  4104: 'element does not exist',
  4105: 'invalid CIDR',
  4106: 'family mismatch',
  4107: 'hash table is full',
};

export type IpsetType = 'hash:ip' | 'hash:ip,port' | 'hash:ip,port,ip' | 'hash:ip,port,net' | 'bitmap:port';
export interface IpsetOp {
  op: 'add' | 'del';
  set: string;
  type: IpsetType;
  entry: string;
}

/** An address attribute of `type`: the nest holding IPADDR_IPV4 / IPADDR_IPV6 in network byte order. */
function writeIp(w: AttrWriter, type: number, a: ParsedIP): void {
  const nest = w.begin(type | NLA_F_NESTED);
  const at = w.begin((a.family === 4 ? IPADDR_IPV4 : IPADDR_IPV6) | NLA_F_NET_BYTEORDER);
  w.raw(a.bytes);
  w.end(at);
  w.end(nest);
}

function address(text: string): ParsedIP {
  const p = parseIP(text);
  if (!p) throw new Error(`not an IP address: ${JSON.stringify(text)}`);
  // Canonical text only (the plan writes nothing else): `ipset restore` may read a leading zero
  // as octal where this parser would not, and the two paths must mean the same element.
  if (formatIP(p) !== text) throw new Error(`not an address in canonical form: ${JSON.stringify(text)}`);
  return p;
}

function portNumber(text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new Error(`not a port: ${JSON.stringify(text)}`);
  return Number(text);
}

const PARTS: Record<Exclude<IpsetType, 'bitmap:port'>, number> = {
  'hash:ip': 1,
  'hash:ip,port': 2,
  'hash:ip,port,ip': 3,
  'hash:ip,port,net': 3,
};

/**
 * Writes the IPSET_ATTR_DATA attributes of one entry of a set of `type` (not the DATA nest around them); returns the
 * family it is in (0 for bitmap:port). Throws, before anything is sent, on what it cannot say.
 */
function writeEntry(w: AttrWriter, type: IpsetType, entry: string): 0 | 4 | 6 {
  if (type === 'bitmap:port') {
    w.be16(D.PORT | NLA_F_NET_BYTEORDER, portNumber(entry));
    return 0;
  }
  const [main = '', ...ext] = entry.split(' ');
  const parts = main.split(',');
  const want = PARTS[type];
  if (parts.length !== want) throw new Error(`a ${type} entry has ${want} part(s): ${JSON.stringify(entry)}`);
  // Everything is read (and refused) before the first byte is written.
  const ip = address(parts[0]!);
  let proto = 0;
  let port = 0;
  if (parts.length > 1) {
    const m = /^(tcp|udp|sctp):(\d{1,5})$/.exec(parts[1]!);
    if (!m) throw new Error(`not PROTO:PORT: ${JSON.stringify(parts[1])}`);
    port = portNumber(m[2]!);
    proto = PROTOS[m[1]!]!;
  }
  let ip2: ParsedIP | null = null;
  let cidr2 = 0;
  if (type === 'hash:ip,port,ip') {
    ip2 = address(parts[2]!);
    if (ip2.family !== ip.family) throw new Error(`mixed address families: ${JSON.stringify(entry)}`);
  } else if (type === 'hash:ip,port,net') {
    const [addr = '', len = ''] = parts[2]!.split('/');
    ip2 = address(addr);
    const max = ip2.family === 4 ? 32 : 128;
    if (ip2.family !== ip.family) throw new Error(`mixed address families: ${JSON.stringify(entry)}`);
    cidr2 = len === '' ? max : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
    if (!(cidr2 >= 1 && cidr2 <= max)) throw new Error(`not a prefix length: ${JSON.stringify(entry)}`);
  }
  let mark: [number, number] | null = null;
  if (ext.length > 0) {
    if (type !== 'hash:ip,port' || ext.length !== 2 || ext[0] !== 'skbmark')
      throw new Error(`unknown entry extension: ${JSON.stringify(entry)}`);
    const m = /^0x([0-9a-f]{1,8})(?:\/0x([0-9a-f]{1,8}))?$/i.exec(ext[1]!);
    if (!m) throw new Error(`not a mark: ${JSON.stringify(entry)}`);
    mark = [parseInt(m[1]!, 16), m[2] ? parseInt(m[2], 16) : 0xffffffff];
  }
  writeIp(w, D.IP, ip);
  if (parts.length > 1) {
    w.be16(D.PORT | NLA_F_NET_BYTEORDER, port);
    w.u8(D.PROTO, proto);
  }
  if (ip2) writeIp(w, D.IP2, ip2);
  if (type === 'hash:ip,port,net') w.u8(D.CIDR2, cidr2);
  if (mark) w.be64(D.SKBMARK | NLA_F_NET_BYTEORDER, mark[0], mark[1]);
  return ip.family;
}

/** The IPSET_ATTR_DATA attributes of one entry of a set of `type` (and the family it is in; 0 for bitmap:port). */
export function entryData(type: IpsetType, entry: string): { family: 0 | 4 | 6; data: Buffer } {
  const w = new AttrWriter();
  const family = writeEntry(w, type, entry);
  return { family, data: w.done() };
}

function checkSetName(set: string): void {
  if (!/^[A-Za-z0-9_.-]{1,31}$/.test(set)) throw new Error(`not a set name: ${JSON.stringify(set)}`);
}
/** nfgenmsg: family (set once the entry is read), version 0, resource id 0. */
const NFGEN_PLACEHOLDER = new Uint8Array(4);
const nfgenFamily = (family: 0 | 4 | 6) => (family === 4 ? 2 : family === 6 ? 10 : 0);

/**
 * The bytes a request to each set starts with, by set name: the daemon writes to a handful of sets (its own, and
 * their "-T" twins while a rebuild fills them), an endpoint change to one or two of them, so the name's check and
 * encoding are done once per set. Bounded all the same: a name past the bound is encoded each time.
 */
const HEADS = new Map<string, Buffer>();
const HEADS_MAX = 64;

/** The request's start: nfgenmsg (its family patched in later), protocol, set name. */
function head(set: string): AttrWriter {
  let start = HEADS.get(set);
  if (start === undefined) {
    checkSetName(set);
    const w = new AttrWriter();
    w.raw(NFGEN_PLACEHOLDER);
    w.u8(A.PROTOCOL, IPSET_PROTOCOL);
    w.string(A.SETNAME, set);
    const bytes = w.done();
    // A copy of its own (Buffer.alloc: Buffer.from of a small buffer is a slice of Node's pool, kept whole by it).
    start = Buffer.alloc(bytes.length);
    bytes.copy(start);
    if (HEADS.size < HEADS_MAX) HEADS.set(set, start);
  }
  const w = new AttrWriter();
  w.raw(start);
  return w;
}

/** The payload of an IPSET_CMD_ADD / DEL request: nfgenmsg, protocol, set name, the entry. */
export function requestPayload(op: IpsetOp): Buffer {
  const w = head(op.set);
  const data = w.begin(A.DATA | NLA_F_NESTED);
  w.patch(0, nfgenFamily(writeEntry(w, op.type, op.entry)));
  w.end(data);
  return w.done();
}

/**
 * The payload of one IPSET_CMD_ADD of many entries of one set: the entries' DATA nests inside one
 * ADT nest, which the kernel adds one after the other (ip_set_ad). All of one address family.
 */
export function bulkPayload(set: string, type: IpsetType, entries: readonly string[]): Buffer {
  const w = head(set);
  // The kernel takes an ADT nest only with a LINENO (u32, host order): on a refusal it writes
  // there which element failed, as for a line of `ipset restore`.
  w.u32le(A.LINENO, 1);
  const adt = w.begin(A.ADT | NLA_F_NESTED);
  let family: 0 | 4 | 6 | null = null;
  for (const e of entries) {
    const data = w.begin(A.DATA | NLA_F_NESTED);
    const f = writeEntry(w, type, e);
    if (family !== null && f !== family) throw new Error(`mixed address families in ${set}: ${JSON.stringify(e)}`);
    family = f;
    w.end(data);
  }
  w.end(adt);
  w.patch(0, nfgenFamily(family ?? 0));
  return w.done();
}

export const messageType = (cmd: number) => (NFNL_SUBSYS_IPSET << 8) | cmd;

export interface IpsetOpFailure {
  op: IpsetOp;
  message: string;
}

/** What NetfilterApplier needs of it: apply ops in order, say which failed. */
export interface IpsetWriter {
  apply(ops: IpsetOp[]): Promise<IpsetOpFailure[]>;
  /**
   * Adds every entry to `set` (a set just created empty, to be swapped in), many per request;
   * null when all are in, else why not (some may be in: the caller fills the set another way).
   */
  addMany?(set: string, type: IpsetType, entries: readonly string[]): Promise<string | null>;
  close(): void;
}

/** A request the kernel has not acknowledged in this long fails (and the change goes to `ipset restore`). */
const REQUEST_TIMEOUT_MS = 10_000;
/** Entries per bulk request (~45 bytes each: well under a page cluster) and bulk requests in flight. */
const BULK_ENTRIES = 256;
const BULK_IN_FLIGHT = 4;

/** The kernel's answer in words: the netlink package says "Request rejected: <errno or its name>". */
function describe(e: Error & { errno?: number }): string {
  const code = e.errno !== undefined ? String(e.errno) : (/Request rejected: (\S+)/.exec(e.message)?.[1] ?? '');
  const n = Number(code);
  if (Number.isInteger(n) && IPSET_ERRORS[n]) return `${IPSET_ERRORS[n]} (${n})`;
  return e.message;
}

export class NetlinkIpset implements IpsetWriter {
  readonly #sock: DemuxNetlinkSocket;

  constructor(o: SocketOptions = {}) {
    this.#sock = openNetfilterNetlink(o);
  }

  /**
   * Every op is requested at once, in batches (the kernel handles them in order; the socket sends each batch when
   * the answers owed leave room for its own, and each op settles on its own, see DemuxNetlinkSocket.request). `add`
   * of an element already there and `del` of one not there succeed (no NLM_F_EXCL: ipset's
   * `-exist`). Entries that cannot be encoded fail alone, before anything is sent.
   */
  async apply(ops: IpsetOp[]): Promise<IpsetOpFailure[]> {
    const failures: IpsetOpFailure[] = [];
    const sent: Promise<void>[] = [];
    for (const op of ops) {
      let payload: Buffer;
      try {
        payload = requestPayload(op);
      } catch (e) {
        failures.push({ op, message: (e as Error).message });
        continue;
      }
      sent.push(
        this.#sock
          .request(messageType(op.op === 'add' ? IPSET_CMD.ADD : IPSET_CMD.DEL), payload, {
            flags: Flags.REQUEST | Flags.ACK,
            timeout: REQUEST_TIMEOUT_MS,
            batch: true,
          })
          .then(
            () => {},
            (e: Error & { errno?: number }) => void failures.push({ op, message: describe(e) }),
          ),
      );
    }
    await Promise.all(sent);
    return failures;
  }

  /**
   * `entries` in requests of BULK_ENTRIES, a few in flight (the socket bounds the answers owed too), so that
   * the first failure stops the rest: it is the answer.
   */
  async addMany(set: string, type: IpsetType, entries: readonly string[]): Promise<string | null> {
    const payloads: Buffer[] = [];
    try {
      for (let i = 0; i < entries.length; i += BULK_ENTRIES)
        payloads.push(bulkPayload(set, type, entries.slice(i, i + BULK_ENTRIES)));
    } catch (e) {
      return (e as Error).message;
    }
    let next = 0;
    let failed: string | null = null;
    const worker = async () => {
      while (failed === null && next < payloads.length) {
        const payload = payloads[next++]!;
        await this.#sock
          .request(messageType(IPSET_CMD.ADD), payload, {
            flags: Flags.REQUEST | Flags.ACK,
            timeout: REQUEST_TIMEOUT_MS,
          })
          .then(
            () => {},
            (e: Error & { errno?: number }) => void (failed ??= `add to ${set}: ${describe(e)}`),
          );
      }
    };
    await Promise.all(Array.from({ length: Math.min(BULK_IN_FLIGHT, payloads.length) }, worker));
    return failed;
  }

  close(): void {
    this.#sock.close();
  }
}
