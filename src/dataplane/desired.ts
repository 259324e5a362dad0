// The plan's virtual servers in IPVS terms, and what "already right" means when comparing
// them with what the kernel reports.
import type { VirtualServer } from '../plan/types.ts';
import { FwdMethod, SCHED_FLAG_FALLBACK, SvcFlag } from './ipvs/constants.ts';
import { ipv4Number } from '../util/ip.ts';
import {
  destinationId,
  serviceId,
  serviceKeyOf,
  v4Key,
  type IpvsDestination,
  type IpvsService,
  type V4Destinations,
} from './ipvs/types.ts';
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
  /** The planned virtual server: its real servers are the destinations (destinationsOf, v4DestinationsOf). */
  vs: VirtualServer;
  /** Destinations health evicted: deleted at once, never drained (their connections are dead anyway). */
  evicted: ReadonlySet<string>;
}

/** The evicted set of almost every virtual server: one shared empty set (an empty Set is 200 bytes; 10 000: 2 MB). */
const NONE_EVICTED: ReadonlySet<string> = new Set();

/**
 * Plans are never changed once made (a Service's change makes a new plan): each virtual server's IPVS terms are
 * computed once, not at every full resync. What is kept for every virtual server is small (the compact IPv4 form a
 * resync compares); its destinations as objects are built when a sync writes them (destinationsOf): kept, they were
 * about 230 bytes a destination beside the plan's own (23 MB at 10 000 Services x 10 endpoints).
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
  return {
    id: serviceId(service),
    owner: vs.service,
    label: { service: vs.service, portName: vs.portName, kind: vs.kind },
    protocol: vs.protocol,
    address: vs.address,
    port: vs.port,
    service,
    vs,
    evicted: vs.evicted?.length ? new Set(vs.evicted.map((e) => destinationId(e))) : NONE_EVICTED,
  };
}

/** The destinations `d` wants, by destinationId (built on each call: a sync that writes them asks once). */
export function destinationsOf(d: DesiredVS): Map<string, IpvsDestination> {
  const out = new Map<string, IpvsDestination>();
  for (const rs of d.vs.realServers) {
    const x: IpvsDestination = {
      family: d.vs.family,
      address: rs.address,
      port: rs.port,
      fwdMethod: FwdMethod.MASQ,
      weight: rs.weight,
      upperThreshold: 0,
      lowerThreshold: 0,
    };
    out.set(destinationId(x), x);
  }
  return out;
}

/** v4DestinationsOf's answers, per planned virtual server (null: not every destination is IPv4). */
const v4Cache = new WeakMap<VirtualServer, V4Destinations | null>();

/**
 * The destinations `d` wants in the compact form a full resync compares with the kernel's table, when every one is
 * IPv4 (else null). Made on a full resync's first look and kept with the plan, not when the plan is made: an
 * incremental sync never compares this way, and under churn building it was 4% of a change's CPU.
 */
export function v4DestinationsOf(d: DesiredVS): V4Destinations | null {
  let v4 = v4Cache.get(d.vs);
  if (v4 === undefined) {
    v4 = v4Of(d.vs);
    v4Cache.set(d.vs, v4);
  }
  return v4;
}

/** The real servers as V4Destinations (a later one of the same address and port wins, as in destinationsOf). */
function v4Of(vs: VirtualServer): V4Destinations | null {
  const weights = new Map<number, number>();
  for (const rs of vs.realServers) {
    const a = vs.family === 4 ? ipv4Number(rs.address) : -1;
    if (a < 0) return null;
    weights.set(v4Key(a, rs.port), rs.weight);
  }
  const keys = [...weights.keys()].sort((x, y) => x - y);
  const out = new Float64Array(keys.length * 3);
  keys.forEach((k, i) => out.set([k, weights.get(k)!, FwdMethod.MASQ], i * 3));
  return out;
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
