// Netlink sockets for the IPVS (generic netlink) and link (rtnetlink) clients, with replies matched
// to requests by sequence number. The `netlink` package's NetlinkSocket keeps one multipart buffer
// per socket and closes it on the first message that is not part of it: the ACK of a change sent
// while a dump runs on the same socket (the kernel queues it between two chunks of the dump) ended
// the dump early as "Multipart message not terminated properly", and the reconciler, which lists a
// service's destinations while it changes another's, read that as a failed sync. Here every
// request's parts are kept apart by sequence number, whatever arrives in between.
import {
  checkError,
  Flags,
  FlagsGet,
  formatMessage,
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
    super(raw);
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
      this.handlerErrors++;
      this.lastHandlerError = e instanceof Error ? e : new Error(String(e));
      process.emitWarning(
        `a netlink reply's handler threw (${this.handlerErrors} so far): ${this.lastHandlerError.stack ?? this.lastHandlerError.message}`,
        'KubeIpvsNetlinkWarning',
      );
    }
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
    const send = () => super.request(type, data, options).finally(() => this.#release(cost));
    // The first request always goes, whatever its size: alone it cannot overflow what it was sized for.
    if (this.#admits(cost)) {
      this.#take(cost);
      return send();
    }
    return new Promise<void>((go) => this.#waiting.push({ cost, go })).then(send);
  }

  /**
   * As NetlinkSocket.send, with the socket's own port read once: the package asks the native socket for it at every
   * send (a getsockname system call), which showed in the daemon's profile under endpoint churn.
   */
  override send(
    type: number,
    data: Uint8Array | Uint8Array[],
    options?: NetlinkSendOptions,
    callback?: Parameters<NetlinkSocket['send']>[3],
  ): number {
    const localPort = options?.localPort ?? (this.#port ??= this.socket.address().port);
    return super.send(type, data, { ...options, localPort }, callback);
  }

  /** Changes waiting for the end of this event-loop turn, to be sent in batches. */
  #pending: Batched[] = [];
  #flushScheduled = false;
  /** The socket's own port, for the messages' headers (read once: the native call is a system call). */
  #port: number | null = null;

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
    let timer: NodeJS.Timeout | undefined;
    const fail = (i: number, e: Error) => {
      if (settled[i]) return;
      settled[i] = true;
      batch[i]!.reject(e);
    };
    const answer = (i: number, msgs: NetlinkMessage[], rinfo: MessageInfo) => {
      if (settled[i]) return;
      settled[i] = true;
      const b = batch[i]!;
      if (b.options.checkError === false) return b.resolve([msgs, rinfo]);
      try {
        // As NetlinkSocket.request: an error answer rejects; an ACK (or no answer at all) is no message.
        b.resolve(msgs.length && !checkError(msgs[0]!) ? [msgs, rinfo] : [[], rinfo]);
      } catch (e) {
        b.reject(e as Error);
      }
    };
    const finish = (e: Error | null, rinfo?: MessageInfo) => {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      for (let i = 0; i <= last; i++) {
        if (e) fail(i, e);
        else answer(i, [], rinfo!);
      }
      for (const seq of seqs) if (this.requests.has(seq)) this.dropRef(seq);
      this.#release(cost);
    };
    this.#port ??= this.socket.address().port;
    const bufs: Uint8Array[] = [];
    for (let i = 0; i <= last; i++) {
      const b = batch[i]!;
      const seq = this.generateSeq();
      seqs.push(seq);
      const flags = (Number(b.options.flags ?? 0) & ~Flags.ACK) | Flags.REQUEST | (i === last ? Flags.ACK : 0);
      bufs.push(...formatMessage({ type: b.type, flags, seq, port: this.#port, data: b.data }));
      if (b.bytes % 4) bufs.push(new Uint8Array(4 - (b.bytes % 4)));
      this.makeRef(seq, (err, msgs, rinfo) => {
        if (err) fail(i, err);
        else answer(i, msgs ?? [], rinfo!);
        // The last message's answer comes after every earlier one's (in order, on one socket): the batch is done.
        // A transport failure there (a lost read) leaves the earlier ones' fate unknown: they fail with it.
        if (i === last) finish(err, rinfo);
      });
    }
    const timeout = Math.max(0, ...batch.map((b) => b.options.timeout ?? 0));
    if (timeout > 0) timer = setTimeout(() => finish(new Error('Timeout has been reached')), timeout);
    this.batchesSent++;
    this.batchedMessages += batch.length;
    try {
      this.socket.send(Buffer.concat(bufs), {}, (error) => {
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

  protected override handleMessages(msgs: NetlinkMessage[], rinfo: MessageInfo): void {
    // One guard per message: a handler that throws loses its own answer, not the rest of the datagram's.
    for (const msg of msgs) this.#guard(() => this.#handleOne(msg, rinfo));
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
