// Probes from the node to an endpoint: a TCP connect, or an HTTP GET (200-399 is healthy), each
// with a timeout, and their in-memory twin. A probe never throws: every outcome is a result with
// a short reason (what the log, the metrics and `kube-ipvs status` show).
import { request } from 'node:http';
import { connect } from 'node:net';

export interface ProbeTarget {
  kind: 'tcp' | 'http';
  address: string;
  port: number;
  /** HTTP only. */
  path: string;
}

export interface ProbeResult {
  ok: boolean;
  /** 'ok', 'connection refused', 'timeout', 'host unreachable', 'HTTP 503'... */
  reason: string;
  ms: number;
}

export interface Prober {
  probe(t: ProbeTarget, timeoutMs: number): Promise<ProbeResult>;
}

const REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'timeout',
  EADDRNOTAVAIL: 'address not available',
  EPIPE: 'connection reset',
};
const reasonOf = (e: unknown) =>
  REASONS[(e as NodeJS.ErrnoException).code ?? ''] ??
  `error ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;

/** The most of an HTTP answer read: the status line is what counts. */
const MAX_BODY = 64 * 1024;

export class SocketProber implements Prober {
  probe(t: ProbeTarget, timeoutMs: number): Promise<ProbeResult> {
    return t.kind === 'tcp' ? this.#tcp(t, timeoutMs) : this.#http(t, timeoutMs);
  }

  #tcp(t: ProbeTarget, timeoutMs: number): Promise<ProbeResult> {
    const started = performance.now();
    return new Promise((resolve) => {
      const s = connect({ host: t.address, port: t.port });
      let done = false;
      const finish = (ok: boolean, reason: string) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        // A reset, not a FIN: no TIME_WAIT left on the node for every probe.
        s.resetAndDestroy();
        resolve({ ok, reason, ms: performance.now() - started });
      };
      const timer = setTimeout(() => finish(false, 'timeout'), timeoutMs);
      s.once('connect', () => finish(true, 'ok'));
      s.once('error', (e) => finish(false, reasonOf(e)));
    });
  }

  #http(t: ProbeTarget, timeoutMs: number): Promise<ProbeResult> {
    const started = performance.now();
    return new Promise((resolve) => {
      let done = false;
      const finish = (ok: boolean, reason: string) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        req.destroy();
        resolve({ ok, reason, ms: performance.now() - started });
      };
      const host = t.address.includes(':') ? `[${t.address}]:${t.port}` : `${t.address}:${t.port}`;
      const req = request(
        {
          host: t.address,
          port: t.port,
          path: t.path,
          method: 'GET',
          agent: false,
          headers: { Host: host, 'User-Agent': 'kube-ipvs-health/1', Accept: '*/*', Connection: 'close' },
        },
        (res) => {
          const code = res.statusCode ?? 0;
          let read = 0;
          res.on('data', (c: Buffer) => {
            read += c.length;
            if (read > MAX_BODY) res.destroy();
          });
          res.on('error', () => {});
          finish(code >= 200 && code < 400, code >= 200 && code < 400 ? 'ok' : `HTTP ${code}`);
        },
      );
      const timer = setTimeout(() => finish(false, 'timeout'), timeoutMs);
      req.on('error', (e) => finish(false, reasonOf(e)));
      req.end();
    });
  }
}

/** In memory: each target answers what `behave` says (default: healthy); calls are recorded. */
export class FakeProber implements Prober {
  readonly calls: { target: string; at: number }[] = [];
  /** "address:port" -> result (or a function of the call number). */
  readonly answers = new Map<string, Omit<ProbeResult, 'ms'> | ((n: number) => Omit<ProbeResult, 'ms'>)>();
  readonly #n = new Map<string, number>();
  readonly #now: () => number;
  constructor(now: () => number = Date.now) {
    this.#now = now;
  }
  async probe(t: ProbeTarget): Promise<ProbeResult> {
    const key = `${t.address}:${t.port}`;
    const n = (this.#n.get(key) ?? 0) + 1;
    this.#n.set(key, n);
    this.calls.push({ target: key, at: this.#now() });
    const a = this.answers.get(key);
    const r = typeof a === 'function' ? a(n) : (a ?? { ok: true, reason: 'ok' });
    return { ...r, ms: 1 };
  }
}
