// Encoding and decoding of IPVS generic netlink payloads (the part after the netlink header:
// the 4-byte genl header, then attributes). Pure: bytes in, values out, so it is tested byte
// by byte without a kernel. Attribute framing (TLV, padding) comes from the `netlink` package.
import { formatAttribute, parseAttributes } from 'netlink';
import { canonicalIP, parseIP, type Family } from '../../util/ip.ts';
import { attr, cstr, nest, type Attr } from '../nlattr.ts';
import { AF_INET, AF_INET6, CmdAttr, DestAttr, InfoAttr, IPPROTO, IPVS_GENL_VERSION, StatsAttr, SvcAttr } from './constants.ts';
import type { IpvsDestination, IpvsInfo, IpvsProtocol, IpvsService, IpvsStats, IpvsTimeouts, ServiceKey } from './types.ts';

export class CodecError extends Error {
  override name = 'CodecError';
}

// --- primitive encoders -----------------------------------------------------------------------

const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const be16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

function addr16(address: string, family: Family): Buffer {
  const p = parseIP(address);
  if (!p || p.family !== family) throw new CodecError(`${JSON.stringify(address)} is not an IPv${family} address`);
  const b = Buffer.alloc(16);
  b.set(p.bytes, 0);
  return b;
}


/** genl header (cmd, version, reserved) followed by the attributes. */
export function encodeRequest(cmd: number, attrs: Attr[]): Buffer {
  return Buffer.concat([Buffer.from([cmd, IPVS_GENL_VERSION, 0, 0]), ...attrs]);
}

const familyAF = (f: Family) => (f === 4 ? AF_INET : AF_INET6);
const protoNum = (p: IpvsProtocol) => IPPROTO[p];

function serviceKeyAttrs(k: ServiceKey): Attr[] {
  const out: Attr[] = [attr(SvcAttr.AF, u16(familyAF(k.family)))];
  if (k.fwmark !== undefined) {
    out.push(attr(SvcAttr.FWMARK, u32(k.fwmark)));
  } else {
    out.push(attr(SvcAttr.PROTOCOL, u16(protoNum(k.protocol))), attr(SvcAttr.ADDR, addr16(k.address, k.family)), attr(SvcAttr.PORT, be16(k.port)));
  }
  return out;
}

/** IPVS_CMD_ATTR_SERVICE holding only the key: for DEL/GET and for destination commands. */
export function serviceKeyAttr(k: ServiceKey): Attr {
  return nest(CmdAttr.SERVICE, serviceKeyAttrs(k));
}

/** IPVS_CMD_ATTR_SERVICE holding everything NEW/SET need (the kernel insists on all four). */
export function serviceAttr(s: IpvsService): Attr {
  const flags = Buffer.concat([u32(s.flags), u32(0xffffffff)]);
  const attrs = [...serviceKeyAttrs(s), attr(SvcAttr.SCHED_NAME, cstr(s.scheduler))];
  if (s.peName) attrs.push(attr(SvcAttr.PE_NAME, cstr(s.peName)));
  attrs.push(attr(SvcAttr.FLAGS, flags), attr(SvcAttr.TIMEOUT, u32(s.timeout)), attr(SvcAttr.NETMASK, u32(s.netmask)));
  return nest(CmdAttr.SERVICE, attrs);
}

export function destinationAttr(d: IpvsDestination): Attr {
  return nest(CmdAttr.DEST, [
    attr(DestAttr.ADDR, addr16(d.address, d.family)),
    attr(DestAttr.PORT, be16(d.port)),
    attr(DestAttr.FWD_METHOD, u32(d.fwdMethod)),
    attr(DestAttr.WEIGHT, u32(d.weight)),
    attr(DestAttr.U_THRESH, u32(d.upperThreshold)),
    attr(DestAttr.L_THRESH, u32(d.lowerThreshold)),
    attr(DestAttr.ADDR_FAMILY, u16(familyAF(d.family))),
  ]);
}

/** A destination by address and port only: for DEL_DEST. */
export function destinationKeyAttr(d: { family: Family; address: string; port: number }): Attr {
  return nest(CmdAttr.DEST, [attr(DestAttr.ADDR, addr16(d.address, d.family)), attr(DestAttr.PORT, be16(d.port)), attr(DestAttr.ADDR_FAMILY, u16(familyAF(d.family)))]);
}

export function timeoutAttrs(t: IpvsTimeouts): Attr[] {
  return [attr(CmdAttr.TIMEOUT_TCP, u32(t.tcp)), attr(CmdAttr.TIMEOUT_TCP_FIN, u32(t.tcpFin)), attr(CmdAttr.TIMEOUT_UDP, u32(t.udp))];
}

// --- decoding ---------------------------------------------------------------------------------

export interface GenlMessage {
  cmd: number;
  version: number;
  attrs: Map<number, Buffer>;
}

function attrMap(b: Buffer): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  parseAttributes(b, (a) => {
    m.set(a.type & 0x3fff, a.data);
  });
  return m;
}

/** Splits a reply's payload (genl header + attributes). */
export function decodeGenl(payload: Buffer): GenlMessage {
  if (payload.length < 4) throw new CodecError(`genl payload too short (${payload.length} bytes)`);
  return { cmd: payload[0]!, version: payload[1]!, attrs: attrMap(payload.subarray(4)) };
}

const rd = {
  u16: (b: Buffer | undefined) => (b && b.length >= 2 ? b.readUInt16LE(0) : 0),
  be16: (b: Buffer | undefined) => (b && b.length >= 2 ? b.readUInt16BE(0) : 0),
  u32: (b: Buffer | undefined) => (b && b.length >= 4 ? b.readUInt32LE(0) : 0),
  str: (b: Buffer | undefined) => (b ? b.toString('utf8').replace(/\0.*$/s, '') : ''),
};

function familyOf(af: number): Family {
  if (af === AF_INET) return 4;
  if (af === AF_INET6) return 6;
  throw new CodecError(`unknown address family ${af}`);
}

function protocolOf(n: number): IpvsProtocol {
  const p = (Object.keys(IPPROTO) as IpvsProtocol[]).find((k) => IPPROTO[k] === n);
  if (!p) throw new CodecError(`unknown IP protocol ${n}`);
  return p;
}

function addrOf(b: Buffer | undefined, family: Family): string {
  const len = family === 4 ? 4 : 16;
  if (!b || b.length < len) throw new CodecError('address attribute missing or short');
  const bytes = Uint8Array.from(b.subarray(0, len));
  const text = family === 4 ? Array.from(bytes).join('.') : Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16)).join(':');
  return canonicalIP(text)!;
}

/** IPVS_*_ATTR_STATS (u32 counters, u64 bytes) or _STATS64 (all u64): the width is in each attribute. */
export function decodeStats(b: Buffer | undefined): IpvsStats | undefined {
  if (!b) return undefined;
  const m = attrMap(b);
  const v = (t: number): bigint => {
    const x = m.get(t);
    if (!x || x.length < 4) return 0n;
    return x.length >= 8 ? x.readBigUInt64LE(0) : BigInt(x.readUInt32LE(0));
  };
  return {
    conns: v(StatsAttr.CONNS),
    inPkts: v(StatsAttr.INPKTS),
    outPkts: v(StatsAttr.OUTPKTS),
    inBytes: v(StatsAttr.INBYTES),
    outBytes: v(StatsAttr.OUTBYTES),
    cps: v(StatsAttr.CPS),
    inPps: v(StatsAttr.INPPS),
    outPps: v(StatsAttr.OUTPPS),
    inBps: v(StatsAttr.INBPS),
    outBps: v(StatsAttr.OUTBPS),
  };
}

/** The service inside a reply's IPVS_CMD_ATTR_SERVICE. */
export function decodeService(nested: Buffer): IpvsService {
  const m = attrMap(nested);
  const family = familyOf(rd.u16(m.get(SvcAttr.AF)));
  const flagsBuf = m.get(SvcAttr.FLAGS);
  const common = {
    scheduler: rd.str(m.get(SvcAttr.SCHED_NAME)),
    flags: rd.u32(flagsBuf),
    timeout: rd.u32(m.get(SvcAttr.TIMEOUT)),
    netmask: rd.u32(m.get(SvcAttr.NETMASK)),
    peName: rd.str(m.get(SvcAttr.PE_NAME)),
    stats: decodeStats(m.get(SvcAttr.STATS64) ?? m.get(SvcAttr.STATS)),
  };
  const fwmark = rd.u32(m.get(SvcAttr.FWMARK));
  if (fwmark !== 0) return { family, fwmark, ...common };
  return {
    family,
    protocol: protocolOf(rd.u16(m.get(SvcAttr.PROTOCOL))),
    address: addrOf(m.get(SvcAttr.ADDR), family),
    port: rd.be16(m.get(SvcAttr.PORT)),
    ...common,
  };
}

/** The destination inside a reply's IPVS_CMD_ATTR_DEST; `svcFamily` when the kernel omits ADDR_FAMILY. */
export function decodeDestination(nested: Buffer, svcFamily: Family): IpvsDestination {
  const m = attrMap(nested);
  const family = m.has(DestAttr.ADDR_FAMILY) ? familyOf(rd.u16(m.get(DestAttr.ADDR_FAMILY))) : svcFamily;
  return {
    family,
    address: addrOf(m.get(DestAttr.ADDR), family),
    port: rd.be16(m.get(DestAttr.PORT)),
    fwdMethod: rd.u32(m.get(DestAttr.FWD_METHOD)) & 0x7,
    weight: rd.u32(m.get(DestAttr.WEIGHT)),
    upperThreshold: rd.u32(m.get(DestAttr.U_THRESH)),
    lowerThreshold: rd.u32(m.get(DestAttr.L_THRESH)),
    activeConns: rd.u32(m.get(DestAttr.ACTIVE_CONNS)),
    inactiveConns: rd.u32(m.get(DestAttr.INACT_CONNS)),
    persistConns: rd.u32(m.get(DestAttr.PERSIST_CONNS)),
    stats: decodeStats(m.get(DestAttr.STATS64) ?? m.get(DestAttr.STATS)),
  };
}

export function decodeInfo(msg: GenlMessage): IpvsInfo {
  const v = rd.u32(msg.attrs.get(InfoAttr.VERSION));
  return { version: `${(v >> 16) & 0xff}.${(v >> 8) & 0xff}.${v & 0xff}`, connTableSize: rd.u32(msg.attrs.get(InfoAttr.CONN_TAB_SIZE)) };
}

export function decodeTimeouts(msg: GenlMessage): IpvsTimeouts {
  return {
    tcp: rd.u32(msg.attrs.get(CmdAttr.TIMEOUT_TCP)),
    tcpFin: rd.u32(msg.attrs.get(CmdAttr.TIMEOUT_TCP_FIN)),
    udp: rd.u32(msg.attrs.get(CmdAttr.TIMEOUT_UDP)),
  };
}

