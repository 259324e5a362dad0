// kube-ipvs from the container image's own root (images/build.sh), run as the Helm chart's pod
// runs: read-only root, /proc/sys read-only, the chart's hostPath volumes, uid 0 with only the
// chart's capabilities (support/container.sh stands in for the container runtime). Its node, its
// iptables and ipset program the IPVS kernel, and real traffic goes through. Then what each
// capability and mount is for, shown by taking it away.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { ep, node, service, slice } from '../../support/objects.ts';
import { readLayout } from '../../support/image.ts';
import { keyValueLines } from '../../support/setup-state.ts';
import { LabNode, NODE_IP, procEnv } from '../support/node.ts';

const repo = resolve(import.meta.dirname, '../../..');
const ENV_FILE = '/lab-results/image.env';
const container = join(repo, 'test/lab/support/container.sh');

if (!existsSync(ENV_FILE)) {
  const why = existsSync('/lab-results/image.why')
    ? readFileSync('/lab-results/image.why', 'utf8')
    : 'the lab was started without the image (test/lab.test.ts writes image.env)';
  t.plan(0, `image case skipped: ${why}`);
} else {
  const img = keyValueLines(readFileSync(ENV_FILE, 'utf8'));
  const root = img.IMAGE_ROOTFS!;
  const { config } = readLayout(img.IMAGE_OCI!);
  // The chart's capabilities, as values.yaml gives them to the pod (test/chart.test.ts checks the rendering).
  const values = parse(readFileSync(join(repo, 'charts/kube-ipvs/values.yaml'), 'utf8')) as {
    securityContext: { capabilities: { add: string[]; drop: string[] } };
  };
  t.same(values.securityContext.capabilities.drop, ['ALL']);
  const chartCaps = values.securityContext.capabilities.add.map((c) => `cap_${c.toLowerCase()}`);
  const lab = new LabNode();
  const base = join(lab.stateDir, '..');
  const podConfig = join(base, 'pod-config.yaml');
  // The chart's volumes: hostPath state, xtables lock, /lib/modules read-only, /proc/sys/net writable; the
  // config read-only.
  const volumes = [
    `${lab.manifests}:/etc/kube-ipvs/manifests:ro`,
    `${podConfig}:/etc/kube-ipvs/config.yaml:ro`,
    `${lab.stateDir}:/run/kube-ipvs`,
    '/run/xtables.lock:/run/xtables.lock:file',
    '/lib/modules:/lib/modules:ro',
    '/proc/sys/net:/host/proc/sys/net',
  ];
  /** A command from the image root, as the pod: `caps` only, the volumes given. */
  const inPod = (caps: string[], binds: string[], ...cmd: string[]) => [
    container,
    root,
    caps.length ? caps.join(',') : 'none',
    ...binds.flatMap((b) => ['--bind', b]),
    '--',
    ...cmd,
  ];
  const tryInPod = (caps: string[], binds: string[], ...cmd: string[]) => {
    try {
      return {
        ok: true,
        out: execFileSync('bash', inPod(caps, binds, ...cmd), {
          encoding: 'utf8',
          env: procEnv,
          timeout: 60_000,
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      };
    } catch (e) {
      const err = e as { stderr?: string; stdout?: string; status?: number | null; signal?: string | null };
      return { ok: false, out: `[exit ${err.status ?? err.signal}] ${err.stderr ?? ''}${err.stdout ?? ''}` };
    }
  };
  const count = (names: string[]) => names.reduce<Record<string, number>>((m, n) => ((m[n] = (m[n] ?? 0) + 1), m), {});

  t.before(async () => {
    await lab.build(2);
    mkdirSync(lab.stateDir, { recursive: true });
    // The pod's config (state in the container's /run/kube-ipvs, the host's lab.stateDir); the
    // host-side copy tells the teardown's `kube-ipvs cleanup` where that state is.
    writeFileSync(
      podConfig,
      stringify({ apiVersion: 'kube-ipvs.io/v1alpha1', kind: 'KubeIPVSConfiguration', clusterCIDR: '10.244.0.0/16' }),
    );
    writeFileSync(
      join(base, 'config.yaml'),
      stringify({ apiVersion: 'kube-ipvs.io/v1alpha1', kind: 'KubeIPVSConfiguration', stateDirectory: lab.stateDir }),
    );
    lab.write('node', [node('lab-node', [['InternalIP', NODE_IP]], 'zone-a')]);
    lab.write('web', [
      service('web', {
        clusterIPs: ['10.96.0.10'],
        type: 'NodePort',
        ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }],
      }),
      slice(
        'web-1',
        'web',
        [ep(lab.backendIP('be1'), { node: 'lab-node' }), ep(lab.backendIP('be2'), { node: 'lab-node' })],
        { ports: [{ name: 'http', protocol: 'TCP', port: 8080 }] },
      ),
    ]);
    // Settings kube-ipvs makes, undone first, so the case sees it make them from inside the pod.
    for (const s of ['expire_nodest_conn', 'expire_quiescent_template'])
      writeFileSync(`/proc/sys/net/ipv4/vs/${s}`, '0');
    const [node0, ...rest] = config.config.Entrypoint;
    lab.startProxyCommand(
      'bash',
      inPod(
        chartCaps,
        volumes,
        node0!,
        ...rest,
        'run',
        '--manifests',
        '/etc/kube-ipvs/manifests',
        '--config',
        '/etc/kube-ipvs/config.yaml',
        '--proc-sys=/host/proc/sys',
      ),
      { ...procEnv, KIPVS_ENV_NODE_NAME: 'lab-node' },
    );
    await lab
      .waitKernel(
        (k) => Object.keys(k['TCP/10.96.0.10:80']?.dests ?? {}).length === 2 && `TCP/${NODE_IP}:30080` in k,
        90_000,
      )
      .catch((e: Error) => {
        throw new Error(`${e.message}\nkube-ipvs log:\n${lab.proxyLog.slice(-3000)}`);
      });
  });
  t.teardown(() => lab.shutdown());

  t.test("the proxy runs from the image root with the chart's capabilities only", async (t) => {
    const pid = lab.proxyPid!;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const eff = /CapEff:\s*([0-9a-f]+)/.exec(status)![1]!;
    const bnd = /CapBnd:\s*([0-9a-f]+)/.exec(status)![1]!;
    const decode = (hex: string) =>
      execFileSync('capsh', [`--decode=${hex}`], { encoding: 'utf8' })
        .trim()
        .split('=')[1]!
        .split(',')
        .sort();
    t.same(decode(eff), [...chartCaps].sort(), `effective: ${decode(eff).join(',')}`);
    t.same(decode(bnd), [...chartCaps].sort(), 'bounding set');
    t.match(readlinkSync(`/proc/${pid}/root`), /^\/run\/kipvs-ctr\./, 'its root is the image root');
    t.equal(
      readlinkSync(`/proc/${pid}/exe`).replace(/^\/run\/kipvs-ctr\.[^/]+/, ''),
      '/usr/bin/node',
      "the image's node",
    );
    t.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /\/opt\/kube-ipvs\/dist\/cli\.js/, 'the compiled CLI');
    t.ok(existsSync(join(lab.stateDir, 'owned.json')), 'its record of what it created is on the host (hostPath state)');
  });

  t.test('real traffic through what it programmed: ClusterIP and NodePort', async (t) => {
    t.same(count(lab.client('client', 'tcp', '10.96.0.10', '80', '10')), { be1: 5, be2: 5 }, 'ClusterIP');
    t.same(count(lab.client('ext', 'tcp', NODE_IP, '30080', '4')), { be1: 2, be2: 2 }, 'NodePort from outside');
    // The image's iptables-restore and ipset made the rules and sets the traffic needed.
    const rules = execFileSync('iptables-nft-save', ['-t', 'nat'], { encoding: 'utf8' });
    t.match(rules, /KIPVS-SERVICES/, 'its nat rules');
    t.match(execFileSync('ipset', ['list', '-n'], { encoding: 'utf8' }), /KIPVS-CLUSTER-IP/, 'its ipsets');
  });

  t.test("`kube-ipvs status` in the pod, as the chart's NOTES say to run it", async (t) => {
    const notes = readFileSync(join(repo, 'charts/kube-ipvs/templates/NOTES.txt'), 'utf8');
    const cmd = /exec <pod> -- (\/usr\/bin\/node \/opt\/kube-ipvs\/dist\/cli\.js status)/.exec(notes)?.[1];
    t.ok(cmd, 'the NOTES name the command');
    const r = tryInPod(chartCaps, volumes, ...cmd!.split(' '), '--config=/etc/kube-ipvs/config.yaml');
    t.ok(r.ok, r.out.slice(0, 800));
    t.match(r.out, /default\/web/, 'the Service, read from the kernel');
    t.match(r.out, new RegExp(lab.backendIP('be1').replaceAll('.', '\\.')), 'its backends');
  });

  t.test("the IPVS sysctls were written through the host's /proc/sys/net, not the read-only /proc/sys", async (t) => {
    for (const s of ['expire_nodest_conn', 'expire_quiescent_template'])
      t.equal(readFileSync(`/proc/sys/net/ipv4/vs/${s}`, 'utf8').trim(), '1', s);
    t.notMatch(lab.proxyLog, /sysctl.*(fail|EROFS|EACCES)/i, 'no sysctl failed');
  });

  t.test('what each capability and mount is for, shown by taking it away', async (t) => {
    const write = (p: string) => `require("fs").writeFileSync(${JSON.stringify(p)}, "1")`;
    const sysfs = '/proc/sys/net/ipv4/vs/expire_nodest_conn';
    const ro = tryInPod(chartCaps, volumes, '/usr/bin/node', '-e', write(sysfs));
    t.notOk(ro.ok, "the pod's own /proc/sys is read-only, whatever its capabilities");
    t.match(ro.out, /EROFS/);
    const none = tryInPod([], volumes, '/usr/bin/node', '-e', write(`/host${sysfs}`));
    t.ok(
      none.ok,
      `uid 0 writes the host's /proc/sys/net mount with no capability at all: the mount is what it needs (${none.out.trim()})`,
    );
    const noAdmin = tryInPod([], volumes, '/usr/sbin/ipset', 'list', '-n');
    t.notOk(noAdmin.ok, 'without NET_ADMIN: no ipset');
    t.match(noAdmin.out, /not permitted/i);
    const works = (caps: string[], what: string, ...cmd: string[]) => {
      const r = tryInPod(caps, volumes, ...cmd);
      t.ok(r.ok, r.ok ? what : `${what}: ${r.out.slice(0, 800)}`);
    };
    works(['cap_net_admin'], 'NET_ADMIN: ipset', '/usr/sbin/ipset', 'list', '-n');
    // The `-m set` match names its ipset through ipset's socket option on a raw socket: NET_RAW, even for iptables-nft.
    const nftNoRaw = tryInPod(['cap_net_admin'], volumes, '/usr/sbin/iptables-nft-save', '-t', 'nat');
    t.notOk(nftNoRaw.ok, 'without NET_RAW: iptables-nft cannot read rules with a set match');
    t.match(nftNoRaw.out, /-m set\s*$/, 'it stops at the first set match');
    works(
      ['cap_net_admin', 'cap_net_raw'],
      'NET_ADMIN + NET_RAW: iptables-nft with set matches',
      '/usr/sbin/iptables-nft-save',
      '-t',
      'nat',
    );
    // iptables-legacy loads its table module itself (modprobe ip_tables) when the kernel has not: SYS_MODULE.
    if (!existsSync('/sys/module/ip_tables')) {
      const noModule = tryInPod(
        ['cap_net_admin', 'cap_net_raw'],
        volumes,
        '/usr/sbin/iptables-legacy-save',
        '-t',
        'filter',
      );
      t.notOk(noModule.ok, 'without SYS_MODULE: iptables-legacy cannot load ip_tables');
      t.match(noModule.out, /could not insert 'ip_tables': Operation not permitted/);
    } else t.comment('ip_tables was loaded already: SYS_MODULE not shown here');
    works(chartCaps, "the chart's capabilities: iptables-legacy", '/usr/sbin/iptables-legacy-save', '-t', 'filter');
    t.ok(existsSync('/sys/module/ip_tables'), 'ip_tables loaded from the pod');
    // Its socket is a raw one: NET_RAW.
    const legacy = tryInPod(
      ['cap_net_admin', 'cap_sys_module'],
      volumes,
      '/usr/sbin/iptables-legacy-save',
      '-t',
      'filter',
    );
    t.notOk(legacy.ok, 'without NET_RAW: no iptables-legacy');
    t.match(legacy.out, /Cannot initialize: Permission denied/, legacy.out.trim().split('\n')[0] ?? '');
  });
}
