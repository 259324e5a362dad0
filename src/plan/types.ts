// The desired node state. The JSON form of NodePlan is a contract (DESIGN.md, "Contracts"):
// fields may be added, the ones here must stay.
import type { Protocol } from '../model/types.ts';
import type { Family } from '../util/ip.ts';
import type { NetfilterSettings } from './netfilter.ts';

export type VirtualServerKind = 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalIP';

export interface RealServer {
  address: string;
  port: number;
  /** 0 means draining: no new connections. */
  weight: number;
}

export interface VirtualServer {
  /** "namespace/name" */
  service: string;
  portName: string;
  kind: VirtualServerKind;
  protocol: Protocol;
  family: Family;
  address: string;
  port: number;
  scheduler: string;
  /** ClientIP affinity timeout; 0 when the Service has no affinity. */
  persistenceTimeoutSeconds: number;
  realServers: RealServer[];
  /**
   * Set on the firewall-mark virtual server that carries in-cluster traffic to an
   * externalTrafficPolicy: Local LoadBalancer IP (`address`:`port`) to every endpoint
   * (kubernetes#93456); the iptables stage marks those packets. Absent on every other one.
   */
  fwmark?: number;
  /**
   * Endpoints health has had at weight 0 long enough: deleted from the kernel at once (not
   * drained), so IPVS ends their connections (expire_nodest_conn) instead of leaving clients on a
   * dead backend until the established timeout. Absent when there are none.
   */
  evicted?: { address: string; port: number }[];
}

export interface IpsetPlan {
  type: string;
  entries: string[];
}

export interface NodePlan {
  node: string;
  virtualServers: VirtualServer[];
  /** Every kube-ipvs ipset, name -> type and entries (see netfilter.ts). */
  ipsets: Record<string, IpsetPlan>;
  /** iptables-restore text per table ("nat", "filter"; IPv6: "ip6/nat", "ip6/filter"); constant rules. */
  iptables: Record<string, string>;
  /** Addresses bound to the dummy interface: ClusterIPs, ExternalIPs, LoadBalancer IPs. */
  addresses: string[];
}

/** What one Service contributes to the node: re-planned on its own when it changes. */
export interface ServicePlan {
  service: string;
  virtualServers: VirtualServer[];
  addresses: string[];
  /** spec.healthCheckNodePort (0 when none): served by observe/ with `localEndpoints`. */
  healthCheckNodePort: number;
  /** Ready endpoints on this node, distinct addresses over every port (kube-proxy's count). */
  localEndpoints: number;
  /** Its ipset entries, "SET-NAME entry" (see netfilter.ts). */
  setEntries: string[];
  /** Service ports with a Local traffic policy, endpoints elsewhere and none here (a metric). */
  noLocalEndpoints: { family: Family; policy: 'internal' | 'external' }[];
}

/** What health says of one endpoint of one Service (src/health/): a weight factor, and whether to evict it. */
export interface EndpointWeight {
  /** 0: ejected (weight 0); (0, 1): ramping up after a recovery; 1: full weight. */
  factor: number;
  /** Ejected long enough: its destination is deleted, ending its connections. */
  evict: boolean;
}

/** Health weights as the planner reads them; absent: every endpoint at full weight. */
export type WeightSource = (service: string, address: string, port: number) => EndpointWeight;

export interface PlanConfig {
  /** Default IPVS scheduler. */
  scheduler: string;
  /** CIDRs, or "primary"; empty means every node address. */
  nodePortAddresses: string[];
  /** Honour hints.forNodes (kube-proxy's PreferSameTrafficDistribution gate, on by default). */
  nodeHints: boolean;
  /** What the iptables rules depend on. */
  netfilter: NetfilterSettings;
}
