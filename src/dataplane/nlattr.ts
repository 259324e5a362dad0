// Netlink attribute framing as libnl does it: a 4-byte header (length, type), the payload, and
// padding to a 4-byte boundary after every attribute (nested ones included).

export class AttrError extends Error {
  override name = 'AttrError';
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
