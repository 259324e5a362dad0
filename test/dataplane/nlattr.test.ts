// Netlink attribute framing (src/dataplane/nlattr.ts): AttrWriter, which the IPVS codec and the ipset writer encode
// requests with, writes the same bytes as building each attribute on its own (attr, nest) and joining them.
import t from 'tap';
import { attr, AttrError, AttrWriter, cstr, nest } from '../../src/dataplane/nlattr.ts';

/** A tree of attributes, built both ways. */
type Node =
  | { kind: 'u8' | 'u16le' | 'be16' | 'u32le'; type: number; v: number }
  | { kind: 'be64'; type: number; hi: number; lo: number }
  | { kind: 'string'; type: number; s: string }
  | { kind: 'raw'; type: number; bytes: number[] }
  | { kind: 'nest'; type: number; children: Node[] };

function payload(n: Exclude<Node, { kind: 'nest' }>): Buffer {
  const b = Buffer.alloc(8);
  switch (n.kind) {
    case 'u8':
      return Buffer.from([n.v]);
    case 'u16le':
      b.writeUInt16LE(n.v);
      return b.subarray(0, 2);
    case 'be16':
      b.writeUInt16BE(n.v);
      return b.subarray(0, 2);
    case 'u32le':
      b.writeUInt32LE(n.v);
      return b.subarray(0, 4);
    case 'be64':
      b.writeUInt32BE(n.hi, 0);
      b.writeUInt32BE(n.lo, 4);
      return b;
    case 'string':
      return cstr(n.s);
    case 'raw':
      return Buffer.from(n.bytes);
  }
}

const byParts = (n: Node): Buffer =>
  n.kind === 'nest' ? nest(n.type, n.children.map(byParts)) : attr(n.type, payload(n));

function byWriter(w: AttrWriter, n: Node): void {
  switch (n.kind) {
    case 'nest': {
      const at = w.begin(n.type);
      for (const c of n.children) byWriter(w, c);
      w.end(at);
      return;
    }
    case 'be64':
      return w.be64(n.type, n.hi, n.lo);
    case 'string':
      return w.string(n.type, n.s);
    case 'raw': {
      const at = w.begin(n.type);
      w.raw(Uint8Array.from(n.bytes));
      w.end(at);
      return;
    }
    default:
      return w[n.kind](n.type, n.v);
  }
}

/** A small deterministic generator (the same trees every run). */
function lcg(seed: number): () => number {
  let x = seed;
  return () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

function tree(rnd: () => number, depth: number): Node {
  const type = 1 + Math.floor(rnd() * 60);
  const r = rnd();
  if (depth > 0 && r < 0.25)
    return { kind: 'nest', type, children: Array.from({ length: Math.floor(rnd() * 5) }, () => tree(rnd, depth - 1)) };
  const u32 = () => Math.floor(rnd() * 2 ** 32);
  if (r < 0.35) return { kind: 'u8', type, v: Math.floor(rnd() * 256) };
  if (r < 0.45) return { kind: 'u16le', type, v: Math.floor(rnd() * 65536) };
  if (r < 0.55) return { kind: 'be16', type, v: Math.floor(rnd() * 65536) };
  if (r < 0.65) return { kind: 'u32le', type, v: u32() };
  if (r < 0.75) return { kind: 'be64', type, hi: u32(), lo: u32() };
  if (r < 0.85) return { kind: 'string', type, s: ['rr', 'wlc', 'sip', 'é-ü', ''][Math.floor(rnd() * 5)]! };
  return { kind: 'raw', type, bytes: Array.from({ length: Math.floor(rnd() * 23) }, () => Math.floor(rnd() * 256)) };
}

t.test('AttrWriter writes what attr and nest build, for random attribute trees', async (t) => {
  const rnd = lcg(42);
  for (let i = 0; i < 300; i++) {
    const nodes = Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => tree(rnd, 3));
    const want = Buffer.concat(nodes.map(byParts));
    // A small first buffer: most trees grow it at least once.
    const w = new AttrWriter(8);
    for (const n of nodes) byWriter(w, n);
    if (!w.done().equals(want)) {
      t.fail(`tree ${i} differs: ${JSON.stringify(nodes)}`);
      return;
    }
  }
  t.pass('300 trees, the same bytes');
});

t.test('AttrWriter: padding is zero, patch sets a header byte, an attribute over 64 KiB is refused', async (t) => {
  const w = new AttrWriter(4);
  w.raw(Uint8Array.of(0, 0, 0, 0));
  w.u8(1, 0xff);
  w.patch(0, 10);
  t.same([...w.done()], [10, 0, 0, 0, 5, 0, 1, 0, 0xff, 0, 0, 0]);
  t.equal(w.length, 12);
  const big = new AttrWriter();
  const at = big.begin(2);
  big.raw(new Uint8Array(0x10000));
  t.throws(() => big.end(at), AttrError);
});
