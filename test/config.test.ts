import { readFileSync } from 'node:fs';
import t from 'tap';
import { defaultConfig, parseConfig } from '../src/config/config.ts';
import { formatDuration, parseDuration } from '../src/config/duration.ts';

const kp = (body: string) => `apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n${body}`;
const ours = (body: string) => `apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\n${body}`;

t.test('durations', async (t) => {
  const cases: [string, number | null][] = [
    ['0s', 0],
    ['0', 0],
    ['30s', 30],
    ['1m0s', 60],
    ['24h0m0s', 86400],
    ['1.5s', 1.5],
    ['500ms', 0.5],
    ['1h2m3s', 3723],
    ['250\u00b5s', 0.00025], // Go's micro sign
    ['250us', 0.00025],
    ['', null],
    ['30', null],
    ['5x', null],
    ['s', null],
  ];
  for (const [text, want] of cases) t.equal(parseDuration(text), want, JSON.stringify(text));
  t.equal(formatDuration(3723), '1h2m3s');
  t.equal(formatDuration(0), '0s');
});

t.test('the kubeadm kube-proxy ConfigMap is read as is', async (t) => {
  const r = parseConfig(readFileSync('config/kube-proxy-configmap.yaml', 'utf8'), 'cm.yaml');
  t.same(r.problems, []);
  const c = r.config!;
  t.equal(c.source, 'KubeProxyConfiguration');
  t.same(c.clusterCIDRs, ['10.244.0.0/16']);
  t.equal(c.ipvs.strictARP, true);
  // Zero values mean kube-proxy's defaults.
  const d = defaultConfig();
  t.equal(c.ipvs.scheduler, 'rr');
  t.equal(c.ipvs.syncPeriodSeconds, 30);
  t.equal(c.iptables.masqueradeBit, 14);
  t.equal(c.conntrack.maxPerCore, d.conntrack.maxPerCore);
  t.equal(c.healthzBindAddress, '0.0.0.0:10256');
  t.equal(c.metricsBindAddress, '127.0.0.1:10249');
  t.equal(c.clientConnection.kubeconfig, '/var/lib/kube-proxy/kubeconfig.conf');
});

t.test('our own example config', async (t) => {
  const r = parseConfig(readFileSync('config/kube-ipvs.yaml', 'utf8'), 'kube-ipvs.yaml');
  t.same(r.problems, []);
  t.same(r.config?.clusterCIDRs, ['10.244.0.0/16', 'fd00:244::/56']);
  t.equal(r.config?.ipvs.minSyncPeriodSeconds, 1);
  t.equal(r.config?.conntrack.tcpEstablishedTimeoutSeconds, 86400);
  t.equal(r.config?.kubeProxyLeftovers, 'remove');
});

t.test('kubeProxyLeftovers: remove or keep, and only in our kind', async (t) => {
  const ours = (body: string) => parseConfig(`apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\n${body}`);
  t.equal(ours('kubeProxyLeftovers: keep').config?.kubeProxyLeftovers, 'keep');
  t.equal(ours('').config?.kubeProxyLeftovers, 'remove', 'removed by default');
  const bad = ours('kubeProxyLeftovers: "rm -rf"');
  t.equal(bad.config, null);
  t.match(bad.problems[0]?.field ?? '', 'kubeProxyLeftovers');
  t.equal(parseConfig(kp('kubeProxyLeftovers: keep')).config, null, 'not a KubeProxyConfiguration field');
});

t.test('supported fields are applied', async (t) => {
  const r = parseConfig(
    kp(`mode: ipvs
hostnameOverride: node-7
nodePortAddresses: [192.168.0.0/16, "fd00::/64"]
ipvs: {scheduler: wlc, syncPeriod: 1m0s, minSyncPeriod: 2s, excludeCIDRs: [10.1.0.0/16], tcpTimeout: 900s, tcpFinTimeout: 30s, udpTimeout: 300s}
iptables: {masqueradeAll: true, masqueradeBit: 15}
detectLocalMode: InterfaceNamePrefix
detectLocal: {interfaceNamePrefix: veth}
conntrack: {maxPerCore: 0, tcpBeLiberal: true}
featureGates: {PreferSameTrafficDistribution: false}
`),
  );
  t.same(r.problems, []);
  const c = r.config!;
  t.equal(c.hostnameOverride, 'node-7');
  t.same(c.nodePortAddresses, ['192.168.0.0/16', 'fd00::/64']);
  t.same(c.ipvs, {
    scheduler: 'wlc',
    syncPeriodSeconds: 60,
    minSyncPeriodSeconds: 2,
    strictARP: false,
    excludeCIDRs: ['10.1.0.0/16'],
    tcpTimeoutSeconds: 900,
    tcpFinTimeoutSeconds: 30,
    udpTimeoutSeconds: 300,
  });
  t.same(c.iptables, { masqueradeAll: true, masqueradeBit: 15 });
  t.equal(c.detectLocalMode, 'InterfaceNamePrefix');
  t.equal(c.conntrack.maxPerCore, 0);
  t.equal(c.featureGates.PreferSameTrafficDistribution, false);
});

t.test('errors name the field', async (t) => {
  const cases: [string, string, string, string][] = [
    ['mode iptables', kp('mode: iptables'), 'KIPVS_CONFIG_UNSUPPORTED_MODE', 'mode'],
    ['mode nftables', kp('mode: nftables'), 'KIPVS_CONFIG_UNSUPPORTED_MODE', 'mode'],
    ['unknown top-level', kp('fancyMode: true'), 'KIPVS_CONFIG_UNKNOWN_FIELD', 'fancyMode'],
    ['unknown nested', kp('ipvs: {schedular: rr}'), 'KIPVS_CONFIG_UNKNOWN_FIELD', 'ipvs.schedular'],
    [
      'our fields are not kube-proxy fields',
      kp('dummyInterface: kipvs0'),
      'KIPVS_CONFIG_UNKNOWN_FIELD',
      'dummyInterface',
    ],
    ['profiling', kp('enableProfiling: true'), 'KIPVS_CONFIG_UNSUPPORTED_FIELD', 'enableProfiling'],
    ['portRange', kp('portRange: 30000-32767'), 'KIPVS_CONFIG_UNSUPPORTED_FIELD', 'portRange'],
    ['oomScoreAdj', kp('oomScoreAdj: -500'), 'KIPVS_CONFIG_UNSUPPORTED_FIELD', 'oomScoreAdj'],
    ['unknown gate', kp('featureGates: {NFTablesProxyMode: true}'), 'KIPVS_CONFIG_INVALID_VALUE', 'featureGates'],
    ['bad scheduler', kp('ipvs: {scheduler: fastest}'), 'KIPVS_CONFIG_INVALID_VALUE', 'ipvs.scheduler'],
    ['bad duration', kp('ipvs: {syncPeriod: 30}'), 'KIPVS_CONFIG_INVALID_VALUE', 'ipvs.syncPeriod'],
    ['bad CIDR', kp('clusterCIDR: 10.244.0.0/99'), 'KIPVS_CONFIG_INVALID_VALUE', 'clusterCIDR'],
    [
      'primary with CIDRs',
      kp('nodePortAddresses: [primary, 10.0.0.0/8]'),
      'KIPVS_CONFIG_INVALID_VALUE',
      'nodePortAddresses',
    ],
    [
      'masqueradeBit range',
      kp('iptables: {masqueradeBit: 32}'),
      'KIPVS_CONFIG_INVALID_VALUE',
      'iptables.masqueradeBit',
    ],
    ['bad bind', kp('healthzBindAddress: "localhost:99999"'), 'KIPVS_CONFIG_INVALID_VALUE', 'healthzBindAddress'],
    ['bad detectLocalMode', kp('detectLocalMode: Magic'), 'KIPVS_CONFIG_INVALID_VALUE', 'detectLocalMode'],
    [
      'bad interface name',
      ours('dummyInterface: "this-name-is-too-long"'),
      'KIPVS_CONFIG_INVALID_VALUE',
      'dummyInterface',
    ],
    [
      'negative series limit',
      ours('metrics: {realServerSeriesLimit: -1}'),
      'KIPVS_CONFIG_INVALID_VALUE',
      'metrics.realServerSeriesLimit',
    ],
    ['metrics is ours only', kp('metrics: {realServerSeriesLimit: 5}'), 'KIPVS_CONFIG_UNKNOWN_FIELD', 'metrics'],
    ['wrong kind', 'apiVersion: v1\nkind: ConfigMap\n', 'KIPVS_CONFIG_UNREADABLE', 'kind'],
    ['not YAML', 'a: [1, 2', 'KIPVS_CONFIG_UNREADABLE', ''],
    ['two documents', `${kp('')}\n---\n${kp('')}`, 'KIPVS_CONFIG_UNREADABLE', ''],
  ];
  for (const [name, text, code, field] of cases) {
    const r = parseConfig(text, 'c.yaml');
    t.equal(r.config, null, `${name}: rejected whole`);
    t.equal(r.problems[0]?.code, code, `${name}: code`);
    t.equal(r.problems[0]?.field ?? '', field, `${name}: field`);
  }
});

t.test('settings for other modes and platforms are accepted and unused', async (t) => {
  const r = parseConfig(
    kp(
      'mode: ""\nnftables: {masqueradeAll: true}\nwinkernel: {enableDSR: true}\niptables: {syncPeriod: 10s, localhostNodePorts: false}',
    ),
  );
  t.same(r.problems, []);
  t.equal(r.config?.iptables.masqueradeAll, false, 'nftables.masqueradeAll does not leak into iptables');
});

t.test('our own kind', async (t) => {
  const r = parseConfig(
    ours(
      'serviceProxyName: ipvs-b\ndummyInterface: kipvs0\nlogging: {format: text}\nmetrics: {realServerSeriesLimit: 50}',
    ),
  );
  t.same(r.problems, []);
  t.equal(r.config?.metrics.realServerSeriesLimit, 50);
  t.equal(defaultConfig().metrics.realServerSeriesLimit, 1000);
  t.equal(r.config?.serviceProxyName, 'ipvs-b');
  t.equal(r.config?.dummyInterface, 'kipvs0');
  t.equal(r.config?.logging.format, 'text');
  t.equal(parseConfig(ours('mode: iptables')).problems[0]?.code, 'KIPVS_CONFIG_UNSUPPORTED_MODE');
  t.equal(parseConfig(ours('mode: ipvs')).problems.length, 0);
});
