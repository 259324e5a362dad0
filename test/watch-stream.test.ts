// The watch stream reader (src/sources/watch-stream.ts) against a plain HTTP server that answers as
// the API server does, and as a hostile or broken one might: events cut at any byte (inside a
// multi-byte character too), lines that are not events, a handler that throws, a status other than
// 200, silence, a dropped connection, an endless line. The Kubernetes source's tests run it against
// a real API server (test/kubernetes.test.ts).
import t from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LineSplitter, openWatch, type WatchConfig } from '../src/sources/watch-stream.ts';

/** A server whose handler is set per test; the kubeconfig stand-in adds a bearer token, as applyToHTTPSOptions does. */
async function server(
  t: { teardown: (f: () => void) => void },
  handler: (req: IncomingMessage, res: ServerResponse) => void,
) {
  const s = createServer(handler);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    s.closeAllConnections();
    s.close();
  });
  const kc: WatchConfig = {
    getCurrentCluster: () => ({ server: `http://127.0.0.1:${(s.address() as AddressInfo).port}` }),
    applyToHTTPSOptions: async (o) => {
      o.headers = { ...(o.headers as Record<string, string>), Authorization: 'Bearer test-token' };
    },
  };
  return kc;
}

interface Run {
  events: [string, unknown][];
  problems: string[];
  done: Promise<unknown>;
  doneCalls: () => number;
  abort: () => void;
}

async function run(
  kc: WatchConfig,
  opts: { idleTimeoutMs?: number; connectTimeoutMs?: number; maxLineBytes?: number; throwOn?: string } = {},
) {
  const events: [string, unknown][] = [];
  const problems: string[] = [];
  let calls = 0;
  let resolve!: (e: unknown) => void;
  const done = new Promise<unknown>((r) => (resolve = r));
  const handle = await openWatch(
    kc,
    '/api/v1/services',
    { resourceVersion: '42', labelSelector: 'a!=b', fieldSelector: undefined },
    (type, obj) => {
      if (opts.throwOn && (obj as { name?: string })?.name === opts.throwOn) throw new Error('handler bug');
      events.push([type, obj]);
    },
    (err) => {
      calls++;
      resolve(err);
    },
    {
      idleTimeoutMs: opts.idleTimeoutMs ?? 5000,
      connectTimeoutMs: opts.connectTimeoutMs,
      maxLineBytes: opts.maxLineBytes,
      problem: (what) => problems.push(what),
    },
  );
  return { events, problems, done, doneCalls: () => calls, abort: () => handle.abort() } satisfies Run;
}

const line = (type: string, name: string) => JSON.stringify({ type, object: { name } }) + '\n';

t.test('LineSplitter: any cut of the bytes gives the same lines, multi-byte characters whole', async (t) => {
  const lines = ['{"a":"ä€𝄞"}', '', 'x'.repeat(300), '{"b":"\\n"}', 'ü'];
  const bytes = Buffer.from(lines.join('\n') + '\n');
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
  for (let round = 0; round < 300; round++) {
    const s = new LineSplitter(1 << 20);
    const got: string[] = [];
    let refused = 0;
    for (let i = 0; i < bytes.length;) {
      const n = 1 + rand(round % 3 === 0 ? 4 : 64);
      if (!s.push(bytes.subarray(i, i + n), (l) => got.push(l))) refused++;
      i += n;
    }
    t.equal(refused, 0, 'no line refused');
    if (
      !t.same(
        got,
        lines.filter((l) => l !== ''),
        `round ${round}`,
      )
    )
      break;
    t.equal(s.pending, 0);
  }
});

t.test('LineSplitter: a line past the bound is refused, in one chunk or across several', async (t) => {
  const one = new LineSplitter(10);
  t.equal(
    one.push(Buffer.from('0123456789A\n'), () => t.fail('no line')),
    false,
  );
  const across = new LineSplitter(10);
  t.equal(
    across.push(Buffer.from('012345'), () => {}),
    true,
  );
  t.equal(
    across.push(Buffer.from('6789AB'), () => {}),
    false,
  );
  t.equal(across.pending, 0, 'nothing kept after the refusal');
  const ok = new LineSplitter(10);
  const got: string[] = [];
  t.equal(
    ok.push(Buffer.from('0123456789\n'), (l) => got.push(l)),
    true,
  );
  t.same(got, ['0123456789'], 'a line at the bound is fine');
});

t.test('events cut at odd bytes arrive whole; bad lines and a failing handler are reported, not fatal', async (t) => {
  let seen: IncomingMessage | null = null;
  const kc = await server(t, (req, res) => {
    seen = req;
    res.writeHead(200, { 'content-type': 'application/json' });
    const body = Buffer.from(
      line('ADDED', 'ä-one') +
        'this is not json\n' +
        '{"object":{"name":"no-type"}}\n' +
        '[1,2]\n' +
        line('MODIFIED', 'boom') +
        line('BOOKMARK', 'two') +
        line('DELETED', '€-three'),
    );
    // Cut inside the multi-byte characters too, one write at a time.
    let i = 0;
    const tick = () => {
      if (i >= body.length) return res.end();
      res.write(body.subarray(i, i + 3));
      i += 3;
      setImmediate(tick);
    };
    tick();
  });
  const r = await run(kc, { throwOn: 'boom' });
  t.equal(await r.done, null, 'the server ended the stream: done(null)');
  t.same(r.events, [
    ['ADDED', { name: 'ä-one' }],
    ['BOOKMARK', { name: 'two' }],
    ['DELETED', { name: '€-three' }],
  ]);
  t.same(r.problems, [
    'an event that is not JSON',
    'an event without a type',
    'an event without a type',
    'the event handler failed',
  ]);
  const req = seen as IncomingMessage | null;
  t.equal(req?.headers.authorization, 'Bearer test-token', 'the credentials applied');
  const q = new URL(req?.url ?? '/', 'http://x').searchParams;
  t.equal(q.get('watch'), 'true');
  t.equal(q.get('resourceVersion'), '42');
  t.equal(q.get('labelSelector'), 'a!=b');
  t.equal(q.has('fieldSelector'), false, 'an undefined parameter is left out');
  await new Promise((r) => setTimeout(r, 20));
  t.equal(r.doneCalls(), 1, 'done once');
});

t.test("a status other than 200 fails with its code and the Status' message", async (t) => {
  const kc = await server(t, (_req, res) => {
    res.writeHead(410, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', code: 410, message: 'too old resource version: 42 (99)' }));
  });
  const r = await run(kc);
  const err = (await r.done) as Error & { statusCode?: number };
  t.equal(err.statusCode, 410, 'ListWatch relists on statusCode 410');
  t.match(err.message, /HTTP 410 Gone: too old resource version/);
  t.same(r.events, []);
});

t.test('silence past the idle timeout ends the watch with a TimeoutError', async (t) => {
  const kc = await server(t, (_req, res) => {
    res.writeHead(200);
    res.write(line('ADDED', 'one'));
  });
  const t0 = Date.now();
  const r = await run(kc, { idleTimeoutMs: 300 });
  const err = (await r.done) as Error;
  t.equal(err.name, 'TimeoutError', 'ListWatch reconnects at once on this name');
  t.ok(Date.now() - t0 >= 250, 'not before the timeout');
  t.same(r.events, [['ADDED', { name: 'one' }]]);
});

t.test('a server that never answers is given up after the connect timeout, not the longer idle one', async (t) => {
  const kc = await server(t, () => {
    /* the request is read, nothing is ever answered */
  });
  const t0 = Date.now();
  const r = await run(kc, { connectTimeoutMs: 200, idleTimeoutMs: 5000 });
  const err = (await r.done) as Error;
  t.equal(err.name, 'TimeoutError');
  const took = Date.now() - t0;
  t.ok(took >= 150 && took < 2000, `given up after ${took} ms`);
});

t.test('once the response has begun, quiet shorter than the idle timeout does not end the watch', async (t) => {
  const kc = await server(t, (_req, res) => {
    res.writeHead(200);
    res.write(line('ADDED', 'one'));
    setTimeout(() => res.write(line('BOOKMARK', 'b')), 600);
    setTimeout(() => res.end(), 700);
  });
  const r = await run(kc, { connectTimeoutMs: 200, idleTimeoutMs: 2000 });
  t.equal(await r.done, null, 'ended by the server, not by a timeout');
  t.same(r.events, [
    ['ADDED', { name: 'one' }],
    ['BOOKMARK', { name: 'b' }],
  ]);
});

t.test('abort() ends it with an AbortError, once, and closes the connection', async (t) => {
  let closed!: () => void;
  const serverSawClose = new Promise<void>((r) => (closed = r));
  const kc = await server(t, (req, res) => {
    res.writeHead(200);
    res.write(line('ADDED', 'one'));
    req.socket.on('close', () => closed());
  });
  const r = await run(kc);
  while (r.events.length === 0) await new Promise((res) => setTimeout(res, 5));
  r.abort();
  t.equal(r.doneCalls(), 0, 'done is called asynchronously, not from inside abort()');
  t.equal(((await r.done) as Error).name, 'AbortError');
  await serverSawClose;
  r.abort();
  await new Promise((res) => setTimeout(res, 20));
  t.equal(r.doneCalls(), 1, 'a second abort() calls nothing');
});

t.test('a connection dropped mid-stream is an error (ListWatch backs off), not a clean end', async (t) => {
  const kc = await server(t, (req, res) => {
    res.writeHead(200);
    res.write(line('ADDED', 'one'));
    setTimeout(() => req.socket.destroy(), 50);
  });
  const r = await run(kc);
  const err = await r.done;
  t.ok(err instanceof Error, `an error: ${String(err)}`);
  t.same(r.events, [['ADDED', { name: 'one' }]]);
});

t.test('an endless line ends the watch at the bound instead of growing without limit', async (t) => {
  const kc = await server(t, (_req, res) => {
    res.writeHead(200);
    const junk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const more = () => {
      if (res.destroyed || sent > 64) return;
      sent++;
      res.write(junk, () => setImmediate(more));
    };
    more();
  });
  const r = await run(kc, { maxLineBytes: 1 << 20 });
  const err = (await r.done) as Error;
  t.match(err.message, /longer than 1048576 bytes/);
});
