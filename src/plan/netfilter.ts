// What IPVS alone cannot do, as kube-proxy's IPVS mode does it: a constant set of iptables rules
// (the same whatever the number of Services) and ipsets that hold the per-Service facts. Our own
// chain and set prefixes (KIPVS-, KIPVS6- for IPv6 sets) so nothing collides with kube-proxy's
// leftovers.
//
// Where a packet goes on a node (IPVS hooks LOCAL_IN, after filter INPUT, and sends in NAT mode
// through LOCAL_OUT and POSTROUTING):
//   nat PREROUTING/OUTPUT -> KIPVS-SERVICES: mark for masquerade what must be masqueraded
//   filter INPUT          -> KIPVS-INPUT: LoadBalancer source ranges, NodePort and health check
//                            acceptance, reject of non-service ports on service addresses
//   IPVS                     picks a real server and DNATs
//   nat POSTROUTING       -> KIPVS-POSTROUTING: hairpin and marked traffic masqueraded
//   filter FORWARD        -> KIPVS-FORWARD: replies and marked traffic accepted
import type { Config } from '../config/config.ts';
import type { NodeInfo, Service } from '../model/types.ts';
import { parseCIDR, type Family } from '../util/ip.ts';
import type { IpsetPlan, VirtualServer } from './types.ts';

export interface SetSpec {
  /** Name without the family prefix. */
  suffix: string;
  type: 'hash:ip' | 'hash:ip,port' | 'hash:ip,port,ip' | 'hash:ip,port,net' | 'bitmap:port';
  comment: string;
  /** Extra `ipset create` options. */
  options?: string;
}

/** The sets, by role. Names: KIPVS-<suffix> (IPv4), KIPVS6-<suffix> (IPv6); bitmap:port is shared. */
export const SETS = {
  clusterIP: { suffix: 'CLUSTER-IP', type: 'hash:ip,port', comment: 'ClusterIP, protocol:port' },
  loopBack: {
    suffix: 'LOOP-BACK',
    type: 'hash:ip,port,ip',
    comment: 'endpoint, protocol:port, endpoint: hairpin masquerade',
  },
  externalIP: {
    suffix: 'EXTERNAL-IP',
    type: 'hash:ip,port',
    comment: 'ExternalIP, protocol:port, externalTrafficPolicy Cluster',
  },
  externalIPLocal: {
    suffix: 'EXTERNAL-IP-LOCAL',
    type: 'hash:ip,port',
    comment: 'ExternalIP, protocol:port, externalTrafficPolicy Local',
  },
  lb: { suffix: 'LB', type: 'hash:ip,port', comment: 'LoadBalancer IP, protocol:port' },
  lbLocal: {
    suffix: 'LB-LOCAL',
    type: 'hash:ip,port',
    comment: 'LoadBalancer IP, protocol:port, externalTrafficPolicy Local',
  },
  lbFirewall: {
    suffix: 'LB-FW',
    type: 'hash:ip,port',
    comment: 'LoadBalancer IP, protocol:port with loadBalancerSourceRanges',
  },
  lbSourceCIDR: {
    suffix: 'LB-SRC-CIDR',
    type: 'hash:ip,port,net',
    comment: 'LoadBalancer IP, protocol:port, allowed source range',
  },
  lbLocalMark: {
    suffix: 'LB-LOCAL-MARK',
    type: 'hash:ip,port',
    options: 'skbinfo',
    comment:
      'externalTrafficPolicy Local LoadBalancer IP, protocol:port -> the firewall mark of its in-cluster virtual server',
  },
  nodePort: { suffix: 'NODE-PORT', type: 'hash:ip,port', comment: 'node address, protocol:NodePort' },
  nodePortLocal: {
    suffix: 'NODE-PORT-LOCAL',
    type: 'hash:ip,port',
    comment: 'node address, protocol:NodePort, externalTrafficPolicy Local',
  },
  healthCheckNodePort: { suffix: 'HC-NODE-PORT', type: 'bitmap:port', comment: 'healthCheckNodePorts (TCP)' },
  serviceAddress: { suffix: 'SVC-ADDR', type: 'hash:ip', comment: 'addresses kube-ipvs put on its dummy interface' },
} as const satisfies Record<string, SetSpec>;

export type SetRole = keyof typeof SETS;

export function setName(role: SetRole, family: Family): string {
  const s = SETS[role];
  return s.type === 'bitmap:port' || family === 4 ? `KIPVS-${s.suffix}` : `KIPVS6-${s.suffix}`;
}

/** Every set name with its ipset type and family ("inet", "inet6", or "" for bitmap:port). */
/**
 * A source range as hash:ip,port,net entries: ipset refuses a /0 net ("The value of the CIDR
 * parameter of the IP address is invalid", and the whole `ipset restore` with it), so
 * 0.0.0.0/0 and ::/0 are their two halves.
 */
export function ipsetNets(cidr: string): string[] {
  if (cidr === '0.0.0.0/0') return ['0.0.0.0/1', '128.0.0.0/1'];
  if (cidr === '::/0') return ['::/1', '8000::/1'];
  return [cidr];
}

/** Counts a "SET entry" string in (`by` 1) or out (-1) of its set's size in `sizes`; a set at 0 leaves the map. */
export function countSetEntry(sizes: Map<string, number>, entry: string, by: 1 | -1): void {
  const name = entry.slice(0, entry.indexOf(' '));
  const n = (sizes.get(name) ?? 0) + by;
  if (n > 0) sizes.set(name, n);
  else sizes.delete(name);
}

export function allSets(): {
  name: string;
  role: SetRole;
  type: string;
  family: 'inet' | 'inet6' | '';
  options: string;
}[] {
  const out: { name: string; role: SetRole; type: string; family: 'inet' | 'inet6' | ''; options: string }[] = [];
  for (const role of Object.keys(SETS) as SetRole[]) {
    const s: SetSpec = SETS[role];
    const options = s.options ?? '';
    if (s.type === 'bitmap:port') out.push({ name: setName(role, 4), role, type: s.type, family: '', options });
    else
      for (const f of [4, 6] as const)
        out.push({ name: setName(role, f), role, type: s.type, family: f === 4 ? 'inet' : 'inet6', options });
  }
  return out;
}

const proto = (p: string) => p.toLowerCase();

/**
 * The set entries one Service contributes, as "SET-NAME entry" strings (so a Planner can count
 * references across Services and a change re-plans one Service's entries only). `onNode`: the addresses of the
 * Service's endpoints on this node; only they get a hairpin entry.
 */
export function serviceSetEntries(
  svc: Service,
  virtualServers: readonly VirtualServer[],
  addresses: readonly string[],
  onNode: ReadonlySet<string>,
): string[] {
  const out = new Set<string>();
  const add = (role: SetRole, family: Family, entry: string) => out.add(`${setName(role, family)} ${entry}`);
  for (const vs of virtualServers) {
    const ipPort = `${vs.address},${proto(vs.protocol)}:${vs.port}`;
    switch (vs.kind) {
      case 'ClusterIP':
        add('clusterIP', vs.family, ipPort);
        break;
      case 'ExternalIP':
        add(svc.externalTrafficPolicyLocal ? 'externalIPLocal' : 'externalIP', vs.family, ipPort);
        break;
      case 'LoadBalancer':
        if (vs.fwmark !== undefined) add('lbLocalMark', vs.family, `${ipPort} skbmark 0x${vs.fwmark.toString(16)}`);
        add('lb', vs.family, ipPort);
        if (svc.externalTrafficPolicyLocal) add('lbLocal', vs.family, ipPort);
        if (svc.loadBalancerSourceRanges.length > 0) {
          add('lbFirewall', vs.family, ipPort);
          for (const c of svc.loadBalancerSourceRanges)
            if (parseCIDR(c)?.family === vs.family)
              for (const n of ipsetNets(c)) add('lbSourceCIDR', vs.family, `${ipPort},${n}`);
        }
        break;
      case 'NodePort':
        add('nodePort', vs.family, ipPort);
        if (svc.externalTrafficPolicyLocal) add('nodePortLocal', vs.family, ipPort);
        break;
    }
    // Hairpin: an endpoint reaching itself through the Service. Only a pod on this node sends its own packets through
    // this node's IPVS, so only this node's endpoints get an entry (as kube-proxy's KUBE-LOOP-BACK): a remote one's
    // would never match, and at 10 000 Services x 10 endpoints spread over 50 nodes it is 98 000 entries less, and no
    // ipset write for a change of a remote endpoint.
    for (const rs of vs.realServers)
      if (onNode.has(rs.address))
        add('loopBack', vs.family, `${rs.address},${proto(vs.protocol)}:${rs.port},${rs.address}`);
  }
  if (svc.healthCheckNodePort > 0 && svc.externalTrafficPolicyLocal)
    add('healthCheckNodePort', 4, String(svc.healthCheckNodePort));
  for (const a of addresses) add('serviceAddress', a.includes(':') ? 6 : 4, a);
  return [...out].sort();
}

/** Groups "SET entry" strings into the plan's `ipsets` (every set present, entries sorted). */
export function ipsetPlan(entries: Iterable<string>): Record<string, IpsetPlan> {
  const out: Record<string, IpsetPlan> = {};
  for (const s of allSets()) out[s.name] = { type: s.type, entries: [] };
  for (const e of entries) {
    const i = e.indexOf(' ');
    out[e.slice(0, i)]?.entries.push(e.slice(i + 1));
  }
  for (const p of Object.values(out)) p.entries.sort();
  return out;
}

/** Made anew when its inputs change (on a Node change), never changed in place: rules are cached by it. */
export interface NetfilterConfig {
  readonly masqueradeAll: boolean;
  readonly masqueradeBit: number;
  /** "Not from this cluster" as iptables match arguments, per family; null: no local detection. */
  readonly notLocal: Readonly<Record<Family, string | null>>;
}

/** "From this cluster": the same match, not negated. */
const localMatch = (notLocal: string | null) => (notLocal === null ? null : notLocal.replace(/^! /, ''));

export type NetfilterSettings = Pick<Config, 'iptables' | 'clusterCIDRs' | 'detectLocalMode' | 'detectLocal'>;

/** kube-proxy's local traffic detection (detectLocalMode), negated: matches traffic from outside. */
export function netfilterConfig(cfg: NetfilterSettings, node: NodeInfo | null): NetfilterConfig {
  const notLocal: Record<Family, string | null> = { 4: null, 6: null };
  for (const f of [4, 6] as const) {
    switch (cfg.detectLocalMode) {
      case 'ClusterCIDR': {
        const c = cfg.clusterCIDRs.find((x) => parseCIDR(x)?.family === f);
        notLocal[f] = c ? `! -s ${parseCIDR(c)!.text}` : null;
        break;
      }
      case 'NodeCIDR': {
        const c = node?.podCIDRs.find((x) => parseCIDR(x)?.family === f);
        notLocal[f] = c ? `! -s ${c}` : null;
        break;
      }
      case 'BridgeInterface':
        notLocal[f] = cfg.detectLocal.bridgeInterface ? `! -i ${cfg.detectLocal.bridgeInterface}` : null;
        break;
      case 'InterfaceNamePrefix':
        notLocal[f] = cfg.detectLocal.interfaceNamePrefix ? `! -i ${cfg.detectLocal.interfaceNamePrefix}+` : null;
        break;
    }
  }
  return { masqueradeAll: cfg.iptables.masqueradeAll, masqueradeBit: cfg.iptables.masqueradeBit, notLocal };
}

/** Our chains per table, and the built-in chains that jump to them. */
export const CHAINS = {
  nat: ['KIPVS-SERVICES', 'KIPVS-POSTROUTING', 'KIPVS-MARK-MASQ', 'KIPVS-LOAD-BALANCER', 'KIPVS-NODE-PORT'],
  filter: ['KIPVS-INPUT', 'KIPVS-FORWARD', 'KIPVS-FIREWALL', 'KIPVS-SVC-ADDR'],
  mangle: ['KIPVS-LB-LOCAL'],
} as const;

export type Table = keyof typeof CHAINS;

export const HOOKS: { table: Table; chain: string; target: string; comment: string }[] = [
  {
    table: 'mangle',
    chain: 'PREROUTING',
    target: 'KIPVS-LB-LOCAL',
    comment: 'kube-ipvs in-cluster traffic to Local LoadBalancers',
  },
  {
    table: 'mangle',
    chain: 'OUTPUT',
    target: 'KIPVS-LB-LOCAL',
    comment: 'kube-ipvs in-cluster traffic to Local LoadBalancers',
  },
  { table: 'nat', chain: 'PREROUTING', target: 'KIPVS-SERVICES', comment: 'kube-ipvs service portals' },
  { table: 'nat', chain: 'OUTPUT', target: 'KIPVS-SERVICES', comment: 'kube-ipvs service portals' },
  { table: 'nat', chain: 'POSTROUTING', target: 'KIPVS-POSTROUTING', comment: 'kube-ipvs postrouting rules' },
  { table: 'filter', chain: 'INPUT', target: 'KIPVS-INPUT', comment: 'kube-ipvs service acceptance and firewall' },
  { table: 'filter', chain: 'FORWARD', target: 'KIPVS-FORWARD', comment: 'kube-ipvs forwarding rules' },
];

/**
 * The iptables-restore text (for `--noflush`: it declares, and so flushes, only our chains) for
 * one family. Constant for a given config and node: no per-Service rule.
 */
export function netfilterRules(nc: NetfilterConfig, family: Family): { nat: string; filter: string; mangle: string } {
  const set = (role: SetRole) => setName(role, family);
  const mark = `0x${(2 ** nc.masqueradeBit).toString(16)}`; // not 1 << bit: bit 31 would make it negative
  const notLocal = nc.notLocal[family];
  const icmp = family === 4 ? 'icmp' : 'ipv6-icmp';
  const reject =
    family === 4 ? 'REJECT --reject-with icmp-port-unreachable' : 'REJECT --reject-with icmp6-port-unreachable';
  const nat = [
    '*nat',
    ...CHAINS.nat.map((c) => `:${c} - [0:0]`),
    // Marked traffic leaves masqueraded; hairpin traffic too (a pod reaching itself through its Service).
    `-A KIPVS-POSTROUTING -m comment --comment "hairpin: an endpoint reaching itself" -m set --match-set ${set('loopBack')} dst,dst,src -j MASQUERADE`,
    `-A KIPVS-POSTROUTING -m mark ! --mark ${mark}/${mark} -j RETURN`,
    `-A KIPVS-POSTROUTING -j MARK --xor-mark ${mark}`,
    `-A KIPVS-POSTROUTING -m comment --comment "kube-ipvs service traffic requiring SNAT" -j MASQUERADE --random-fully`,
    `-A KIPVS-MARK-MASQ -j MARK --or-mark ${mark}`,
    // ClusterIPs: from outside the cluster (or everything with masqueradeAll).
    ...(nc.masqueradeAll
      ? [
          `-A KIPVS-SERVICES -m comment --comment "masqueradeAll" -m set --match-set ${set('clusterIP')} dst,dst -j KIPVS-MARK-MASQ`,
        ]
      : notLocal
        ? [
            `-A KIPVS-SERVICES -m comment --comment "ClusterIP from outside the cluster" -m set --match-set ${set('clusterIP')} dst,dst ${notLocal} -j KIPVS-MARK-MASQ`,
          ]
        : []),
    // ExternalIPs: masqueraded unless externalTrafficPolicy Local (then only traffic from the cluster).
    `-A KIPVS-SERVICES -m set --match-set ${set('externalIP')} dst,dst -j KIPVS-MARK-MASQ`,
    `-A KIPVS-SERVICES -m set --match-set ${set('lb')} dst,dst -j KIPVS-LOAD-BALANCER`,
    `-A KIPVS-SERVICES -m set --match-set ${set('nodePort')} dst,dst -j KIPVS-NODE-PORT`,
    // externalTrafficPolicy Local keeps the client's address; Cluster masquerades.
    `-A KIPVS-LOAD-BALANCER -m set --match-set ${set('lbLocal')} dst,dst -j RETURN`,
    `-A KIPVS-LOAD-BALANCER -j KIPVS-MARK-MASQ`,
    `-A KIPVS-NODE-PORT -m set --match-set ${set('nodePortLocal')} dst,dst -j RETURN`,
    `-A KIPVS-NODE-PORT -j KIPVS-MARK-MASQ`,
    'COMMIT',
  ];
  const filter = [
    '*filter',
    ...CHAINS.filter.map((c) => `:${c} - [0:0]`),
    // loadBalancerSourceRanges: only listed sources, from outside and from the node itself.
    `-A KIPVS-INPUT -m set --match-set ${set('lbFirewall')} dst,dst -j KIPVS-FIREWALL`,
    `-A KIPVS-FIREWALL -m set --match-set ${set('lbSourceCIDR')} dst,dst,src -j RETURN`,
    `-A KIPVS-FIREWALL -m comment --comment "loadBalancerSourceRanges: source not allowed" -j DROP`,
    // NodePorts and health check ports are accepted even under a DROP INPUT policy.
    `-A KIPVS-INPUT -m comment --comment "NodePorts" -m set --match-set ${set('nodePort')} dst,dst -j ACCEPT`,
    `-A KIPVS-INPUT -p tcp -m comment --comment "healthCheckNodePorts" -m set --match-set ${set('healthCheckNodePort')} dst -j ACCEPT`,
    // Our service addresses answer only on service ports (kubernetes#72236); ICMP stays.
    `-A KIPVS-INPUT -m set --match-set ${set('serviceAddress')} dst -j KIPVS-SVC-ADDR`,
    `-A KIPVS-SVC-ADDR -m set --match-set ${set('clusterIP')} dst,dst -j ACCEPT`,
    `-A KIPVS-SVC-ADDR -m set --match-set ${set('externalIP')} dst,dst -j ACCEPT`,
    `-A KIPVS-SVC-ADDR -m set --match-set ${set('externalIPLocal')} dst,dst -j ACCEPT`,
    `-A KIPVS-SVC-ADDR -m set --match-set ${set('lb')} dst,dst -j ACCEPT`,
    `-A KIPVS-SVC-ADDR -p ${icmp} -j ACCEPT`,
    `-A KIPVS-SVC-ADDR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `-A KIPVS-SVC-ADDR -m comment --comment "not a service port" -j ${reject}`,
    // Forwarded traffic: invalid dropped, marked and established accepted.
    `-A KIPVS-FORWARD -m conntrack --ctstate INVALID -j DROP`,
    `-A KIPVS-FORWARD -m comment --comment "kube-ipvs forwarding rules" -m mark --mark ${mark}/${mark} -j ACCEPT`,
    `-A KIPVS-FORWARD -m comment --comment "kube-ipvs forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    'COMMIT',
  ];
  // In-cluster (and the node's own) traffic to an externalTrafficPolicy: Local LoadBalancer IP gets
  // the firewall mark of a virtual server with every endpoint (kubernetes#93456); IPVS looks marks
  // up first. The mark comes from the set entry (--map-set works only in the mangle table).
  const mapMark = `-j SET --map-set ${set('lbLocalMark')} dst,dst --map-mark`;
  const local = localMatch(notLocal);
  const mangle = [
    '*mangle',
    ...CHAINS.mangle.map((c) => `:${c} - [0:0]`),
    ...(local
      ? [
          `-A KIPVS-LB-LOCAL -m comment --comment "in-cluster traffic to Local LoadBalancers reaches every endpoint" -m set --match-set ${set('lbLocalMark')} dst,dst ${local} ${mapMark}`,
        ]
      : []),
    `-A KIPVS-LB-LOCAL -m comment --comment "so does the node's own traffic" -m set --match-set ${set('lbLocalMark')} dst,dst -m addrtype --src-type LOCAL ${mapMark}`,
    'COMMIT',
  ];
  return { nat: nat.join('\n') + '\n', filter: filter.join('\n') + '\n', mangle: mangle.join('\n') + '\n' };
}

/** The plan's `iptables` field: IPv4 tables as "nat"/"filter"/"mangle", IPv6 as "ip6/nat"... */
export function iptablesPlan(nc: NetfilterConfig): Record<string, string> {
  const v4 = netfilterRules(nc, 4);
  const v6 = netfilterRules(nc, 6);
  return {
    filter: v4.filter,
    nat: v4.nat,
    mangle: v4.mangle,
    'ip6/filter': v6.filter,
    'ip6/nat': v6.nat,
    'ip6/mangle': v6.mangle,
  };
}
