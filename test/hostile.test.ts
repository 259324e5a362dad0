// Hostile and careless input: what a proxy running as root on every node must refuse, and how it
// says so. One test per class of input; each names what it checks.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import { main } from '../src/cli.ts';
import { defaultConfig, parseConfig } from '../src/config/config.ts';
import { Daemon } from '../src/daemon.ts';
import { cleanup } from '../src/dataplane/cleanup.ts';
import { FakeIpvs } from '../src/dataplane/ipvs/fake.ts';
import { FakeLinks } from '../src/dataplane/links.ts';
import { FileOwnership } from '../src/dataplane/ownership.ts';
import { conntrackSysctls } from '../src/dataplane/sysctl.ts';
import { Model } from '../src/model/model.ts';
import { ManifestSource } from '../src/sources/manifest-source.ts';
import { EXIT_DEADLOCK_V8_FLAGS } from '../src/util/v8-flags.ts';
import { PushSource } from './support/source.ts';
import { escapeText, formatProblem, quote } from '../src/errors.ts';
import { parseEndpointSlice, parseNode, parseService } from '../src/model/validate.ts';
import { specialAddress } from '../src/util/ip.ts';
import { formatStatus } from '../src/commands/status.ts';
import { Logger } from '../src/observe/log.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { planObjects } from './support/plan.ts';

const opts = { proxyName: 'kube-ipvs' };
const DANGEROUS = [
  '127.0.0.1',
  '127.1.2.3',
  '0.0.0.0',
  '0.1.2.3',
  '169.254.169.254',
  '169.254.1.1',
  '224.0.0.1',
  '239.255.255.250',
  '255.255.255.255',
  '240.0.0.1',
  '::',
  '::1',
  'fe80::1',
  'febf::1',
  'ff02::1',
  'ff05::2',
  '::ffff:10.96.2.2',
  '::ffff:127.0.0.1',
];
const FINE = [
  '10.96.0.1',
  '192.168.1.10',
  '203.0.113.7',
  '100.64.0.1',
  '172.16.0.1',
  'fd00::1',
  '2001:db8::1',
  '::ffff:0:1:0:0',
];

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
      [
        'status.loadBalancer.ingress[0].ip',
        service('s', {
          clusterIPs: [own],
          type: 'LoadBalancer',
          lbIngress: [{ ip: a }],
          ports: [{ name: 'p', port: 80, nodePort: 30001 }],
        }),
      ],
    ];
    for (const [field, obj] of cases) {
      const r = parseService(obj, opts);
      t.equal(r.status, 'invalid', `${a} as ${field}`);
      if (r.status === 'invalid')
        t.match(r.problem, { code: 'KIPVS_OBJECT_INVALID', field, message: /never a Service address or an endpoint/ });
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

t.test("an endpoint address of the other family than the slice's addressType is refused", async (t) => {
  for (const [addressType, a, ok] of [
    ['IPv6', '10.0.0.1', 'fd00::1'],
    ['IPv4', 'fd00::1', '10.0.0.1'],
  ] as const) {
    const bad = parseEndpointSlice(slice('s-1', 's', [ep(ok), ep(a)], { addressType }), opts);
    t.equal(bad.status, 'invalid', `${a} in an ${addressType} slice`);
    if (bad.status === 'invalid')
      t.match(bad.problem, {
        field: 'endpoints[1].addresses[0]',
        message: new RegExp(`is not an ${addressType} address`),
      });
    t.equal(parseEndpointSlice(slice('s-1', 's', [ep(ok)], { addressType }), opts).status, 'ok', `${ok} alone`);
  }
});

t.test('a Node address that is special gets no NodePort, with a warning; the Node still counts', async (t) => {
  const r = parseNode(
    node('n', [
      ['InternalIP', '127.0.0.1'],
      ['InternalIP', '192.168.1.10'],
    ]),
  );
  t.equal(r.status, 'ok');
  if (r.status === 'ok') {
    t.same(
      r.value.addresses.map((a) => a.address),
      ['192.168.1.10'],
    );
    t.match(r.warnings[0]?.message, /127\.0\.0\.1 is a loopback address: no NodePort is served on it/);
  }
});

t.test('the plan of a folder with dangerous addresses programs none of them anywhere', async (t) => {
  const objs = [
    node('node-a', [
      ['InternalIP', '192.168.1.10'],
      ['InternalIP', '127.0.0.1'],
    ]),
    service('good', {
      clusterIPs: ['10.96.0.1'],
      type: 'NodePort',
      ports: [{ name: 'http', port: 80, nodePort: 30080 }],
    }),
    slice('good-1', 'good', [ep('10.0.0.1')]),
    service('lo', { clusterIPs: ['127.0.0.1'] }),
    service('ext', { clusterIPs: ['10.96.0.2'], externalIPs: ['0.0.0.0'] }),
    service('meta', { clusterIPs: ['10.96.0.3'] }),
    slice('meta-1', 'meta', [ep('169.254.169.254')]),
  ];
  const { plan, problems } = planObjects(objs);
  const text = JSON.stringify(plan);
  for (const a of ['127.0.0.1', '0.0.0.0', '169.254.169.254'])
    t.notOk(
      text.includes(`"${a}`) || text.includes(` ${a}`) || text.includes(`${a},`),
      `${a} is nowhere in the plan (virtual servers, real servers, sets, addresses)`,
    );
  t.same(
    plan.virtualServers
      .map((v) => `${v.service} ${v.address}:${v.port} ${v.realServers.map((r) => r.address).join()}`)
      .sort(),
    ['default/good 10.96.0.1:80 10.0.0.1', 'default/good 192.168.1.10:30080 10.0.0.1', 'default/meta 10.96.0.3:80 '],
    'meta is served, without the metadata address as a backend',
  );
  t.same(
    problems
      .filter((p) => p.severity === 'error')
      .map((p) => p.name)
      .sort(),
    ['default/ext', 'default/lo', 'default/meta-1'],
  );
});

t.test('text from outside is escaped and cut wherever it is printed', async (t) => {
  const hostile = 'evil\n2026-01-01 INFO forged line\u001b[31mred\u202e';
  const line = formatProblem({
    code: 'KIPVS_OBJECT_INVALID',
    severity: 'error',
    kind: 'Service',
    name: `default/${hostile}`,
    file: `dir/${hostile}.yaml`,
    field: 'metadata.name',
    message: `bad ${quote(hostile)}`,
  });
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
  t.equal(
    parseService(service('web', { ports: [{ name: 'way-too-long-port-name', port: 80 }] }), opts).status,
    'invalid',
    'port name over 15',
  );
  t.equal(
    parseService(service('web', { ports: [{ name: '8080', port: 80 }] }), opts).status,
    'invalid',
    'port name without a letter',
  );
  t.equal(
    parseService(service('web', { ports: [{ port: 80 }, { name: 'b', port: 81 }] }), opts).status,
    'invalid',
    'unnamed port among several',
  );
  t.equal(parseService(service('web', { labels: { app: 'a b' } }), opts).status, 'invalid', 'label value with a space');
  t.equal(parseService(service('web', { annotations: { 'bad key!': 'x' } }), opts).status, 'invalid', 'annotation key');
  t.equal(
    parseService(service('web', { annotations: { big: 'x'.repeat(300 * 1024) } }), opts).status,
    'invalid',
    'annotations over 256 KiB',
  );
  t.equal(
    parseEndpointSlice(slice('s-1', 'Bad\nName', [ep('10.0.0.1')]), opts).status,
    'invalid',
    "a slice's service-name label",
  );
  t.equal(
    parseEndpointSlice(slice('s-1', 's', [ep('10.0.0.1', { node: 'node\u001b' })]), opts).status,
    'invalid',
    "an endpoint's nodeName",
  );
  t.equal(
    parseEndpointSlice(slice('s-1', 's', [ep('10.0.0.1', { zones: ['zone a'] })]), opts).status,
    'invalid',
    'a zone hint',
  );
  t.equal(parseNode(node('Node_A', [])).status, 'invalid', 'a Node name');
  for (const ok of ['web', 'a', 'web-1', 'x'.repeat(63)])
    t.equal(parseService(service(ok), opts).status, 'ok', `${ok.slice(0, 20)} is a fine name`);
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
  log.warn('kernel said\nERROR forged \u001b[31m', {
    service: 'a\nb',
    detail: 'x'.repeat(10_000),
    plain: 'TCP/10.0.0.1:80',
  });
  t.equal(lines.length, 1);
  t.equal(lines[0]!.split('\n').length, 1, 'one line');
  t.notMatch(lines[0]!, /\u001b/);
  t.match(lines[0]!, /plain=TCP\/10\.0\.0\.1:80/, 'ordinary values stay bare');
  t.ok(lines[0]!.length < 4300, 'a long field is cut');
  const table = formatStatus({
    daemon: null,
    daemonError: 'refused\u001b[2J',
    virtualServers: [
      {
        service: 'ns/evil\nFAKE LINE',
        portName: 'p\u001b',
        kind: 'ClusterIP',
        protocol: 'TCP',
        address: '10.96.0.1',
        port: 80,
        scheduler: 'rr',
        persistenceTimeoutSeconds: 0,
        stats: { conns: 0, cps: 0, inPps: 0, outPps: 0, inBps: 0, outBps: 0 },
        realServers: [],
      },
    ],
  } as never);
  t.notMatch(table, /\u001b|FAKE LINE\n|\nFAKE/, 'a name from a tampered ownership record prints as text');
});

// ---- Files from outside: bombs, huge files, FIFOs, symlinks, a folder that comes and goes ----

const BOMB = `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
`;
const yaml = (...objs: Record<string, unknown>[]) => objs.map((o) => JSON.stringify(o)).join('\n---\n') + '\n';
function folder(t: { teardown: (f: () => void) => void }, files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'kipvs-hostile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}
async function cli(...argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
  return { code, stdout, stderr };
}
const good = () => [
  node('node-a', [['InternalIP', '192.168.1.10']]),
  service('good', { clusterIPs: ['10.96.0.1'] }),
  slice('good-1', 'good', [ep('10.0.0.1')]),
];

t.test('a YAML alias bomb is one problem line naming the file; plan, run --once and --config go on', async (t) => {
  const dir = folder(t, { 'a-good.yaml': yaml(...good()), 'b-bomb.yaml': BOMB });
  const started = Date.now();
  const plan = await cli('plan', '--manifests', dir, '--output', 'json');
  t.equal(plan.code, 0, 'plan exits 0 (not 70)');
  t.match(
    plan.stderr,
    /KIPVS_MANIFEST_UNPARSABLE .*b-bomb\.yaml:1: more than 100 YAML aliases expanded \(document ignored\)/,
  );
  t.ok(
    (JSON.parse(plan.stdout) as { virtualServers: unknown[] }).virtualServers.length > 0,
    'the good Service is planned',
  );
  t.ok(Date.now() - started < 10_000, 'in bounded time');
  const once = await cli('run', '--manifests', dir, '--dry-run', '--once');
  t.equal(once.code, 0, 'run --once');
  t.match(once.stdout, /addService TCP\/10\.96\.0\.1:80/);
  const cfg = join(dir, 'config.yml.bomb');
  writeFileSync(cfg, `apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\n${BOMB}`);
  const c = await cli('plan', '--manifests', dir, '--config', cfg);
  t.equal(c.code, 1, 'a bomb as config: rejected, exit 1');
  t.match(c.stderr, /KIPVS_CONFIG_UNREADABLE .*more than 100 YAML aliases/);
});

t.test(
  'a huge manifest is refused at once by its size; a FIFO is skipped, never read; symlinks are followed or reported',
  async (t) => {
    const dir = folder(t, {
      'a-good.yaml': yaml(...good()),
      'sub/real.yaml': yaml(service('linked', { clusterIPs: ['10.96.0.2'] })),
      '.hidden.yaml': yaml(service('hidden', { clusterIPs: ['10.96.0.3'] })),
    });
    const big = join(dir, 'huge.yaml');
    writeFileSync(big, '');
    truncateSync(big, 50 * 1024 * 1024); // 50 MB
    execFileSync('mkfifo', [join(dir, 'pipe.yaml')]);
    symlinkSync(join(dir, 'sub/real.yaml'), join(dir, 'link.yaml'));
    symlinkSync(join(dir, 'nowhere.yaml'), join(dir, 'dangling.yaml'));
    const started = Date.now();
    const r = await cli('plan', '--manifests', dir, '--output', 'json');
    t.ok(
      Date.now() - started < 5000,
      `done in ${Date.now() - started} ms: the 50 MB file was not parsed, the FIFO not waited on`,
    );
    t.equal(r.code, 0);
    t.match(
      r.stderr,
      /KIPVS_MANIFEST_UNREADABLE .*huge\.yaml: is 52428800 bytes, more than the 8388608 allowed: split it/,
    );
    t.match(r.stderr, /KIPVS_MANIFEST_UNREADABLE .*pipe\.yaml: is not a regular file/);
    t.match(r.stderr, /KIPVS_MANIFEST_UNREADABLE .*dangling\.yaml: cannot be opened \(a dangling symlink/);
    const svcs = new Set(
      (JSON.parse(r.stdout) as { virtualServers: { service: string }[] }).virtualServers.map((v) => v.service),
    );
    t.same([...svcs].sort(), ['default/good', 'default/linked'], 'a symlinked file is read (once); a dot-file is not');
    // A FIFO as the config, or as the ownership record: refused, not waited on.
    execFileSync('mkfifo', [join(dir, 'cfg.fifo')]);
    const c = await cli('plan', '--manifests', dir, '--config', join(dir, 'cfg.fifo'));
    t.match(c.stderr, /KIPVS_CONFIG_UNREADABLE .*is not a regular file/);
    const rec = new FileOwnership(join(dir, 'cfg.fifo'));
    t.match(rec.problem, /is not a regular file/, 'a FIFO in place of the ownership record is said, not read');
  },
);

t.test(
  'a folder that vanishes keeps the last state; a broken document keeps what it held; run takes what plan takes',
  async (t) => {
    const dir = folder(t, {
      'web.yaml': yaml(...good(), service('second', { clusterIPs: ['10.96.0.5'] })) + '---\n{ broken: [\n',
    });
    const src = new ManifestSource(dir);
    const model = new Model({ nodeName: 'node-a', proxyName: 'kube-ipvs' });
    let batches = 0;
    let problems: string[] = [];
    await src.start((b) => {
      batches++;
      problems = b.problems.map(formatProblem);
      for (const c of b.changes) model.apply(c);
    });
    t.same(
      model.serviceKeys(),
      ['default/good', 'default/second'],
      'first start: every document that reads is taken (as plan)',
    );
    t.ok(
      problems.some((p) => p.includes('KIPVS_MANIFEST_UNPARSABLE')),
      'and the broken one is reported',
    );
    // The broken document now is a Service that was there: kept; a document removed while another is broken stays until
    // the file reads whole.
    writeFileSync(join(dir, 'web.yaml'), yaml(...good()) + '---\n{ broken: [\n');
    await src.refresh();
    t.same(
      model.serviceKeys(),
      ['default/good', 'default/second'],
      'an object missing from a file read only in part is kept',
    );
    writeFileSync(join(dir, 'web.yaml'), yaml(...good()));
    await src.refresh();
    t.same(model.serviceKeys(), ['default/good'], 'once the file reads whole, its removal is followed');
    const moved = `${dir}.away`;
    renameSync(dir, moved);
    const before = batches;
    await src.refresh();
    t.equal(batches, before + 1);
    t.same(model.serviceKeys(), ['default/good'], 'the folder is gone: nothing deleted');
    t.ok(
      problems.some((p) => /KIPVS_MANIFEST_UNREADABLE .*cannot be read \(ENOENT\)/.test(p)),
      'and said',
    );
    renameSync(moved, dir);
    await src.refresh();
    t.same(model.serviceKeys(), ['default/good'], 'back: no churn');
    src.stop();
  },
);

t.test('the output of plan is complete however slowly it is read', async (t) => {
  // Enough Services for several MB of JSON, read by a process that waits before it reads.
  const objs = [node('node-a', [['InternalIP', '192.168.1.10']])];
  for (let i = 0; i < 3000; i++)
    objs.push(
      service(`s${i}`, {
        clusterIPs: [`10.96.${i >> 8}.${i & 255}`],
        type: 'NodePort',
        ports: [{ name: 'http', port: 80, nodePort: 30000 + (i % 2000) }],
      }),
    );
  const dir = folder(t, { 'many.json': JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs }) });
  const inProcess = await cli('plan', '--manifests', dir, '--output', 'json');
  const want = Buffer.byteLength(inProcess.stdout);
  t.ok(want > 1_000_000, `${want} bytes of plan`);
  const out = execFileSync(
    'sh',
    [
      '-c',
      `"$0" ${EXIT_DEADLOCK_V8_FLAGS.join(' ')} src/cli.ts plan --manifests "$1" --output json 2>/dev/null | (sleep 3; wc -c)`,
      process.execPath,
      dir,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  t.equal(Number(out.trim()), want, 'every byte reached the slow reader');
});

t.test(
  'a corrupt or wrong-shaped ownership record is said, and never gets a foreign virtual server deleted',
  async (t) => {
    const dir = folder(t, {});
    for (const [text, why] of [
      ['{not json', /not JSON/],
      ['[1,2]', /not a JSON object/],
      ['{"version":1,"services":"TCP/10.0.0.1:80","addresses":[]}', /services is not a list/],
      ['{"version":1,"services":["rm -rf /"],"addresses":[]}', /services is not a list of virtual server ids/],
      ['{"version":1,"services":[],"addresses":["010.1.1.1"]}', /addresses is not a list of canonical/],
      ['{"version":7,"services":[],"addresses":[]}', /version 7/],
    ] as const) {
      writeFileSync(join(dir, 'owned.json'), text);
      const rec = new FileOwnership(join(dir, 'owned.json'));
      t.match(rec.problem, why, text);
      t.equal(rec.services.size, 0);
    }
    t.equal(
      new FileOwnership(join(dir, 'absent.json')).problem,
      null,
      'an absent record is the first start, not a problem',
    );
    // A well-formed record that claims a foreign service (on lo, or on another node's address).
    const ipvs = new FakeIpvs();
    const links = new FakeLinks();
    const foreign = {
      family: 4 as const,
      protocol: 'TCP' as const,
      address: '10.97.0.1',
      port: 80,
      scheduler: 'rr',
      flags: 0,
      timeout: 0,
      netmask: 0xffffffff,
    };
    const otherNode = { ...foreign, address: '192.168.77.7', port: 30080 };
    await ipvs.addService(foreign);
    await ipvs.addService(otherNode);
    writeFileSync(
      join(dir, 'owned.json'),
      JSON.stringify({
        version: 1,
        services: ['TCP/10.97.0.1:80', 'TCP/192.168.77.7:30080'],
        addresses: [],
        labels: {},
      }),
    );
    const logs: string[] = [];
    const cfg = defaultConfig();
    const source = new PushSource();
    source.initial = good().map((o) => ({ kind: o.kind as 'Service', previous: null, current: o }));
    const daemon = new Daemon(
      { source, config: cfg, nodeName: 'node-a' },
      {
        ipvs,
        links,
        owned: new FileOwnership(join(dir, 'owned.json')),
        sysctl: { read: () => null, write: () => {} },
        log: new Logger({ sink: (l) => void logs.push(l) }),
        kernelRelease: '6.1.0',
      },
    );
    await daemon.syncOnce();
    daemon.stop();
    const left = (await ipvs.services()).map((s) => `${s.address}:${s.port}`).sort();
    t.same(
      left,
      ['10.96.0.1:80', '10.97.0.1:80', '192.168.77.7:30080'],
      'the record claimed them, yet neither was deleted by a full sync',
    );
    writeFileSync(join(dir, 'bad.json'), '{oops');
    const d2 = new Daemon(
      { source: new PushSource(), config: cfg, nodeName: 'node-a' },
      {
        ipvs,
        links,
        owned: new FileOwnership(join(dir, 'bad.json')),
        sysctl: { read: () => null, write: () => {} },
        log: new Logger({ sink: (l) => void logs.push(l) }),
        kernelRelease: '6.1.0',
      },
    );
    await d2.syncOnce();
    d2.stop();
    t.ok(
      logs.some((l) => l.includes('KIPVS_OWNERSHIP_RECORD_INVALID')),
      'a corrupt record is logged as an error',
    );
    const r = await cleanup(ipvs, links, new FileOwnership(join(dir, 'owned.json')), { dummyInterface: 'kube-ipvs0' });
    t.same(
      r.leftAlone.sort(),
      ['TCP/10.97.0.1:80', 'TCP/192.168.77.7:30080'],
      'cleanup too leaves what the record claims but kube-ipvs could not have made',
    );
  },
);

// ---- Config values that reach a command line, restore text, a header or a timer ----

t.test('config values that reach iptables rules, headers or timers are checked', async (t) => {
  const kp = (body: string) =>
    parseConfig(`apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n${body}`);
  const refused = (body: string, field: RegExp, why: RegExp) => {
    const r = kp(body);
    t.equal(r.config, null, body.split('\n')[0]!);
    t.match(r.problems.map((p) => `${p.field}: ${p.message}`).join('\n'), new RegExp(`${field.source}.*${why.source}`));
  };
  refused(
    'detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: "cbr0\\n-A INPUT -j ACCEPT"}',
    /detectLocal\.bridgeInterface/,
    /not an interface name/,
  );
  refused(
    'detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: "veth -j ACCEPT"}',
    /detectLocal\.interfaceNamePrefix/,
    /not an interface name/,
  );
  refused('detectLocalMode: BridgeInterface', /detectLocal\.bridgeInterface/, /is required/);
  refused('detectLocalMode: InterfaceNamePrefix', /detectLocal\.interfaceNamePrefix/, /is required/);
  refused(
    'clientConnection: {contentType: "application/json\\r\\nX-Evil: 1"}',
    /clientConnection\.contentType/,
    /not a list of media types/,
  );
  refused('hostnameOverride: "node-a\\nfake"', /hostnameOverride/, /not a node name/);
  refused('ipvs: {syncPeriod: 100000h}', /ipvs\.syncPeriod/, /longer than/);
  refused('ipvs: {syncPeriod: 30s, minSyncPeriod: 1m}', /ipvs\.minSyncPeriod/, /longer than ipvs\.syncPeriod/);
  refused('configSyncPeriod: 1000000h', /configSyncPeriod/, /longer than/);
  refused('conntrack: {tcpEstablishedTimeout: 10000000h}', /conntrack\.tcpEstablishedTimeout/, /longer than/);
  refused('iptables: {masqueradeBit: 32}', /iptables\.masqueradeBit/, /0-31/);
  const ours = parseConfig('apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\nserviceProxyName: "a,b=c"');
  t.equal(ours.config, null, 'serviceProxyName must be a label value (it goes into a label selector)');
  const ok = kp(
    'detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}\nipvs: {syncPeriod: 30s, minSyncPeriod: 1s}\nclientConnection: {contentType: application/vnd.kubernetes.protobuf, acceptContentTypes: "application/vnd.kubernetes.protobuf,application/json"}',
  );
  t.same(ok.problems, [], 'ordinary values pass');
});

t.test('masqueradeBit 31 makes a valid mark, not a negative one', async (t) => {
  const cfg = defaultConfig();
  cfg.iptables.masqueradeBit = 31;
  const { plan } = planObjects(
    [
      node('node-a', [['InternalIP', '192.168.1.10']]),
      service('web', {
        clusterIPs: ['10.96.0.1'],
        type: 'NodePort',
        ports: [{ name: 'http', port: 80, nodePort: 30080 }],
      }),
    ],
    { config: cfg },
  );
  const nat = plan.iptables.nat ?? '';
  t.match(nat, /0x80000000/, 'the mark is 0x80000000');
  t.notMatch(JSON.stringify(plan.iptables), /0x-/, 'no negative hex anywhere');
});

t.test('conntrack settings are applied as kube-proxy applies them', async (t) => {
  const c = defaultConfig().conntrack;
  const list = conntrackSysctls(c, 4, () => '65536');
  t.same(
    list.map((s) => `${s.path}=${s.value}`),
    [
      'net/netfilter/nf_conntrack_max=131072',
      'net/netfilter/nf_conntrack_tcp_timeout_established=86400',
      'net/netfilter/nf_conntrack_tcp_timeout_close_wait=3600',
    ],
    "kube-proxy's defaults: max(32768 x 4 CPUs, 131072), 24h, 1h",
  );
  t.same(
    conntrackSysctls(c, 4, () => '1000000')
      .map((s) => s.path)
      .includes('net/netfilter/nf_conntrack_max'),
    false,
    'a larger table is never shrunk',
  );
  const more = conntrackSysctls(
    {
      ...c,
      maxPerCore: 0,
      tcpEstablishedTimeoutSeconds: 0,
      tcpCloseWaitTimeoutSeconds: 0,
      tcpBeLiberal: true,
      udpTimeoutSeconds: 30,
      udpStreamTimeoutSeconds: 120,
    },
    4,
    () => null,
  );
  t.same(
    more.map((s) => `${s.path}=${s.value}`),
    [
      'net/netfilter/nf_conntrack_udp_timeout=30',
      'net/netfilter/nf_conntrack_udp_timeout_stream=120',
      'net/netfilter/nf_conntrack_tcp_be_liberal=1',
    ],
    '0 leaves the kernel alone; set values are written',
  );
  // The daemon writes them at start.
  const writes: string[] = [];
  const ownedDir = mkdtempSync(join(tmpdir(), 'kipvs-ct-'));
  t.teardown(() => rmSync(ownedDir, { recursive: true, force: true }));
  const d = new Daemon(
    { source: new PushSource(), config: defaultConfig(), nodeName: 'node-a' },
    {
      ipvs: new FakeIpvs(),
      links: new FakeLinks(),
      owned: new FileOwnership(join(ownedDir, 'owned.json')),
      sysctl: { read: () => null, write: (p, v) => void writes.push(`${p}=${v}`) },
      log: new Logger({ sink: () => {} }),
      kernelRelease: '6.1.0',
      cpus: 2,
    },
  );
  await d.syncOnce();
  d.stop();
  t.ok(
    writes.includes('net/netfilter/nf_conntrack_max=131072') &&
      writes.includes('net/netfilter/nf_conntrack_tcp_timeout_established=86400'),
    'written by the daemon',
  );
});
