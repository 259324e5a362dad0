// `kube-ipvs status`: the kernel's virtual servers named by the ownership record, filtered, in a
// table or JSON, with the daemon's view when it answers and a clear line when it does not.
import t from 'tap';
import { statusCommand, collectStatus, formatStatus } from '../src/commands/status.ts';
import { FakeIpvs } from '../src/dataplane/ipvs/fake.ts';
import type { DaemonStatus } from '../src/observe/server.ts';

async function kernel() {
  const ipvs = new FakeIpvs();
  const vs = (address: string, port: number, timeout = 0) => ({
    family: 4 as const,
    protocol: 'TCP' as const,
    address,
    port,
    scheduler: 'rr',
    flags: timeout ? 1 : 0,
    timeout,
    netmask: 0xffffffff,
  });
  const d = (address: string, weight = 1) => ({
    family: 4 as const,
    address,
    port: 8080,
    fwdMethod: 0,
    weight,
    upperThreshold: 0,
    lowerThreshold: 0,
  });
  await ipvs.addService(vs('10.96.0.1', 80));
  await ipvs.addDestination(vs('10.96.0.1', 80), d('10.244.0.2'));
  await ipvs.addDestination(vs('10.96.0.1', 80), d('10.244.0.1', 0));
  await ipvs.addService(vs('10.96.0.2', 443, 10800));
  await ipvs.addService(vs('192.168.1.10', 30080));
  await ipvs.addDestination(vs('192.168.1.10', 30080), d('10.244.0.1'));
  await ipvs.addService(vs('172.16.0.1', 9999)); // someone else's
  const labels = new Map([
    ['TCP/10.96.0.1:80', { service: 'shop/web', portName: 'http', kind: 'ClusterIP' }],
    ['TCP/192.168.1.10:30080', { service: 'shop/web', portName: 'http', kind: 'NodePort' }],
    ['TCP/10.96.0.2:443', { service: 'auth/login', portName: 'https', kind: 'ClusterIP' }],
  ]);
  return { ipvs, labels };
}

const daemonView: DaemonStatus = {
  node: 'node-a',
  healthy: true,
  nodeEligible: true,
  lastSyncAt: new Date(Date.now() - 3000).toISOString(),
  lastSuccessfulSyncAt: new Date(Date.now() - 3000).toISOString(),
  oldestPendingChangeAt: null,
  lastSync: { full: false, services: 1, operations: 2, errors: 0, durationMs: 4 },
  pending: { services: 0, endpoints: 0, dirty: 0 },
  services: 2,
  virtualServers: 3,
  source: null,
  healthCheckNodePorts: [],
  conflicts: [{ service: 'zz-evil/grab', what: 'ExternalIP TCP/10.96.0.1:80', heldBy: 'shop/web' }],
  recentErrors: [],
};

t.test('the kernel view in Kubernetes terms, filtered', async (t) => {
  const { ipvs, labels } = await kernel();
  const all = await collectStatus(ipvs, labels, {});
  t.same(
    all.map((v) => `${v.service}:${v.portName} ${v.kind} ${v.address}:${v.port}`),
    [
      'auth/login:https ClusterIP 10.96.0.2:443',
      'shop/web:http ClusterIP 10.96.0.1:80',
      'shop/web:http NodePort 192.168.1.10:30080',
      ':  172.16.0.1:9999',
    ],
    'ours by Service, port and kind; a foreign one last and unnamed',
  );
  t.same(
    all[1]!.realServers.map((r) => `${r.address} w${r.weight}`),
    ['10.244.0.1 w0', '10.244.0.2 w1'],
  );
  t.equal(all[0]!.persistenceTimeoutSeconds, 10800, 'affinity');
  t.same(
    (await collectStatus(ipvs, labels, { namespace: 'shop' })).map((v) => v.kind),
    ['ClusterIP', 'NodePort'],
  );
  t.same((await collectStatus(ipvs, labels, { service: 'auth/login' })).length, 1);
  t.same((await collectStatus(ipvs, labels, { namespace: 'auth', service: 'login' })).length, 1);
  t.same((await collectStatus(ipvs, labels, { namespace: 'auth', service: 'web' })).length, 0);

  const table = formatStatus({ daemon: daemonView, daemonError: null, virtualServers: all });
  t.match(table, /kube-ipvs on node node-a: healthy/);
  t.match(table, /last sync \d+s ago \(partial, 1 services, 2 kernel operations, 0 errors, 4 ms\)/);
  t.match(table, /shop\/web:http ClusterIP +TCP 10\.96\.0\.1:80 +rr +none/);
  t.match(table, /-> 10\.244\.0\.1:8080 +weight 0 +\(draining\)/);
  t.match(table, /auth\/login:https ClusterIP +TCP 10\.96\.0\.2:443 +rr +10800s/);
  t.match(table, /-> \(no real servers: connections are refused\)/);
  t.match(table, /\(not kube-ipvs\) +TCP 172\.16\.0\.1:9999/);
  t.match(table, /conflict: zz-evil\/grab does not get ExternalIP TCP\/10\.96\.0\.1:80: held by shop\/web/);
});

t.test('the table shows what health says of each real server', async (t) => {
  const { ipvs, labels } = await kernel();
  const all = await collectStatus(ipvs, labels, {});
  const since = new Date(Date.now() - 12_000).toISOString();
  const h = (endpoint: string, o: Record<string, unknown>) => ({
    service: 'shop/web',
    endpoint,
    check: 'tcp',
    state: 'healthy',
    reason: '',
    since,
    factor: 1,
    evicted: false,
    refused: null,
    slowStart: null,
    lastResult: 'ok',
    ...o,
  });
  const view = {
    ...daemonView,
    health: {
      failingOpen: false,
      probeDemand: 10,
      probeStretch: 1,
      endpointsNotListed: 0,
      endpoints: [
        h('10.244.0.1:8080', { state: 'unhealthy', reason: 'connection refused x2', factor: 0 }),
        h('10.244.0.2:8080', { slowStart: 45, factor: 0.45 }),
        h('10.244.0.9:8080', { state: 'unhealthy', reason: 'timeout x5', factor: 0, evicted: true }),
      ],
    },
  } as unknown as DaemonStatus;
  const table = formatStatus({ daemon: view, daemonError: null, virtualServers: all });
  t.match(table, /health: 3 endpoints checked, 2 unhealthy; 10 probes\/s asked/);
  t.match(
    table,
    /-> 10\.244\.0\.1:8080 +weight 0 +\(ejected: connection refused x2 since 1[12]s ago\)/,
    'an ejected one, with the reason and since when',
  );
  t.match(table, /-> 10\.244\.0\.2:8080 +weight 1 +\(slow start 45%\)/);
  t.match(
    table,
    /-> 10\.244\.0\.9:8080 +\(evicted by health: timeout x5; its connections ended\)/,
    'an evicted one, no longer in the kernel, still shown',
  );
  const open = formatStatus({
    daemon: { ...view, health: { ...view.health!, failingOpen: true } },
    daemonError: null,
    virtualServers: all,
  });
  t.match(open, /FAILING OPEN/);
});

t.test('status command: the daemon down is said, the kernel is still shown; JSON', async (t) => {
  const { ipvs, labels } = await kernel();
  let out = '';
  const io = { stdout: (s: string) => void (out += s), stderr: () => {} };
  const code = await statusCommand({ output: 'table', namespace: 'shop' }, io, {
    ipvs,
    labels,
    fetchDaemon: () => Promise.reject(new Error('127.0.0.1:10249: ECONNREFUSED')),
  });
  t.equal(code, 0);
  t.match(
    out,
    /kube-ipvs daemon: not reachable \(127\.0\.0\.1:10249: ECONNREFUSED\); the kernel view below is read directly/,
  );
  t.match(out, /shop\/web:http NodePort/);
  t.notMatch(out, /auth\/login/);
  out = '';
  await statusCommand({ output: 'json' }, io, { ipvs, labels, fetchDaemon: async () => daemonView });
  const j = JSON.parse(out);
  t.equal(j.daemon.node, 'node-a');
  t.equal(j.daemonError, null);
  t.equal(j.virtualServers.length, 4);
  t.same(
    Object.keys(j.virtualServers[0]).sort(),
    [
      'address',
      'kind',
      'persistenceTimeoutSeconds',
      'port',
      'portName',
      'protocol',
      'realServers',
      'scheduler',
      'service',
      'stats',
    ].sort(),
  );
});
