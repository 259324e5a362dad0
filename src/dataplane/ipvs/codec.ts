// Encoding and decoding of IPVS generic netlink payloads (the part after the netlink header:
// the 4-byte genl header, then attributes). Pure: bytes in, values out, so it is tested byte
// by byte without a kernel. Encoding writes each request's attributes into one buffer (AttrWriter, nlattr.ts);
// decoding reads them in place.
import { formatIP, ipv4Number, parseIP, type Family } from '../../util/ip.ts';
import { attr, AttrWriter, eachAttr as walkAttrs, type Attr } from '../nlattr.ts';
import {
  AF_INET,
  AF_INET6,
  CmdAttr,
  DestAttr,
  InfoAttr,
  IPPROTO,
  IPVS_GENL_VERSION,
  StatsAttr,
  SvcAttr,
} from './constants.ts';
import {
  destinationId,
  serviceId,
  type Counters,
  type DestinationCounters,
  type IpvsDestination,
  type IpvsInfo,
  type IpvsProtocol,
  type IpvsService,
  type IpvsStats,
  type IpvsTimeouts,
  type ServiceCounters,
  type ServiceKey,
} from './types.ts';

export class CodecError extends Error {
  override name = 'CodecError';
}

// --- primitive encoders -----------------------------------------------------------------------

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

/** genl header (cmd, version, reserved) followed by the attributes. */
export function encodeRequest(cmd: number, attrs: Attr[]): Buffer {
  let len = 4;
  for (const a of attrs) len += a.length;
  const out = Buffer.allocUnsafe(len);
  out[0] = cmd;
  out[1] = IPVS_GENL_VERSION;
  out[2] = 0;
  out[3] = 0;
  let o = 4;
  for (const a of attrs) o += a.copy(out, o);
  return out;
}

const familyAF = (f: Family) => (f === 4 ? AF_INET : AF_INET6);
const protoNum = (p: IpvsProtocol) => IPPROTO[p];

/** The 16 bytes IPVS carries an address in (an IPv4 one in the first four). */
function writeAddr16(w: AttrWriter, type: number, address: string, family: Family): void {
  const at = w.begin(type);
  if (family === 4 && !address.includes(':')) {
    const n = ipv4Number(address);
    if (n < 0) throw new CodecError(`${JSON.stringify(address)} is not an IPv4 address`);
    w.be32raw(n);
    w.raw(ZERO12);
  } else {
    const p = parseIP(address);
    if (!p || p.family !== family) throw new CodecError(`${JSON.stringify(address)} is not an IPv${family} address`);
    w.raw(p.bytes);
  }
  w.end(at);
}
const ZERO12 = new Uint8Array(12);

/** A virtual server's key attributes: family, then the firewall mark or protocol, address and port. */
function writeServiceKey(w: AttrWriter, k: ServiceKey): void {
  w.u16le(SvcAttr.AF, familyAF(k.family));
  if (k.fwmark !== undefined) {
    w.u32le(SvcAttr.FWMARK, k.fwmark);
  } else {
    w.u16le(SvcAttr.PROTOCOL, protoNum(k.protocol));
    writeAddr16(w, SvcAttr.ADDR, k.address, k.family);
    w.be16(SvcAttr.PORT, k.port);
  }
}

/** Encoded keys by key object: a cold start sends a virtual server's key with each of its destinations. */
const keyAttrs = new WeakMap<ServiceKey, Attr>();

/**
 * IPVS_CMD_ATTR_SERVICE holding only the key: for DEL/GET and for destination commands. Encoded once per key object
 * (keys are not changed once made: the reconciler's come from plans, which are never changed either).
 */
export function serviceKeyAttr(k: ServiceKey): Attr {
  let a = keyAttrs.get(k);
  if (!a) {
    const w = new AttrWriter(64);
    const at = w.begin(CmdAttr.SERVICE);
    writeServiceKey(w, k);
    w.end(at);
    // Kept as long as the key: a copy of its own, not a slice of Node's 8 KiB buffer pool, which it would pin.
    a = Buffer.alloc(w.length);
    w.done().copy(a);
    keyAttrs.set(k, a);
  }
  return a;
}

/** IPVS_CMD_ATTR_SERVICE holding everything NEW/SET need (the kernel insists on all four). */
export function serviceAttr(s: IpvsService): Attr {
  const w = new AttrWriter(128);
  const at = w.begin(CmdAttr.SERVICE);
  writeServiceKey(w, s);
  w.string(SvcAttr.SCHED_NAME, s.scheduler);
  if (s.peName) w.string(SvcAttr.PE_NAME, s.peName);
  // FLAGS is struct ip_vs_flags: the flags, then the mask of those to set (all).
  const flags = w.begin(SvcAttr.FLAGS);
  w.u32raw(s.flags);
  w.u32raw(0xffffffff);
  w.end(flags);
  w.u32le(SvcAttr.TIMEOUT, s.timeout);
  w.u32le(SvcAttr.NETMASK, s.netmask);
  w.end(at);
  return w.done();
}

/**
 * IPVS_CMD_ATTR_DEST with everything NEW/SET need, written into one buffer (a cold start encodes 100 000 of these):
 * ADDR (16 bytes), PORT (big-endian), FWD_METHOD, WEIGHT, U_THRESH, L_THRESH, ADDR_FAMILY.
 */
export function destinationAttr(d: IpvsDestination): Attr {
  const w = new AttrWriter(72);
  const at = w.begin(CmdAttr.DEST);
  writeAddr16(w, DestAttr.ADDR, d.address, d.family);
  w.be16(DestAttr.PORT, d.port);
  w.u32le(DestAttr.FWD_METHOD, d.fwdMethod);
  w.u32le(DestAttr.WEIGHT, d.weight);
  w.u32le(DestAttr.U_THRESH, d.upperThreshold);
  w.u32le(DestAttr.L_THRESH, d.lowerThreshold);
  w.u16le(DestAttr.ADDR_FAMILY, familyAF(d.family));
  w.end(at);
  return w.done();
}

/** A destination by address and port only: for DEL_DEST. */
export function destinationKeyAttr(d: { family: Family; address: string; port: number }): Attr {
  const w = new AttrWriter(40);
  const at = w.begin(CmdAttr.DEST);
  writeAddr16(w, DestAttr.ADDR, d.address, d.family);
  w.be16(DestAttr.PORT, d.port);
  w.u16le(DestAttr.ADDR_FAMILY, familyAF(d.family));
  w.end(at);
  return w.done();
}

export function timeoutAttrs(t: IpvsTimeouts): Attr[] {
  return [
    attr(CmdAttr.TIMEOUT_TCP, u32(t.tcp)),
    attr(CmdAttr.TIMEOUT_TCP_FIN, u32(t.tcpFin)),
    attr(CmdAttr.TIMEOUT_UDP, u32(t.udp)),
  ];
}

// --- decoding ---------------------------------------------------------------------------------

export interface GenlMessage {
  cmd: number;
  version: number;
  attrs: Map<number, Buffer>;
}

// Dumps of tens of thousands of services are decoded at every scrape, so decoding reads the
// attributes in place: an index of where each attribute starts, kept in scratch arrays (decoding
// is synchronous and each level of nesting has its own), no sub-buffer per attribute.

/** Attribute types above this are not IPVS's (a newer kernel's additions): skipped. */
const MAX_TYPE = 63;
/** Scratch indexes: a reply's top level, the service or destination nest, the stats nest. */
const TOP = new Int32Array(MAX_TYPE + 1);
const OBJ = new Int32Array(MAX_TYPE + 1);
const STATS = new Int32Array(MAX_TYPE + 1);

/** A malformed attribute in an IPVS reply is a CodecError. */
const codecError = (m: string) => new CodecError(m);
/** Visits each attribute of b[from, to) (nlattr's walk, failing with a CodecError). */
const eachAttr = (b: Buffer, from: number, to: number, f: (type: number, o: number) => void) =>
  walkAttrs(b, from, to, f, codecError);

/** Fills `ix` with where each attribute of b[from, to) starts (-1: absent); the last of a type wins. */
function attrIndex(ix: Int32Array, b: Buffer, from: number, to: number): Int32Array {
  ix.fill(-1);
  eachAttr(b, from, to, (type, o) => {
    if (type <= MAX_TYPE) ix[type] = o;
  });
  return ix;
}

/** Length of the payload of the attribute whose header is at o. */
const dataLen = (b: Buffer, o: number) => (b[o]! | (b[o + 1]! << 8)) - 4;
/** The index of the nest of type t in `outer`, in `ix` (null when absent). */
function nested(ix: Int32Array, b: Buffer, outer: Int32Array, t: number): Int32Array | null {
  const o = outer[t]!;
  return o < 0 ? null : attrIndex(ix, b, o + 4, o + 4 + dataLen(b, o));
}

function attrMap(b: Buffer): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  eachAttr(b, 0, b.length, (type, o) => void m.set(type, b.subarray(o + 4, o + 4 + dataLen(b, o))));
  return m;
}

/** Splits a reply's payload (genl header + attributes). */
export function decodeGenl(payload: Buffer): GenlMessage {
  if (payload.length < 4) throw new CodecError(`genl payload too short (${payload.length} bytes)`);
  return { cmd: payload[0]!, version: payload[1]!, attrs: attrMap(payload.subarray(4)) };
}

const rd = {
  u32: (b: Buffer | undefined) => (b && b.length >= 4 ? b.readUInt32LE(0) : 0),
};
/** Readers of the attribute of type t in an index (0 or '' when absent or short). */
const at = {
  u16: (b: Buffer, i: Int32Array, t: number) => {
    const o = i[t]!;
    return o >= 0 && dataLen(b, o) >= 2 ? b[o + 4]! | (b[o + 5]! << 8) : 0;
  },
  be16: (b: Buffer, i: Int32Array, t: number) => {
    const o = i[t]!;
    return o >= 0 && dataLen(b, o) >= 2 ? (b[o + 4]! << 8) | b[o + 5]! : 0;
  },
  u32: (b: Buffer, i: Int32Array, t: number) => {
    const o = i[t]!;
    return o >= 0 && dataLen(b, o) >= 4
      ? (b[o + 4]! | (b[o + 5]! << 8) | (b[o + 6]! << 16) | (b[o + 7]! << 24)) >>> 0
      : 0;
  },
  str: (b: Buffer, i: Int32Array, t: number) => {
    const o = i[t]!;
    if (o < 0) return '';
    const end = o + 4 + dataLen(b, o);
    const nul = b.indexOf(0, o + 4);
    return b.toString('utf8', o + 4, nul >= 0 && nul < end ? nul : end);
  },
  /** A counter: u64 in _STATS64, u32 in _STATS (the width is in each attribute). */
  u64: (b: Buffer, i: Int32Array, t: number): bigint => {
    const o = i[t]!;
    if (o < 0 || dataLen(b, o) < 4) return 0n;
    const lo = b.readUInt32LE(o + 4);
    const hi = dataLen(b, o) >= 8 ? b.readUInt32LE(o + 8) : 0;
    return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
  },
  /** The same counter as a float64 (what a scrape exports). */
  num: (b: Buffer, i: Int32Array | null, t: number): number => {
    const o = i ? i[t]! : -1;
    if (o < 0 || dataLen(b, o) < 4) return 0;
    return b.readUInt32LE(o + 4) + (dataLen(b, o) >= 8 ? b.readUInt32LE(o + 8) * 4294967296 : 0);
  },
};

function familyOf(af: number): Family {
  if (af === AF_INET) return 4;
  if (af === AF_INET6) return 6;
  throw new CodecError(`unknown address family ${af}`);
}

const PROTOCOL_BY_NUMBER = new Map<number, IpvsProtocol>(
  Object.entries(IPPROTO).map(([k, v]) => [v, k as IpvsProtocol]),
);
function protocolOf(n: number): IpvsProtocol {
  const p = PROTOCOL_BY_NUMBER.get(n);
  if (!p) throw new CodecError(`unknown IP protocol ${n}`);
  return p;
}

function addrAt(b: Buffer, i: Int32Array, t: number, family: Family): string {
  const o = i[t]!;
  if (o < 0 || dataLen(b, o) < (family === 4 ? 4 : 16)) throw new CodecError('address attribute missing or short');
  const d = o + 4;
  return family === 4
    ? `${b[d]}.${b[d + 1]}.${b[d + 2]}.${b[d + 3]}`
    : formatIP({ family: 6, bytes: b.subarray(d, d + 16) });
}

/** The stats nest of `outer` (STATS64 when present, else STATS), or undefined. */
function statsOf(b: Buffer, outer: Int32Array, t64: number, t32: number): IpvsStats | undefined {
  const i = nested(STATS, b, outer, outer[t64]! >= 0 ? t64 : t32);
  if (!i) return undefined;
  return {
    conns: at.u64(b, i, StatsAttr.CONNS),
    inPkts: at.u64(b, i, StatsAttr.INPKTS),
    outPkts: at.u64(b, i, StatsAttr.OUTPKTS),
    inBytes: at.u64(b, i, StatsAttr.INBYTES),
    outBytes: at.u64(b, i, StatsAttr.OUTBYTES),
    cps: at.u64(b, i, StatsAttr.CPS),
    inPps: at.u64(b, i, StatsAttr.INPPS),
    outPps: at.u64(b, i, StatsAttr.OUTPPS),
    inBps: at.u64(b, i, StatsAttr.INBPS),
    outBps: at.u64(b, i, StatsAttr.OUTBPS),
  };
}

/** The counters of the stats nest of `outer` as numbers (zeros when absent). */
function countersAt(b: Buffer, outer: Int32Array, t64: number, t32: number): Counters {
  const i = nested(STATS, b, outer, outer[t64]! >= 0 ? t64 : t32);
  return {
    conns: at.num(b, i, StatsAttr.CONNS),
    inPkts: at.num(b, i, StatsAttr.INPKTS),
    outPkts: at.num(b, i, StatsAttr.OUTPKTS),
    inBytes: at.num(b, i, StatsAttr.INBYTES),
    outBytes: at.num(b, i, StatsAttr.OUTBYTES),
  };
}

/** A service nest's key: by firewall mark, or by protocol, address and port. */
function serviceKeyAt(b: Buffer, i: Int32Array): ServiceKey {
  const family = familyOf(at.u16(b, i, SvcAttr.AF));
  const fwmark = at.u32(b, i, SvcAttr.FWMARK);
  if (fwmark !== 0) return { family, fwmark };
  return {
    family,
    protocol: protocolOf(at.u16(b, i, SvcAttr.PROTOCOL)),
    address: addrAt(b, i, SvcAttr.ADDR, family),
    port: at.be16(b, i, SvcAttr.PORT),
  };
}

/** The service inside a reply's IPVS_CMD_ATTR_SERVICE. */
/** `withStats: false`: the counters are left out (not decoded). */
export function decodeService(b: Buffer, withStats = true): IpvsService {
  const i = attrIndex(OBJ, b, 0, b.length);
  return {
    ...serviceKeyAt(b, i),
    scheduler: at.str(b, i, SvcAttr.SCHED_NAME),
    flags: at.u32(b, i, SvcAttr.FLAGS),
    timeout: at.u32(b, i, SvcAttr.TIMEOUT),
    netmask: at.u32(b, i, SvcAttr.NETMASK),
    peName: at.str(b, i, SvcAttr.PE_NAME),
    ...(withStats ? { stats: statsOf(b, i, SvcAttr.STATS64, SvcAttr.STATS) } : {}),
  };
}

/**
 * A service dump reply (genl header + attributes) decoded in place: the service, or null when the reply holds none.
 * What a 10 000-service dump costs: no attribute map or sub-buffer per reply.
 */
export function decodeServiceReply(payload: Buffer, withStats = true): IpvsService | null {
  if (payload.length < 4) throw new CodecError(`genl payload too short (${payload.length} bytes)`);
  const top = attrIndex(TOP, payload, 4, payload.length);
  const o = top[CmdAttr.SERVICE]!;
  if (o < 0) return null;
  return decodeService(payload.subarray(o + 4, o + 4 + dataLen(payload, o)), withStats);
}

/**
 * The destination inside a reply's IPVS_CMD_ATTR_DEST; `svcFamily` when the kernel omits ADDR_FAMILY. `withStats:
 * false`: the counters are left out (not decoded).
 */
export function decodeDestination(b: Buffer, svcFamily: Family, withStats = true): IpvsDestination {
  const i = attrIndex(OBJ, b, 0, b.length);
  const family = i[DestAttr.ADDR_FAMILY]! >= 0 ? familyOf(at.u16(b, i, DestAttr.ADDR_FAMILY)) : svcFamily;
  return {
    family,
    address: addrAt(b, i, DestAttr.ADDR, family),
    port: at.be16(b, i, DestAttr.PORT),
    fwdMethod: at.u32(b, i, DestAttr.FWD_METHOD) & 0x7,
    weight: at.u32(b, i, DestAttr.WEIGHT),
    upperThreshold: at.u32(b, i, DestAttr.U_THRESH),
    lowerThreshold: at.u32(b, i, DestAttr.L_THRESH),
    activeConns: at.u32(b, i, DestAttr.ACTIVE_CONNS),
    inactiveConns: at.u32(b, i, DestAttr.INACT_CONNS),
    persistConns: at.u32(b, i, DestAttr.PERSIST_CONNS),
    ...(withStats ? { stats: statsOf(b, i, DestAttr.STATS64, DestAttr.STATS) } : {}),
  };
}

/**
 * A service dump reply (genl header + attributes) read for a scrape: the key and the counters,
 * nothing else decoded (null when the reply holds no service).
 */
export function decodeServiceCounters(payload: Buffer): ServiceCounters | null {
  if (payload.length < 4) throw new CodecError(`genl payload too short (${payload.length} bytes)`);
  const i = nested(OBJ, payload, attrIndex(TOP, payload, 4, payload.length), CmdAttr.SERVICE);
  if (!i) return null;
  const key = serviceKeyAt(payload, i);
  return { ...key, id: serviceId(key), ...countersAt(payload, i, SvcAttr.STATS64, SvcAttr.STATS) };
}

/** A destination dump reply read for a scrape (null when the reply holds no destination). */
export function decodeDestinationCounters(payload: Buffer, svcFamily: Family): DestinationCounters | null {
  if (payload.length < 4) throw new CodecError(`genl payload too short (${payload.length} bytes)`);
  const i = nested(OBJ, payload, attrIndex(TOP, payload, 4, payload.length), CmdAttr.DEST);
  if (!i) return null;
  const family = i[DestAttr.ADDR_FAMILY]! >= 0 ? familyOf(at.u16(payload, i, DestAttr.ADDR_FAMILY)) : svcFamily;
  const address = addrAt(payload, i, DestAttr.ADDR, family);
  const port = at.be16(payload, i, DestAttr.PORT);
  return {
    id: destinationId({ address, port }),
    address,
    port,
    weight: at.u32(payload, i, DestAttr.WEIGHT),
    activeConns: at.u32(payload, i, DestAttr.ACTIVE_CONNS),
    inactiveConns: at.u32(payload, i, DestAttr.INACT_CONNS),
    ...countersAt(payload, i, DestAttr.STATS64, DestAttr.STATS),
  };
}

export function decodeInfo(msg: GenlMessage): IpvsInfo {
  const v = rd.u32(msg.attrs.get(InfoAttr.VERSION));
  return {
    version: `${(v >> 16) & 0xff}.${(v >> 8) & 0xff}.${v & 0xff}`,
    connTableSize: rd.u32(msg.attrs.get(InfoAttr.CONN_TAB_SIZE)),
  };
}

export function decodeTimeouts(msg: GenlMessage): IpvsTimeouts {
  return {
    tcp: rd.u32(msg.attrs.get(CmdAttr.TIMEOUT_TCP)),
    tcpFin: rd.u32(msg.attrs.get(CmdAttr.TIMEOUT_TCP_FIN)),
    udp: rd.u32(msg.attrs.get(CmdAttr.TIMEOUT_UDP)),
  };
}
