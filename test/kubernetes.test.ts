// The Kubernetes source against a real kube-apiserver and etcd built from upstream Go modules
// (test/k8s/, built by the test set-up). Skipped, with the set-up's reason, when they were not built.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { KubeConfig } from '@kubernetes/client-node';
import type { Problem } from '../src/errors.ts';
import { Model } from '../src/model/model.ts';
import { Logger } from '../src/observe/log.ts';
import {
  API_BOOKMARK_PERIOD_MS,
  KubernetesSource,
  WATCH_IDLE_TIMEOUT_MS,
  type KubernetesSourceOptions,
} from '../src/sources/kubernetes.ts';
import { main } from '../src/cli.ts';
import { ApiServer, k8sBinaries } from './support/apiserver.ts';
import { ep, node, service, slice } from './support/objects.ts';

t.setTimeout(5 * 60_000);
const built = k8sBinaries();
if ('why' in built) {
  t.plan(0, `Kubernetes source tests skipped: ${built.why}`);
} else {
  const api = new ApiServer(built.bin);
  await api.start();
  t.teardown(() => api.stop());
  const kc = new KubeConfig();
  kc.loadFromFile(api.kubeconfig());

  /** A source feeding a model, as the daemon wires them. */
  const open = async (t: { teardown: (f: () => void) => void }, opts: Partial<KubernetesSourceOptions> = {}) => {
    const model = new Model({ nodeName: 'node-a', proxyName: 'kube-ipvs' });
    const problems: Problem[] = [];
    const logs: string[] = [];
    const src = new KubernetesSource(kc, {
      nodeName: 'node-a',
      proxyName: 'kube-ipvs',
      log: new Logger({ sink: (l) => void logs.push(l) }),
      backoffBaseMs: 200,
      backoffMaxMs: 2000,
      ...opts,
    });
    t.teardown(() => src.stop());
    await src.start((b) => {
      for (const c of b.changes) problems.push(...model.apply(c).problems);
    });
    return { model, src, problems, logs };
  };
  const until = async (what: string, f: () => boolean, ms = 20_000) => {
    const end = Date.now() + ms;
    while (!f()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const create = async (path: string, obj: Record<string, unknown>) => {
    const r = await api.request('POST', path, obj);
    if (r.status >= 300) throw new Error(`POST ${path}: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json as { metadata: { resourceVersion: string } };
  };
  const svcPath = (ns = 'default') => `/api/v1/namespaces/${ns}/services`;
  const slicePath = (ns = 'default') => `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`;
  const apiService = (name: string, extra: Record<string, unknown> = {}) => {
    const s = service(name, { ports: [{ name: 'http', port: 80, targetPort: 8080 }], ...extra }) as {
      spec: Record<string, unknown>;
      status?: unknown;
    };
    delete s.spec.clusterIP; // allocated by the API server
    delete s.spec.clusterIPs;
    delete s.status;
    return s;
  };

  t.test('the model follows creates, updates and deletes; selectors keep other proxies out', async (t) => {
    await create('/api/v1/nodes', node('node-a', [['InternalIP', '192.168.1.10']], 'zone-a'));
    const { model, src } = await open(t);
    t.ok(src.synced);
    t.equal(model.node?.zone, 'zone-a', 'the local Node');
    await create(svcPath(), apiService('web'));
    await create(svcPath(), apiService('theirs', { labels: { 'service.kubernetes.io/service-proxy-name': 'cilium' } }));
    await create(
      svcPath(),
      apiService('ours', { labels: { 'service.kubernetes.io/service-proxy-name': 'kube-ipvs' } }),
    );
    await create(slicePath(), slice('web-1', 'web', [ep('10.0.0.1')]));
    await until(
      'web and its slice',
      () => model.slicesFor('default/web').length === 1 && model.service('default/web') !== undefined,
    );
    await until('ours', () => model.service('default/ours') !== undefined);
    t.match(model.service('default/web')?.clusterIPs[0], /^10\.(9[6-9]|1[01]\d)\./, 'the allocated ClusterIP arrives');
    t.equal(model.service('default/theirs'), undefined, "another proxy's Service is never delivered");

    const r = await api.request('PUT', `${slicePath()}/web-1`, {
      ...slice('web-1', 'web', [ep('10.0.0.1'), ep('10.0.0.2')]),
      metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
    });
    t.equal(r.status, 200);
    await until('the update', () => model.slicesFor('default/web')[0]?.endpoints.length === 2);
    await api.request('DELETE', `${slicePath()}/web-1`);
    await api.request('DELETE', `${svcPath()}/web`);
    await until(
      'the deletes',
      () => model.service('default/web') === undefined && model.slicesFor('default/web').length === 0,
    );
    t.pass('deletes followed');

    const n = await api.request('GET', '/api/v1/nodes/node-a');
    const nodeObj = n.json as Record<string, unknown> & { spec?: Record<string, unknown> };
    nodeObj.spec = {
      ...(nodeObj.spec ?? {}),
      taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule', value: '1' }],
    };
    t.equal((await api.request('PUT', '/api/v1/nodes/node-a', nodeObj)).status, 200);
    await until('the taint', () => model.node?.toBeDeleted === true);
    t.pass('the autoscaler taint is seen');
  });

  t.test('an object the model rejects is reported while the rest keeps flowing', async (t) => {
    const { model, problems } = await open(t);
    // Valid for the API server, not for a proxy: a slice that names no Service.
    await create(slicePath(), {
      ...slice('orphan', 'x', [ep('10.0.0.9')]),
      metadata: { name: 'orphan', namespace: 'default' },
    });
    await create(svcPath(), apiService('after-orphan'));
    await until('the next Service', () => model.service('default/after-orphan') !== undefined);
    // The slice and the Service come on different watches (connections): either may be first.
    const rejected = () => problems.some((p) => p.code === 'KIPVS_OBJECT_INVALID' && p.name === 'default/orphan');
    await until('the orphan slice reported', rejected).catch(() => {});
    t.ok(rejected(), `the orphan slice is rejected with its name: ${JSON.stringify(problems).slice(0, 600)}`);
  });

  t.test('of an object, listed or watched, only its key and resourceVersion are held once delivered', async (t) => {
    const ns = 'held';
    await create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    const annotated = (name: string) => {
      const s = apiService(name) as unknown as { metadata: Record<string, unknown> };
      s.metadata = { ...s.metadata, namespace: ns, annotations: { 'example.com/kept': 'yes' } };
      return s;
    };
    await create(svcPath(ns), annotated('listed'));
    const delivered = new Map<string, { metadata: { annotations?: Record<string, string> }; spec?: unknown }>();
    const src = new KubernetesSource(kc, {
      nodeName: 'node-a',
      proxyName: 'kube-ipvs',
      log: new Logger({ sink: () => {} }),
    });
    t.teardown(() => src.stop());
    await src.start((b) => {
      for (const c of b.changes)
        if (c.current && c.kind === 'Service') {
          const o = c.current as { metadata: { name: string; namespace: string } };
          if (o.metadata.namespace === ns) delivered.set(o.metadata.name, structuredClone(c.current) as never);
        }
    });
    const watched = await create(svcPath(ns), annotated('watched'));
    await until('the watched Service', () => delivered.has('watched'));
    for (const name of ['listed', 'watched']) {
      const o = delivered.get(name)!;
      t.equal(o.metadata.annotations?.['example.com/kept'], 'yes', `${name}: delivered whole (its annotations)`);
      t.ok(o.spec, `${name}: delivered whole (its spec)`);
      const held = src.held('Service', ns, name);
      t.equal(held.length, 2, `${name}: held by the source and by its informer's cache`);
      t.equal(held[0], held[1], `${name}: one object for both`);
      const h = held[0] as { metadata: Record<string, unknown>; full?: unknown };
      t.equal(h.full, undefined, `${name}: the object itself is not held`);
      t.same(Object.keys(h.metadata).sort(), ['name', 'namespace', 'resourceVersion'], `${name}: only its key`);
      t.equal(h.metadata.name, name);
    }
    t.equal(
      (src.held('Service', ns, 'watched')[0] as { metadata: { resourceVersion: string } }).metadata.resourceVersion,
      watched.metadata.resourceVersion,
      'the resourceVersion the API server gave it',
    );
    // A deletion leaves nothing held by either.
    await api.request('DELETE', `${svcPath(ns)}/listed`);
    await until('the deletion', () => src.held('Service', ns, 'listed').length === 0);
  });

  t.test('5000 Services are listed with pagination before start() resolves', async (t) => {
    const ns = 'many';
    await create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    const total = 5000;
    let next = 0;
    const worker = async () => {
      while (next < total) {
        const i = next++;
        await create(svcPath(ns), {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: `s${i}`, namespace: ns },
          spec: { ports: [{ port: 80 }] },
        });
      }
    };
    await Promise.all(Array.from({ length: 24 }, worker));
    const { model, src } = await open(t, { pageSize: 500 });
    const listed = model.serviceKeys().filter((k) => k.startsWith(`${ns}/`)).length;
    t.equal(listed, total, 'every Service is in the model when start() resolves');
    t.ok(src.counters.pages >= 10, `the Service list came in pages (${src.counters.pages} pages fetched)`);
  });

  t.test('the API server killed and restarted: state kept, reconnects, converges; a 410 relists', async (t) => {
    // A slow reconnect leaves a window to change things and compact etcd behind the watch's back.
    const { model, src } = await open(t, { backoffBaseMs: 8000, backoffMaxMs: 16_000 });
    await create(svcPath(), apiService('before-outage'));
    await create(svcPath(), apiService('doomed'));
    await until(
      'the first Services',
      () => model.service('default/before-outage') !== undefined && model.service('default/doomed') !== undefined,
    );
    const before = model.serviceCount;
    await api.stopApiServer();
    await new Promise((r) => setTimeout(r, 500));
    t.equal(model.serviceCount, before, 'the outage changes nothing in the model');
    await api.startApiServer();
    await api.request('DELETE', `${svcPath()}/doomed`);
    await create(svcPath(), apiService('during-outage'));
    await api.compact();
    await until(
      'reconnect and relist',
      () => model.service('default/during-outage') !== undefined && model.service('default/doomed') === undefined,
      60_000,
    );
    t.ok(
      src.counters.errors > 0 && src.counters.reconnects > 0,
      `reconnected (${src.counters.errors} errors, ${src.counters.reconnects} reconnects)`,
    );
    t.ok(src.counters.relists > 0, `relisted after 410 (${src.counters.relists})`);
    t.ok(model.service('default/before-outage'), 'nothing lost');
    await create(svcPath(), apiService('after-outage'));
    await until('watching again', () => model.service('default/after-outage') !== undefined);
    t.pass('the watch follows new changes');
  });

  t.test('a watch silent past the bound is restarted, and still delivers', async (t) => {
    // The test API server has no watch cache, so no bookmarks: an idle watch is silent.
    const { model, src, logs } = await open(t, { stallMs: 3000 });
    await until('a stall restart', () => src.counters.stalls > 0, 20_000);
    t.ok(
      logs.some((l) => l.includes('delivered nothing for too long')),
      'logged',
    );
    await create(svcPath(), apiService('after-stall'));
    await until('events after the restart', () => model.service('default/after-stall') !== undefined);
    t.pass('the restarted watch delivers');
  });

  t.test(
    "a quiet watch outlives the API server's bookmark period; a silent peer is left to TCP keepalive",
    async (t) => {
      // The idle timeout once cut every quiet watch after 30 s (a new TLS connection each time, twice a minute); the
      // API server's watch cache bookmarks a watch about once a minute.
      t.ok(WATCH_IDLE_TIMEOUT_MS >= 1.5 * API_BOOKMARK_PERIOD_MS, `idle timeout ${WATCH_IDLE_TIMEOUT_MS} ms`);
      await open(t);
      const port = new URL(kc.getCurrentCluster()!.server).port;
      // Five informers, five watches, each on a socket with the keepalive timer (the lists' pooled sockets, and the
      // test's own requests, have none: they are not waiting on the server).
      const keptAlive = async () => {
        const { stdout } = await promisify(execFile)('ss', ['-tnoH', 'state', 'established', `( dport = :${port} )`]);
        return { stdout, n: stdout.split('\n').filter((l) => l.includes('timer:(keepalive')).length };
      };
      let seen = await keptAlive();
      // start() resolves once every informer has listed; a watch may still be connecting.
      for (const end = Date.now() + 10_000; seen.n < 5 && Date.now() < end; seen = await keptAlive())
        await new Promise((r) => setTimeout(r, 100));
      t.ok(seen.n >= 5, `${seen.n} connections to the API server with TCP keepalive:\n${seen.stdout}`);
    },
  );

  t.test('kube-ipvs run --kubeconfig programs the cluster (dry run, one sync)', async (t) => {
    const created = (await create(svcPath(), apiService('e2e'))) as unknown as { spec: { clusterIP: string } };
    const vip = created.spec.clusterIP;
    await create(slicePath(), slice('e2e-1', 'e2e', [ep('10.0.7.1'), ep('10.0.7.2')]));
    let out = '';
    let err = '';
    const code = await main(['run', '--kubeconfig', api.kubeconfig(), '--node', 'node-a', '--dry-run', '--once'], {
      stdout: (s) => (out += s),
      stderr: (s) => (err += s),
    });
    t.equal(code, 0, err.slice(-500));
    t.ok(out.includes(`addService TCP/${vip}:80\n`), `the ClusterIP ${vip} is programmed`);
    t.ok(out.includes(`addDestination TCP/${vip}:80 -> 10.0.7.1:8080 weight 1`), 'with its first endpoint');
    t.ok(out.includes(`addDestination TCP/${vip}:80 -> 10.0.7.2:8080 weight 1`), 'and its second');
  });
}
