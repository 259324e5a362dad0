// The model's normalized view of Kubernetes objects. Everything here is already validated:
// addresses are canonical, ports in range, enums known. Raw API objects never get past validate.ts.
import type { HealthSettings } from '../health/settings.ts';
import type { Family } from '../util/ip.ts';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

export interface ServicePort {
  /** The port's name; "" for a single unnamed port. EndpointSlice ports match on it. */
  name: string;
  protocol: Protocol;
  port: number;
  /** 0 when the Service has no NodePort for this port. */
  nodePort: number;
}

export interface Service {
  /** "namespace/name" */
  key: string;
  namespace: string;
  name: string;
  /**
   * metadata.creationTimestamp in ms since the epoch; null when absent (a manifest). The older claim on a virtual
   * server wins.
   */
  createdAt: number | null;
  type: ServiceType;
  /** Canonical ClusterIPs, primary family first (spec.clusterIPs, or spec.clusterIP). */
  clusterIPs: string[];
  externalIPs: string[];
  /** status.loadBalancer.ingress[].ip, without ingresses whose ipMode is Proxy. */
  loadBalancerIPs: string[];
  /** Canonical CIDRs from spec.loadBalancerSourceRanges (enforced by the iptables stage). */
  loadBalancerSourceRanges: string[];
  ports: ServicePort[];
  /** ClientIP affinity timeout in seconds; 0 when sessionAffinity is None. */
  affinityTimeoutSeconds: number;
  internalTrafficPolicyLocal: boolean;
  /** True only for externally accessible Services (NodePort, LoadBalancer, externalIPs) with eTP Local. */
  externalTrafficPolicyLocal: boolean;
  /** spec.healthCheckNodePort; 0 when none. */
  healthCheckNodePort: number;
  trafficDistribution: string;
  /** From the kube-ipvs.io/scheduler annotation, already validated; "" means the configured default. */
  scheduler: string;
  /** What the kube-ipvs.io/health-* annotations override of the config's health checks (validated). */
  healthOverrides: Partial<HealthSettings>;
}

export interface EndpointSlicePort {
  name: string;
  protocol: Protocol;
  port: number;
}

export interface SliceEndpoint {
  /** Canonical addresses[0]; kube-proxy uses only the first address. */
  address: string;
  /** The address's numeric sort key (util/ip.ts ipSortKey), computed once when the slice is read. */
  sortKey: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName: string;
  zone: string;
  /** hints.forZones[].name; null when the endpoint has no zone hints. */
  zoneHints: string[] | null;
  /** hints.forNodes[].name; null when the endpoint has no node hints. */
  nodeHints: string[] | null;
}

export interface EndpointSlice {
  /** "namespace/name" of the slice itself. */
  key: string;
  /** "namespace/name" of the owning Service (label kubernetes.io/service-name). */
  serviceKey: string;
  /** null for FQDN slices, which kube-proxy ignores. */
  family: Family | null;
  ports: EndpointSlicePort[];
  endpoints: SliceEndpoint[];
}

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
  zone: string;
  /** Canonical InternalIP and ExternalIP addresses, in status order. */
  addresses: { type: string; address: string }[];
  /** spec.podCIDRs (or spec.podCIDR), canonical; detectLocalMode NodeCIDR reads them. */
  podCIDRs: string[];
  /** metadata.deletionTimestamp is set (for /healthz). */
  deleting: boolean;
  /** Carries the cluster autoscaler's ToBeDeletedByClusterAutoscaler taint (for /healthz). */
  toBeDeleted: boolean;
}

/** One endpoint of one Service port, after slices are merged. */
export interface Endpoint extends SliceEndpoint {
  family: Family;
  port: number;
}
