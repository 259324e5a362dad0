// What SREs read, against a real kernel inside the lab VM: per-Service IPVS counters move with
// traffic, /healthz turns 503 while syncs are stalled and 200 when they resume, a
// healthCheckNodePort answers 200 with a local endpoint and 503 without, and `kube-ipvs status`
// shows the node's Services with the right backends (also with the daemon down).
import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { EXIT_DEADLOCK_V8_FLAGS } from '../../../src/util/v8-flags.ts';
import { ep, node, service, slice } from '../../support/objects.ts';
import { CLI, LabNode, NODE_IP, procEnv, sh } from '../support/node.ts';

const lab = new LabNode();
const HC_PORT = 32100;
const config = {
  ipvs: { syncPeriod: '2s', minSyncPeriod: '0s' },
  healthzBindAddress: '0.0.0.0:10256',
  metricsBindAddress: '127.0.0.1:10249',
};
const cfgFile = () => join(lab.stateDir, '..', 'config.yaml');

const web = () => service('web', { clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, targetPort: 8080 }] });
const webSlice = () =>
  slice('web-1', 'web', [
    ep(lab.backendIP('be1'), { node: 'lab-node' }),
    ep(lab.backendIP('be2'), { node: 'lab-node' }),
  ]);
const lb = () =>
  service('lb', {
    clusterIPs: ['10.96.0.40'],
    type: 'LoadBalancer',
    ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30040 }],
    spec: { externalTrafficPolicy: 'Local', healthCheckNodePort: HC_PORT },
  });
const lbSlice = (nodeName: string) => slice('lb-1', 'lb', [ep(lab.backendIP('be2'), { node: nodeName })]);

/** GET from the node itself, on a fresh connection each time; a failed request is code 0. */
function get(port: number, path: string): Promise<{ code: number; body: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
      res.on('error', (e) => resolve({ code: 0, body: String(e) }));
    });
    req.on('error', (e) => resolve({ code: 0, body: String(e) }));
    req.end();
  });
}

/** GET from the external client's namespace, as a cloud load balancer's probe would. */
function probeFromOutside(port: number, path = '/'): { code: number; body: string } {
  const script = `fetch('http://${NODE_IP}:${port}${path}').then(async (r) => console.log(JSON.stringify({ code: r.status, body: await r.text() })), (e) => console.log(JSON.stringify({ code: 0, body: String(e.cause?.code ?? e) })))`;
  return JSON.parse(sh('ip', 'netns', 'exec', 'ext', process.execPath, ...EXIT_DEADLOCK_V8_FLAGS, '-e', script)) as {
    code: number;
    body: string;
  };
}

async function until<T>(what: string, f: () => Promise<T> | T, ok: (v: T) => boolean, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v)) return v;
    if (Date.now() > end)
      throw new Error(`${what}: last ${JSON.stringify(v)}\nproxy log:\n${lab.proxyLog.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** One series' value from /metrics (undefined when absent). */
async function metric(name: string, labels: Record<string, string>): Promise<number | undefined> {
  const text = (await get(10249, '/metrics')).body;
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (want.every((w) => line.includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

function status(...args: string[]): string {
  return execFileSync(process.execPath, [...CLI, 'status', '--config', cfgFile(), ...args], {
    encoding: 'utf8',
    env: procEnv,
  });
}

t.before(async () => {
  await lab.build(2);
  lab.write('node', [node('lab-node', [['InternalIP', NODE_IP]], 'zone-a')]);
  lab.write('web', [web(), webSlice()]);
  lab.write('lb', [lb(), lbSlice('lab-node')]);
  lab.startProxy(config);
  await lab.waitKernel(
    (k) => Object.keys(k['TCP/10.96.0.10:80']?.dests ?? {}).length === 2 && `TCP/${NODE_IP}:30040` in k,
    60_000,
  );
  await until(
    'health port up',
    () => get(10256, '/healthz'),
    (r) => r.code === 200,
  );
});

t.teardown(() => lab.shutdown());

t.test('per-Service IPVS counters move with traffic', async (t) => {
  const vs = {
    namespace: 'default',
    service: 'web',
    port_name: 'http',
    kind: 'ClusterIP',
    address: '10.96.0.10',
    port: '80',
  };
  const before = (await metric('kubeipvs_virtual_server_connections_total', vs)) ?? NaN;
  const pktsBefore = (await metric('kubeipvs_virtual_server_packets_total', { ...vs, direction: 'in' })) ?? NaN;
  const be1Before =
    (await metric('kubeipvs_real_server_connections_total', { ...vs, backend: `${lab.backendIP('be1')}:8080` })) ?? NaN;
  t.ok(Number.isFinite(before), `the virtual server has a series (${before})`);
  const seen = lab.client('client', 'tcp', '10.96.0.10', '80', '10');
  t.equal(seen.filter((s) => s.startsWith('be')).length, 10, 'ten connections answered');
  // The kernel folds its per-CPU counters into what it reports every 2 s (the rate estimator).
  const after = await until(
    'counters caught up',
    () => metric('kubeipvs_virtual_server_connections_total', vs),
    (v) => v === before + 10,
    15_000,
  );
  t.equal(after, before + 10, 'ten more connections on the virtual server');
  t.ok(
    ((await metric('kubeipvs_virtual_server_packets_total', { ...vs, direction: 'in' })) ?? 0) >= pktsBefore + 30,
    'packets in counted (3+ per connection)',
  );
  t.equal(
    (await metric('kubeipvs_real_server_connections_total', { ...vs, backend: `${lab.backendIP('be1')}:8080` })) ?? NaN,
    be1Before + 5,
    'rr: five of them on be1',
  );
  t.equal(await metric('kubeipvs_real_server_weight', { ...vs, backend: `${lab.backendIP('be2')}:8080` }), 1);
  t.ok(
    ((await metric('kubeipvs_kernel_operations_total', { operation: 'ipvs.addService' })) ?? 0) >= 3,
    'kernel operations counted',
  );
  t.ok(
    ((await metric('kubeproxy_sync_full_proxy_rules_duration_seconds_count', { ip_family: 'IPv4' })) ?? 0) >= 1,
    "kube-proxy's sync histogram",
  );
});

t.test('healthCheckNodePort: 200 with a local endpoint, 503 without', async (t) => {
  let r = await until(
    'hcnp 200',
    () => probeFromOutside(HC_PORT),
    (r) => r.code === 200,
  );
  t.same(JSON.parse(r.body), {
    service: { namespace: 'default', name: 'lb' },
    localEndpoints: 1,
    serviceProxyHealthy: true,
  });
  lab.write('lb', [lb(), lbSlice('other-node')]);
  r = await until(
    'hcnp 503',
    () => probeFromOutside(HC_PORT),
    (r) => r.code === 503,
  );
  t.same(JSON.parse(r.body).localEndpoints, 0, 'the endpoint moved to another node');
  lab.write('lb', [lb(), lbSlice('lab-node')]);
  await until(
    'hcnp 200 again',
    () => probeFromOutside(HC_PORT),
    (r) => r.code === 200,
  );
  t.pass('back to 200 when the endpoint returns');
  lab.remove('lb');
  r = await until(
    'hcnp closed',
    () => probeFromOutside(HC_PORT),
    (r) => r.code === 0,
  );
  t.match(r.body, /ECONNREFUSED/, 'the listener closes with the Service');
});

t.test('kube-ipvs status shows the Services with their backends', async (t) => {
  const j = JSON.parse(status('--output', 'json', '--namespace', 'default'));
  t.equal(j.daemon?.node, 'lab-node', "the daemon's view is included");
  const webVs = j.virtualServers.find(
    (v: { service: string; kind: string }) => v.service === 'default/web' && v.kind === 'ClusterIP',
  );
  t.ok(webVs, 'default/web ClusterIP listed');
  t.same(
    webVs.realServers
      .map((r: { address: string; port: number; weight: number }) => `${r.address}:${r.port}/${r.weight}`)
      .sort(),
    [`${lab.backendIP('be1')}:8080/1`, `${lab.backendIP('be2')}:8080/1`],
  );
  t.ok(webVs.stats.conns >= 10, 'with its connection count');
  const table = status();
  t.match(table, /kube-ipvs on node lab-node: healthy/);
  t.match(table, /default\/web:http ClusterIP +TCP 10\.96\.0\.10:80 +rr/);
});

t.test('/healthz turns 503 while syncs are stalled and 200 when they resume', async (t) => {
  t.equal((await get(10256, '/healthz')).code, 200);
  // Another interface takes the dummy interface's name: every sync fails (not one Service's fault).
  // The daemon may put its dummy back between the two commands (a sync every 2 s): until a bridge holds the name.
  for (let i = 0; !sh('ip', '-d', 'link', 'show', 'kube-ipvs0').includes('bridge'); i++) {
    if (i === 20) throw new Error('could not put a bridge in place of kube-ipvs0');
    sh('ip', 'link', 'del', 'kube-ipvs0');
    try {
      sh('ip', 'link', 'add', 'kube-ipvs0', 'type', 'bridge');
    } catch {
      /* the daemon was quicker: again */
    }
  }
  lab.write('late', [
    service('late', { clusterIPs: ['10.96.0.50'] }),
    slice('late-1', 'late', [ep(lab.backendIP('be1'))]),
  ]);
  const started = Date.now();
  const r = await until(
    'healthz 503',
    () => get(10256, '/healthz'),
    (r) => r.code === 503,
  );
  t.ok(Date.now() - started >= 3000, `503 only after 2 x syncPeriod (${Date.now() - started} ms)`);
  t.match(r.body, /"nodeEligible": true/);
  t.equal((await get(10256, '/livez')).code, 503, '/livez too');
  t.equal(probeFromOutside(10256, '/healthz').code, 503, 'seen from outside the node');
  const st = JSON.parse(status('--output', 'json')).daemon;
  t.equal(st.healthy, false, 'status says unhealthy');
  t.ok(st.recentErrors.length > 0, 'with the failing operations');
  sh('ip', 'link', 'del', 'kube-ipvs0');
  await until(
    'healthz 200',
    () => get(10256, '/healthz'),
    (r) => r.code === 200,
  );
  await lab.waitKernel((k) => 'TCP/10.96.0.50:80' in k);
  t.pass('healthy again and the waiting change is in the kernel');
  t.ok(((await metric('kubeproxy_proxy_healthz_total', { code: '503' })) ?? 0) >= 1, 'healthz 503s counted');
});

t.test('status with the daemon down still reads the kernel, and says so', async (t) => {
  await lab.killProxy('SIGTERM');
  const table = status();
  t.match(table, /kube-ipvs daemon: not reachable \(.*ECONNREFUSED.*\); the kernel view below is read directly/);
  t.match(table, /default\/web:http ClusterIP +TCP 10\.96\.0\.10:80/);
});
