// Netlink sockets for the IPVS (generic netlink) and link (rtnetlink) clients, with replies matched
// to requests by sequence number. The `netlink` package's NetlinkSocket keeps one multipart buffer
// per socket and closes it on the first message that is not part of it: the ACK of a change sent
// while a dump runs on the same socket (the kernel queues it between two chunks of the dump) ended
// the dump early as "Multipart message not terminated properly", and the reconciler, which lists a
// service's destinations while it changes another's, read that as a failed sync. Here every
// request's parts are kept apart by sequence number, whatever arrives in between.
//
// The package's socket is kept for its native binding, sequence numbers and the generic and rtnetlink wrappers on
// top of it; the per-message work is ours: headers written straight into the datagram (frameInto), replies read
// where they lie (#receive), and timeouts kept in one queue per socket (Deadlines) instead of a timer each.
import {
  checkError,
  Flags,
  FlagsGet,
  GenericNetlinkSocket,
  MessageType,
  NetlinkSocket,
  Protocol,
  RawNetlinkSocket,
  RtNetlinkSocket,
  type MessageInfo,
  type NetlinkMessage,
  type NetlinkSendOptions,
  type RequestOptions,
} from 'netlink';

/** The control message types (NLMSG_*) as the plain numbers a message's `type` holds. */
export const NLMSG_NOOP: number = MessageType.NOOP;
export const NLMSG_ERROR: number = MessageType.ERROR;
export const NLMSG_DONE: number = MessageType.DONE;

/** What NetlinkSocket uses of its raw socket; tests pass an in-memory kernel. */
export type RawSocket = RawNetlinkSocket;

export interface SocketOptions {
  /** Read each datagram into a buffer of this size instead of peeking at its size first. */
  readBufferBytes?: number;
  /** An already open raw socket (tests); by default a new one of the protocol. */
  raw?: RawSocket;
}

/** A dump's parts carry NLM_F_DUMP_INTR when the kernel's table changed while it was dumped. */
export const NLM_F_DUMP_INTR = 0x10;
/** NLM_F_ROOT | NLM_F_MATCH: a dump request. */
const NLM_F_DUMP: number = FlagsGet.DUMP;

/**
 * A request's options, plus `batch`: a change (not a dump, not a query whose answer is data) that may go to the
 * kernel in one datagram with others and be acknowledged only through the batch's last message (see
 * DemuxNetlinkSocket.request).
 */
export type NetlinkRequestOptions = NetlinkSendOptions & RequestOptions & { batch?: boolean };

/** A batch's bounds: at most this many messages and bytes in one datagram. */
export const BATCH_MAX_MESSAGES = 64;
export const BATCH_MAX_BYTES = 32 * 1024;

/** A change request waiting to be sent in a batch. */
interface Batched {
  type: number;
  data: Uint8Array[];
  bytes: number;
  options: NetlinkRequestOptions;
  resolve: (r: [NetlinkMessage[], MessageInfo]) => void;
  reject: (e: Error) => void;
}

/** NetlinkSocket with replies grouped per request (sequence number), not one buffer per socket. */
export class DemuxNetlinkSocket extends NetlinkSocket {
  /** Dumps in progress: sequence number -> the parts received so far. */
  readonly #parts = new Map<number, NetlinkMessage[]>();

  /** Failed reads (ENOBUFS: the kernel dropped replies because the receive queue was full...). */
  receiveErrors = 0;

  constructor(raw: RawSocket) {
    const others = new Set(raw.listeners('message'));
    super(raw);
    // Replies are framed here (#receive), not by the package's parseMessages/handleMessages/emitMessage: one object
    // per message and no intermediate ones (the package builds three per message and reads each header field
    // through a Buffer method), which showed in the churn profile. So the listener the package's constructor just
    // added goes (and only that one: another socket may listen on the same raw socket, as tests do).
    for (const l of raw.listeners('message'))
      if (!others.has(l)) raw.removeListener('message', l as (...args: unknown[]) => void);
    raw.on('message', (buf: Buffer, rinfo: MessageInfo) => this.#receive(buf, rinfo));
    // A datagram larger than the read buffer is lost past the buffer: fail its request at once
    // (EMSGSIZE) rather than let it wait for a DONE that was cut off.
    raw.on('truncatedMessage', (buf: Buffer, rinfo: MessageInfo) => this.#guard(() => this.#truncated(buf, rinfo)));
    // NetlinkSocket re-emits its raw socket's errors (a failed recvmsg); unheard, an 'error' event throws from
    // the native read callback, which ends the process. A failed read may have lost any reply: every waiting
    // request fails with it (the reconciler counts and retries them like any kernel error), and the socket goes
    // on. (The abort seen in the lab under load was another path, the overflow `request` below prevents.)
    this.on('error', (e: unknown) => this.#guard(() => this.#receiveFailed(e)));
  }

  /** Exceptions thrown by what handled a reply (a listener, a request's callback), caught at the native boundary. */
  handlerErrors = 0;
  lastHandlerError: Error | null = null;

  /**
   * Runs `f`, which the native binding called: an exception leaving it is thrown across the addon's C++ frame,
   * which ends the process (std::terminate: "terminate called after throwing an instance of 'Napi::Error'"). Here
   * it is counted and written to stderr as a process warning instead; a request whose answer was lost with it
   * fails at its timeout, and the reconciler retries it like any kernel error.
   */
  #guard(f: () => void): void {
    try {
      f();
    } catch (e) {
      this.#handlerFailed(e);
    }
  }

  #handlerFailed(e: unknown): void {
    this.handlerErrors++;
    this.lastHandlerError = e instanceof Error ? e : new Error(String(e));
    process.emitWarning(
      `a netlink reply's handler threw (${this.handlerErrors} so far): ${this.lastHandlerError.stack ?? this.lastHandlerError.message}`,
      'KubeIpvsNetlinkWarning',
    );
  }

  #receiveFailed(e: unknown): void {
    this.receiveErrors++;
    const err = e as { errno?: number; code?: string; message?: string };
    const errno = Math.abs(Number(err?.errno ?? 0)) || 105; /* ENOBUFS */
    const message = `netlink read failed (${err?.code ?? `errno ${errno}`}): replies may have been lost`;
    this.#parts.clear();
    for (const seq of [...this.requests.keys()]) this.#fail(seq, errno, message);
  }

  /** Requests waiting for their answer (for tests and diagnostics). */
  get waiting(): number {
    return this.requests.size;
  }

  /** Request and batch timeouts still armed (for tests and diagnostics). */
  get liveDeadlines(): number {
    return this.#deadlines.live;
  }

  /** Dumps whose parts are still arriving (for tests and diagnostics). */
  get openDumps(): number {
    return this.#parts.size;
  }

  /**
   * Replies the kernel may still queue on this socket, in its own accounting (bytes of buffer each takes).
   * The kernel acknowledges a request the moment it is sent and queues the answer on the socket until it is
   * read; an answer that finds the receive buffer full is dropped and the socket flagged with ENOBUFS. The
   * `netlink` addon (0.3.0) cannot survive that flag: libuv reports the socket's POLLERR and the addon, building
   * the error for it, throws from its native poll callback (a NULL syscall name given to Napi::String::New),
   * which ends the process ("terminate called after throwing an instance of 'Napi::Error'"). 300 ipset ops sent
   * at once did it on every try; the lab's daemon died so in a full resync during an endpoint churn. So requests
   * wait here until the answers already owed fit in a quarter of the buffer: a running dump may hold half of it
   * (the kernel refills a dump only while the queue is under half), and the rest is margin.
   */
  #owed = 0;
  readonly #waiting: { cost: number; go: () => void }[] = [];
  #budgetBytes: number | null = null;

  /** Most answers owed at once so far, in the same accounting (for tests and diagnostics). */
  maxOwedBytes = 0;

  /** What the replies owed may take of the receive buffer, in bytes. */
  get replyBudgetBytes(): number {
    if (this.#budgetBytes === null) {
      let rcvbuf = 212_992; // net.core.rmem_default on most kernels
      try {
        const n = this.getRecvBufferSize();
        if (Number.isFinite(n) && n > 0) rcvbuf = n;
      } catch {
        /* an in-memory kernel (tests) has no buffer: the default */
      }
      this.#budgetBytes = Math.floor(rcvbuf / 4);
    }
    return this.#budgetBytes;
  }

  override setRecvBufferSize(size: number): unknown {
    const r = super.setRecvBufferSize(size) as unknown;
    this.#budgetBytes = null;
    return r;
  }

  /**
   * As NetlinkSocket.request, held back until the answers owed leave room for this one's (see `#owed`).
   *
   * With `batch: true` (a change: add, set, delete), the request goes out with the others issued in the same
   * event-loop turn, up to BATCH_MAX_MESSAGES / BATCH_MAX_BYTES per datagram, and only the batch's last message
   * asks for an ACK. The kernel's netlink input (netlink_rcv_skb) runs the messages of a datagram in order and
   * answers a message without NLM_F_ACK only when it fails, so when the last one's answer arrives every earlier
   * one has either been answered with its error (by its own sequence number) or succeeded. One send, one read and
   * one timer per batch instead of per change: what a cold start of 100 000 destinations spends its time on.
   * Each request still settles on its own: its error, success, or the batch's transport failure or timeout.
   */
  override request(
    type: number,
    data: Uint8Array | Uint8Array[],
    options?: NetlinkRequestOptions,
  ): Promise<[NetlinkMessage[], MessageInfo]> {
    const dump = ((options?.flags ?? 0) & NLM_F_DUMP) === NLM_F_DUMP;
    if (options?.batch && !dump && !options.port && !options.groups && options.seq === undefined)
      return this.#enqueue(type, data, options);
    // What was queued before goes first: a request never overtakes a change issued before it.
    this.#flushBatches();
    const cost = replyCost(data);
    const send = () => this.#request(type, data, options).finally(() => this.#release(cost));
    // The first request always goes, whatever its size: alone it cannot overflow what it was sized for.
    if (this.#admits(cost)) {
      this.#take(cost);
      return send();
    }
    return new Promise<void>((go) => this.#waiting.push({ cost, go })).then(send);
  }

  /**
   * As NetlinkSocket.request, with the header written here and the timeout kept in the socket's deadline queue
   * (the package sets a timer per request and chains two promises on it). Same outcome: `checkError: false` gives
   * the answer's messages as they came; otherwise an ACK gives none, data gives the messages, and an error answer
   * rejects ("Request rejected: CODE").
   */
  #request(
    type: number,
    data: Uint8Array | Uint8Array[],
    options?: NetlinkRequestOptions,
  ): Promise<[NetlinkMessage[], MessageInfo]> {
    return new Promise((resolve, reject) => {
      const seq = options?.seq ?? this.generateSeq();
      let deadline: Deadline | null = null;
      let done = false;
      const settle = (): boolean => {
        if (done) return false;
        done = true;
        if (deadline) this.#deadlines.cancel(deadline);
        if (this.requests.get(seq) === answer) this.dropRef(seq);
        return true;
      };
      const answer = (err: Error | null, msgs?: NetlinkMessage[], rinfo?: MessageInfo) => {
        if (!settle()) return;
        if (err) reject(err);
        else settleAnswer(msgs ?? [], rinfo!, options?.checkError !== false, resolve, reject);
      };
      this.makeRef(seq, answer); // throws (a rejection) when the number is already waited for
      const timeout = options?.timeout ?? 0;
      if (timeout > 0)
        deadline = this.#deadlines.add(timeout, () => {
          if (settle()) reject(new Error('Timeout has been reached'));
        });
      const flags = Number(options?.flags ?? 0) | Flags.REQUEST | Flags.ACK;
      const buf = frameMessage(type, flags, seq, options?.localPort ?? this.#localPort, data);
      try {
        this.socket.send(buf, options, (error) => {
          if (error && settle()) reject(error);
        });
      } catch (e) {
        if (settle()) reject(e instanceof Error ? e : new Error(String(e))); // a closed socket throws
      }
    });
  }

  /**
   * As NetlinkSocket.send, with the header written here and the socket's own port read once: the package asks the
   * native socket for it at every send (a getsockname system call), which showed in the daemon's profile under
   * endpoint churn.
   */
  override send(
    type: number,
    data: Uint8Array | Uint8Array[],
    options?: NetlinkSendOptions,
    callback?: Parameters<NetlinkSocket['send']>[3],
  ): number {
    const seq = options?.seq ?? this.generateSeq();
    const port = options?.localPort ?? this.#localPort;
    this.socket.send(frameMessage(type, Number(options?.flags ?? 0), seq, port, data), options, callback);
    return seq;
  }

  /** The requests' and batches' timeouts: one timer per socket (and timeout value), not one per request. */
  readonly #deadlines = new Deadlines((e) => this.#handlerFailed(e));

  /** Changes waiting for the end of this event-loop turn, to be sent in batches. */
  #pending: Batched[] = [];
  #flushScheduled = false;
  /** The socket's own port, for the messages' headers (read once: the native call is a system call). */
  #port: number | null = null;
  get #localPort(): number {
    return (this.#port ??= this.socket.address().port);
  }

  /** Datagrams of batched changes sent, and the changes they carried (for tests and diagnostics). */
  batchesSent = 0;
  batchedMessages = 0;

  #enqueue(type: number, data: Uint8Array | Uint8Array[], options: NetlinkRequestOptions) {
    const parts = Array.isArray(data) ? data : [data];
    const bytes = 16 + parts.reduce((n, b) => n + b.length, 0);
    return new Promise<[NetlinkMessage[], MessageInfo]>((resolve, reject) => {
      this.#pending.push({ type, data: parts, bytes, options, resolve, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        // After the poll phase: every answer read in this turn has issued its follow-up by then.
        setImmediate(() => {
          this.#flushScheduled = false;
          this.#flushBatches();
        });
      }
    });
  }

  /** Cuts what is pending into batches and sends each when the answers owed leave room for it. */
  #flushBatches(): void {
    while (this.#pending.length > 0) {
      let n = 0;
      let bytes = 0;
      while (n < this.#pending.length && n < BATCH_MAX_MESSAGES) {
        const b = this.#pending[n]!.bytes + 3;
        if (n > 0 && bytes + b > BATCH_MAX_BYTES) break;
        bytes += b;
        n++;
      }
      const batch = this.#pending.splice(0, n);
      // Every message may fail, and a failure's answer carries the message back.
      const cost = batch.reduce((c, b) => c + replyCost(b.data), 0);
      if (this.#admits(cost)) {
        this.#take(cost);
        this.#sendBatch(batch, cost);
      } else this.#waiting.push({ cost, go: () => this.#sendBatch(batch, cost) });
    }
  }

  #sendBatch(batch: Batched[], cost: number): void {
    const last = batch.length - 1;
    const settled = new Array<boolean>(batch.length).fill(false);
    const seqs: number[] = [];
    let finished = false;
    let deadline: Deadline | null = null;
    const fail = (i: number, e: Error) => {
      if (settled[i]) return;
      settled[i] = true;
      batch[i]!.reject(e);
    };
    const answer = (i: number, msgs: NetlinkMessage[], rinfo: MessageInfo) => {
      if (settled[i]) return;
      settled[i] = true;
      const b = batch[i]!;
      settleAnswer(msgs, rinfo, b.options.checkError !== false, b.resolve, b.reject);
    };
    const finish = (e: Error | null, rinfo?: MessageInfo) => {
      if (finished) return;
      finished = true;
      if (deadline) this.#deadlines.cancel(deadline);
      for (let i = 0; i <= last; i++) {
        if (e) fail(i, e);
        else answer(i, [], rinfo!);
      }
      for (const seq of seqs) if (this.requests.has(seq)) this.dropRef(seq);
      this.#release(cost);
    };
    const port = this.#localPort;
    // Every message framed into one datagram, each starting 4-byte aligned (NLMSG_ALIGN).
    let total = 0;
    for (const b of batch) total += (b.bytes + 3) & ~3;
    const buf = Buffer.allocUnsafe(total);
    let at = 0;
    for (let i = 0; i <= last; i++) {
      const b = batch[i]!;
      const seq = this.generateSeq();
      seqs.push(seq);
      const flags = (Number(b.options.flags ?? 0) & ~Flags.ACK) | Flags.REQUEST | (i === last ? Flags.ACK : 0);
      at = frameInto(buf, at, b.type, flags, seq, port, b.data);
      this.makeRef(seq, (err, msgs, rinfo) => {
        if (err) fail(i, err);
        else answer(i, msgs ?? [], rinfo!);
        // The last message's answer comes after every earlier one's (in order, on one socket): the batch is done.
        // A transport failure there (a lost read) leaves the earlier ones' fate unknown: they fail with it.
        if (i === last) finish(err, rinfo);
      });
    }
    let timeout = 0;
    for (const b of batch) if ((b.options.timeout ?? 0) > timeout) timeout = b.options.timeout!;
    if (timeout > 0) deadline = this.#deadlines.add(timeout, () => finish(new Error('Timeout has been reached')));
    this.batchesSent++;
    this.batchedMessages += batch.length;
    try {
      this.socket.send(buf, {}, (error) => {
        if (error) finish(error);
      });
    } catch (e) {
      finish(e as Error); // a closed socket throws
    }
  }

  /** Whether a request costing `cost` may go now: nothing queued before it, and room (or nothing owed). */
  #admits(cost: number): boolean {
    return this.#waiting.length === 0 && (this.#owed === 0 || this.#owed + cost <= this.replyBudgetBytes);
  }

  /** Requests waiting for room for their answers (for tests and diagnostics). */
  get queued(): number {
    return this.#waiting.length;
  }

  #take(cost: number): void {
    this.#owed += cost;
    if (this.#owed > this.maxOwedBytes) this.maxOwedBytes = this.#owed;
  }

  #release(cost: number): void {
    this.#owed -= cost;
    // In order: a large request is not passed by the small ones behind it.
    while (this.#waiting.length > 0) {
      const next = this.#waiting[0]!;
      if (this.#owed !== 0 && this.#owed + next.cost > this.replyBudgetBytes) break;
      this.#waiting.shift();
      this.#take(next.cost);
      next.go();
    }
  }

  /**
   * A datagram from the kernel: its messages, each read where it lies (NLMSG_ALIGN apart) and handled in order. A
   * header whose length does not fit ends the datagram there ('invalid', as the package reports it); what came
   * before it was handled.
   */
  #receive(buf: Buffer, rinfo: MessageInfo): void {
    const n = buf.length;
    let o = 0;
    while (o < n) {
      const len = o + NLMSG_HDRLEN <= n ? u32(buf, o) : 0;
      if (len < NLMSG_HDRLEN || len > n - o) {
        this.emit('invalid', new Error(`Invalid header length (${len}) at byte ${o} of ${n}`), buf, rinfo);
        return;
      }
      const msg: NetlinkMessage = {
        type: buf[o + 4]! | (buf[o + 5]! << 8),
        flags: buf[o + 6]! | (buf[o + 7]! << 8),
        seq: u32(buf, o + 8),
        port: u32(buf, o + 12),
        data: buf.subarray(o + NLMSG_HDRLEN, o + len),
      };
      // A handler that throws loses its own answer, not the rest of the datagram's.
      try {
        this.#handleOne(msg, rinfo);
      } catch (e) {
        this.#handlerFailed(e);
      }
      o += (len + 3) & ~3;
    }
  }

  #handleOne(msg: NetlinkMessage, rinfo: MessageInfo): void {
    const open = this.#parts.get(msg.seq);
    if (msg.type === NLMSG_DONE) {
      // DONE closes its own request's dump (some kernels leave NLM_F_MULTI off it), and carries
      // the dump's result: an error there means the dump stopped short, not that it was whole.
      this.#parts.delete(msg.seq);
      const errno = msg.data.length >= 4 ? msg.data.readInt32LE(0) : 0;
      if (errno < 0) {
        this.#fail(msg.seq, -errno, 'the dump ended with an error');
        return;
      }
      if (open) open.push(msg);
      this.emitMessage(open ?? [msg], rinfo);
    } else if (msg.flags & Flags.MULTI) {
      if (open) open.push(msg);
      else this.#parts.set(msg.seq, [msg]);
    } else if (open && msg.type === NLMSG_ERROR) {
      // An error in place of the rest of a dump: the request fails with it.
      this.#parts.delete(msg.seq);
      this.emitMessage(msg, rinfo);
    } else if (open) {
      open.push(msg); // a part without NLM_F_MULTI: still this dump's
    } else {
      this.emitMessage(msg, rinfo);
    }
  }

  #truncated(buf: Buffer, rinfo: MessageInfo): void {
    if (buf.length < 16) return;
    const seq = buf.readUInt32LE(8);
    this.#parts.delete(seq);
    this.#fail(seq, 90 /* EMSGSIZE */, `reply of ${rinfo.truncated ?? '?'} bytes truncated to ${buf.length}`);
  }

  /** Fails the request waiting for `seq`, if any, with a positive errno. */
  #fail(seq: number, errno: number, message: string): void {
    this.requests.get(seq)?.(Object.assign(new Error(message), { errno }));
  }
}

/**
 * A request's answer as NetlinkSocket.request gives it: with `checkErrors`, an error answer rejects
 * ("Request rejected: CODE") and an ACK (or no answer at all) is no message; without, the messages as they came.
 */
function settleAnswer(
  msgs: NetlinkMessage[],
  rinfo: MessageInfo,
  checkErrors: boolean,
  resolve: (r: [NetlinkMessage[], MessageInfo]) => void,
  reject: (e: Error) => void,
): void {
  if (!checkErrors) return resolve([msgs, rinfo]);
  try {
    resolve(msgs.length && !checkError(msgs[0]!) ? [msgs, rinfo] : [[], rinfo]);
  } catch (e) {
    reject(e instanceof Error ? e : new Error(String(e)));
  }
}

/** struct nlmsghdr's size. */
const NLMSG_HDRLEN = 16;

/** A little-endian u32 at `o` (netlink headers are in host order, and every node we run on is little-endian). */
const u32 = (b: Uint8Array, o: number): number =>
  (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;

function putU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = v >>> 24;
}

/**
 * One netlink message (header and payload) written into `buf` at `at`, zero-padded to the next 4-byte boundary
 * (NLMSG_ALIGN) when there is room; returns where the next one starts. The header's length is the unpadded one, as
 * the package writes it.
 */
export function frameInto(
  buf: Uint8Array,
  at: number,
  type: number,
  flags: number,
  seq: number,
  port: number,
  data: Uint8Array | Uint8Array[],
): number {
  let o = at + NLMSG_HDRLEN;
  if (data instanceof Uint8Array) {
    buf.set(data, o);
    o += data.length;
  } else
    for (const d of data) {
      buf.set(d, o);
      o += d.length;
    }
  putU32(buf, at, o - at);
  buf[at + 4] = type & 0xff;
  buf[at + 5] = (type >>> 8) & 0xff;
  buf[at + 6] = flags & 0xff;
  buf[at + 7] = (flags >>> 8) & 0xff;
  putU32(buf, at + 8, seq);
  putU32(buf, at + 12, port);
  const end = Math.min((o + 3) & ~3, buf.length);
  while (o < end) buf[o++] = 0;
  return end;
}

/** One netlink message in a buffer of its own (no trailing padding: a datagram of one message needs none). */
export function frameMessage(
  type: number,
  flags: number,
  seq: number,
  port: number,
  data: Uint8Array | Uint8Array[],
): Buffer {
  let len = NLMSG_HDRLEN;
  if (data instanceof Uint8Array) len += data.length;
  else for (const d of data) len += d.length;
  const buf = Buffer.allocUnsafe(len);
  frameInto(buf, 0, type, flags, seq, port, data);
  return buf;
}

/** A timeout waiting in Deadlines (`fire` is cleared once it fired or was cancelled). */
export interface Deadline {
  readonly at: number;
  fire: (() => void) | null;
  readonly queue: DeadlineQueue;
}

export interface DeadlineQueue {
  items: Deadline[];
  head: number;
  /** Entries not yet fired or cancelled: the timer keeps the process alive only while there are some. */
  live: number;
  timer: NodeJS.Timeout | null;
}

/**
 * Timeouts kept in order, one timer per timeout value: a socket's requests all use one or two values, so each
 * value's deadlines arrive in order and a queue (no heap) holds them. A cancelled entry is left for the timer to
 * pass over: no timer is set or cleared per request (the package's setTimeout and clearTimeout per request showed
 * in the churn profile). What a fired callback throws goes to `onError`; the rest still fire.
 */
export class Deadlines {
  readonly #queues = new Map<number, DeadlineQueue>();
  readonly #onError: (e: unknown) => void;

  constructor(onError: (e: unknown) => void) {
    this.#onError = onError;
  }

  add(ms: number, fire: () => void): Deadline {
    let q = this.#queues.get(ms);
    if (!q) this.#queues.set(ms, (q = { items: [], head: 0, live: 0, timer: null }));
    const d: Deadline = { at: performance.now() + ms, fire, queue: q };
    q.items.push(d);
    if (q.live++ === 0) q.timer?.ref();
    if (!q.timer) this.#arm(ms, q);
    return d;
  }

  /** `d` will not fire (its request settled first). */
  cancel(d: Deadline): void {
    if (d.fire === null) return;
    d.fire = null;
    const q = d.queue;
    // Nothing waits on this queue any more: its timer stays set, but no longer holds the process.
    if (--q.live === 0) q.timer?.unref();
  }

  /** Deadlines neither fired nor cancelled. */
  get live(): number {
    let n = 0;
    for (const q of this.#queues.values()) n += q.live;
    return n;
  }

  /** Entries held, cancelled ones included until the timer passes them (for tests). */
  get held(): number {
    let n = 0;
    for (const q of this.#queues.values()) n += q.items.length - q.head;
    return n;
  }

  #arm(ms: number, q: DeadlineQueue): void {
    while (q.head < q.items.length && q.items[q.head]!.fire === null) q.head++;
    if (q.head >= q.items.length) {
      q.items = [];
      q.head = 0;
      q.timer = null;
      return;
    }
    if (q.head > 1024 && q.head * 2 > q.items.length) {
      q.items = q.items.slice(q.head);
      q.head = 0;
    }
    const wait = Math.max(0, Math.ceil(q.items[q.head]!.at - performance.now()));
    q.timer = setTimeout(() => this.#expire(ms, q), wait);
    if (q.live === 0) q.timer.unref();
  }

  #expire(ms: number, q: DeadlineQueue): void {
    const now = performance.now();
    while (q.head < q.items.length) {
      const d = q.items[q.head]!;
      if (d.fire !== null && d.at > now) break;
      q.head++;
      const f = d.fire;
      if (!f) continue;
      d.fire = null;
      q.live--;
      try {
        f();
      } catch (e) {
        this.#onError(e);
      }
    }
    this.#arm(ms, q);
  }
}

/**
 * What the kernel's answer to a request takes of the receive buffer, over-estimated: an ACK or error carries the
 * request back (no NETLINK_CAP_ACK) after its 16-byte header and 4-byte error, and the buffer counts a message's
 * whole allocation (data rounded up, the skb's shared info and its struct: about 1 KiB for a small one).
 */
export function replyCost(data: Uint8Array | Uint8Array[]): number {
  const len = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.length;
  return 2 * (len + 36) + 1024;
}

function rawSocket(protocol: number, o: SocketOptions): RawSocket {
  if (o.raw) return o.raw;
  const opts = o.readBufferBytes ? { messagePeeking: false, msgBufferSize: o.readBufferBytes } : {};
  return new RawNetlinkSocket(protocol, opts as ConstructorParameters<typeof RawNetlinkSocket>[1]);
}

const demux = (protocol: number, o: SocketOptions) => new DemuxNetlinkSocket(rawSocket(protocol, o));

export function openGenericNetlink(o: SocketOptions = {}): GenericNetlinkSocket {
  return new GenericNetlinkSocket(demux(Protocol.GENERIC, o));
}

export function openRtNetlink(o: SocketOptions = {}): RtNetlinkSocket {
  return new RtNetlinkSocket(demux(Protocol.ROUTE, o));
}

/** A NETLINK_NETFILTER socket (nfnetlink: ipset), replies matched to requests as above. */
export function openNetfilterNetlink(o: SocketOptions = {}): DemuxNetlinkSocket {
  return demux(Protocol.NETFILTER, o);
}
