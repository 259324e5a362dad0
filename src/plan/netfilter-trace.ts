// Packet-flow tracing through the generated iptables text, the ipsets and the IPVS virtual servers
// together, the way a node's kernel walks them: nat PREROUTING (or OUTPUT for the node's own
// traffic) -> routing -> filter INPUT -> IPVS -> nat POSTROUTING. The tests assert outcomes
// (which endpoints, DROP/REJECT, masqueraded or not) instead of comparing rule text. It
// interprets only the iptables features netfilter.ts uses, and fails loudly on anything else.
import type { Protocol } from '../model/types.ts';
import { canonicalIP, cidrContains, hostPort, ipFamily, parseCIDR, type Family } from '../util/ip.ts';
import { HOOKS } from './netfilter.ts';
import { trace as traceIpvs } from './trace.ts';
import type { IpsetPlan, NodePlan, VirtualServer } from './types.ts';

export interface NetPacket {
  source: string;
  destination: string;
  port: number;
  protocol: Protocol | 'ICMP';
  /** Where it comes in: the node's own traffic goes through OUTPUT and arrives on "lo". */
  inInterface?: string;
  /** Sent by the node itself (a process on the host). */
  fromNode?: boolean;
  /** Conntrack state of the packet (default NEW). */
  state?: 'NEW' | 'ESTABLISHED' | 'RELATED' | 'INVALID';
}

export type NetVerdict =
  /** Not for this node: routing forwards it elsewhere (not traced further). */
  | { result: 'not-local' }
  /** Delivered to a local process on the node (not a service port, e.g. SSH on the node IP). */
  | { result: 'local' }
  /** Dropped or rejected by a rule. */
  | { result: 'dropped' | 'rejected'; chain: string; rule: string }
  /** A virtual server with no usable real server: IPVS drops it. */
  | { result: 'no-endpoints'; virtualServer: VirtualServer }
  /** Forwarded by IPVS; for each possible backend whether the packet leaves masqueraded. */
  | { result: 'forwarded'; virtualServer: VirtualServer; backends: { backend: string; masqueraded: boolean }[] };

interface Rule {
  text: string;
  args: string[];
}
type Tables = Map<string, Map<string, Rule[]>>;

function tokenize(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let m;
  while ((m = re.exec(line))) out.push(m[1] !== undefined ? m[1] : m[2]!);
  return out;
}

/** Parses iptables-restore text (one family) into table -> chain -> rules. */
export function parseRestore(texts: string[]): Tables {
  const tables: Tables = new Map();
  for (const text of texts) {
    let table: Map<string, Rule[]> | null = null;
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#') || line === 'COMMIT') continue;
      if (line.startsWith('*')) {
        const name = line.slice(1);
        table = tables.get(name) ?? new Map();
        tables.set(name, table);
      } else if (line.startsWith(':')) {
        table!.set(line.slice(1).split(' ')[0]!, []);
      } else if (line.startsWith('-A ')) {
        const args = tokenize(line);
        const chain = args[1]!;
        if (!table!.has(chain)) table!.set(chain, []);
        table!.get(chain)!.push({ text: line, args: args.slice(2) });
      } else {
        throw new Error(`netfilter-trace: cannot read ${JSON.stringify(line)}`);
      }
    }
  }
  return tables;
}

interface State {
  pkt: NetPacket;
  /** Current destination (after IPVS's DNAT in POSTROUTING). */
  dst: string;
  dport: number;
  mark: number;
  inIf: string;
  /** The node's own addresses (addrtype LOCAL). */
  local: Set<string>;
}

function inSet(sets: Record<string, IpsetPlan>, name: string, flags: string, s: State): boolean {
  return matchingEntry(sets, name, flags, s) !== undefined;
}

function matchingEntry(sets: Record<string, IpsetPlan>, name: string, flags: string, s: State): string | undefined {
  const set = sets[name];
  if (!set) throw new Error(`netfilter-trace: unknown set ${name}`);
  const proto = s.pkt.protocol.toLowerCase();
  const pick = (f: string) => (f === 'dst' ? s.dst : s.pkt.source);
  const f = flags.split(',');
  const eq = (a: string, b: string) => canonicalIP(a) === canonicalIP(b);
  return set.entries.find((e) => {
    const parts = e.split(' ')[0]!.split(',');
    switch (set.type) {
      case 'hash:ip':
        return eq(parts[0]!, pick(f[0]!));
      case 'bitmap:port':
        return Number(parts[0]) === s.dport && f[0] === 'dst';
      case 'hash:ip,port':
        return eq(parts[0]!, pick(f[0]!)) && parts[1] === `${proto}:${s.dport}`;
      case 'hash:ip,port,ip':
        return eq(parts[0]!, pick(f[0]!)) && parts[1] === `${proto}:${s.dport}` && eq(parts[2]!, pick(f[2]!));
      case 'hash:ip,port,net': {
        const c = parseCIDR(parts[2]!);
        return (
          eq(parts[0]!, pick(f[0]!)) && parts[1] === `${proto}:${s.dport}` && c !== null && cidrContains(c, pick(f[2]!))
        );
      }
      default:
        throw new Error(`netfilter-trace: set type ${set.type}`);
    }
  });
}

type Outcome = { verdict: 'ACCEPT' | 'DROP' | 'REJECT' | 'MASQUERADE' | 'RETURN'; rule: string; chain: string } | null;

/** Runs one chain; null when it falls through (policy / back to the caller). */
function runChain(
  tables: Tables,
  table: string,
  chain: string,
  sets: Record<string, IpsetPlan>,
  s: State,
  depth = 0,
): Outcome {
  if (depth > 16) throw new Error('netfilter-trace: jump loop');
  const rules = tables.get(table)?.get(chain);
  if (!rules) throw new Error(`netfilter-trace: no chain ${table}/${chain}`);
  for (const r of rules) {
    const a = r.args;
    let i = 0;
    let matched = true;
    let target: string | null = null;
    let targetArgs: string[] = [];
    while (i < a.length && matched) {
      let neg = false;
      if (a[i] === '!') {
        neg = true;
        i++;
      }
      const opt = a[i++]!;
      const test = (v: boolean) => (matched = neg ? !v : v);
      switch (opt) {
        case '-m':
          i++; // the match module name; its options follow
          break;
        case '--comment':
          i++;
          break;
        case '--match-set':
          test(inSet(sets, a[i]!, a[i + 1]!, s));
          i += 2;
          break;
        case '-s': {
          const c = parseCIDR(a[i]!.includes('/') ? a[i]! : `${a[i]}/${ipFamily(a[i]!) === 6 ? 128 : 32}`);
          test(c !== null && cidrContains(c, s.pkt.source));
          i++;
          break;
        }
        case '-i': {
          const want = a[i++]!;
          test(want.endsWith('+') ? s.inIf.startsWith(want.slice(0, -1)) : s.inIf === want);
          break;
        }
        case '-p': {
          const p = a[i++]!;
          const have =
            s.pkt.protocol === 'ICMP'
              ? ipFamily(s.pkt.destination) === 6
                ? 'ipv6-icmp'
                : 'icmp'
              : s.pkt.protocol.toLowerCase();
          test(have === p);
          break;
        }
        case '--mark': {
          const [v, m] = a[i++]!.split('/').map((x) => Number(x));
          test((s.mark & (m ?? 0xffffffff)) === v);
          break;
        }
        case '--src-type':
          if (a[i] !== 'LOCAL') throw new Error(`netfilter-trace: addrtype ${a[i]}`);
          i++;
          test(s.local.has(canonicalIP(s.pkt.source)!));
          break;
        case '--ctstate':
          test(a[i++]!.split(',').includes(s.pkt.state ?? 'NEW'));
          break;
        case '-j':
          target = a[i++]!;
          targetArgs = a.slice(i);
          i = a.length;
          break;
        default:
          throw new Error(`netfilter-trace: unsupported option ${opt} in ${r.text}`);
      }
    }
    if (!matched || target === null) continue;
    switch (target) {
      case 'ACCEPT':
      case 'DROP':
      case 'REJECT':
      case 'MASQUERADE':
        return { verdict: target, rule: r.text, chain };
      case 'RETURN':
        return null;
      case 'SET': {
        // -j SET --map-set NAME FLAGS --map-mark: the mark stored with the matching entry.
        if (targetArgs[0] !== '--map-set' || targetArgs[3] !== '--map-mark')
          throw new Error(`netfilter-trace: SET ${targetArgs.join(' ')}`);
        const entry = matchingEntry(sets, targetArgs[1]!, targetArgs[2]!, s);
        const m = entry ? /skbmark (0x[0-9a-f]+)/.exec(entry)?.[1] : undefined;
        if (m) s.mark = Number(m);
        break;
      }
      case 'MARK': {
        const v = Number(targetArgs[1]);
        if (targetArgs[0] === '--or-mark') s.mark |= v;
        else if (targetArgs[0] === '--xor-mark') s.mark ^= v;
        else throw new Error(`netfilter-trace: MARK ${targetArgs[0]}`);
        break;
      }
      default: {
        const out = runChain(tables, table, target, sets, s, depth + 1);
        if (out) return out;
      }
    }
  }
  return null;
}

/** The built-in chain's hook into ours, as installed by the applier. */
function hook(
  tables: Tables,
  table: 'nat' | 'filter' | 'mangle',
  builtin: string,
  sets: Record<string, IpsetPlan>,
  s: State,
): Outcome {
  for (const h of HOOKS)
    if (h.table === table && h.chain === builtin) return runChain(tables, table, h.target, sets, s);
  return null;
}

export function traceNetfilter(plan: NodePlan, localAddresses: readonly string[], pkt: NetPacket): NetVerdict {
  const family: Family = ipFamily(pkt.destination) ?? 4;
  const texts =
    family === 4
      ? [plan.iptables.nat!, plan.iptables.filter!, plan.iptables.mangle!]
      : [plan.iptables['ip6/nat']!, plan.iptables['ip6/filter']!, plan.iptables['ip6/mangle']!];
  const tables = parseRestore(texts);
  const dst = canonicalIP(pkt.destination)!;
  // Routing: local addresses are the node's own and the dummy interface's.
  const local = new Set([...localAddresses.map((a) => canonicalIP(a)!), ...plan.addresses]);
  const s: State = {
    pkt,
    dst,
    dport: pkt.port,
    mark: 0,
    inIf: pkt.fromNode ? 'lo' : (pkt.inInterface ?? 'eth0'),
    local,
  };

  // mangle, then nat PREROUTING (or OUTPUT for the node's own packets): only marks there.
  const mangled = hook(tables, 'mangle', pkt.fromNode ? 'OUTPUT' : 'PREROUTING', plan.ipsets, s);
  if (mangled && mangled.verdict !== 'ACCEPT') throw new Error(`netfilter-trace: ${mangled.verdict} in mangle`);
  const pre = hook(tables, 'nat', pkt.fromNode ? 'OUTPUT' : 'PREROUTING', plan.ipsets, s);
  if (pre && pre.verdict !== 'ACCEPT') throw new Error(`netfilter-trace: ${pre.verdict} in nat`);

  if (!local.has(dst)) return { result: 'not-local' };

  const input = hook(tables, 'filter', 'INPUT', plan.ipsets, s);
  if (input?.verdict === 'DROP') return { result: 'dropped', chain: input.chain, rule: input.rule };
  if (input?.verdict === 'REJECT') return { result: 'rejected', chain: input.chain, rule: input.rule };

  if (pkt.protocol === 'ICMP') return { result: 'local' };
  const v = traceIpvs(plan, { source: pkt.source, destination: dst, port: pkt.port, protocol: pkt.protocol }, s.mark);
  if (v.result === 'not-a-service') return { result: 'local' };
  if (v.result === 'dropped') return { result: 'no-endpoints', virtualServer: v.virtualServer };

  // IPVS DNATs to a backend; POSTROUTING decides on masquerade (mark, or hairpin).
  const backends = v.backends.map((backend) => {
    const rs = v.virtualServer.realServers.find((r) => hostPort(r.address, r.port) === backend)!;
    const post: State = { ...s, dst: rs.address, dport: rs.port };
    const out = hook(tables, 'nat', 'POSTROUTING', plan.ipsets, post);
    return { backend, masqueraded: out?.verdict === 'MASQUERADE' };
  });
  return { result: 'forwarded', virtualServer: v.virtualServer, backends };
}
