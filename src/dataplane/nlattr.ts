// Netlink attribute framing as libnl does it: a 4-byte header (length, type), the payload, and
// padding to a 4-byte boundary after every attribute (nested ones included).

export class AttrError extends Error {
  override name = 'AttrError';
}

/**
 * Visits each attribute of b[from, to): its type (the nested and byte-order flags masked off) and where its header
 * starts. An attribute whose length is under its header's or runs past `to` is refused with `fail(message)` (an
 * AttrError unless the caller's decoder has an error of its own).
 */
export function eachAttr(
  b: Uint8Array,
  from: number,
  to: number,
  f: (type: number, o: number) => void,
  fail: (message: string) => Error = (m) => new AttrError(m),
): void {
  let o = from;
  while (to - o >= 4) {
    const len = b[o]! | (b[o + 1]! << 8);
    if (len < 4 || o + len > to) throw fail(`invalid attribute length ${len} at byte ${o - from}`);
    f((b[o + 2]! | (b[o + 3]! << 8)) & 0x3fff, o);
    o += (len + 3) & ~3;
  }
}

/** One encoded attribute; nested attributes are built with `nest`. */
export type Attr = Buffer;

export function attr(type: number, payload: Buffer): Attr {
  const len = 4 + payload.length;
  if (len > 0xffff) throw new AttrError(`attribute ${type} too long (${len} bytes)`);
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type & 0x3fff, 2);
  payload.copy(out, 4);
  return out;
}

/** A nested attribute without NLA_F_NESTED, as ipvsadm and iproute2 send them to these families. */
export function nest(type: number, children: Attr[]): Attr {
  return attr(type, Buffer.concat(children));
}

export const cstr = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);

/**
 * Netlink attributes written one after the other into one buffer: a request is one allocation, not one Buffer per
 * attribute and per nest joined at the end (that was 20-odd Buffers for one ipset hairpin entry, most of what an
 * endpoint change cost there under emulation). Bytes are stored one by one: Buffer's write methods are calls with
 * checks, several times the cost under V8's interpreter. The buffer comes from Node's pool (Buffer.allocUnsafe, as
 * Buffer.concat's did): a fresh zeroed allocation per request left the malloc heap 7 MB larger after a cold start of
 * 1 000 Services in the lab. So every byte up to length is written here, padding included; done() never shows more.
 * Types are written as given (a caller adds NLA_F_NESTED or NLA_F_NET_BYTEORDER where its family wants them).
 */
export class AttrWriter {
  #buf: Buffer;
  #len = 0;

  constructor(size = 128) {
    this.#buf = Buffer.allocUnsafe(size);
  }

  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#len + n + 64));
    this.#buf.copy(b, 0, 0, this.#len);
    this.#buf = b;
  }
  /** Starts an attribute (or a nest) of `type`; end() it with what this returns. */
  begin(type: number): number {
    this.#room(4);
    const at = this.#len;
    this.#buf[at + 2] = type & 255;
    this.#buf[at + 3] = (type >>> 8) & 255;
    this.#len += 4;
    return at;
  }
  /** Ends the attribute begun at `at`: its length (header, payload, nested padding) and its own padding. */
  end(at: number): void {
    const len = this.#len - at;
    if (len > 0xffff) throw new AttrError(`attribute at byte ${at} too long (${len} bytes)`);
    this.#buf[at] = len & 255;
    this.#buf[at + 1] = len >>> 8;
    const pad = (4 - (len & 3)) & 3;
    this.#room(pad);
    for (let i = 0; i < pad; i++) this.#buf[this.#len++] = 0;
  }
  /** Payload bytes as they are. */
  raw(bytes: Uint8Array): void {
    this.#room(bytes.length);
    this.#buf.set(bytes, this.#len);
    this.#len += bytes.length;
  }
  /** A 32-bit payload word in network byte order. */
  be32raw(v: number): void {
    this.#room(4);
    const b = this.#buf;
    b[this.#len] = (v >>> 24) & 255;
    b[this.#len + 1] = (v >>> 16) & 255;
    b[this.#len + 2] = (v >>> 8) & 255;
    b[this.#len + 3] = v & 255;
    this.#len += 4;
  }
  /** A 32-bit payload word in host (little-endian) byte order. */
  u32raw(v: number): void {
    this.#room(4);
    const b = this.#buf;
    b[this.#len] = v & 255;
    b[this.#len + 1] = (v >>> 8) & 255;
    b[this.#len + 2] = (v >>> 16) & 255;
    b[this.#len + 3] = (v >>> 24) & 255;
    this.#len += 4;
  }
  u8(type: number, v: number): void {
    const at = this.begin(type);
    this.#room(1);
    this.#buf[this.#len++] = v & 255;
    this.end(at);
  }
  u16le(type: number, v: number): void {
    const at = this.begin(type);
    this.#room(2);
    this.#buf[this.#len++] = v & 255;
    this.#buf[this.#len++] = (v >>> 8) & 255;
    this.end(at);
  }
  be16(type: number, v: number): void {
    const at = this.begin(type);
    this.#room(2);
    this.#buf[this.#len++] = (v >>> 8) & 255;
    this.#buf[this.#len++] = v & 255;
    this.end(at);
  }
  u32le(type: number, v: number): void {
    const at = this.begin(type);
    this.u32raw(v);
    this.end(at);
  }
  be64(type: number, hi: number, lo: number): void {
    const at = this.begin(type);
    this.be32raw(hi);
    this.be32raw(lo);
    this.end(at);
  }
  /** A NUL-terminated string, as its UTF-8 bytes. */
  string(type: number, text: string): void {
    const at = this.begin(type);
    const n = Buffer.byteLength(text, 'utf8');
    this.#room(n + 1);
    this.#len += this.#buf.write(text, this.#len, 'utf8');
    this.#buf[this.#len++] = 0;
    this.end(at);
  }
  /** Sets a byte already written (a header field known only once the rest is). */
  patch(offset: number, v: number): void {
    this.#buf[offset] = v;
  }
  get length(): number {
    return this.#len;
  }
  done(): Buffer {
    return this.#buf.subarray(0, this.#len);
  }
}
