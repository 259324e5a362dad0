// From the model to the desired IPVS state, one Service at a time. Deterministic: the same
// model and config always give the same plan, in the same order.
import { categorizeEndpoints, endpointsForPort, type Topology } from '../model/endpoints.ts';
import type { ApplyResult, Model } from '../model/model.ts';
import type { Endpoint, NodeInfo, Service } from '../model/types.ts';
import { cidrContains, compareIP, ipFamily, parseCIDR, type Family } from '../util/ip.ts';
import { iptablesPlan, ipsetPlan, netfilterConfig, serviceSetEntries, type NetfilterConfig } from './netfilter.ts';
import type { NodePlan, PlanConfig, RealServer, ServicePlan, VirtualServer, VirtualServerKind } from './types.ts';

/** What planning needs from the node, derived once per Node change rather than per Service. */
export interface NodeContext {
  /** A stable firewall mark for this key (see Planner: allocated once, kept while in use). */
  fwmark: (key: string) => number;
  /** The node's own addresses (never put on the dummy interface). */
  nodeAddresses: Set<string>;
  topology: Topology;
  /** Node addresses that accept NodePorts, per family. */
  nodePortAddresses: Record<Family, string[]>;
}

/** The node addresses NodePorts listen on: all of them, those in the CIDRs, and/or the primary ones. */
export function selectNodePortAddresses(node: NodeInfo | null, nodePortAddresses: readonly string[]): string[] {
  const all = node?.addresses ?? [];
  if (nodePortAddresses.length === 0) return all.map((a) => a.address);
  const cidrs = nodePortAddresses.flatMap((c) => parseCIDR(c) ?? []);
  const primary = new Set<string>();
  if (nodePortAddresses.includes('primary')) {
    // kube-proxy's node IPs: per family the first InternalIP, else the first ExternalIP.
    for (const fam of [4, 6] as const) {
      const ofFam = all.filter((a) => ipFamily(a.address) === fam);
      const pick = ofFam.find((a) => a.type === 'InternalIP') ?? ofFam[0];
      if (pick) primary.add(pick.address);
    }
  }
  return all.map((a) => a.address).filter((ip) => primary.has(ip) || cidrs.some((c) => cidrContains(c, ip)));
}

export function nodeContext(model: Model, cfg: PlanConfig, fwmark: (key: string) => number = fwmarkOf): NodeContext {
  const node = model.node;
  const selected = selectNodePortAddresses(node, cfg.nodePortAddresses);
  return {
    fwmark,
    nodeAddresses: new Set((node?.addresses ?? []).map((a) => a.address)),
    topology: { nodeName: model.nodeName, zone: node?.zone ?? '', nodeHints: cfg.nodeHints },
    nodePortAddresses: {
      4: selected.filter((a) => ipFamily(a) === 4),
      6: selected.filter((a) => ipFamily(a) === 6),
    },
  };
}

function realServers(eps: readonly Endpoint[]): RealServer[] {
  return eps
    .map((e) => ({ address: e.address, port: e.port, weight: 1 }))
    .sort((a, b) => compareIP(a.address, b.address) || a.port - b.port);
}

/** Plans one Service: its virtual servers and the addresses they need on the dummy interface. */
export function planService(svc: Service, model: Model, ctx: NodeContext, cfg: PlanConfig): ServicePlan {
  const virtualServers: VirtualServer[] = [];
  const addresses: string[] = [];
  const slices = model.slicesFor(svc.key);
  const policy = {
    internalTrafficPolicyLocal: svc.internalTrafficPolicyLocal,
    externalTrafficPolicyLocal: svc.externalTrafficPolicyLocal,
    externallyAccessible: svc.type !== 'ClusterIP' || svc.externalIPs.length > 0,
  };
  const scheduler = svc.scheduler || cfg.scheduler;
  const noLocalEndpoints: ServicePlan['noLocalEndpoints'] = [];
  const local = new Set<string>();
  for (const slice of slices) for (const e of slice.endpoints) if (e.ready && e.nodeName !== '' && e.nodeName === ctx.topology.nodeName) local.add(e.address);

  // One family at a time, as kube-proxy runs one proxier per family: a family without a
  // ClusterIP gets nothing, and external addresses of the other family are not ours there.
  for (const clusterIP of svc.clusterIPs) {
    const family = ipFamily(clusterIP)!;
    const ofFamily = (ips: string[]) => ips.filter((ip) => ipFamily(ip) === family);
    const targets: [VirtualServerKind, string[]][] = [
      ['ClusterIP', [clusterIP]],
      ['ExternalIP', ofFamily(svc.externalIPs)],
      ['LoadBalancer', ofFamily(svc.loadBalancerIPs)],
      ['NodePort', ctx.nodePortAddresses[family]],
    ];
    // Service addresses go on the dummy interface, except one the node already has (an
    // ExternalIP equal to a node IP keeps working without a second copy: kubernetes#93175).
    for (const [, ips] of targets.slice(0, 3)) for (const ip of ips) if (!addresses.includes(ip) && !ctx.nodeAddresses.has(ip)) addresses.push(ip);

    for (const port of svc.ports) {
      const cat = categorizeEndpoints(endpointsForPort(slices, port, family), policy, ctx.topology);
      const internal = realServers(svc.internalTrafficPolicyLocal ? cat.local : cat.cluster);
      const external = realServers(svc.externalTrafficPolicyLocal ? cat.local : cat.cluster);
      if (cat.hasAny && cat.local.length === 0) {
        if (svc.internalTrafficPolicyLocal) noLocalEndpoints.push({ family, policy: 'internal' });
        if (svc.externalTrafficPolicyLocal) noLocalEndpoints.push({ family, policy: 'external' });
      }
      for (const [kind, ips] of targets) {
        if (kind === 'NodePort' && port.nodePort === 0) continue;
        for (const address of ips) {
          const rs = kind === 'ClusterIP' ? internal : external;
          const vs: VirtualServer = {
            service: svc.key,
            portName: port.name,
            kind,
            protocol: port.protocol,
            family,
            address,
            port: kind === 'NodePort' ? port.nodePort : port.port,
            scheduler,
            persistenceTimeoutSeconds: svc.affinityTimeoutSeconds,
            realServers: rs, // shared between this port's virtual servers; nothing mutates plans
          };
          virtualServers.push(vs);
          // externalTrafficPolicy: Local LoadBalancer IPs reached from inside the cluster go to
          // every endpoint, as in kube-proxy's iptables mode (kubernetes#93456): a second,
          // firewall-mark virtual server that in-cluster packets are steered to.
          if (kind === 'LoadBalancer' && svc.externalTrafficPolicyLocal) {
            virtualServers.push({ ...vs, realServers: internal, fwmark: ctx.fwmark(fwmarkKey(vs)) });
          }
        }
      }
    }
  }
  const setEntries = serviceSetEntries(svc, virtualServers, addresses);
  return { service: svc.key, virtualServers, addresses, setEntries, healthCheckNodePort: svc.healthCheckNodePort, localEndpoints: local.size, noLocalEndpoints };
}

/** What a firewall mark stands for: one LoadBalancer IP, protocol and port. */
export const fwmarkKey = (vs: Pick<VirtualServer, 'protocol' | 'address' | 'port'>) => `${vs.protocol}/${vs.address}:${vs.port}`;

/** Marks live in 0x00100000-0x00ffffff, never with the masquerade bit: see Planner#fwmark. */
const FWMARK_BASE = 0x100000;
const FWMARK_SPAN = 0xf00000;

/** The first choice of mark for a key: a hash, so marks do not depend on the order Services arrive in. */
export function fwmarkOf(key: string, attempt = 0): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  return FWMARK_BASE + ((h + attempt * 0x9e3779b1) >>> 0) % FWMARK_SPAN;
}

/**
 * Keeps one ServicePlan per Service and re-plans only what a model change touched.
 * A Node change re-plans everything, since node addresses, zone and locality feed every Service.
 */
export class Planner {
  readonly model: Model;
  readonly config: PlanConfig;
  #ctx: NodeContext;
  #plans = new Map<string, ServicePlan>();
  /** How many Services want each dummy-interface address (an ExternalIP may be shared). */
  #addressRefs = new Map<string, number>();
  /** How many Services want each ipset entry ("SET entry"). */
  #setRefs = new Map<string, number>();
  /** Entries whose presence changed since the last takeSetChanges(). */
  #setDirty = new Set<string>();
  #netfilter: NetfilterConfig;
  /** Firewall mark per key, and how many virtual servers use it; a mark is never reused while in use. */
  #marks = new Map<string, { mark: number; refs: number }>();
  #markUsed = new Set<number>();
  readonly #markFor = (key: string) => this.#fwmark(key);

  constructor(model: Model, config: PlanConfig) {
    this.model = model;
    this.config = config;
    this.#ctx = nodeContext(model, config, this.#markFor);
    this.#netfilter = netfilterConfig(config.netfilter, model.node);
  }

  /** The constant iptables rules' inputs (config and, for detectLocalMode NodeCIDR, the Node). */
  get netfilter(): NetfilterConfig {
    return this.#netfilter;
  }

  /** Every ipset entry any Service wants ("SET entry"). */
  setEntries(): IterableIterator<string> {
    return this.#setRefs.keys();
  }

  setEntryWanted(entry: string): boolean {
    return (this.#setRefs.get(entry) ?? 0) > 0;
  }

  /** Entries that appeared or disappeared since the last call (for incremental ipset updates). */
  takeSetChanges(): string[] {
    const out = [...this.#setDirty];
    this.#setDirty.clear();
    return out;
  }

  /** Re-plans everything. Returns the keys of every planned Service. */
  planAll(): string[] {
    this.#ctx = nodeContext(this.model, this.config, this.#markFor);
    this.#netfilter = netfilterConfig(this.config.netfilter, this.model.node);
    for (const e of this.#setRefs.keys()) this.#setDirty.add(e);
    this.#plans.clear();
    this.#addressRefs.clear();
    this.#setRefs.clear();
    this.#marks.clear();
    this.#markUsed.clear();
    const keys = this.model.serviceKeys();
    for (const key of keys) this.#replan(key);
    return keys;
  }

  /** Re-plans what one model change touched. Returns the Service keys whose plan was recomputed. */
  update(result: ApplyResult): string[] {
    if (result.nodeChanged) return this.planAll();
    for (const key of result.changedServices) this.#replan(key);
    return result.changedServices;
  }

  servicePlan(key: string): ServicePlan | undefined {
    return this.#plans.get(key);
  }

  /** Every Service's plan, keyed by "namespace/name". */
  plans(): ReadonlyMap<string, ServicePlan> {
    return this.#plans;
  }

  /** Virtual server id (as the IPVS layer names it: "TCP/10.0.0.1:80", "FWM/1234") -> planned real servers. */
  realServerCounts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const p of this.#plans.values()) {
      for (const vs of p.virtualServers) {
        const id = vs.fwmark !== undefined ? `FWM/${vs.fwmark}${vs.family === 6 ? '/v6' : ''}` : `${vs.protocol}/${vs.family === 6 ? `[${vs.address}]` : vs.address}:${vs.port}`;
        out.set(id, vs.realServers.length);
      }
    }
    return out;
  }

  /**
   * A mark for `key`, stable while some virtual server uses it: the hash first, the next free one
   * on a collision; never one with the masquerade bit (the POSTROUTING masquerade test reads it).
   */
  #fwmark(key: string): number {
    const have = this.#marks.get(key);
    if (have) {
      have.refs++;
      return have.mark;
    }
    const masq = 1 << this.config.netfilter.iptables.masqueradeBit;
    let mark = 0;
    for (let attempt = 0; ; attempt++) {
      mark = fwmarkOf(key, attempt);
      if (!(mark & masq) && !this.#markUsed.has(mark)) break;
    }
    this.#marks.set(key, { mark, refs: 1 });
    this.#markUsed.add(mark);
    return mark;
  }

  #releaseMarks(plan: ServicePlan | undefined): void {
    for (const vs of plan?.virtualServers ?? []) {
      if (vs.fwmark === undefined) continue;
      const key = fwmarkKey(vs);
      const m = this.#marks.get(key);
      if (!m || --m.refs > 0) continue;
      this.#marks.delete(key);
      this.#markUsed.delete(m.mark);
    }
  }

  addressInUse(address: string): boolean {
    return (this.#addressRefs.get(address) ?? 0) > 0;
  }

  #replan(key: string): void {
    const old = this.#plans.get(key);
    this.#releaseMarks(old);
    for (const a of old?.addresses ?? []) {
      const n = (this.#addressRefs.get(a) ?? 1) - 1;
      if (n > 0) this.#addressRefs.set(a, n);
      else this.#addressRefs.delete(a);
    }
    for (const e of old?.setEntries ?? []) {
      const n = (this.#setRefs.get(e) ?? 1) - 1;
      if (n > 0) this.#setRefs.set(e, n);
      else {
        this.#setRefs.delete(e);
        this.#setDirty.add(e);
      }
    }
    const svc = this.model.service(key);
    if (!svc) {
      this.#plans.delete(key);
      return;
    }
    const plan = planService(svc, this.model, this.#ctx, this.config);
    this.#plans.set(key, plan);
    for (const a of plan.addresses) this.#addressRefs.set(a, (this.#addressRefs.get(a) ?? 0) + 1);
    for (const e of plan.setEntries) {
      const n = this.#setRefs.get(e) ?? 0;
      if (n === 0) this.#setDirty.add(e);
      this.#setRefs.set(e, n + 1);
    }
  }

  /** The whole node's desired state, Services in key order. */
  snapshot(): NodePlan {
    const keys = [...this.#plans.keys()].sort();
    const virtualServers: VirtualServer[] = [];
    const addresses = new Set<string>();
    for (const key of keys) {
      const p = this.#plans.get(key)!;
      virtualServers.push(...p.virtualServers);
      for (const a of p.addresses) addresses.add(a);
    }
    return {
      node: this.model.nodeName,
      virtualServers,
      ipsets: ipsetPlan(this.#setRefs.keys()),
      iptables: iptablesPlan(this.#netfilter),
      addresses: [...addresses].sort(compareIP),
    };
  }
}
