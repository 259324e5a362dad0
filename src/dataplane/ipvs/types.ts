// IPVS objects as kube-ipvs sees them: plain values, addresses as canonical text.
import type { Family } from '../../util/ip.ts';

export type IpvsProtocol = 'TCP' | 'UDP' | 'SCTP';

export interface IpvsStats {
  conns: bigint;
  inPkts: bigint;
  outPkts: bigint;
  inBytes: bigint;
  outBytes: bigint;
  cps: bigint;
  inPps: bigint;
  outPps: bigint;
  inBps: bigint;
  outBps: bigint;
}

/** Identifies a virtual service: by address, port and protocol, or by firewall mark. */
export type ServiceKey =
  | { family: Family; protocol: IpvsProtocol; address: string; port: number; fwmark?: undefined }
  | { family: Family; fwmark: number; protocol?: undefined; address?: undefined; port?: undefined };

/**
 * The key of anything that carries one (a service, a scrape's counters, a planned virtual server):
 * its firewall mark when it has one, else protocol, address and port.
 */
export function serviceKeyOf(
  x: ServiceKey | { family: Family; fwmark?: number; protocol: IpvsProtocol; address: string; port: number },
): ServiceKey {
  return x.fwmark !== undefined
    ? { family: x.family, fwmark: x.fwmark }
    : { family: x.family, protocol: x.protocol, address: x.address, port: x.port };
}

export type IpvsService = ServiceKey & {
  scheduler: string;
  /** IP_VS_SVC_F_* bits (persistent, one-packet, scheduler flags). */
  flags: number;
  /** Persistence timeout in seconds (used when flags has PERSISTENT). */
  timeout: number;
  /** Persistence netmask: an IPv4 mask as a number (0xffffffff), or an IPv6 prefix length (128). */
  netmask: number;
  /** Persistence engine ("" for none). */
  peName?: string;
  /** Only in replies from the kernel. */
  stats?: IpvsStats;
};

export interface IpvsDestination {
  family: Family;
  address: string;
  port: number;
  /** FwdMethod value; kube-ipvs uses MASQ. */
  fwdMethod: number;
  weight: number;
  upperThreshold: number;
  lowerThreshold: number;
  /** Only in replies from the kernel. */
  activeConns?: number;
  inactiveConns?: number;
  persistConns?: number;
  stats?: IpvsStats;
}

/**
 * The counters a metrics scrape reads, as numbers: Prometheus keeps float64, so exactness above
 * 2^53 would be lost there anyway, and a scrape of 10 000 virtual servers must not allocate
 * 10 BigInts each.
 */
export interface Counters {
  conns: number;
  inPkts: number;
  outPkts: number;
  inBytes: number;
  outBytes: number;
}

/** A virtual server's key, id (serviceId) and counters: what a scrape needs, nothing else. */
export type ServiceCounters = ServiceKey & Counters & { id: string };

/** A real server's id (destinationId), address, state and counters. */
export interface DestinationCounters extends Counters {
  id: string;
  address: string;
  port: number;
  weight: number;
  activeConns: number;
  inactiveConns: number;
}

export function countersOf(s: IpvsStats | undefined): Counters {
  return s
    ? {
        conns: Number(s.conns),
        inPkts: Number(s.inPkts),
        outPkts: Number(s.outPkts),
        inBytes: Number(s.inBytes),
        outBytes: Number(s.outBytes),
      }
    : { conns: 0, inPkts: 0, outPkts: 0, inBytes: 0, outBytes: 0 };
}

/** The scrape's view of decoded objects (for in-memory kernels; the netlink client decodes it directly). */
export function serviceCountersOf(s: IpvsService): ServiceCounters {
  const key = serviceKeyOf(s);
  return { ...key, id: serviceId(key), ...countersOf(s.stats) };
}

export function destinationCountersOf(d: IpvsDestination): DestinationCounters {
  return {
    id: destinationId(d),
    address: d.address,
    port: d.port,
    weight: d.weight,
    activeConns: d.activeConns ?? 0,
    inactiveConns: d.inactiveConns ?? 0,
    ...countersOf(d.stats),
  };
}

export interface IpvsTimeouts {
  /** Seconds; 0 in a SET means "leave as it is". */
  tcp: number;
  tcpFin: number;
  udp: number;
}

export interface IpvsInfo {
  /** e.g. "1.2.1" */
  version: string;
  connTableSize: number;
}

/** "TCP/10.0.0.1:80", "UDP/[fd00::1]:53", "FWM/42" — a stable identity for maps and logs. */
export function serviceId(k: ServiceKey): string {
  if (k.fwmark !== undefined) return `FWM/${k.fwmark}${k.family === 6 ? '/v6' : ''}`;
  return `${k.protocol}/${k.family === 6 ? `[${k.address}]` : k.address}:${k.port}`;
}

export function destinationId(d: { address: string; port: number }): string {
  // join makes one flat string; a template literal a chain of pieces (64 bytes against 40 for an IPv4 one, and the
  // planned destinations keep 100 000 of them at 10 000 Services).
  return d.address.includes(':') ? `[${d.address}]:${d.port}` : [d.address, d.port].join(':');
}

/** An IPv4 destination's address (as a 32-bit number) and port as one number: a key without a string. */
export const v4Key = (address: number, port: number): number => address * 65536 + port;

/**
 * A virtual server's IPv4 destinations as a resync compares them with the kernel's: (v4Key, weight, fwdMethod) per
 * destination, sorted by v4Key (no threshold: none is ever wanted). 24 bytes a destination, where a Map of objects
 * keyed by v4Key was about 130 (13 MB at 100 000 destinations).
 */
export type V4Destinations = Float64Array;

/** Where v4Key `key` is in `want` (its first of three numbers), or -1. */
export function findV4(want: V4Destinations, key: number): number {
  let lo = 0;
  let hi = want.length / 3 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const k = want[mid * 3]!;
    if (k === key) return mid * 3;
    if (k < key) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** A virtual server's destinations as a whole-table read found them (procfs.ts). */
export interface KnownDestinations {
  readonly size: number;
  /** Every destination (built on first use). */
  list(): IpvsDestination[];
  /**
   * Whether they are exactly `want`: the same set, weights and forwarding methods. False also when that cannot be
   * told without list() (the caller compares that).
   */
  same(want: V4Destinations): boolean;
}
