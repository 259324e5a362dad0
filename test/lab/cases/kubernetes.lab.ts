// kube-ipvs in the VM watches the real kube-apiserver on the host (reached through qemu's
// guestfwd at 10.0.2.100:6443), and real traffic follows changes made through the API.
import t from 'tap';
import { ep, node, slice } from '../../support/objects.ts';
import { KUBECONFIG, labApi } from '../support/api.ts';
import { LabNode, NODE_IP } from '../support/node.ts';

const api = labApi();
if (!api) {
  t.plan(0, 'no API server on the host (test/k8s binaries could not be built, or K8S=0)');
} else {
  t.setTimeout(240_000);
  const lab = new LabNode();
  const ns = 'lab';
  const count = (names: string[]) => names.reduce<Record<string, number>>((m, n) => ((m[n] = (m[n] ?? 0) + 1), m), {});
  const sliceFor = (...names: string[]) => {
    const s = slice(
      'web-lab',
      'web',
      names.map((n) => ep(lab.backendIP(n), { node: 'lab-node' })),
      { ns, ports: [{ name: 'http', protocol: 'TCP', port: 8080 }] },
    );
    return s;
  };
  let vip = '';

  t.before(async () => {
    await lab.build(2);
    await api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    await api('POST', '/api/v1/nodes', node('lab-node', [['InternalIP', NODE_IP]], 'zone-a'));
    const svc = await api('POST', `/api/v1/namespaces/${ns}/services`, {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: ns },
      spec: { type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30090 }] },
    });
    if (svc.status !== 201) throw new Error(`create Service: ${svc.status} ${JSON.stringify(svc.json)}`);
    vip = (svc.json.spec as { clusterIP: string }).clusterIP;
    const s = await api('POST', `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`, sliceFor('be1', 'be2'));
    if (s.status !== 201) throw new Error(`create EndpointSlice: ${s.status} ${JSON.stringify(s.json)}`);
    lab.startProxy({}, ['--kubeconfig', KUBECONFIG]);
  });
  t.teardown(() => lab.shutdown());

  t.test('a Service made through the API carries traffic', async (t) => {
    // The first sync also loads the ipset and iptables modules; with the API server and etcd on
    // the same two host cores as the emulated guest, that took longer than 40 s.
    await lab.waitKernel((k) => Object.keys(k[`TCP/${vip}:80`]?.dests ?? {}).length === 2, 150_000);
    t.same(count(lab.client('client', 'tcp', vip, '80', '8')), { be1: 4, be2: 4 }, `ClusterIP ${vip}`);
    t.same(count(lab.client('ext', 'tcp', NODE_IP, '30090', '4')), { be1: 2, be2: 2 }, 'NodePort');
  });

  t.test('an EndpointSlice update through the API moves traffic', async (t) => {
    const cur = await api('GET', `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices/web-lab`);
    const next = { ...sliceFor('be2'), metadata: { ...(cur.json.metadata as object) } };
    t.equal((await api('PUT', `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices/web-lab`, next)).status, 200);
    await lab.waitKernel((k) => Object.values(k[`TCP/${vip}:80`]?.dests ?? {}).filter((w) => w > 0).length === 1);
    t.same(count(lab.client('client', 'tcp', vip, '80', '6')), { be2: 6 });
  });

  t.test('a Service deleted through the API is removed from the kernel', async (t) => {
    t.equal((await api('DELETE', `/api/v1/namespaces/${ns}/services/web`)).status, 200);
    await lab.waitKernel((k) => !(`TCP/${vip}:80` in k) && !(`TCP/${NODE_IP}:30090` in k));
    t.pass('gone');
  });
}
