// Merging a Service's EndpointSlices into the endpoints of one Service port, and choosing
// among them exactly as kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go) does.
import type { Family } from '../util/ip.ts';
import type { Endpoint, EndpointSlice, ServicePort } from './types.ts';

/**
 * The endpoints of one Service port in one family: every slice of that family, ports matched by
 * name and protocol (a named targetPort arrives already resolved as the slice port's number),
 * duplicates (same address and port in two slices) removed, the first slice by name winning.
 */
export function endpointsForPort(slices: readonly EndpointSlice[], port: ServicePort, family: Family): Endpoint[] {
  const out: Endpoint[] = [];
  const seen = new Set<string>();
  for (const slice of slices) {
    if (slice.family !== family) continue;
    for (const sp of slice.ports) {
      if (sp.name !== port.name || sp.protocol !== port.protocol) continue;
      for (const e of slice.endpoints) {
        const id = `${e.address}|${sp.port}`;
        if (seen.has(id)) continue;
        seen.add(id);
        out.push({ ...e, family, port: sp.port });
      }
    }
  }
  return out;
}

export interface PolicyInfo {
  internalTrafficPolicyLocal: boolean;
  externalTrafficPolicyLocal: boolean;
  /** NodePort, LoadBalancer or externalIPs: whether external traffic policy applies at all. */
  externallyAccessible: boolean;
}

export interface Topology {
  nodeName: string;
  zone: string;
  /** kube-proxy's PreferSameTrafficDistribution gate: honour hints.forNodes. */
  nodeHints: boolean;
}

export interface Categorized {
  /** Endpoints for traffic policy Cluster (ready, topology-filtered; else serving+terminating). */
  cluster: Endpoint[];
  /** Endpoints for traffic policy Local (local ready; else local serving+terminating). */
  local: Endpoint[];
  /** Whether any usable endpoint exists anywhere in the cluster. */
  hasAny: boolean;
  /** The topology mode hints put this node in: "", "PreferSameZone" or "PreferSameNode". */
  topologyMode: string;
}

const isLocal = (e: Endpoint, t: Topology) => e.nodeName !== '' && e.nodeName === t.nodeName;
const servingTerminating = (e: Endpoint) => e.serving && e.terminating;

export function usesClusterEndpoints(p: PolicyInfo): boolean {
  return !p.internalTrafficPolicyLocal || (p.externallyAccessible && !p.externalTrafficPolicyLocal);
}

export function usesLocalEndpoints(p: PolicyInfo): boolean {
  return p.internalTrafficPolicyLocal || (p.externallyAccessible && p.externalTrafficPolicyLocal);
}

/**
 * Hints are used only when every ready endpoint carries one and at least one names this node
 * (node hints, when enabled) or this node's zone. Otherwise they are all ignored.
 */
export function topologyModeFromHints(endpoints: readonly Endpoint[], t: Topology): string {
  let allNode = true;
  let forNode = false;
  let allZone = true;
  let forZone = false;
  for (const e of endpoints) {
    if (!e.ready) continue;
    if (!e.zoneHints || e.zoneHints.length === 0) allZone = false;
    else if (t.zone !== '' && e.zoneHints.includes(t.zone)) forZone = true;
    if (!e.nodeHints || e.nodeHints.length === 0) allNode = false;
    else if (e.nodeHints.includes(t.nodeName)) forNode = true;
  }
  if (t.nodeHints && allNode && forNode) return 'PreferSameNode';
  if (allZone && forZone) return 'PreferSameZone';
  return '';
}

function availableForTopology(e: Endpoint, mode: string, t: Topology): boolean {
  if (mode === 'PreferSameNode') return e.nodeHints?.includes(t.nodeName) ?? false;
  if (mode === 'PreferSameZone') return e.zoneHints?.includes(t.zone) ?? false;
  return true;
}

export function categorizeEndpoints(endpoints: readonly Endpoint[], policy: PolicyInfo, t: Topology): Categorized {
  let cluster: Endpoint[] = [];
  let local: Endpoint[] = [];
  let hasAny = false;
  let topologyMode = '';

  if (usesClusterEndpoints(policy)) {
    topologyMode = topologyModeFromHints(endpoints, t);
    cluster = endpoints.filter((e) => e.ready && availableForTopology(e, topologyMode, t));
    // No ready endpoint anywhere (topology would have been ignored otherwise): fall back to
    // endpoints that still serve while terminating, so connections drain instead of failing.
    if (cluster.length === 0) cluster = endpoints.filter(servingTerminating);
    if (cluster.length > 0) hasAny = true;
  }
  if (!usesLocalEndpoints(policy)) return { cluster, local, hasAny, topologyMode };

  let localReady = false;
  let localServingTerminating = false;
  for (const e of endpoints) {
    if (e.ready) {
      hasAny = true;
      if (isLocal(e, t)) localReady = true;
    } else if (servingTerminating(e)) {
      hasAny = true;
      if (isLocal(e, t)) localServingTerminating = true;
    }
  }
  if (localReady) local = endpoints.filter((e) => e.ready && isLocal(e, t));
  else if (localServingTerminating) local = endpoints.filter((e) => isLocal(e, t) && servingTerminating(e));
  return { cluster, local, hasAny, topologyMode };
}
