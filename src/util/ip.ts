// IP addresses and CIDRs: parsing (as Kubernetes' ParseIPSloppy does), canonical text, containment.
// Addresses travel through the model and the plan as canonical strings; bytes are only for math.

export type Family = 4 | 6;

export interface ParsedIP {
  family: Family;
  bytes: Uint8Array;
}

export interface CIDR {
  family: Family;
  bytes: Uint8Array;
  prefix: number;
  text: string;
}

/**
 * A dotted quad as an unsigned 32-bit number, or -1 when it is not one: four decimal parts of 1-3 digits, each at most
 * 255; sloppy like Go's ParseIPSloppy (leading zeros are decimal, not octal). Read character by character, allocating
 * nothing: every endpoint address of every change goes through here.
 */
export function ipv4Number(s: string): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || part === 3) return -1;
      value = value * 256 + n;
      part++;
      n = 0;
      digits = 0;
      continue;
    }
    if (c < 48 || c > 57 || ++digits > 3) return -1;
    n = n * 10 + (c - 48);
    if (n > 255) return -1;
  }
  if (part !== 3 || digits === 0) return -1;
  return value * 256 + n;
}

function parseV4(s: string): Uint8Array | null {
  const v = ipv4Number(s);
  if (v < 0) return null;
  return Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
}

function parseV6(s: string): Uint8Array | null {
  if (s.includes('%')) return null; // zones are not service addresses
  let head = s;
  let v4tail: Uint8Array | null = null;
  const lastColon = s.lastIndexOf(':');
  if (lastColon >= 0 && s.indexOf('.', lastColon) >= 0) {
    v4tail = parseV4(s.slice(lastColon + 1));
    if (!v4tail) return null;
    head = s.slice(0, lastColon + 1) + '0:0';
  }
  const halves = head.split('::');
  if (halves.length > 2) return null;
  const toGroups = (h: string): number[] | null => {
    if (h === '') return [];
    const gs = h.split(':');
    const out: number[] = [];
    for (const g of gs) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const left = toGroups(halves[0]!);
  const right = halves.length === 2 ? toGroups(halves[1]!) : [];
  if (!left || !right) return null;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - left.length - right.length;
    if (missing < 1) return null;
    groups = [...left, ...new Array<number>(missing).fill(0), ...right];
  } else {
    groups = left;
  }
  if (groups.length !== 8) return null;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  if (v4tail) out.set(v4tail, 12);
  return out;
}

export function parseIP(s: string): ParsedIP | null {
  if (typeof s !== 'string' || s.length === 0) return null;
  if (s.includes(':')) {
    const b = parseV6(s);
    return b ? { family: 6, bytes: b } : null;
  }
  const b = parseV4(s);
  return b ? { family: 4, bytes: b } : null;
}

/** RFC 5952 text for IPv6 (longest zero run compressed, lower case); dotted quad for IPv4. */
export function formatIP(ip: ParsedIP): string {
  const b = ip.bytes;
  if (ip.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** The canonical text of an address, or null when it is not an IP address. */
export function canonicalIP(s: string): string | null {
  const p = parseIP(s);
  return p ? sameText(formatIP(p), s) : null;
}

/**
 * `made`, or `given` when it is the same text: a string read from JSON is one flat block, one made up by concatenation
 * is a chain of pieces that stays that way in the heap (about 60 bytes more per address kept: 100 000 endpoints' 5 MB).
 */
export function sameText(made: string, given: string): string {
  return made === given ? given : made;
}

export function ipFamily(s: string): Family | null {
  return parseIP(s)?.family ?? null;
}

export function parseCIDR(s: string): CIDR | null {
  if (typeof s !== 'string') return null;
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIP(s.slice(0, slash));
  const prefixText = s.slice(slash + 1);
  if (!ip || !/^[0-9]{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > (ip.family === 4 ? 32 : 128)) return null;
  const bytes = new Uint8Array(ip.bytes);
  for (let bit = prefix; bit < bytes.length * 8; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family: ip.family, bytes, prefix, text: `${formatIP({ family: ip.family, bytes })}/${prefix}` };
}

export function cidrContains(cidr: CIDR, ip: ParsedIP | string): boolean {
  const p = typeof ip === 'string' ? parseIP(ip) : ip;
  if (!p || p.family !== cidr.family) return false;
  const full = cidr.prefix >> 3;
  for (let i = 0; i < full; i++) if (p.bytes[i] !== cidr.bytes[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (p.bytes[full]! & mask) === cidr.bytes[full];
}

/** The family of a canonical address (the model's and the plan's): no parsing needed. */
export const familyOfCanonical = (a: string): Family => (a.includes(':') ? 6 : 4);

/**
 * A string that sorts like compareIP (IPv4 before IPv6, then numerically): compute it once per
 * address and sort by it, instead of parsing both addresses at every comparison.
 */
export function ipSortKey(a: string | ParsedIP): string {
  if (typeof a === 'string') {
    const p = parseIP(a);
    return p ? ipSortKey(p) : `9${a}`;
  }
  let hex = String(a.family);
  const b = a.bytes;
  for (let i = 0; i < b.length; i++) hex += (b[i]! < 16 ? '0' : '') + b[i]!.toString(16);
  return hex;
}

/** Orders addresses numerically, IPv4 before IPv6; non-addresses last, by text. */
export function compareIP(a: string, b: string): number {
  const pa = parseIP(a);
  const pb = parseIP(b);
  if (!pa || !pb) return pa ? -1 : pb ? 1 : a < b ? -1 : a > b ? 1 : 0;
  if (pa.family !== pb.family) return pa.family - pb.family;
  for (let i = 0; i < pa.bytes.length; i++) {
    const d = pa.bytes[i]! - pb.bytes[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** `addr:port`, with IPv6 in brackets, as ipvsadm prints them. */
export function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** "0.0.0.0:10256", "[::1]:10249", ":10249" -> host and port; null when it does not parse. */
export function parseBindAddress(s: string): { host: string | undefined; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):([0-9]{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? undefined : host, port };
}

/**
 * Why `ip` must never be a Service address or an endpoint, or null when it may: IPv4 loopback
 * (127/8), unspecified ("this network", 0/8), link-local (169.254/16, cloud metadata lives
 * there), multicast (224/4), reserved (240/4) and broadcast; IPv6 unspecified, loopback,
 * IPv4-mapped (::ffff:0:0/96), link-local (fe80::/10) and multicast (ff00::/8). The API server
 * refuses most of these (ValidateNonSpecialIP, EndpointSlice address validation); manifests have
 * no API server in front of them. Checked on every endpoint: bytes, no CIDR walk.
 */
export function specialAddress(ip: string | ParsedIP): string | null {
  const p = typeof ip === 'string' ? parseIP(ip) : ip;
  if (!p) return null;
  const b = p.bytes;
  if (p.family === 4) {
    if (b[0] === 0) return 'an unspecified ("this network") address';
    if (b[0] === 127) return 'a loopback address';
    if (b[0] === 169 && b[1] === 254) return 'a link-local address (cloud metadata lives there)';
    if (b[0]! >= 224 && b[0]! < 240) return 'a multicast address';
    if (b[0] === 255 && b[1] === 255 && b[2] === 255 && b[3] === 255) return 'the broadcast address';
    if (b[0]! >= 240) return 'a reserved (class E) address';
    return null;
  }
  let zeros = 0;
  while (zeros < 16 && b[zeros] === 0) zeros++;
  if (zeros === 16) return 'the unspecified address';
  if (zeros === 15 && b[15] === 1) return 'the loopback address';
  if (zeros >= 10 && b[10] === 0xff && b[11] === 0xff)
    return 'an IPv4-mapped IPv6 address (use the IPv4 address itself)';
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return 'a link-local address';
  if (b[0] === 0xff) return 'a multicast address';
  return null;
}
