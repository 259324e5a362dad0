// From the model to the desired IPVS state, one Service at a time. Deterministic: the same
// model and config always give the same plan, in the same order.
import { isDeepStrictEqual } from 'node:util';
import { Codes, type Problem } from '../errors.ts';
import { categorizeEndpoints, endpointsForPort, type Topology } from '../model/endpoints.ts';
import type { ApplyResult, Model } from '../model/model.ts';
import type { Endpoint, NodeInfo, Service } from '../model/types.ts';
import { cidrContains, compareIP, familyOfCanonical, ipFamily, parseCIDR, type Family } from '../util/ip.ts';
import {
  countSetEntry,
  iptablesPlan,
  ipsetPlan,
  netfilterConfig,
  serviceSetEntries,
  type NetfilterConfig,
} from './netfilter.ts';
import type {
  NodePlan,
  PlanConfig,
  RealServer,
  ServicePlan,
  VirtualServer,
  VirtualServerKind,
  WeightSource,
} from './types.ts';

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
  // Sorted by address (numerically, by the key the model computed once) then port.
  const sorted = [...eps].sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : a.port - b.port));
  return sorted.map((e) => ({ address: e.address, port: e.port, weight: 1 }));
}

/** Schedulers that ignore weights, and their weighted forms (used while a slow-start ramp runs). */
const RAMP_SCHEDULER: Record<string, string> = { rr: 'wrr', lc: 'wlc' };
/** Weights while any endpoint of a virtual server ramps: full is 10 (1 otherwise, as kube-proxy's). */
const RAMP_SCALE = 10;

/** Real servers with health's weights: ejected at 0, ramping ones scaled, evicted ones set apart. */
function weighted(
  service: string,
  servers: RealServer[],
  weights?: WeightSource,
): { servers: RealServer[]; evicted: { address: string; port: number }[]; ramping: boolean } {
  if (!weights) return { servers, evicted: [], ramping: false };
  const ws = servers.map((r) => weights(service, r.address, r.port));
  if (ws.every((w) => w.factor === 1 && !w.evict)) return { servers, evicted: [], ramping: false };
  const ramping = ws.some((w) => w.factor > 0 && w.factor < 1);
  const scale = ramping ? RAMP_SCALE : 1;
  const out: RealServer[] = [];
  const evicted: { address: string; port: number }[] = [];
  servers.forEach((r, i) => {
    const w = ws[i]!;
    if (w.evict) evicted.push({ address: r.address, port: r.port });
    else out.push({ ...r, weight: w.factor === 0 ? 0 : Math.max(1, Math.round(w.factor * scale)) });
  });
  return { servers: out, evicted, ramping };
}

/** Where one family of a Service is served: per kind, the addresses. */
function targetsOf(svc: Service, clusterIP: string, ctx: NodeContext): [VirtualServerKind, string[]][] {
  const family = familyOfCanonical(clusterIP);
  const ofFamily = (ips: string[]) => (ips.length === 0 ? ips : ips.filter((ip) => familyOfCanonical(ip) === family));
  return [
    ['ClusterIP', [clusterIP]],
    ['ExternalIP', ofFamily(svc.externalIPs)],
    ['LoadBalancer', ofFamily(svc.loadBalancerIPs)],
    ['NodePort', ctx.nodePortAddresses[family]],
  ];
}

/** The IPVS layer's name for a virtual server: "TCP/10.0.0.1:80", "TCP/[fd00::1]:80". */
export const virtualServerId = (vs: Pick<VirtualServer, 'protocol' | 'family' | 'address' | 'port'>) =>
  `${vs.protocol}/${vs.family === 6 ? `[${vs.address}]` : vs.address}:${vs.port}`;

/**
 * What a Service claims on the node, for arbitration between Services (see Planner): each
 * service address (`vip:`, class 0 for its own ClusterIPs, 1 for externalIPs and LoadBalancer
 * IPs), each virtual server (`vs:`, class 0 on its own ClusterIP, 1 elsewhere), and each node
 * port, NodePorts and the healthCheckNodePort (`np:`).
 */
export function claimsOf(svc: Service, ctx: NodeContext): Map<string, 0 | 1> {
  const out = new Map<string, 0 | 1>();
  for (const a of [...svc.externalIPs, ...svc.loadBalancerIPs]) out.set(`vip:${a}`, 1);
  for (const clusterIP of svc.clusterIPs) out.set(`vip:${clusterIP}`, 0);
  for (const clusterIP of svc.clusterIPs) {
    const family = familyOfCanonical(clusterIP);
    for (const port of svc.ports) {
      for (const [kind, ips] of targetsOf(svc, clusterIP, ctx)) {
        if (kind === 'NodePort' && port.nodePort === 0) continue;
        for (const address of ips) {
          const id = `vs:${virtualServerId({ protocol: port.protocol, family, address, port: kind === 'NodePort' ? port.nodePort : port.port })}`;
          if (!out.has(id) || kind === 'ClusterIP') out.set(id, kind === 'ClusterIP' ? 0 : 1);
        }
      }
      if (port.nodePort) out.set(`np:${port.protocol}/${port.nodePort}`, 1);
    }
  }
  if (svc.healthCheckNodePort) out.set(`np:TCP/${svc.healthCheckNodePort}`, 1);
  return out;
}

/** Decides, per claim, whether this Service holds it; `refused` hears of each one it does not. */
export interface ClaimCheck {
  holds(claim: string): boolean;
  /** Whether it may serve on this address: not when the address is another Service's ClusterIP. */
  mayUseAddress(address: string): boolean;
  refused(what: string, claim: string): void;
}

const holdsAll: ClaimCheck = { holds: () => true, mayUseAddress: () => true, refused: () => {} };

/**
 * Plans one Service: its virtual servers and the addresses they need on the dummy interface.
 * `claims` says which of the Service's claims it holds against other Services (all, alone).
 */
export function planService(
  svc: Service,
  model: Model,
  ctx: NodeContext,
  cfg: PlanConfig,
  claims: ClaimCheck = holdsAll,
  weights?: WeightSource,
): ServicePlan {
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
  /** The addresses of this node's endpoints, in any state: the only ones a hairpin can reach (serviceSetEntries). */
  const onNode = new Set<string>();
  for (const slice of slices)
    for (const e of slice.endpoints)
      if (e.nodeName !== '' && e.nodeName === ctx.topology.nodeName) {
        onNode.add(e.address);
        if (e.ready) local.add(e.address);
      }
  /**
   * Virtual server ids already planned for this Service (its own duplicates: a ClusterIP also listed as an externalIP).
   */
  const planned = new Set<string>();
  /** An address carries this Service's virtual servers unless it is another Service's ClusterIP. */
  const addressHeld = (address: string, kind: VirtualServerKind) =>
    kind === 'NodePort' || claims.mayUseAddress(address);

  // One family at a time, as kube-proxy runs one proxier per family: a family without a
  // ClusterIP gets nothing, and external addresses of the other family are not ours there.
  for (const clusterIP of svc.clusterIPs) {
    const family = familyOfCanonical(clusterIP);
    const targets = targetsOf(svc, clusterIP, ctx);
    for (const port of svc.ports) {
      const cat = categorizeEndpoints(endpointsForPort(slices, port, family), policy, ctx.topology);
      const internal = weighted(
        svc.key,
        realServers(svc.internalTrafficPolicyLocal ? cat.local : cat.cluster),
        weights,
      );
      const external = weighted(
        svc.key,
        realServers(svc.externalTrafficPolicyLocal ? cat.local : cat.cluster),
        weights,
      );
      if (cat.hasAny && cat.local.length === 0) {
        if (svc.internalTrafficPolicyLocal) noLocalEndpoints.push({ family, policy: 'internal' });
        if (svc.externalTrafficPolicyLocal) noLocalEndpoints.push({ family, policy: 'external' });
      }
      const nodePortHeld = port.nodePort !== 0 && claims.holds(`np:${port.protocol}/${port.nodePort}`);
      if (port.nodePort !== 0 && !nodePortHeld)
        claims.refused(`nodePort ${port.protocol}/${port.nodePort}`, `np:${port.protocol}/${port.nodePort}`);
      for (const [kind, ips] of targets) {
        if (kind === 'NodePort' && (port.nodePort === 0 || !nodePortHeld)) continue;
        for (const address of ips) {
          const vsPort = kind === 'NodePort' ? port.nodePort : port.port;
          const id = virtualServerId({ protocol: port.protocol, family, address, port: vsPort });
          if (planned.has(id)) continue;
          planned.add(id);
          if (!addressHeld(address, kind)) {
            claims.refused(`${kind} ${id}`, `vip:${address}`);
            continue;
          }
          if (!claims.holds(`vs:${id}`)) {
            claims.refused(`${kind} ${id}`, `vs:${id}`);
            continue;
          }
          // Service addresses go on the dummy interface, except one the node already has (an
          // ExternalIP equal to a node IP keeps working without a second copy: kubernetes#93175).
          if (kind !== 'NodePort' && !addresses.includes(address) && !ctx.nodeAddresses.has(address))
            addresses.push(address);
          const rs = kind === 'ClusterIP' ? internal : external;
          const vs: VirtualServer = {
            service: svc.key,
            portName: port.name,
            kind,
            protocol: port.protocol,
            family,
            address,
            port: vsPort,
            // IPVS rr and lc ignore weights other than 0: a slow-start ramp needs their weighted forms.
            scheduler: rs.ramping ? (RAMP_SCHEDULER[scheduler] ?? scheduler) : scheduler,
            persistenceTimeoutSeconds: svc.affinityTimeoutSeconds,
            realServers: rs.servers, // shared between this port's virtual servers; nothing mutates plans
            ...(rs.evicted.length ? { evicted: rs.evicted } : {}),
          };
          virtualServers.push(vs);
          // externalTrafficPolicy: Local LoadBalancer IPs reached from inside the cluster go to
          // every endpoint, as in kube-proxy's iptables mode (kubernetes#93456): a second,
          // firewall-mark virtual server that in-cluster packets are steered to.
          if (kind === 'LoadBalancer' && svc.externalTrafficPolicyLocal) {
            const { evicted: _ignored, ...base } = vs;
            const fw: VirtualServer = {
              ...base,
              scheduler: internal.ramping ? (RAMP_SCHEDULER[scheduler] ?? scheduler) : scheduler,
              realServers: internal.servers,
              fwmark: ctx.fwmark(fwmarkKey(vs)),
            };
            if (internal.evicted.length) fw.evicted = internal.evicted;
            virtualServers.push(fw);
          }
        }
      }
    }
  }
  const hcHeld = svc.healthCheckNodePort !== 0 && claims.holds(`np:TCP/${svc.healthCheckNodePort}`);
  if (svc.healthCheckNodePort !== 0 && !hcHeld)
    claims.refused(`healthCheckNodePort ${svc.healthCheckNodePort}`, `np:TCP/${svc.healthCheckNodePort}`);
  const healthCheckNodePort = hcHeld ? svc.healthCheckNodePort : 0;
  const setEntries = serviceSetEntries({ ...svc, healthCheckNodePort }, virtualServers, addresses, onNode);
  return {
    service: svc.key,
    // Copies of their exact length: an array grown by push keeps room for 16 more (150 bytes for one element, and a
    // plan is kept for as long as its Service is unchanged).
    virtualServers: virtualServers.slice(),
    addresses: addresses.slice(),
    setEntries,
    healthCheckNodePort,
    localEndpoints: local.size,
    noLocalEndpoints,
  };
}

/** Something a Service asked for and did not get: another Service holds it. */
export interface Conflict {
  service: string;
  /** What was refused: "ExternalIP TCP/10.96.0.10:80", "nodePort TCP/30080", "healthCheckNodePort 32000". */
  what: string;
  /** The Service that holds it ("namespace/name"). */
  heldBy: string;
}

/** A conflict as a problem line: the loser named, what it did not get, and who holds it. */
export function conflictProblem(c: Conflict): Problem {
  return {
    code: Codes.SERVICE_CONFLICT,
    severity: 'error',
    kind: 'Service',
    name: c.service,
    message: `${c.what} is held by Service ${c.heldBy} (its own ClusterIP, or an older claim); not programmed for this Service`,
  };
}

function sameClaims(a: Map<string, 0 | 1>, b: Map<string, 0 | 1>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** What a firewall mark stands for: one LoadBalancer IP, protocol and port. */
export const fwmarkKey = (vs: Pick<VirtualServer, 'protocol' | 'address' | 'port'>) =>
  `${vs.protocol}/${vs.address}:${vs.port}`;

/** Marks live in 0x00100000-0x00ffffff, never with the masquerade bit: see Planner#fwmark. */
const FWMARK_BASE = 0x100000;
const FWMARK_SPAN = 0xf00000;

/** Whether `mark` is one kube-ipvs hands out (its range; never the masquerade bit is checked by the caller). */
export const inFwmarkRange = (mark: number) => mark >= FWMARK_BASE && mark < FWMARK_BASE + FWMARK_SPAN;

/** The first choice of mark for a key: a hash, so marks do not depend on the order Services arrive in. */
export function fwmarkOf(key: string, attempt = 0): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  return FWMARK_BASE + (((h + attempt * 0x9e3779b1) >>> 0) % FWMARK_SPAN);
}

/**
 * Who claims one thing: almost always one Service (kept as such: a Map per claim was 200 bytes, 4 MB at 10 000
 * Services), a Map only while several do. Never changed in place.
 */
type Claimant = { readonly svc: string; readonly cls: 0 | 1 };
type Claimants = Claimant | ReadonlyMap<string, 0 | 1>;

const isMany = (c: Claimants): c is ReadonlyMap<string, 0 | 1> => c instanceof Map;

const claimantCount = (c: Claimants | undefined): number => (c === undefined ? 0 : isMany(c) ? c.size : 1);

function claimantsOf(c: Claimants | undefined): Iterable<[string, 0 | 1]> {
  if (c === undefined) return [];
  return isMany(c) ? c : [[c.svc, c.cls]];
}

function withClaimant(c: Claimants | undefined, svc: string, cls: 0 | 1): Claimants {
  if (c === undefined || (!isMany(c) && c.svc === svc)) return { svc, cls };
  return new Map([...claimantsOf(c), [svc, cls]]);
}

function withoutClaimant(c: Claimants | undefined, svc: string): Claimants | undefined {
  if (c === undefined) return undefined;
  if (!isMany(c)) return c.svc === svc ? undefined : c;
  const rest = [...c].filter(([s]) => s !== svc);
  if (rest.length === c.size) return c;
  return rest.length === 0 ? undefined : rest.length === 1 ? { svc: rest[0]![0], cls: rest[0]![1] } : new Map(rest);
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
  /** How many entries of `#setRefs` each set has (the applier's full sync compares these with the kernel's). */
  #setSizes = new Map<string, number>();
  #netfilter: NetfilterConfig;
  /** Firewall mark per key, and how many virtual servers use it; a mark is never reused while in use. */
  #marks = new Map<string, { mark: number; refs: number }>();
  #markUsed = new Set<number>();
  readonly #markFor = (key: string) => this.#fwmark(key);
  /**
   * Arbitration between Services that want the same thing (CVE-2020-8554, duplicate ClusterIPs or
   * NodePorts): claim -> claimant -> class. The holder of a claim is its claimant with the lowest
   * (class, creationTimestamp, namespace/name): a Service's own ClusterIP first, then the oldest.
   * It depends only on who claims what, never on the order changes came in, so incremental and
   * full planning agree, and a loser's changes never move the holder's virtual servers.
   */
  #claimants = new Map<string, Claimants>();
  /** Service -> its claims and creation time, as last planned. */
  #claimsOf = new Map<string, { claims: Map<string, 0 | 1>; createdAt: number | null }>();
  /** Service -> what it asked for and did not get, with who holds it. */
  #conflicts = new Map<string, Conflict[]>();
  /** Services whose conflicts changed since the last takeConflictChanges(). */
  #conflictsDirty = new Set<string>();

  /** Health's weights (src/health/); none: every endpoint at full weight. */
  weights: WeightSource | undefined;

  constructor(model: Model, config: PlanConfig, weights?: WeightSource) {
    this.model = model;
    this.config = config;
    this.weights = weights;
    this.#ctx = nodeContext(model, config, this.#markFor);
    this.#netfilter = netfilterConfig(config.netfilter, model.node);
  }

  /** The local Node's addresses, as last planned. */
  get nodeAddresses(): ReadonlySet<string> {
    return this.#ctx.nodeAddresses;
  }

  /** The constant iptables rules' inputs (config and, for detectLocalMode NodeCIDR, the Node). */
  get netfilter(): NetfilterConfig {
    return this.#netfilter;
  }

  /** Every ipset entry any Service wants ("SET entry"). */
  setEntries(): IterableIterator<string> {
    return this.#setRefs.keys();
  }

  /** How many entries each set wants (a set that wants none is absent). */
  setSizes(): ReadonlyMap<string, number> {
    return this.#setSizes;
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
    // Kept when equal: a new object means new rules (the daemon syncs for it; the applier renders them again).
    const nc = netfilterConfig(this.config.netfilter, this.model.node);
    if (!isDeepStrictEqual(nc, this.#netfilter)) this.#netfilter = nc;
    for (const e of this.#setRefs.keys()) this.#setDirty.add(e);
    this.#plans.clear();
    this.#addressRefs.clear();
    this.#setRefs.clear();
    this.#setSizes.clear();
    this.#marks.clear();
    this.#markUsed.clear();
    this.#claimants.clear();
    this.#claimsOf.clear();
    for (const k of this.#conflicts.keys()) this.#conflictsDirty.add(k);
    this.#conflicts.clear();
    const keys = this.model.serviceKeys();
    // Every claim first, then every plan: each Service is planned once, against the final holders.
    for (const key of keys) this.#claim(key);
    for (const key of keys) this.#replan(key);
    return keys;
  }

  /** Re-plans these Services (their health weights changed); returns those that exist. */
  replan(keys: Iterable<string>): string[] {
    const out: string[] = [];
    for (const k of keys) {
      if (!this.model.service(k)) continue;
      this.#replan(k);
      out.push(k);
    }
    return out;
  }

  /** Re-plans what one model change touched. Returns the Service keys whose plan was recomputed. */
  update(result: ApplyResult): string[] {
    if (result.nodeChanged) return this.planAll();
    const out = new Set(result.changedServices);
    // A changed Service's claims may move a holder: the other claimants of what it claimed
    // before or claims now are planned again too (their own claims did not change).
    for (const key of result.changedServices) for (const other of this.#claim(key)) out.add(other);
    for (const key of out) this.#replan(key);
    return [...out];
  }

  /** What Services asked for and did not get (another Service holds it), by Service key. */
  conflicts(): Conflict[] {
    return [...this.#conflicts.keys()].sort().flatMap((k) => this.#conflicts.get(k)!);
  }

  /** Services whose refused claims changed since the last call, with what they are refused now. */
  takeConflictChanges(): { service: string; conflicts: Conflict[] }[] {
    const out = [...this.#conflictsDirty]
      .sort()
      .map((service) => ({ service, conflicts: this.#conflicts.get(service) ?? [] }));
    this.#conflictsDirty.clear();
    return out;
  }

  /** The claimant holding `claim`: lowest class, then oldest, then by namespace/name. */
  #holder(claim: string): string | undefined {
    return this.#holding(claim)?.service;
  }

  #holding(claim: string): { service: string; cls: number } | undefined {
    let best: string | undefined;
    let bestClass = 2;
    let bestAt = Infinity;
    for (const [svc, cls] of claimantsOf(this.#claimants.get(claim))) {
      const at = this.#claimsOf.get(svc)?.createdAt ?? Infinity;
      if (
        cls < bestClass ||
        (cls === bestClass && (at < bestAt || (at === bestAt && (best === undefined || svc < best))))
      ) {
        best = svc;
        bestClass = cls;
        bestAt = at;
      }
    }
    return best === undefined ? undefined : { service: best, cls: bestClass };
  }

  /**
   * Records what Service `key` claims now (nothing once it is gone). Returns the other Services
   * that claimed or claim the same things when something changed (their holders may have moved).
   */
  #claim(key: string): Set<string> {
    const svc = this.model.service(key);
    const before = this.#claimsOf.get(key);
    const claims = svc ? claimsOf(svc, this.#ctx) : new Map<string, 0 | 1>();
    const createdAt = svc?.createdAt ?? null;
    const others = new Set<string>();
    if (before && before.createdAt === createdAt && sameClaims(before.claims, claims)) return others;
    for (const c of [...(before?.claims.keys() ?? []), ...claims.keys()])
      for (const [o] of claimantsOf(this.#claimants.get(c))) if (o !== key) others.add(o);
    for (const c of before?.claims.keys() ?? []) {
      const left = withoutClaimant(this.#claimants.get(c), key);
      if (left) this.#claimants.set(c, left);
      else this.#claimants.delete(c);
    }
    for (const [c, cls] of claims) this.#claimants.set(c, withClaimant(this.#claimants.get(c), key, cls));
    if (svc) this.#claimsOf.set(key, { claims, createdAt });
    else this.#claimsOf.delete(key);
    return others;
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
        const id =
          vs.fwmark !== undefined
            ? `FWM/${vs.fwmark}${vs.family === 6 ? '/v6' : ''}`
            : `${vs.protocol}/${vs.family === 6 ? `[${vs.address}]` : vs.address}:${vs.port}`;
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
    const masq = 2 ** this.config.netfilter.iptables.masqueradeBit;
    let mark: number;
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
        countSetEntry(this.#setSizes, e, -1);
      }
    }
    const svc = this.model.service(key);
    const conflicts: Conflict[] = [];
    if (!svc) {
      this.#plans.delete(key);
      this.#setConflicts(key, conflicts);
      return;
    }
    const check: ClaimCheck = {
      holds: (c) => {
        // Almost always the Service is the only claimant: no ranking needed.
        if (claimantCount(this.#claimants.get(c)) <= 1) return true;
        const h = this.#holder(c);
        return h === undefined || h === key;
      },
      mayUseAddress: (a) => {
        const c = `vip:${a}`;
        if (claimantCount(this.#claimants.get(c)) <= 1) return true;
        // Someone's ClusterIP (a class-0 holder) is that Service's alone; other addresses are shared,
        // each virtual server on them going to its own holder.
        const h = this.#holding(c);
        return h === undefined || h.cls !== 0 || h.service === key;
      },
      refused: (what, c) => conflicts.push({ service: key, what, heldBy: this.#holder(c) ?? '' }),
    };
    const plan = planService(svc, this.model, this.#ctx, this.config, check, this.weights);
    this.#setConflicts(key, conflicts);
    this.#plans.set(key, plan);
    for (const a of plan.addresses) this.#addressRefs.set(a, (this.#addressRefs.get(a) ?? 0) + 1);
    for (const e of plan.setEntries) {
      const n = this.#setRefs.get(e) ?? 0;
      if (n === 0) {
        this.#setDirty.add(e);
        countSetEntry(this.#setSizes, e, 1);
      }
      this.#setRefs.set(e, n + 1);
    }
  }

  #setConflicts(key: string, conflicts: Conflict[]): void {
    const before = this.#conflicts.get(key) ?? [];
    if (conflicts.length === 0) this.#conflicts.delete(key);
    else this.#conflicts.set(key, conflicts);
    if (JSON.stringify(before) !== JSON.stringify(conflicts)) this.#conflictsDirty.add(key);
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
