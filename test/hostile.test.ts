// Hostile and careless input: what a proxy running as root on every node must refuse, and how it
// says so. One test per class of input; each names what it checks.
import t from 'tap';
import { escapeText, formatProblem, quote } from '../src/errors.ts';
import { parseEndpointSlice, parseNode, parseService } from '../src/model/validate.ts';
import { specialAddress } from '../src/util/ip.ts';
import { formatStatus } from '../src/commands/status.ts';
import { Logger } from '../src/observe/log.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { planObjects } from './support/plan.ts';

const opts = { proxyName: 'kube-ipvs' };
const DANGEROUS = ['127.0.0.1', '127.1.2.3', '0.0.0.0', '0.1.2.3', '169.254.169.254', '169.254.1.1', '224.0.0.1', '239.255.255.250', '255.255.255.255', '240.0.0.1', '::', '::1', 'fe80::1', 'febf::1', 'ff02::1', 'ff05::2', '::ffff:10.96.2.2', '::ffff:127.0.0.1'];
const FINE = ['10.96.0.1', '192.168.1.10', '203.0.113.7', '100.64.0.1', '172.16.0.1', 'fd00::1', '2001:db8::1', '::ffff:0:1:0:0'];

t.test('special addresses are named for what they are; ordinary ones pass', async (t) => {
  for (const a of DANGEROUS) t.ok(specialAddress(a), `${a}: ${specialAddress(a)}`);
  for (const a of FINE) t.equal(specialAddress(a), null, `${a} is an ordinary address`);
});

t.test('a dangerous ClusterIP, externalIP or LoadBalancer IP refuses the Service, with the field named', async (t) => {
  for (const a of DANGEROUS) {
    const v6 = a.includes(':');
    const own = v6 ? 'fd00:96::1' : '10.96.0.1';
    const cases: [string, Record<string, unknown>][] = [
      ['spec.clusterIPs[0]', service('s', { clusterIPs: [a] })],
      ['spec.externalIPs[0]', service('s', { clusterIPs: [own], externalIPs: [a] })],
      ['status.loadBalancer.ingress[0].ip', service('s', { clusterIPs: [own], type: 'LoadBalancer', lbIngress: [{ ip: a }], ports: [{ name: 'p', port: 80, nodePort: 30001 }] })],
    ];
    for (const [field, obj] of cases) {
      const r = parseService(obj, opts);
      t.equal(r.status, 'invalid', `${a} as ${field}`);
      if (r.status === 'invalid') t.match(r.problem, { code: 'KIPVS_OBJECT_INVALID', field, message: /never a Service address or an endpoint/ });
    }
  }
  const dual = parseService(service('s', { clusterIPs: ['10.96.2.2', '::ffff:10.96.2.2'] }), opts);
  t.equal(dual.status, 'invalid', 'dual-stack [v4, ::ffff:v4] is not two families');
  if (dual.status === 'invalid') t.match(dual.problem.message, /IPv4-mapped/);
});

t.test('an endpoint at loopback or the cloud metadata address refuses its slice', async (t) => {
  for (const a of ['127.0.0.1', '169.254.169.254', '0.0.0.0', '224.0.0.5']) {
    const r = parseEndpointSlice(slice('s-1', 's', [ep('10.0.0.1'), ep(a)]), opts);
    t.equal(r.status, 'invalid', a);
    if (r.status === 'invalid') t.match(r.problem, { field: 'endpoints[1].addresses[0]' });
  }
  const v6 = parseEndpointSlice(slice('s-1', 's', [ep('::1')], { addressType: 'IPv6' }), opts);
  t.equal(v6.status, 'invalid', '::1 too');
});

t.test('a Node address that is special gets no NodePort, with a warning; the Node still counts', async (t) => {
  const r = parseNode(node('n', [['InternalIP', '127.0.0.1'], ['InternalIP', '192.168.1.10']]));
  t.equal(r.status, 'ok');
  if (r.status === 'ok') {
    t.same(r.value.addresses.map((a) => a.address), ['192.168.1.10']);
    t.match(r.warnings[0]?.message, /127\.0\.0\.1 is a loopback address: no NodePort is served on it/);
  }
});

t.test('the plan of a folder with dangerous addresses programs none of them anywhere', async (t) => {
  const objs = [
    node('node-a', [['InternalIP', '192.168.1.10'], ['InternalIP', '127.0.0.1']]),
    service('good', { clusterIPs: ['10.96.0.1'], type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] }),
    slice('good-1', 'good', [ep('10.0.0.1')]),
    service('lo', { clusterIPs: ['127.0.0.1'] }),
    service('ext', { clusterIPs: ['10.96.0.2'], externalIPs: ['0.0.0.0'] }),
    service('meta', { clusterIPs: ['10.96.0.3'] }),
    slice('meta-1', 'meta', [ep('169.254.169.254')]),
  ];
  const { plan, problems } = planObjects(objs);
  const text = JSON.stringify(plan);
  for (const a of ['127.0.0.1', '0.0.0.0', '169.254.169.254']) t.notOk(text.includes(`"${a}`) || text.includes(` ${a}`) || text.includes(`${a},`), `${a} is nowhere in the plan (virtual servers, real servers, sets, addresses)`);
  t.same(plan.virtualServers.map((v) => `${v.service} ${v.address}:${v.port} ${v.realServers.map((r) => r.address).join()}`).sort(), ['default/good 10.96.0.1:80 10.0.0.1', 'default/good 192.168.1.10:30080 10.0.0.1', 'default/meta 10.96.0.3:80 '], 'meta is served, without the metadata address as a backend');
  t.same(problems.filter((p) => p.severity === 'error').map((p) => p.name).sort(), ['default/ext', 'default/lo', 'default/meta-1']);
});

t.test('text from outside is escaped and cut wherever it is printed', async (t) => {
  const hostile = 'evil\n2026-01-01 INFO forged line\u001b[31mred\u202e';
  const line = formatProblem({ code: 'KIPVS_OBJECT_INVALID', severity: 'error', kind: 'Service', name: `default/${hostile}`, file: `dir/${hostile}.yaml`, field: 'metadata.name', message: `bad ${quote(hostile)}` });
  t.notMatch(line, /[\n\u001b\u202e]/, 'no line break, escape or bidi control survives');
  t.match(line, /evil\\u000a2026/, 'escaped, not dropped: the operator sees what was there');
  t.equal(line.split('\n').length, 1);
  const long = escapeText('x'.repeat(100_000), 300);
  t.ok(long.length < 400 && long.endsWith('...(100000 characters)'), 'a 100 KB value is cut, with its length');
  t.ok(quote('y'.repeat(5000)).length < 200, 'quoted values too');
});

t.test('names break no rule the API server applies: hostile names are refused, and printed escaped', async (t) => {
  const bad = ['web\nINFO forged', 'web\u001b[2J', 'x'.repeat(300), 'Web', '-web', 'web.svc', '1web'];
  for (const name of bad) {
    const r = parseService(service(name), opts);
    t.equal(r.status, 'invalid', `Service name ${quote(name, 30)}`);
    if (r.status === 'invalid') {
      const line = formatProblem(r.problem);
      t.equal(line.split('\n').length, 1, 'one line');
      t.notMatch(line, /\u001b/, 'no raw escape');
      t.ok(line.length < 800, `and short (${line.length})`);
    }
  }
  t.equal(parseService(service('web', { ns: 'Bad_NS' }), opts).status, 'invalid', 'namespace: DNS-1123 label');
  t.equal(parseService(service('web', { ports: [{ name: 'way-too-long-port-name', port: 80 }] }), opts).status, 'invalid', 'port name over 15');
  t.equal(parseService(service('web', { ports: [{ name: '8080', port: 80 }] }), opts).status, 'invalid', 'port name without a letter');
  t.equal(parseService(service('web', { ports: [{ port: 80 }, { name: 'b', port: 81 }] }), opts).status, 'invalid', 'unnamed port among several');
  t.equal(parseService(service('web', { labels: { app: 'a b' } }), opts).status, 'invalid', 'label value with a space');
  t.equal(parseService(service('web', { annotations: { 'bad key!': 'x' } }), opts).status, 'invalid', 'annotation key');
  t.equal(parseService(service('web', { annotations: { big: 'x'.repeat(300 * 1024) } }), opts).status, 'invalid', 'annotations over 256 KiB');
  t.equal(parseEndpointSlice(slice('s-1', 'Bad\nName', [ep('10.0.0.1')]), opts).status, 'invalid', "a slice's service-name label");
  t.equal(parseEndpointSlice(slice('s-1', 's', [ep('10.0.0.1', { node: 'node\u001b' })]), opts).status, 'invalid', "an endpoint's nodeName");
  t.equal(parseEndpointSlice(slice('s-1', 's', [ep('10.0.0.1', { zones: ['zone a'] })]), opts).status, 'invalid', 'a zone hint');
  t.equal(parseNode(node('Node_A', [])).status, 'invalid', 'a Node name');
  for (const ok of ['web', 'a', 'web-1', 'x'.repeat(63)]) t.equal(parseService(service(ok), opts).status, 'ok', `${ok.slice(0, 20)} is a fine name`);
});

t.test('an annotation of 100 KB is quoted in a warning at a bounded length', async (t) => {
  const r = parseService(service('web', { annotations: { 'kube-ipvs.io/scheduler': 'z'.repeat(100_000) } }), opts);
  t.equal(r.status, 'ok', 'the Service stands; the annotation is ignored');
  if (r.status === 'ok') {
    const line = formatProblem(r.warnings[0]!);
    t.ok(line.length < 400, `the warning is ${line.length} characters`);
    t.match(line, /100002 characters/, 'and says how long the value was');
  }
});

t.test('text logs and the status table escape what came from outside', async (t) => {
  const lines: string[] = [];
  const log = new Logger({ format: 'text', sink: (l) => void lines.push(l) });
  log.warn('kernel said\nERROR forged \u001b[31m', { service: 'a\nb', detail: 'x'.repeat(10_000), plain: 'TCP/10.0.0.1:80' });
  t.equal(lines.length, 1);
  t.equal(lines[0]!.split('\n').length, 1, 'one line');
  t.notMatch(lines[0]!, /\u001b/);
  t.match(lines[0]!, /plain=TCP\/10\.0\.0\.1:80/, 'ordinary values stay bare');
  t.ok(lines[0]!.length < 4300, 'a long field is cut');
  const table = formatStatus({
    daemon: null,
    daemonError: 'refused\u001b[2J',
    virtualServers: [{ service: 'ns/evil\nFAKE LINE', portName: 'p\u001b', kind: 'ClusterIP', protocol: 'TCP', address: '10.96.0.1', port: 80, scheduler: 'rr', persistenceTimeoutSeconds: 0, stats: { conns: 0, cps: 0, inPps: 0, outPps: 0, inBps: 0, outBps: 0 }, realServers: [] }],
  } as never);
  t.notMatch(table, /\u001b|FAKE LINE\n|\nFAKE/, 'a name from a tampered ownership record prints as text');
});
