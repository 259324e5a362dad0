// A real etcd and kube-apiserver on loopback, built from upstream modules by test/k8s/build.sh
// (in the test set-up, test/setup.ts). Token authentication, AlwaysAllow authorization, no
// controller-manager (tests create EndpointSlices themselves), no endpoint reconciler (loopback is
// not a routable address). Both die with the test process, however it ends (support/owned.ts).
import type { ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnOwned } from './owned.ts';

const freePort = () =>
  new Promise<number>((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
    s.on('error', rej);
  });

export { k8sBinaries } from './setup-state.ts';

export class ApiServer {
  readonly dir: string;
  readonly bin: string;
  readonly token = randomBytes(16).toString('hex');
  etcdPort = 0;
  apiPort = 0;
  #etcd: ChildProcess | null = null;
  #api: ChildProcess | null = null;
  log = '';

  /** --authorization-mode (AlwaysAllow, or Node,RBAC where a test shows what a role lets through). */
  readonly authorization: string;

  constructor(bin: string, opts: { authorization?: string } = {}) {
    this.bin = bin;
    this.authorization = opts.authorization ?? 'AlwaysAllow';
    this.dir = mkdtempSync(join(tmpdir(), 'kipvs-apiserver-'));
  }

  get url(): string {
    return `https://127.0.0.1:${this.apiPort}`;
  }

  /** A kubeconfig for the test client (token, no TLS verification: the serving cert is self-signed). */
  kubeconfig(token = this.token, name = 'kubeconfig'): string {
    const file = join(this.dir, name);
    writeFileSync(
      file,
      `apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "${this.url}", insecure-skip-tls-verify: true}}]
users: [{name: test, user: {token: "${token}"}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`,
    );
    return file;
  }

  async start(): Promise<void> {
    // A test process that exits without its teardown (an uncaught error) still stops them.
    process.once('exit', this.#killNow);
    this.etcdPort = await freePort();
    const peer = await freePort();
    this.apiPort = await freePort();
    mkdirSync(join(this.dir, 'etcd'), { recursive: true });
    this.#etcd = spawnOwned(
      join(this.bin, 'etcd'),
      [
        '--name=test',
        `--data-dir=${join(this.dir, 'etcd')}`,
        `--listen-client-urls=http://127.0.0.1:${this.etcdPort}`,
        `--advertise-client-urls=http://127.0.0.1:${this.etcdPort}`,
        `--listen-peer-urls=http://127.0.0.1:${peer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
        `--initial-cluster=test=http://127.0.0.1:${peer}`,
        '--log-level=error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.#etcd.stderr!.on('data', (d) => (this.log = (this.log + d.toString()).slice(-20000)));
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(this.dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(join(this.dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(join(this.dir, 'tokens.csv'), `${this.token},admin,admin,"system:masters"\n`);
    await this.startApiServer();
  }

  async startApiServer(): Promise<void> {
    this.#api = spawnOwned(
      join(this.bin, 'kube-apiserver'),
      [
        `--etcd-servers=http://127.0.0.1:${this.etcdPort}`,
        `--secure-port=${this.apiPort}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        `--cert-dir=${join(this.dir, 'certs')}`,
        `--token-auth-file=${join(this.dir, 'tokens.csv')}`,
        `--authorization-mode=${this.authorization}`,
        `--service-account-key-file=${join(this.dir, 'sa.pub')}`,
        `--service-account-signing-key-file=${join(this.dir, 'sa.key')}`,
        '--service-account-issuer=https://kubernetes.default.svc',
        '--service-cluster-ip-range=10.96.0.0/12',
        '--endpoint-reconciler-type=none',
        // Watches go to etcd, so an etcd compaction really produces 410 Gone.
        '--watch-cache=false',
        '--enable-priority-and-fairness=false',
        '--v=0',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.#api.stderr!.on('data', (d) => (this.log = (this.log + d.toString()).slice(-20000)));
    await this.waitReady();
  }

  async waitReady(ms = 120_000): Promise<void> {
    const until = Date.now() + ms;
    for (;;) {
      try {
        const r = await this.request('GET', '/readyz');
        if (r.status === 200) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > until) throw new Error(`kube-apiserver not ready after ${ms} ms:\n${this.log.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  /** A raw API request (TLS not verified), as the admin or with another bearer token; a PATCH names its type. */
  async request(
    method: string,
    path: string,
    body?: unknown,
    token = this.token,
    contentType = 'application/json',
  ): Promise<{ status: number; json: unknown }> {
    const { Agent, request } = await import('node:https');
    return new Promise((res, rej) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: this.apiPort,
          path,
          method,
          agent: new Agent({ rejectUnauthorized: false }),
          headers: { authorization: `Bearer ${token}`, 'content-type': contentType },
        },
        (r) => {
          let data = '';
          r.on('data', (d) => (data += d));
          r.on('end', () => {
            let json: unknown;
            try {
              json = JSON.parse(data);
            } catch {
              json = data;
            }
            res({ status: r.statusCode ?? 0, json });
          });
        },
      );
      req.on('error', rej);
      if (body !== undefined) req.write(JSON.stringify(body));
      req.end();
    });
  }

  async stopApiServer(): Promise<void> {
    const p = this.#api;
    this.#api = null;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((r) => {
      p.once('exit', () => r());
      p.kill('SIGKILL');
    });
  }

  /** Compacts etcd at its current revision: every older resourceVersion becomes 410 Gone. */
  async compact(): Promise<number> {
    const post = async (path: string, body: unknown) => {
      const r = await fetch(`http://127.0.0.1:${this.etcdPort}${path}`, { method: 'POST', body: JSON.stringify(body) });
      return (await r.json()) as { header?: { revision?: string } };
    };
    const rev = Number((await post('/v3/kv/range', { key: Buffer.from('/').toString('base64') })).header?.revision);
    await post('/v3/kv/compaction', { revision: String(rev), physical: true });
    return rev;
  }

  readonly #killNow = () => {
    for (const p of [this.#api, this.#etcd]) if (p && p.exitCode === null) p.kill('SIGKILL');
  };

  async stop(): Promise<void> {
    process.off('exit', this.#killNow);
    await this.stopApiServer();
    const e = this.#etcd;
    this.#etcd = null;
    if (e && e.exitCode === null) {
      await new Promise<void>((r) => {
        e.once('exit', () => r());
        e.kill('SIGKILL');
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
