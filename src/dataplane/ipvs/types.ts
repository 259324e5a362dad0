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
  return d.address.includes(':') ? `[${d.address}]:${d.port}` : `${d.address}:${d.port}`;
}
