// An in-memory stand-in for the kernel's side of a generic netlink socket speaking IPVS, at the
// datagram level, ordering replies as the kernel does: a change is answered (ACK) when it is sent;
// a dump's first chunk is queued when the dump is sent and each next chunk only when the previous
// one has been read (netlink_recvmsg runs the dump callback again), so whatever was sent in
// between lands between two chunks of the dump. One datagram is delivered per event-loop turn.
import { EventEmitter } from 'node:events';
import { parseMessages } from 'netlink';
import { attr } from '../../src/dataplane/nlattr.ts';
import { Cmd, CmdAttr, DestAttr } from '../../src/dataplane/ipvs/constants.ts';
import { decodeGenl } from '../../src/dataplane/ipvs/codec.ts';

const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_MULTI = 0x2;
const NLM_F_ACK = 0x4;
const NLM_F_DUMP = 0x300;
const GENL_ID_CTRL = 0x10;
export const IPVS_FAMILY_ID = 0x2a;

export interface FakeKernelOptions {
  /** Messages per dump chunk (the kernel fits as many as its chunk size allows). */
  perChunk?: number;
  /** Put DONE in its own datagram instead of after the last chunk's messages. */
  doneAlone?: boolean;
  /** Answer a dump with this errno in DONE after its first chunk (a dump that stops short). */
  dumpDoneErrno?: number;
  /** Answer a dump with an NLMSG_ERROR after its first chunk. */
  dumpErrorErrno?: number;
  /** Mark a dump's parts NLM_F_DUMP_INTR (the table changed while it was dumped). */
  dumpIntr?: boolean;
  /** Deliver datagrams cut to this many bytes as truncated (a read buffer too small). */
  truncateAt?: number;
}

function header(len: number, type: number, flags: number, seq: number): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(len, 0);
  h.writeUInt16LE(type, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(seq, 8);
  h.writeUInt32LE(4242, 12);
  return h;
}

function message(type: number, flags: number, seq: number, payload: Buffer): Buffer {
  const len = 16 + payload.length;
  const out = Buffer.alloc((len + 3) & ~3);
  header(len, type, flags, seq).copy(out);
  payload.copy(out, 16);
  return out;
}

const s32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};
const genl = (cmd: number, attrs: Buffer[]) => Buffer.concat([Buffer.from([cmd, 1, 0, 0]), ...attrs]);

export class FakeNetlinkKernel extends EventEmitter {
  readonly o: FakeKernelOptions;
  /** Service key (the SERVICE attribute's bytes) -> destination key -> the DEST nest's payload. */
  readonly dests = new Map<string, Map<string, Buffer>>();
  /** Virtual servers added with NEW_SERVICE: the SERVICE nest's bytes as sent (hex) -> its payload. */
  readonly services = new Map<string, Buffer>();
  /** Datagrams waiting to be read. */
  readonly #queue: Buffer[] = [];
  /** Chunks still to be produced, per running dump. */
  readonly #dumps = new Map<Buffer, Buffer[]>();
  #scheduled = false;
  closed = false;
  /** What was delivered, in order: 'ack:<seq>', 'chunk:<seq>', 'done:<seq>', 'error:<seq>'. */
  readonly delivered: string[] = [];

  constructor(o: FakeKernelOptions = {}) {
    super();
    this.o = o;
  }

  /** address() calls (a getsockname system call on a real socket). */
  addressCalls = 0;
  address() {
    this.addressCalls++;
    return { port: 4242, groups: 0 };
  }
  ref() {}
  unref() {}
  close() {
    this.closed = true;
  }
  setRecvBufferSize() {}
  setSendBufferSize() {}
  getRecvBufferSize() {
    return 1 << 20;
  }
  getSendBufferSize() {
    return 1 << 20;
  }

  /** Datagrams received from the socket. */
  datagrams = 0;

  send(data: Uint8Array | Uint8Array[], _options: unknown, cb?: (e?: Error) => void): void {
    this.datagrams++;
    const buf = Buffer.concat((Array.isArray(data) ? data : [data]).map((d) => Buffer.from(d)));
    for (const m of parseMessages(buf)) this.#handle(m.type, m.flags, m.seq, m.data);
    cb?.();
    this.#schedule();
  }

  #ack(seq: number, errno = 0): Buffer {
    return message(NLMSG_ERROR, 0, seq, Buffer.concat([s32(-errno), header(16, IPVS_FAMILY_ID, 0, seq)]));
  }

  /** A change's answer, as netlink_rcv_skb gives it: an error always, success only when NLM_F_ACK asked for it. */
  #answer(flags: number, seq: number, errno: number): void {
    if (errno !== 0 || flags & NLM_F_ACK) this.#queue.push(this.#ack(seq, errno));
  }

  #handle(type: number, flags: number, seq: number, data: Buffer): void {
    if (type === GENL_ID_CTRL) {
      // CTRL_CMD_NEWFAMILY with CTRL_ATTR_FAMILY_ID and CTRL_ATTR_FAMILY_NAME.
      const id = Buffer.alloc(2);
      id.writeUInt16LE(IPVS_FAMILY_ID);
      this.#queue.push(message(GENL_ID_CTRL, 0, seq, genl(1, [attr(1, id), attr(2, Buffer.from('IPVS\0'))])));
      return;
    }
    const g = decodeGenl(data);
    const svc = g.attrs.get(CmdAttr.SERVICE)?.toString('hex') ?? '';
    const dest = g.attrs.get(CmdAttr.DEST);
    const destKey = (d: Buffer) => {
      // ADDR and PORT identify a destination; the nest's first two attributes in what we send.
      const m = new Map<number, string>();
      for (let o = 0; o + 4 <= d.length;) {
        const len = d.readUInt16LE(o);
        m.set(d.readUInt16LE(o + 2), d.subarray(o + 4, o + len).toString('hex'));
        o += (len + 3) & ~3;
      }
      return `${m.get(DestAttr.ADDR)}:${m.get(DestAttr.PORT)}`;
    };
    const table = this.dests.get(svc) ?? new Map<string, Buffer>();
    this.dests.set(svc, table);
    if (g.cmd === Cmd.NEW_DEST && dest) {
      const k = destKey(dest);
      if (table.has(k)) return this.#answer(flags, seq, 17);
      table.set(
        k,
        Buffer.concat([
          dest,
          attr(DestAttr.ACTIVE_CONNS, s32(0)),
          attr(DestAttr.INACT_CONNS, s32(0)),
          attr(DestAttr.PERSIST_CONNS, s32(0)),
        ]),
      );
      return this.#answer(flags, seq, 0);
    }
    if (g.cmd === Cmd.DEL_DEST && dest) {
      return this.#answer(flags, seq, table.delete(destKey(dest)) ? 0 : 2);
    }
    if (g.cmd === Cmd.NEW_SERVICE && g.attrs.has(CmdAttr.SERVICE)) {
      if (this.services.has(svc)) return this.#answer(flags, seq, 17);
      this.services.set(svc, g.attrs.get(CmdAttr.SERVICE)!);
      return this.#answer(flags, seq, 0);
    }
    if (g.cmd === Cmd.GET_SERVICE && (flags & NLM_F_DUMP) === NLM_F_DUMP) {
      const msgs = [...this.services.values()].map((v) =>
        message(IPVS_FAMILY_ID, NLM_F_MULTI, seq, genl(Cmd.NEW_SERVICE, [attr(CmdAttr.SERVICE, v)])),
      );
      return this.#dump(seq, msgs);
    }
    if (g.cmd === Cmd.GET_DEST && (flags & NLM_F_DUMP) === NLM_F_DUMP) {
      const mflags = NLM_F_MULTI | (this.o.dumpIntr ? 0x10 : 0);
      const msgs = [...table.values()].map((d) =>
        message(IPVS_FAMILY_ID, mflags, seq, genl(Cmd.NEW_DEST, [attr(CmdAttr.DEST, d)])),
      );
      return this.#dump(seq, msgs);
    }
    this.#answer(flags, seq, 95 /* EOPNOTSUPP: not modelled */);
  }

  /** A dump's answer: `msgs` in chunks of perChunk, then DONE (or what the options make of it). */
  #dump(seq: number, msgs: Buffer[]): void {
    const per = this.o.perChunk ?? 3;
    const chunks: Buffer[] = [];
    for (let i = 0; i < msgs.length; i += per) chunks.push(Buffer.concat(msgs.slice(i, i + per)));
    if (this.o.dumpErrorErrno && chunks.length > 0) {
      chunks.splice(1, chunks.length, this.#ack(seq, this.o.dumpErrorErrno));
    } else {
      const done = message(NLMSG_DONE, NLM_F_MULTI, seq, s32(-(this.o.dumpDoneErrno ?? 0)));
      if (this.o.dumpDoneErrno && chunks.length > 1) chunks.splice(1);
      if (this.o.doneAlone || chunks.length === 0) chunks.push(done);
      else chunks[chunks.length - 1] = Buffer.concat([chunks.at(-1)!, done]);
    }
    // The first chunk is built in sendmsg; the rest as the socket is read.
    const first = chunks.shift()!;
    this.#queue.push(first);
    if (chunks.length) this.#dumps.set(first, chunks);
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const d = this.#queue.shift();
      if (!d || this.closed) return;
      const rest = this.#dumps.get(d);
      if (rest) {
        this.#dumps.delete(d);
        const next = rest.shift()!;
        this.#queue.push(next);
        if (rest.length) this.#dumps.set(next, rest);
      }
      const type = d.readUInt16LE(4);
      const seq = d.readUInt32LE(8);
      this.delivered.push(`${type === NLMSG_ERROR ? 'ack' : type === NLMSG_DONE ? 'done' : 'chunk'}:${seq}`);
      const cut = this.o.truncateAt;
      if (cut !== undefined && d.length > cut)
        this.emit('truncatedMessage', d.subarray(0, cut), { port: 0, groups: 0, truncated: d.length });
      else this.emit('message', d, { port: 0, groups: 0 });
      if (this.#queue.length) this.#schedule();
    });
  }
}
