// Netlink sockets for the IPVS (generic netlink) and link (rtnetlink) clients, with replies matched
// to requests by sequence number. The `netlink` package's NetlinkSocket keeps one multipart buffer
// per socket and closes it on the first message that is not part of it: the ACK of a change sent
// while a dump runs on the same socket (the kernel queues it between two chunks of the dump) ended
// the dump early as "Multipart message not terminated properly", and the reconciler, which lists a
// service's destinations while it changes another's, read that as a failed sync. Here every
// request's parts are kept apart by sequence number, whatever arrives in between.
import {
  Flags,
  FlagsGet,
  formatMessage,
  GenericNetlinkSocket,
  MessageType,
  NetlinkSocket,
  Protocol,
  RawNetlinkSocket,
  RtNetlinkSocket,
  type ErrnoException,
  type MessageInfo,
  type NetlinkMessage,
  type NetlinkSendOptions,
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
  /** Send each message in its own datagram (no batching; tests compare the two). */
  unbatched?: boolean;
}

/** A batch's bounds: the kernel answers each message on its own, so the replies of one batch arrive together. */
export const BATCH_MAX_MESSAGES = 64;
export const BATCH_MAX_BYTES = 32 * 1024;

type SendCallback = (error?: ErrnoException) => void;

/** A dump's parts carry NLM_F_DUMP_INTR when the kernel's table changed while it was dumped. */
export const NLM_F_DUMP_INTR = 0x10;

/** NetlinkSocket with replies grouped per request (sequence number), not one buffer per socket. */
export class DemuxNetlinkSocket extends NetlinkSocket {
  /** Dumps in progress: sequence number -> the parts received so far. */
  readonly #parts = new Map<number, NetlinkMessage[]>();

  /** Failed reads (ENOBUFS: the kernel dropped replies because the receive queue was full...). */
  receiveErrors = 0;
  /** Datagrams sent, and the messages they carried (one datagram holds a batch). */
  datagramsSent = 0;
  messagesSent = 0;

  /**
   * Messages to the kernel waiting for this event-loop turn's end: sent together, several per
   * datagram. The kernel's netlink input (netlink_rcv_skb) handles the messages of one datagram in
   * order and answers each with its own ACK or error by sequence number, as if sent apart; what
   * batching saves is a send system call and a native round trip per message (a pool of 32 requests
   * answered in one read issues its next 32 in one turn).
   */
  readonly #batching: boolean;
  #pending: { msg: Buffer; cb: SendCallback | undefined }[] = [];
  #pendingBytes = 0;
  #flushScheduled = false;

  constructor(raw: RawSocket, opts: { unbatched?: boolean } = {}) {
    super(raw);
    this.#batching = !opts.unbatched;
    // A datagram larger than the read buffer is lost past the buffer: fail its request at once
    // (EMSGSIZE) rather than let it wait for a DONE that was cut off.
    raw.on('truncatedMessage', (buf: Buffer, rinfo: MessageInfo) => this.#guard(() => this.#truncated(buf, rinfo)));
    // NetlinkSocket re-emits its raw socket's errors; unheard, an 'error' event throws, and it is
    // emitted from the native read callback: the process aborted ("terminate called after throwing
    // an instance of 'Napi::Error'"), seen in the lab under load (a full resync beside an endpoint
    // churn). A failed read may have lost any reply: every waiting request fails with it (the
    // reconciler counts and retries them like any kernel error), and the socket goes on.
    this.on('error', (e: unknown) => this.#guard(() => this.#receiveFailed(e)));
  }

  /** Exceptions thrown by what handled a reply (a listener, a request's callback), caught at the native boundary. */
  handlerErrors = 0;
  lastHandlerError: Error | null = null;

  /**
   * Runs `f`, which the native binding called: an exception leaving it is thrown across the addon's C++ frame,
   * which ends the process (std::terminate: "terminate called after throwing an instance of 'Napi::Error'", seen in
   * the lab under an endpoint churn). Here it is counted and written to stderr as a process warning instead; a
   * request whose answer was lost with it fails at its timeout, and the reconciler retries it like any kernel error.
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

  override send(
    type: number,
    data: Uint8Array | Uint8Array[],
    options?: NetlinkSendOptions,
    callback?: SendCallback,
  ): number {
    // Addressed elsewhere than the kernel, or a dump (the kernel runs one per socket: sent alone,
    // after what was queued before it), or batching off: as the package sends it.
    const DUMP: number = FlagsGet.DUMP;
    const dump = ((options?.flags ?? 0) & DUMP) === DUMP;
    if (!this.#batching || options?.port || options?.groups || dump) {
      this.#flush();
      this.datagramsSent++;
      this.messagesSent++;
      return super.send(type, data, options, callback);
    }
    const seq = options?.seq ?? this.generateSeq();
    const port = options?.localPort ?? this.socket.address().port;
    const msg = Buffer.concat(formatMessage({ type, flags: Number(options?.flags ?? 0), seq, port, data }));
    if (
      this.#pending.length >= BATCH_MAX_MESSAGES ||
      (this.#pending.length > 0 && this.#pendingBytes + msg.length > BATCH_MAX_BYTES)
    )
      this.#flush();
    this.#pending.push({ msg, cb: callback });
    this.#pendingBytes += msg.length;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // After the poll phase: every reply read in this turn has issued its follow-up by then.
      setImmediate(() => {
        this.#flushScheduled = false;
        this.#flush();
      });
    }
    return seq;
  }

  /** Sends what is queued, as one datagram; a failed send fails each message's request. */
  #flush(): void {
    if (this.#pending.length === 0) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.datagramsSent++;
    this.messagesSent += batch.length;
    const buf = batch.length === 1 ? batch[0]!.msg : Buffer.concat(batch.map((b) => b.msg));
    try {
      this.socket.send(buf, {}, (error) =>
        this.#guard(() => {
          for (const b of batch) b.cb?.(error);
        }),
      );
    } catch (e) {
      // A closed socket throws: each request fails as its send callback would have made it.
      for (const b of batch) b.cb?.(e as ErrnoException);
    }
  }

  /** Requests waiting for their answer (for tests and diagnostics). */
  get waiting(): number {
    return this.requests.size;
  }

  /** Dumps whose parts are still arriving (for tests and diagnostics). */
  get openDumps(): number {
    return this.#parts.size;
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

function rawSocket(protocol: number, o: SocketOptions): RawSocket {
  if (o.raw) return o.raw;
  const opts = o.readBufferBytes ? { messagePeeking: false, msgBufferSize: o.readBufferBytes } : {};
  return new RawNetlinkSocket(protocol, opts as ConstructorParameters<typeof RawNetlinkSocket>[1]);
}

const demux = (protocol: number, o: SocketOptions) =>
  new DemuxNetlinkSocket(rawSocket(protocol, o), { unbatched: o.unbatched ?? false });

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
