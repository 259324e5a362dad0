// Packet-flow tracing: where would the kernel send this packet, given a plan? Used by the tests to
// assert outcomes (which backends, or dropped) instead of comparing generated state text.
// Today it walks the IPVS virtual servers; the iptables stage will add its rules in front.
import type { Protocol } from '../model/types.ts';
import { canonicalIP, hostPort } from '../util/ip.ts';
import type { NodePlan, VirtualServer } from './types.ts';

export interface Packet {
  source: string;
  destination: string;
  port: number;
  protocol: Protocol;
}

export type Verdict =
  /** Not a service address and port: IPVS does not touch it (the packet goes where routing says). */
  | { result: 'not-a-service' }
  /** A virtual server with no usable real server: IPVS drops it. */
  | { result: 'dropped'; virtualServer: VirtualServer }
  /** Forwarded to one of `backends` ("addr:port"); with affinity the same client sticks to one. */
  | { result: 'forwarded'; virtualServer: VirtualServer; backends: string[]; persistent: boolean };

/** `mark`: the packet's firewall mark; IPVS looks firewall-mark virtual servers up first. */
export function trace(plan: NodePlan, pkt: Packet, mark = 0): Verdict {
  const dst = canonicalIP(pkt.destination);
  const family = dst?.includes(':') ? 6 : 4;
  const byMark = mark ? plan.virtualServers.find((v) => v.fwmark === mark && v.family === family) : undefined;
  const vs =
    byMark ??
    plan.virtualServers.find(
      (v) => v.fwmark === undefined && v.address === dst && v.port === pkt.port && v.protocol === pkt.protocol,
    );
  if (!vs) return { result: 'not-a-service' };
  const backends = vs.realServers.filter((r) => r.weight > 0).map((r) => hostPort(r.address, r.port));
  if (backends.length === 0) return { result: 'dropped', virtualServer: vs };
  return { result: 'forwarded', virtualServer: vs, backends, persistent: vs.persistenceTimeoutSeconds > 0 };
}
