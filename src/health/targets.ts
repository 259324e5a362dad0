// What the health stage looks after for one Service, derived from its plan: the endpoints this
// node sends its traffic to (Kubernetes-usable ones only: health takes traffic away, never adds
// it) and how each is probed. Pure.
import type { Model } from '../model/model.ts';
import type { Service } from '../model/types.ts';
import type { ServicePlan } from '../plan/types.ts';
import { hostPort } from '../util/ip.ts';
import type { ProbeTarget } from './probers.ts';
import { effectiveSettings, type HealthConfig, type HealthSettings } from './settings.ts';

export interface HealthEndpoint {
  /** "address:port" (hostPort form), as the Service's virtual servers use it. */
  endpoint: string;
  address: string;
  port: number;
  /** How it is probed; null when a named probe port does not resolve for it (then it is never ejected). */
  probe: ProbeTarget | null;
}

export interface ServiceHealth {
  service: string;
  settings: HealthSettings;
  endpoints: HealthEndpoint[];
  /** Passive detection applies: no active checks, passive on, and TCP virtual servers. */
  passive: boolean;
  /**
   * The Service's TCP virtual servers, by IPVS id ("TCP/10.96.0.1:80"): where passive evidence and traffic are read.
   */
  tcpVirtualServers: string[];
  /** Every virtual server id (traffic is read on all of them). */
  virtualServers: string[];
  /** A named probe port that names no port of the endpoint's slices. */
  unresolvedPort: string | null;
}

const vsId = (v: { protocol: string; family: number; address: string; port: number; fwmark?: number }) =>
  v.fwmark !== undefined
    ? `FWM/${v.fwmark}${v.family === 6 ? '/v6' : ''}`
    : `${v.protocol}/${v.family === 6 ? `[${v.address}]` : v.address}:${v.port}`;

/** Null when the Service needs no health stage at all (no checks, no passive detection, no endpoints). */
export function serviceHealthOf(
  svc: Service,
  plan: ServicePlan,
  model: Model,
  cfg: HealthConfig,
): ServiceHealth | null {
  const settings = effectiveSettings(cfg, svc.healthOverrides);
  const active = settings.kind !== 'none';
  const tcpVirtualServers = plan.virtualServers.filter((v) => v.protocol === 'TCP' && v.fwmark === undefined).map(vsId);
  const passive = !active && cfg.passive && tcpVirtualServers.length > 0;
  if (!active && !passive) return null;
  const seen = new Map<string, HealthEndpoint>();
  let unresolvedPort: string | null = null;
  for (const vs of plan.virtualServers) {
    // Passive detection reads TCP only; active checks cover every protocol's endpoints.
    if (!active && vs.protocol !== 'TCP') continue;
    for (const rs of [...vs.realServers, ...(vs.evicted ?? [])]) {
      const endpoint = hostPort(rs.address, rs.port);
      if (seen.has(endpoint)) continue;
      let port = rs.port;
      if (typeof settings.port === 'number') port = settings.port;
      else if (settings.port !== '') {
        const named = namedPort(model, svc.key, rs.address, settings.port);
        if (named === null) {
          unresolvedPort = settings.port;
          seen.set(endpoint, { endpoint, address: rs.address, port: rs.port, probe: null });
          continue;
        }
        port = named;
      }
      // Passive-only endpoints are probed over TCP once ejected, to confirm their recovery.
      const kind = active ? (settings.kind as 'tcp' | 'http') : 'tcp';
      seen.set(endpoint, {
        endpoint,
        address: rs.address,
        port: rs.port,
        probe: { kind, address: rs.address, port, path: settings.path },
      });
    }
  }
  if (seen.size === 0) return null;
  return {
    service: svc.key,
    settings,
    endpoints: [...seen.values()],
    passive,
    tcpVirtualServers,
    virtualServers: plan.virtualServers.map(vsId),
    unresolvedPort,
  };
}

/** The number of the port named `name` in the slice that holds this endpoint (TCP). */
function namedPort(model: Model, service: string, address: string, name: string): number | null {
  for (const s of model.slicesFor(service)) {
    if (!s.endpoints.some((e) => e.address === address)) continue;
    const p = s.ports.find((x) => x.name === name && x.protocol === 'TCP');
    if (p) return p.port;
  }
  return null;
}
