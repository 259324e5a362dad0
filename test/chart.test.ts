// The Helm chart (charts/kube-ipvs) with helm built from Go modules by the test set-up:
// `helm lint`, the rendered manifests read as objects (not compared as text), and every rendered
// object sent to a real kube-apiserver running Node,RBAC authorization, first with dryRun=All and
// then for real. kube-ipvs then runs with a token of the chart's ServiceAccount (TokenRequest):
// it lists, watches and programs (dry run), and a request outside its role is denied.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { main } from '../src/cli.ts';
import { Model } from '../src/model/model.ts';
import { Logger } from '../src/observe/log.ts';
import { KubernetesSource } from '../src/sources/kubernetes.ts';
import { ApiServer, k8sBinaries } from './support/apiserver.ts';
import { ep, node, slice } from './support/objects.ts';

t.setTimeout(5 * 60_000);
const repo = resolve(import.meta.dirname, '..');
const chart = join(repo, 'charts/kube-ipvs');
const built = k8sBinaries();

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
};
// Loose views into rendered objects: the assertions say what must be there.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- rendered Kubernetes objects, read by shape
type Any = any;

if ('why' in built) {
  t.plan(0, `chart tests skipped: ${built.why}`);
} else {
  const helm = (...args: string[]) =>
    spawnSync(join(built.bin, 'helm'), args, {
      encoding: 'utf8',
      timeout: 60_000,
      env: {
        ...process.env,
        HELM_CACHE_HOME: join(tmpdir(), 'kipvs-helm-cache'),
        HELM_CONFIG_HOME: join(tmpdir(), 'kipvs-helm-config'),
        HELM_DATA_HOME: join(tmpdir(), 'kipvs-helm-data'),
      },
    });
  const render = (...set: string[]): Obj[] => {
    const r = helm('template', 'kipvs', chart, '--namespace', 'kube-system', ...set);
    if (r.status !== 0) throw new Error(`helm template failed: ${r.stderr}`);
    return parseAllDocuments(r.stdout)
      .map((d) => d.toJSON() as Obj)
      .filter((o) => o && typeof o === 'object');
  };
  const one = (objs: Obj[], kind: string, name?: string) => {
    const found = objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
    if (found.length !== 1) throw new Error(`${found.length} ${kind} objects rendered`);
    return found[0] as Any;
  };
  const container = (objs: Obj[]) => one(objs, 'DaemonSet').spec.template.spec.containers[0];

  t.test('helm lint --strict', async (t) => {
    const r = helm('lint', '--strict', chart);
    t.equal(r.status, 0, r.stdout + r.stderr);
  });

  t.test("the DaemonSet is kube-proxy's, with capabilities instead of privileged", async (t) => {
    const objs = render();
    const ds = one(objs, 'DaemonSet');
    const pod = ds.spec.template.spec;
    t.equal(pod.hostNetwork, true);
    t.equal(pod.dnsPolicy, 'Default', "the node's resolver, not cluster DNS behind a ClusterIP kube-ipvs programs");
    t.equal(pod.priorityClassName, 'system-node-critical');
    t.same(pod.tolerations, [{ operator: 'Exists' }], 'tolerates every taint');
    t.equal(ds.spec.updateStrategy.type, 'RollingUpdate');
    t.equal(ds.spec.updateStrategy.rollingUpdate.maxUnavailable, 1);
    const c = container(objs);
    const appVersion = /appVersion: "(.*)"/.exec(readFileSync(join(chart, 'Chart.yaml'), 'utf8'))?.[1];
    t.equal(c.image, `ghcr.io/kube-ipvs/kube-ipvs:${appVersion}`, 'the image tag defaults to appVersion');
    t.same(c.env.find((e: Any) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
    t.notOk(
      c.env.some((e: Any) => e.name === 'KUBERNETES_SERVICE_HOST'),
      'no API server override by default',
    );
    t.equal(c.securityContext.privileged, false);
    t.same(c.securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW', 'SYS_MODULE'] });
    t.equal(c.securityContext.readOnlyRootFilesystem, true);
    t.same(c.livenessProbe.httpGet, { path: '/livez', port: 10256 });
    t.same(c.readinessProbe.httpGet, { path: '/healthz', port: 10256 });
    t.ok(c.resources.requests.cpu && c.resources.requests.memory, 'resource requests');
    const mounts = Object.fromEntries(c.volumeMounts.map((m: Any) => [m.name, m]));
    const vols = Object.fromEntries(pod.volumes.map((v: Any) => [v.name, v]));
    const host = (name: string) => vols[name].hostPath;
    t.same(
      [mounts['xtables-lock'].mountPath, host('xtables-lock')],
      ['/run/xtables.lock', { path: '/run/xtables.lock', type: 'FileOrCreate' }],
    );
    t.same(
      [mounts['lib-modules'].mountPath, mounts['lib-modules'].readOnly, host('lib-modules').path],
      ['/lib/modules', true, '/lib/modules'],
    );
    t.same(
      [mounts.state.mountPath, host('state')],
      ['/run/kube-ipvs', { path: '/run/kube-ipvs', type: 'DirectoryOrCreate' }],
    );
    t.same(
      [mounts['host-proc-sys-net'].mountPath, host('host-proc-sys-net').path],
      ['/host/proc/sys/net', '/proc/sys/net'],
    );
    t.notOk(mounts['host-proc-sys-net'].readOnly, 'the sysctls are written there');
    t.ok(c.args.includes('--proc-sys=/host/proc/sys'));
    t.equal(c.args[0], 'run');
  });

  t.test('the rendered config is one kube-ipvs accepts, and it serves metrics off loopback', async (t) => {
    const objs = render('--set', 'config.settings.clusterCIDR=10.244.0.0/16');
    const cm = one(objs, 'ConfigMap');
    const dir = mkdtempSync(join(tmpdir(), 'kipvs-chart-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'config.yaml'), cm.data['config.yaml']);
    t.ok(container(objs).args.includes('--config=/etc/kube-ipvs/config.yaml'));
    t.match(
      one(objs, 'DaemonSet').spec.template.metadata.annotations['checksum/config'],
      /^[a-f0-9]{64}$/,
      'a config change rolls the pods',
    );
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(
      ['plan', '--manifests', 'config/examples', '--config', join(dir, 'config.yaml'), '--strict', '--output', 'json'],
      { stdout: (s) => void out.push(s), stderr: (s) => void err.push(s) },
    );
    t.equal(code, 0, err.join(''));
    t.match(cm.data['config.yaml'], /metricsBindAddress: 0\.0\.0\.0:10249/);
    const bad = render('--set', 'config.settings.ipvs.scheduler=bogus');
    writeFileSync(join(dir, 'bad.yaml'), one(bad, 'ConfigMap').data['config.yaml']);
    const badErr: string[] = [];
    t.not(
      await main(['plan', '--manifests', 'config/examples', '--config', join(dir, 'bad.yaml')], {
        stdout: () => {},
        stderr: (s) => void badErr.push(s),
      }),
      0,
      'a bad setting is refused by kube-ipvs',
    );
    t.match(badErr.join(''), /scheduler/);
  });

  t.test("kube-proxy's ConfigMap reused as is; the API server address as values", async (t) => {
    const objs = render(
      '--set',
      'config.existingConfigMap=kube-proxy',
      '--set',
      'k8sServiceHost=10.0.0.1',
      '--set',
      'k8sServicePort=6443',
    );
    t.equal(objs.filter((o) => o.kind === 'ConfigMap').length, 0, 'no ConfigMap of our own');
    const c = container(objs);
    t.ok(c.args.includes('--config=/var/lib/kube-proxy/config.conf'), 'config.conf read where kubeadm mounts it');
    t.equal(
      c.volumeMounts.find((m: Any) => m.name === 'config').mountPath,
      '/var/lib/kube-proxy',
      'its kubeconfig.conf resolves too',
    );
    t.equal(
      one(objs, 'DaemonSet').spec.template.spec.volumes.find((v: Any) => v.name === 'config').configMap.name,
      'kube-proxy',
    );
    const env = Object.fromEntries(c.env.filter((e: Any) => 'value' in e).map((e: Any) => [e.name, e.value]));
    t.same(env, { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '6443' });
    const code = await main(
      ['plan', '--manifests', 'config/examples', '--config', 'config/kube-proxy-configmap.yaml', '--strict'],
      { stdout: () => {}, stderr: () => {} },
    );
    t.equal(code, 0, "kubeadm's config.conf is read as is");
  });

  t.test('RBAC: read Services, EndpointSlices and Nodes; nothing else', async (t) => {
    const objs = render();
    t.same(one(objs, 'ClusterRole').rules, [
      { apiGroups: [''], resources: ['services'], verbs: ['list', 'watch'] },
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
      { apiGroups: [''], resources: ['nodes'], verbs: ['list', 'watch'] },
    ]);
    const b = one(objs, 'ClusterRoleBinding');
    t.same(b.subjects, [
      { kind: 'ServiceAccount', name: one(objs, 'ServiceAccount').metadata.name, namespace: 'kube-system' },
    ]);
    t.equal(render('--set', 'rbac.create=false').filter((o) => o.kind.startsWith('ClusterRole')).length, 0);
  });

  t.test(
    'ServiceMonitor only when asked and the API exists; the dashboard only names metrics kube-ipvs has',
    async (t) => {
      t.notOk(
        render().some((o) => o.kind === 'ServiceMonitor'),
        'off by default',
      );
      t.notOk(
        render('--set', 'serviceMonitor.enabled=true').some((o) => o.kind === 'ServiceMonitor'),
        'not without monitoring.coreos.com/v1',
      );
      const sm = one(
        render('--set', 'serviceMonitor.enabled=true', '--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor'),
        'ServiceMonitor',
      );
      const svc = one(render(), 'Service');
      t.same(sm.spec.selector.matchLabels, svc.spec.selector, 'selects the metrics Service');
      t.equal(sm.spec.endpoints[0].port, svc.spec.ports[0].name);
      const cm = one(render('--set', 'dashboard.enabled=true'), 'ConfigMap', 'kipvs-kube-ipvs-dashboard');
      t.equal(cm.metadata.labels.grafana_dashboard, '1');
      const dash = JSON.parse(cm.data['kube-ipvs.json']) as {
        panels: { title: string; targets?: { expr: string }[] }[];
      };
      const exprs = dash.panels.flatMap((p) => p.targets ?? []).map((x) => x.expr);
      t.ok(exprs.length >= 20, `${exprs.length} queries`);
      const used = new Set(
        exprs
          .flatMap((e) => e.match(/\b(kubeproxy|kubeipvs|process)_[a-z_]+/g) ?? [])
          .map((m) => m.replace(/_(bucket|count|sum)$/, '')),
      );
      const src = readdirSync(join(repo, 'src'), { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.ts'))
        .map((f) => readFileSync(join(repo, 'src', f), 'utf8'))
        .join('\n');
      const known = new Set([
        ...(src.match(/\b(kubeproxy|kubeipvs)_[a-z_]+/g) ?? []),
        'process_resident_memory_bytes',
        'process_cpu_seconds_total',
      ]);
      t.same(
        [...used].filter((m) => !known.has(m)),
        [],
        'every metric on the dashboard exists',
      );
      for (const m of [
        'kubeproxy_sync_proxy_rules_duration_seconds',
        'kubeproxy_network_programming_duration_seconds',
        'kubeipvs_virtual_server_connections_total',
        'kubeipvs_health_ejected_endpoints',
      ])
        t.ok(used.has(m), `shows ${m}`);
    },
  );

  t.test('values.schema.json refuses what would reach the pod unchecked', async (t) => {
    for (const bad of [
      ['image.tag=x y'],
      ['image.digest=sha256:zz'],
      ['k8sServiceHost=a b'],
      ['extraArgs[0]=x;rm'],
      ['ports.healthz=70000'],
      ['nodeSelector.a=null', 'nodeSelector.b=1'],
      ['bogus=1'],
    ]) {
      const r = helm('template', 'kipvs', chart, ...bad.flatMap((s) => ['--set', s]));
      t.not(r.status, 0, `--set ${bad.join(' ')} refused`);
    }
    t.equal(helm('template', 'kipvs', chart, '--set', 'image.digest=sha256:' + 'a'.repeat(64)).status, 0);
    t.match(container(render('--set', 'image.digest=sha256:' + 'a'.repeat(64))).image, /@sha256:a{64}$/);
  });

  t.test(
    "on a real API server with Node,RBAC: created, then kube-ipvs with the chart's token lists, watches, programs; nothing else",
    async (t) => {
      const api = new ApiServer(built.bin, { authorization: 'Node,RBAC' });
      await api.start();
      t.teardown(() => api.stop());
      const objs = render('--set', 'dashboard.enabled=true');
      const path = (o: Obj) => {
        const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
        const base = group ? `/apis/${group}/${version}` : `/api/${version}`;
        const plural = `${o.kind.toLowerCase()}s`;
        return o.metadata.namespace ? `${base}/namespaces/${o.metadata.namespace}/${plural}` : `${base}/${plural}`;
      };
      for (const o of objs) {
        const dry = await api.request('POST', `${path(o)}?dryRun=All&fieldValidation=Strict`, o);
        t.ok(
          dry.status === 201 || dry.status === 200,
          `${o.kind} ${o.metadata.name} accepted in a dry run (${dry.status} ${dry.status >= 300 ? JSON.stringify(dry.json) : ''})`,
        );
      }
      t.equal(
        (await api.request('GET', `${path(one(objs, 'DaemonSet'))}/kipvs-kube-ipvs`)).status,
        404,
        'the dry run stored nothing',
      );
      // The other shape: kube-proxy's ConfigMap reused, the API server address set, no RBAC or metrics Service of its
      // own.
      for (const o of render(
        '--set',
        'config.existingConfigMap=kube-proxy',
        '--set',
        'k8sServiceHost=10.0.0.1',
        '--set',
        'rbac.create=false',
        '--set',
        'metricsService.enabled=false',
      )) {
        const dry = await api.request('POST', `${path(o)}?dryRun=All&fieldValidation=Strict`, o);
        t.ok(
          dry.status === 201 || dry.status === 200,
          `kube-proxy ConfigMap variant: ${o.kind} accepted in a dry run (${dry.status})`,
        );
      }
      for (const o of objs) {
        const r = await api.request('POST', `${path(o)}?fieldValidation=Strict`, o);
        t.equal(
          r.status,
          201,
          `${o.kind} ${o.metadata.name} created${r.status !== 201 ? `: ${JSON.stringify(r.json)}` : ''}`,
        );
      }
      const sa = one(objs, 'ServiceAccount').metadata.name as string;
      const tr = await api.request('POST', `/api/v1/namespaces/kube-system/serviceaccounts/${sa}/token`, {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 3600 },
      });
      t.equal(tr.status, 201, 'TokenRequest');
      const token = (tr.json as { status: { token: string } }).status.token;

      // The cluster: this node, a Service and its EndpointSlice.
      await api.request('POST', '/api/v1/nodes', node('node-a', [['InternalIP', '192.168.1.10']], 'zone-a'));
      const svc = await api.request('POST', '/api/v1/namespaces/default/services', {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'web' },
        spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
      });
      t.equal(svc.status, 201);
      const clusterIP = (svc.json as { spec: { clusterIP: string } }).spec.clusterIP;
      await api.request(
        'POST',
        '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices',
        slice('web-1', 'web', [ep('10.244.1.5')], { ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] }),
      );

      // Denied: everything outside the role.
      for (const [method, p, body] of [
        ['GET', '/api/v1/secrets'],
        ['GET', '/api/v1/namespaces/kube-system/configmaps'],
        ['GET', '/api/v1/pods'],
        [
          'POST',
          '/api/v1/namespaces/default/services',
          { apiVersion: 'v1', kind: 'Service', metadata: { name: 'x' }, spec: { ports: [{ port: 1 }] } },
        ],
        ['DELETE', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-1'],
        [
          'POST',
          '/api/v1/namespaces/default/events',
          {
            apiVersion: 'v1',
            kind: 'Event',
            metadata: { name: 'x' },
            involvedObject: { kind: 'Node', name: 'node-a' },
          },
        ],
      ] as const) {
        const r = await api.request(method, p, body, token);
        t.equal(r.status, 403, `${method} ${p} denied`);
      }
      t.equal((await api.request('GET', '/api/v1/services', undefined, token)).status, 200, 'listing Services allowed');

      // kube-ipvs itself with that token: the CLI lists and programs an in-memory kernel ...
      const kubeconfig = api.kubeconfig(token, 'sa-kubeconfig');
      const out: string[] = [];
      const err: string[] = [];
      const code = await main(['run', '--kubeconfig', kubeconfig, '--node', 'node-a', '--dry-run', '--once'], {
        stdout: (s) => void out.push(s),
        stderr: (s) => void err.push(s),
      });
      t.equal(code, 0, err.join('').slice(-2000));
      t.match(
        out.join(''),
        new RegExp(`${clusterIP.replaceAll('.', '\\.')}:80`),
        'the Service was planned and programmed (dry run)',
      );
      t.notMatch(err.join(''), /forbidden|403/i);
      // ... and its source watches: a Service created later arrives.
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfig);
      const model = new Model({ nodeName: 'node-a', proxyName: 'kube-ipvs' });
      const logs: string[] = [];
      const src = new KubernetesSource(kc, {
        nodeName: 'node-a',
        proxyName: 'kube-ipvs',
        log: new Logger({ sink: (l) => void logs.push(l) }),
      });
      t.teardown(() => src.stop());
      await src.start((b) => {
        for (const c of b.changes) model.apply(c);
      });
      t.ok(model.service('default/web') !== undefined, 'listed');
      await api.request('POST', '/api/v1/namespaces/default/services', {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'later' },
        spec: { ports: [{ port: 81 }] },
      });
      const end = Date.now() + 20_000;
      while (!(model.service('default/later') !== undefined) && Date.now() < end)
        await new Promise((r) => setTimeout(r, 50));
      t.ok(model.service('default/later') !== undefined, 'watched');
      t.notMatch(logs.join('\n'), /forbidden|403/i, 'no request of the source was denied');

      // Each rule is needed: with any one left out, the source never completes its first list (and
      // nothing is programmed from a partial view); it says which informer was refused.
      const role = one(objs, 'ClusterRole') as { rules: { resources: string[] }[] };
      for (let i = 0; i < role.rules.length; i++) {
        const name = `minus-${role.rules[i]!.resources[0]}`;
        const rules = role.rules.filter((_, j) => j !== i);
        for (const [p, body] of [
          [
            '/api/v1/namespaces/kube-system/serviceaccounts',
            { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } },
          ],
          [
            '/apis/rbac.authorization.k8s.io/v1/clusterroles',
            { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name }, rules },
          ],
          [
            '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
            {
              apiVersion: 'rbac.authorization.k8s.io/v1',
              kind: 'ClusterRoleBinding',
              metadata: { name },
              roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
              subjects: [{ kind: 'ServiceAccount', name, namespace: 'kube-system' }],
            },
          ],
        ] as const)
          t.equal((await api.request('POST', p, body)).status, 201, `${name}: ${p}`);
        const tok = (
          (
            await api.request('POST', `/api/v1/namespaces/kube-system/serviceaccounts/${name}/token`, {
              apiVersion: 'authentication.k8s.io/v1',
              kind: 'TokenRequest',
              spec: { expirationSeconds: 600 },
            })
          ).json as { status: { token: string } }
        ).status.token;
        const kc2 = new KubeConfig();
        kc2.loadFromFile(api.kubeconfig(tok, `kubeconfig-${name}`));
        const logs2: string[] = [];
        const src2 = new KubernetesSource(kc2, {
          nodeName: 'node-a',
          proxyName: 'kube-ipvs',
          log: new Logger({ sink: (l) => void logs2.push(l) }),
          backoffBaseMs: 100,
          backoffMaxMs: 500,
        });
        let started = false;
        void src2
          .start(() => {})
          .then(
            () => (started = true),
            () => {},
          );
        const until = Date.now() + 20_000;
        while (!logs2.some((l) => /403|forbidden/i.test(l)) && Date.now() < until)
          await new Promise((r) => setTimeout(r, 50));
        src2.stop();
        const refused = logs2.find((l) => /403|forbidden/i.test(l)) ?? '';
        t.ok(refused, `without ${role.rules[i]!.resources[0]}: a request refused`);
        t.match(
          refused,
          role.rules[i]!.resources[0] === 'nodes' ? /node/ : new RegExp(role.rules[i]!.resources[0]!),
          'the log names what was refused',
        );
        t.notOk(started, `without ${role.rules[i]!.resources[0]}: never started`);
      }
    },
  );
}
