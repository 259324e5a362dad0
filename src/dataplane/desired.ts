// The plan's virtual servers in IPVS terms, and what "already right" means when comparing
// them with what the kernel reports.
import type { VirtualServer } from '../plan/types.ts';
import { FwdMethod, SCHED_FLAG_FALLBACK, SvcFlag } from './ipvs/constants.ts';
import { ipv4Number } from '../util/ip.ts';
import { destinationId, serviceId, serviceKeyOf, v4Key, type IpvsDestination, type IpvsService } from './ipvs/types.ts';
import type { VsLabel } from './ownership.ts';

export interface DesiredVS {
  id: string;
  /** The Kubernetes Service ("namespace/name") it belongs to. */
  owner: string;
  /** Its Service port name and kind, recorded with the ownership for metrics and `status`. */
  label: VsLabel;
  /** The Service port's protocol and address (a firewall-mark virtual server has none of its own). */
  protocol: VirtualServer['protocol'];
  address: string;
  port: number;
  service: IpvsService;
  destinations: Map<string, IpvsDestination>;
  /** The same destinations keyed by v4Key when every one is IPv4 (null otherwise): a resync compares them so. */
  v4: Map<number, IpvsDestination> | null;
  /** Destinations health evicted: deleted at once, never drained (their connections are dead anyway). */
  evicted: Set<string>;
}

/**
 * Plans are never changed once made (a Service's change makes a new plan): each virtual server's IPVS terms are
 * computed once, not at every full resync.
 */
const cache = new WeakMap<VirtualServer, DesiredVS>();

/** A planned virtual server in IPVS terms (the same object for the same virtual server: treat it as read-only). */
export function toDesired(vs: VirtualServer): DesiredVS {
  let d = cache.get(vs);
  if (!d) {
    d = build(vs);
    cache.set(vs, d);
  }
  return d;
}

function build(vs: VirtualServer): DesiredVS {
  const key = serviceKeyOf(vs);
  const service: IpvsService = {
    ...key,
    scheduler: vs.scheduler,
    // sh and mh with fallback: a client hashed to a destination at weight 0 (ejected by health,
    // or draining) goes to another one instead of being dropped.
    flags:
      (vs.persistenceTimeoutSeconds > 0 ? SvcFlag.PERSISTENT : 0) |
      (vs.scheduler === 'sh' || vs.scheduler === 'mh' ? SCHED_FLAG_FALLBACK : 0),
    timeout: vs.persistenceTimeoutSeconds,
    netmask: vs.family === 4 ? 0xffffffff : 128,
  };
  const destinations = new Map<string, IpvsDestination>();
  for (const rs of vs.realServers) {
    const d: IpvsDestination = {
      family: vs.family,
      address: rs.address,
      port: rs.port,
      fwdMethod: FwdMethod.MASQ,
      weight: rs.weight,
      upperThreshold: 0,
      lowerThreshold: 0,
    };
    destinations.set(destinationId(d), d);
  }
  const evicted = new Set((vs.evicted ?? []).map((e) => destinationId(e)));
  let v4: Map<number, IpvsDestination> | null = new Map();
  for (const d of destinations.values()) {
    const n = d.family === 4 ? ipv4Number(d.address) : -1;
    if (n < 0) {
      v4 = null;
      break;
    }
    v4.set(v4Key(n, d.port), d);
  }
  return {
    id: serviceId(service),
    owner: vs.service,
    label: { service: vs.service, portName: vs.portName, kind: vs.kind },
    protocol: vs.protocol,
    address: vs.address,
    port: vs.port,
    service,
    destinations,
    v4,
    evicted,
  };
}

/** Flags the kernel sets by itself and that we never ask for. */
const KERNEL_FLAGS = SvcFlag.HASHED;

export function serviceMatches(want: IpvsService, have: IpvsService): boolean {
  return (
    want.scheduler === have.scheduler &&
    (want.flags & ~KERNEL_FLAGS) === (have.flags & ~KERNEL_FLAGS) &&
    (want.flags & SvcFlag.PERSISTENT ? want.timeout === have.timeout && want.netmask === have.netmask : true)
  );
}

export function destinationMatches(want: IpvsDestination, have: IpvsDestination): boolean {
  return (
    want.weight === have.weight &&
    want.fwdMethod === have.fwdMethod &&
    want.upperThreshold === have.upperThreshold &&
    want.lowerThreshold === have.lowerThreshold
  );
}
