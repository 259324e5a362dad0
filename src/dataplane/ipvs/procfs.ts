// The whole IPVS table in one read: /proc/net/ip_vs lists every virtual service of the network namespace with its
// destinations, their forwarding method, weight and connection counts, which is what a full resync compares. Reading
// it costs the kernel one walk of its tables and us one parse; the netlink alternative is a destination dump per
// virtual service (ipvsadm -Ln does that too: 10 000 round trips at 10 000 Services).
//
// What the file does not show, and so is not checked this way: a destination's upper and lower connection
// thresholds (taken as 0: kube-ipvs never sets them), the bypass forwarding method (shown as "Masq"), and the
// family of a firewall-mark service (resolved by the caller from the netlink service dump). Service attributes
// (scheduler, flags, persistence) come from the netlink service dump, never from here.
//
// The text is the kernel's, but it is parsed as strictly as anything from outside: a line of any other shape fails
// the whole read (CodecError), and the caller falls back to netlink dumps.
import { formatIP, parseIP } from '../../util/ip.ts';
import { nextTurn } from '../../util/turn.ts';
import { CodecError } from './codec.ts';
import { FwdMethod } from './constants.ts';
import {
  findV4,
  serviceId,
  v4Key,
  type IpvsDestination,
  type IpvsService,
  type KnownDestinations,
  type V4Destinations,
} from './types.ts';

export const IPVS_PROC_PATH = '/proc/net/ip_vs';

/** What /proc/net/ip_vs names a forwarding method (ip_vs_fwd_name). */
const FWD_BY_NAME = new Map<string, number>([
  ['Masq', FwdMethod.MASQ],
  ['Local', FwdMethod.LOCALNODE],
  ['Tunnel', FwdMethod.TUNNEL],
  ['Route', FwdMethod.DROUTE],
]);

/**
 * The file's virtual services: "TCP/10.96.0.1:80" and "UDP/[fd00::1]:53" as serviceId writes them, and "FWM/<mark>"
 * for a firewall-mark service of either family (`fwmarks` counts how many services carry each mark).
 */
export interface ProcTable {
  services: Map<string, TableDestinations>;
  fwmarks: Map<number, number>;
}

/**
 * One virtual service's destinations as the table shows them. IPv4 lines (all of them on most nodes) are kept as
 * numbers in columns shared by the whole table, and become objects only when asked for: a resync that finds
 * 100 000 destinations as wanted builds none.
 */
export class TableDestinations implements KnownDestinations {
  readonly #cols: Columns;
  readonly #start: number;
  #count = 0;
  /** Lines not read in place (IPv6...), as objects. */
  #others: IpvsDestination[] | null = null;
  #list: IpvsDestination[] | null = null;

  constructor(cols: Columns) {
    this.#cols = cols;
    this.#start = cols.length;
  }

  /** Adds the IPv4 line just appended to the columns (they are appended service by service). */
  addV4(): void {
    this.#count++;
  }

  addOther(d: IpvsDestination): void {
    (this.#others ??= []).push(d);
  }

  get size(): number {
    return this.#count + (this.#others?.length ?? 0);
  }

  list(): IpvsDestination[] {
    if (this.#list) return this.#list;
    const c = this.#cols;
    const out: IpvsDestination[] = [];
    for (let i = this.#start; i < this.#start + this.#count; i++) {
      const a = c.addr[i]!;
      out.push({
        family: 4,
        address: `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`,
        port: c.port[i]!,
        fwdMethod: c.fwd[i]!,
        weight: c.weight[i]!,
        upperThreshold: 0,
        lowerThreshold: 0,
        activeConns: c.active[i]!,
        inactiveConns: c.inactive[i]!,
      });
    }
    if (this.#others) out.push(...this.#others);
    return (this.#list = out);
  }

  same(want: V4Destinations): boolean {
    if (this.#others || this.#count * 3 !== want.length) return false;
    const c = this.#cols;
    for (let i = this.#start; i < this.#start + this.#count; i++) {
      const at = findV4(want, v4Key(c.addr[i]!, c.port[i]!));
      if (at < 0 || want[at + 1] !== c.weight[i] || want[at + 2] !== c.fwd[i]) return false;
    }
    return true;
  }
}

/** IPv4 destinations of the whole table, column by column (grown by doubling). */
class Columns {
  length = 0;
  addr = new Uint32Array(1024);
  port = new Uint16Array(1024);
  fwd = new Uint8Array(1024);
  weight = new Int32Array(1024);
  active = new Uint32Array(1024);
  inactive = new Uint32Array(1024);

  push(addr: number, port: number, fwd: number, weight: number, active: number, inactive: number): void {
    if (this.length === this.addr.length) this.#grow();
    const i = this.length++;
    this.addr[i] = addr;
    this.port[i] = port;
    this.fwd[i] = fwd;
    this.weight[i] = weight;
    this.active[i] = active;
    this.inactive[i] = inactive;
  }

  #grow(): void {
    const n = this.addr.length * 2;
    const grow = <T extends Uint32Array | Uint16Array | Uint8Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.addr = grow(this.addr, (k) => new Uint32Array(k));
    this.port = grow(this.port, (k) => new Uint16Array(k));
    this.fwd = grow(this.fwd, (k) => new Uint8Array(k));
    this.weight = grow(this.weight, (k) => new Int32Array(k));
    this.active = grow(this.active, (k) => new Uint32Array(k));
    this.inactive = grow(this.inactive, (k) => new Uint32Array(k));
  }
}

const HEX = /^[0-9A-F]+$/;

function hex(s: string, digits: number, what: string, line: number): number {
  if (s.length !== digits || !HEX.test(s)) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: bad ${what}`);
  return parseInt(s, 16);
}

/** "0A600001:0050" or "[fd00:0000:...:0001]:0050": canonical address text, family and port. */
function hostPort(s: string, line: number): { family: 4 | 6; address: string; port: number } {
  const colon = s.lastIndexOf(':');
  if (colon < 0) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: no port`);
  const port = hex(s.slice(colon + 1), 4, 'port', line);
  const host = s.slice(0, colon);
  if (host.startsWith('[') && host.endsWith(']')) {
    const p = parseIP(host.slice(1, -1));
    if (!p || p.family !== 6) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: bad IPv6 address`);
    return { family: 6, address: formatIP(p), port };
  }
  const n = hex(host, 8, 'IPv4 address', line);
  return { family: 4, address: `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`, port };
}

/** An unsigned decimal the kernel printed with %d. */
function decimal(s: string | undefined, what: string, line: number): number {
  const n = s !== undefined && /^\d{1,10}$/.test(s) ? Number(s) : NaN;
  if (!(n <= 0x7fffffff)) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: bad ${what}`);
  return n;
}

/** The words of text[from, to) separated by runs of spaces, into `out` (reused: a table has 100 000 lines). */
function words(text: string, from: number, to: number, out: string[]): string[] {
  out.length = 0;
  let i = from;
  while (i < to) {
    while (i < to && text.charCodeAt(i) === 32) i++;
    if (i >= to) break;
    let j = i;
    while (j < to && text.charCodeAt(j) !== 32) j++;
    out.push(text.slice(i, j));
    i = j;
  }
  return out;
}

/**
 * The common line, an IPv4 destination with its line end: "  -> 0A800001:1F90      Masq    1      0          0  \n".
 * Matched where the line starts (sticky), it reads the line and moves past it. One regular expression and its
 * captures instead of a loop over the characters: the daemon's JavaScript runs in V8's interpreter, where a loop per
 * character costs far more than the match's machine code: a table of 110 000 lines took 320-325 ms natively with a
 * loop over the characters and 97-106 ms this way, 4.2-5.1 s and 1.6-1.9 s under the lab's emulation. A line of any
 * other shape is left to the general path, which also says what is wrong with it.
 */
const IPV4_DESTINATION =
  / {2}-> ([0-9A-F]{8}):([0-9A-F]{4}) +(Masq|Local|Tunnel|Route) +(\d+) +(\d+) +(\d+) *(?:\n|$)/y;

/** Lines parsed between two turns of the event loop by parseIpvsProcInTurns (about 2 ms natively, 35 ms emulated). */
export const PROC_LINES_PER_TURN = 2000;

/** Parses the file's text; throws CodecError on anything it does not recognise. */
export function parseIpvsProc(text: string): ProcTable {
  const p = procParser(text);
  while (!p.step(Infinity));
  return p.table;
}

/**
 * parseIpvsProc, letting the event loop turn every `linesPerTurn` lines: at 10 000 Services the table has 110 000
 * lines, about a second of parsing natively and many under emulation, which a full resync does while endpoint changes
 * are to be written alongside it.
 */
export async function parseIpvsProcInTurns(text: string, linesPerTurn = PROC_LINES_PER_TURN): Promise<ProcTable> {
  const p = procParser(text);
  while (!p.step(linesPerTurn)) await nextTurn();
  return p.table;
}

/** The parse as steps of at most `max` lines; `step` says whether the text is done. */
function procParser(text: string): { table: ProcTable; step(max: number): boolean } {
  const services = new Map<string, TableDestinations>();
  const fwmarks = new Map<number, number>();
  const cols = new Columns();
  let current: TableDestinations | null = null;
  let line = 0;
  let at = 0;
  const f: string[] = [];
  return {
    table: { services, fwmarks },
    step(max: number): boolean {
      for (let budget = max; budget > 0 && at < text.length; budget--) {
        if (current !== null) {
          IPV4_DESTINATION.lastIndex = at;
          const m = IPV4_DESTINATION.exec(text);
          // Each count at most 2^31 - 1, as the kernel prints an int with %d (else the general path says so).
          const weight = m === null ? -1 : Number(m[4]);
          const active = m === null ? -1 : Number(m[5]);
          const inactive = m === null ? -1 : Number(m[6]);
          if (m !== null && weight <= 0x7fffffff && active <= 0x7fffffff && inactive <= 0x7fffffff) {
            cols.push(parseInt(m[1]!, 16), parseInt(m[2]!, 16), FWD_BY_NAME.get(m[3]!)!, weight, active, inactive);
            current.addV4();
            at = IPV4_DESTINATION.lastIndex;
            line++;
            continue;
          }
        }
        let end = text.indexOf('\n', at);
        if (end < 0) end = text.length;
        const start = at;
        at = end + 1;
        line++;
        if (line <= 3) {
          // "IP Virtual Server version ...", then the two column headings.
          const want = ['IP Virtual Server version ', 'Prot LocalAddress:Port', '  -> RemoteAddress:Port'][line - 1]!;
          if (!text.startsWith(want, start)) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: unexpected heading`);
          continue;
        }
        if (text.startsWith('  -> ', start)) {
          // "  -> 0A800001:1F90      Masq    1      0          0"
          if (!current) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: a destination before any service`);
          words(text, start + 5, end, f);
          if (f.length !== 5) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: ${f.length} fields, not 5`);
          const { family, address, port } = hostPort(f[0]!, line);
          const fwdMethod = FWD_BY_NAME.get(f[1]!);
          if (fwdMethod === undefined)
            throw new CodecError(`${IPVS_PROC_PATH} line ${line}: unknown forwarding method`);
          current.addOther({
            family,
            address,
            port,
            fwdMethod,
            weight: decimal(f[2], 'weight', line),
            upperThreshold: 0,
            lowerThreshold: 0,
            activeConns: decimal(f[3], 'active connections', line),
            inactiveConns: decimal(f[4], 'inactive connections', line),
          });
          continue;
        }
        // "TCP  0A600001:0050 rr  [ops ][persistent 10800 FFFFFFFF]", "FWM  00000005 rr ..."
        words(text, start, end, f);
        if (f.length < 3) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: not a service`);
        current = new TableDestinations(cols);
        if (f[0] === 'FWM') {
          const mark = hex(f[1]!, 8, 'firewall mark', line);
          fwmarks.set(mark, (fwmarks.get(mark) ?? 0) + 1);
          services.set(`FWM/${mark}`, current);
          continue;
        }
        if (f[0] !== 'TCP' && f[0] !== 'UDP' && f[0] !== 'SCTP') {
          // Another protocol (AH, ESP...): not one kube-ipvs makes; its destinations are read and dropped.
          if (!/^[A-Z0-9_]{1,12}$/.test(f[0]!)) throw new CodecError(`${IPVS_PROC_PATH} line ${line}: bad protocol`);
          continue;
        }
        const { family, address, port } = hostPort(f[1]!, line);
        services.set(serviceId({ family, protocol: f[0], address, port }), current);
      }
      return at >= text.length;
    },
  };
}

/**
 * The destinations of each of `kernel` (the netlink service dump) that the table shows unambiguously, by
 * serviceId; a service it does not show (made after the read, or a firewall mark two services carry) is left out.
 */
export function destinationsByService(table: ProcTable, kernel: IpvsService[]): Map<string, TableDestinations> {
  const out = new Map<string, TableDestinations>();
  const marks = new Map<number, number>();
  for (const s of kernel) if (s.fwmark !== undefined) marks.set(s.fwmark, (marks.get(s.fwmark) ?? 0) + 1);
  for (const s of kernel) {
    if (s.fwmark !== undefined) {
      if (marks.get(s.fwmark) !== 1 || table.fwmarks.get(s.fwmark) !== 1) continue;
      const d = table.services.get(`FWM/${s.fwmark}`)!;
      if (d.list().every((x) => x.family === s.family)) out.set(serviceId(s), d);
      continue;
    }
    const id = serviceId(s);
    const d = table.services.get(id);
    if (d) out.set(id, d);
  }
  return out;
}

const HZ = 250;
const FWD_NAME = ['Masq', 'Local', 'Tunnel', 'Route', 'Masq'];
const hexPad = (n: number, digits: number) => (n >>> 0).toString(16).toUpperCase().padStart(digits, '0');

/** %pI6: eight groups of four hex digits. */
function fullV6(address: string): string {
  const b = parseIP(address)!.bytes;
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((b[i]! << 8) | b[i + 1]!).toString(16).padStart(4, '0'));
  return g.join(':');
}

function hostPortText(family: 4 | 6, address: string, port: number): string {
  if (family === 6) return `[${fullV6(address)}]:${hexPad(port, 4)}`;
  const b = parseIP(address)!.bytes;
  return `${hexPad(((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0, 8)}:${hexPad(port, 4)}`;
}

/**
 * The table as the kernel prints it (ip_vs_info_seq_show, Linux 6.1), for the in-memory kernel (fake.ts): the same
 * text the daemon parses on a node, so tests see what the real file leaves out.
 */
export function renderIpvsProc(entries: Iterable<{ svc: IpvsService; dests: Iterable<IpvsDestination> }>): string {
  const out = [
    'IP Virtual Server version 1.2.1 (size=4096)\n',
    'Prot LocalAddress:Port Scheduler Flags\n',
    '  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n',
  ];
  for (const { svc, dests } of entries) {
    const ops = svc.flags & 0x0004 ? 'ops ' : '';
    if (svc.fwmark !== undefined) out.push(`FWM  ${hexPad(svc.fwmark, 8)} ${svc.scheduler} ${ops}`);
    else if (svc.family === 6) out.push(`${svc.protocol}  ${hostPortText(6, svc.address, svc.port)} ${svc.scheduler} `);
    else out.push(`${svc.protocol}  ${hostPortText(4, svc.address, svc.port)} ${svc.scheduler} ${ops}`);
    out.push(svc.flags & 0x0001 ? `persistent ${svc.timeout * HZ} ${hexPad(svc.netmask, 8)}\n` : '\n');
    for (const d of dests)
      out.push(
        `  -> ${hostPortText(d.family, d.address, d.port)}      ${(FWD_NAME[d.fwdMethod & 7] ?? 'Masq').padEnd(7)} ` +
          `${String(d.weight).padEnd(6)} ${String(d.activeConns ?? 0).padEnd(10)} ${String(d.inactiveConns ?? 0).padEnd(10)}\n`,
      );
  }
  return out.join('');
}
