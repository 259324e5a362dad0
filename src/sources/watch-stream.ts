// One watch request to the API server, read as newline-delimited JSON events.
//
// Replaces the client library's Watch.watch (which ListWatch calls): that one reads the body
// through undici's fetch, a web ReadableStream, Readable.fromWeb and readline, resets a timer per
// chunk, and drops silently both a line that is not JSON and an exception thrown by the handler.
// Here: node:https (the kubeconfig's TLS, credentials and proxy applied by the library's own
// applyToHTTPSOptions), the socket's idle timeout, and lines cut from the response's Buffers.
// A line that is not a JSON object, a handler that throws, a line longer than the bound: each is
// reported through `problem` (the caller logs and counts it); an over-long line ends the watch.
import http from 'node:http';
import https from 'node:https';

/** What ListWatch needs of a KubeConfig here. */
export interface WatchConfig {
  getCurrentCluster(): { server: string } | null;
  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void>;
}

export interface WatchOptions {
  /** No byte for this long, once the response has begun, ends the watch with a TimeoutError. */
  idleTimeoutMs: number;
  /** No response (status line and headers) this long after the request: a TimeoutError. Default: idleTimeoutMs. */
  connectTimeoutMs?: number;
  /** Longest event line accepted (bytes). An object is at most ~1.5 MiB in etcd; the bound is far above it. */
  maxLineBytes?: number;
  /** A line that could not be used, or a handler that threw (the watch goes on). */
  problem(what: string, detail: string): void;
}

export const DEFAULT_MAX_LINE_BYTES = 32 * 1024 * 1024;

/**
 * Cuts a byte stream into lines (LF; a trailing CR is left to JSON.parse, which allows it as
 * whitespace). A line split across chunks is joined before it is decoded, so a multi-byte
 * character cut in two decodes whole.
 */
export class LineSplitter {
  readonly #max: number;
  #parts: Buffer[] = [];
  #partBytes = 0;
  constructor(maxLineBytes: number) {
    this.#max = maxLineBytes;
  }

  /** Calls `line` for each complete line; returns false (and keeps nothing) once a line exceeds the bound. */
  push(chunk: Buffer, line: (text: string) => void): boolean {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      let text: string;
      if (this.#parts.length === 0) {
        if (nl - start > this.#max) return this.#overflow();
        text = chunk.toString('utf8', start, nl);
      } else {
        if (this.#partBytes + (nl - start) > this.#max) return this.#overflow();
        this.#parts.push(chunk.subarray(start, nl));
        text = Buffer.concat(this.#parts).toString('utf8');
        this.#parts = [];
        this.#partBytes = 0;
      }
      start = nl + 1;
      if (text.length > 0) line(text);
    }
    if (start < chunk.length) {
      const rest = chunk.length - start;
      if (this.#partBytes + rest > this.#max) return this.#overflow();
      // A copy: the chunk's memory may be a slice of a larger pooled buffer.
      this.#parts.push(Buffer.from(chunk.subarray(start)));
      this.#partBytes += rest;
    }
    return true;
  }

  /** Bytes of an unfinished line held. */
  get pending(): number {
    return this.#partBytes;
  }

  #overflow(): false {
    this.#parts = [];
    this.#partBytes = 0;
    return false;
  }
}

export type WatchEventHandler = (type: string, object: unknown, event: unknown) => void;

const timeoutError = () => Object.assign(new Error('the watch was idle past its timeout'), { name: 'TimeoutError' });
const abortError = () => Object.assign(new Error('the watch was stopped'), { name: 'AbortError' });

/**
 * Opens `path?watch=true&...query` and calls `onEvent` for each event; `done` is called exactly
 * once, asynchronously: null when the server ended the stream, else the error (`statusCode` set
 * for an HTTP status other than 200; name TimeoutError after the idle timeout; name AbortError
 * after abort()). Resolves to the handle ListWatch keeps (abort()).
 */
export async function openWatch(
  kc: WatchConfig,
  path: string,
  query: Record<string, string | number | boolean | undefined>,
  onEvent: WatchEventHandler,
  done: (err: unknown) => void,
  opts: WatchOptions,
): Promise<{ abort(): void }> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const url = new URL(cluster.server + path);
  url.searchParams.set('watch', 'true');
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
  const reqOpts: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
  await kc.applyToHTTPSOptions(reqOpts);
  const transport = url.protocol === 'http:' ? http : https;

  let finished = false;
  // Called only from the request's own callbacks and abort(), after `req` below exists.
  const finish = (err: unknown) => {
    if (finished) return;
    finished = true;
    req.destroy();
    process.nextTick(done, err);
  };
  const splitter = new LineSplitter(opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
  const line = (text: string) => {
    let event: { type?: unknown; object?: unknown };
    try {
      event = JSON.parse(text) as typeof event;
    } catch (e) {
      opts.problem('an event that is not JSON', `${(e as Error).message}; ${text.length} characters`);
      return;
    }
    if (event === null || typeof event !== 'object' || typeof event.type !== 'string') {
      opts.problem('an event without a type', `${text.length} characters`);
      return;
    }
    try {
      onEvent(event.type, event.object, event);
    } catch (e) {
      opts.problem('the event handler failed', (e as Error)?.stack ?? String(e));
    }
  };

  const req = transport.request(url, reqOpts, (res) => {
    req.setTimeout(opts.idleTimeoutMs); // from here on, the idle timeout
    if (res.statusCode !== 200) {
      // The Status the API server sends says why; a bounded part of it is kept.
      const parts: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        if (bytes < 4096) parts.push(c);
        bytes += c.length;
      });
      res.on('end', () => {
        let why = '';
        try {
          const s = JSON.parse(Buffer.concat(parts).subarray(0, 4096).toString('utf8')) as { message?: unknown };
          if (typeof s?.message === 'string') why = `: ${s.message.slice(0, 300)}`;
        } catch {
          /* not a Status: the status line says enough */
        }
        const code = res.statusCode ?? 0;
        finish(
          Object.assign(new Error(`watch ${path}: HTTP ${code} ${http.STATUS_CODES[code] ?? ''}${why}`.trimEnd()), {
            statusCode: code,
          }),
        );
      });
      res.on('error', finish);
      return;
    }
    res.on('data', (c: Buffer) => {
      if (finished) return;
      if (!splitter.push(c, line)) {
        finish(
          new Error(`watch ${path}: an event line longer than ${opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES} bytes`),
        );
      }
    });
    res.on('end', () => finish(null));
    res.on('error', finish);
    // Closed without an end (the connection dropped mid-body): an error, so ListWatch backs off.
    res.on('close', () => finish(res.complete ? null : new Error(`watch ${path}: the connection closed mid-stream`)));
  });
  req.setTimeout(opts.connectTimeoutMs ?? opts.idleTimeoutMs, () => finish(timeoutError()));
  req.on('error', finish);
  req.end();
  return { abort: () => finish(abortError()) };
}
