// Object validation: what is accepted, what is ignored on purpose, and what is rejected with
// which field named.
import t from 'tap';
import { parseEndpointSlice, parseNode, parseService } from '../src/model/validate.ts';
import { ep, node, service, slice } from './support/objects.ts';

const opts = { proxyName: 'kube-ipvs' };

function invalidField(r: ReturnType<typeof parseService> | ReturnType<typeof parseEndpointSlice>): string {
  return r.status === 'invalid' ? (r.problem.field ?? '') : `<${r.status}>`;
}

t.test('Service: normalized values', async (t) => {
  const r = parseService(
    service('s', {
      ns: 'shop',
      clusterIPs: ['10.96.0.1', 'FD00:96:0::1'],
      type: 'LoadBalancer',
      ports: [
        { name: 'a', port: 80, nodePort: 30080 },
        { name: 'b', port: 53, protocol: 'UDP' },
      ],
      externalIPs: ['198.51.100.1'],
      lbIngress: [{ ip: '198.51.100.7' }, { ip: '198.51.100.8', ipMode: 'Proxy' }],
      spec: {
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 32000,
        loadBalancerSourceRanges: [' 10.0.0.1/8 '],
        sessionAffinity: 'ClientIP',
      },
    }),
    opts,
  );
  if (r.status !== 'ok') throw new Error(JSON.stringify(r));
  const s = r.value;
  t.equal(s.key, 'shop/s');
  t.same(s.clusterIPs, ['10.96.0.1', 'fd00:96::1'], 'canonical addresses');
  t.same(s.ports, [
    { name: 'a', protocol: 'TCP', port: 80, nodePort: 30080 },
    { name: 'b', protocol: 'UDP', port: 53, nodePort: 0 },
  ]);
  t.same(s.loadBalancerIPs, ['198.51.100.7'], 'ipMode Proxy ingress left out');
  t.same(s.loadBalancerSourceRanges, ['10.0.0.0/8']);
  t.equal(s.affinityTimeoutSeconds, 10800, 'default affinity timeout');
  t.equal(s.externalTrafficPolicyLocal, true);
  t.equal(s.healthCheckNodePort, 32000, 'healthCheckNodePort kept for eTP Local LoadBalancers');
});

t.test('Service: externalTrafficPolicy only applies to externally reachable Services', async (t) => {
  const plain = parseService(service('s', { spec: { externalTrafficPolicy: 'Local' } }), opts);
  t.equal(plain.status === 'ok' && plain.value.externalTrafficPolicyLocal, false);
  const withExt = parseService(
    service('s', { externalIPs: ['198.51.100.1'], spec: { externalTrafficPolicy: 'Local' } }),
    opts,
  );
  t.equal(withExt.status === 'ok' && withExt.value.externalTrafficPolicyLocal, true);
});

t.test('Service: ignored on purpose', async (t) => {
  const cases: [string, Record<string, unknown>][] = [
    ['headless', service('s', { clusterIPs: 'None' })],
    ['ExternalName', service('s', { type: 'ExternalName', clusterIPs: [] })],
    ['other proxy', service('s', { labels: { 'service.kubernetes.io/service-proxy-name': 'cilium' } })],
    ['headless label', service('s', { labels: { 'service.kubernetes.io/headless': '' } })],
    ['no ClusterIP yet', service('s', { clusterIPs: [] })],
  ];
  for (const [name, raw] of cases) t.equal(parseService(raw, opts).status, 'ignored', name);
  t.equal(
    parseService(service('s', { labels: { 'service.kubernetes.io/service-proxy-name': 'kube-ipvs' } }), opts).status,
    'ok',
    'our own proxy name',
  );
  t.equal(
    parseService(service('s', { labels: { 'service.kubernetes.io/service-proxy-name': 'kube-ipvs' } }), {
      proxyName: 'ipvs-b',
    }).status,
    'ignored',
    'configurable name',
  );
});

t.test('Service: rejected, naming the field', async (t) => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['bad ClusterIP', service('s', { clusterIPs: ['10.96.0.300'] }), 'spec.clusterIPs[0]'],
    ['two of one family', service('s', { clusterIPs: ['10.96.0.1', '10.96.0.2'] }), 'spec.clusterIPs'],
    ['port too big', service('s', { ports: [{ port: 70000 }] }), 'spec.ports[0].port'],
    ['port zero', service('s', { ports: [{ port: 0 }] }), 'spec.ports[0].port'],
    ['port missing', service('s', { ports: [{ name: 'x' }] }), 'spec.ports[0].port'],
    ['port as text', service('s', { ports: [{ port: '80' }] }), 'spec.ports[0].port'],
    ['unknown protocol', service('s', { ports: [{ port: 80, protocol: 'ICMP' }] }), 'spec.ports[0].protocol'],
    [
      'nodePort out of range',
      service('s', { type: 'NodePort', ports: [{ port: 80, nodePort: 99999 }] }),
      'spec.ports[0].nodePort',
    ],
    ['bad externalIP', service('s', { externalIPs: ['example.com'] }), 'spec.externalIPs[0]'],
    [
      'bad LB ingress',
      service('s', { type: 'LoadBalancer', lbIngress: [{ ip: '1.2.3' }] }),
      'status.loadBalancer.ingress[0].ip',
    ],
    [
      'bad source range',
      service('s', { type: 'LoadBalancer', spec: { loadBalancerSourceRanges: ['10.0.0.0/40'] } }),
      'spec.loadBalancerSourceRanges[0]',
    ],
    [
      'bad affinity timeout',
      service('s', {
        spec: { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 90000 } } },
      }),
      'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
    ],
    ['bad policy', service('s', { spec: { internalTrafficPolicy: 'Nearby' } }), 'spec.internalTrafficPolicy'],
    ['bad type', service('s', { type: 'Magic' }), 'spec.type'],
    ['ports not a list', service('s', { ports: 'http' as unknown as Record<string, unknown>[] }), 'spec.ports'],
    [
      'duplicate port names',
      service('s', {
        ports: [
          { name: 'a', port: 80 },
          { name: 'a', port: 81 },
        ],
      }),
      'spec.ports[1].name',
    ],
  ];
  for (const [name, raw, field] of cases) t.equal(invalidField(parseService(raw, opts)), field, name);
  const multi = parseService(service('s', { clusterIPs: ['x'], ports: [{ port: -1 }] }), opts);
  t.match(
    multi.status === 'invalid' ? multi.problem.message : '',
    /spec\.ports\[0\]\.port/,
    'one line names every bad field',
  );
  t.equal(parseService('not an object', opts).status, 'invalid');
});

t.test('Service: scheduler annotation', async (t) => {
  const ok = parseService(service('s', { annotations: { 'kube-ipvs.io/scheduler': 'sh' } }), opts);
  t.equal(ok.status === 'ok' && ok.value.scheduler, 'sh');
  const bad = parseService(service('s', { annotations: { 'kube-ipvs.io/scheduler': 'random' } }), opts);
  t.equal(bad.status, 'ok', 'an invalid annotation does not take the Service down');
  t.equal(bad.status === 'ok' && bad.value.scheduler, '', 'falls back to the default');
  t.equal(bad.status === 'ok' && bad.warnings[0]?.code, 'KIPVS_ANNOTATION_INVALID');
});

t.test('EndpointSlice', async (t) => {
  const r = parseEndpointSlice(
    slice('s-1', 's', [
      ep('10.0.0.1', { node: 'n', zone: 'z', zones: ['z'] }),
      { addresses: [] },
      { addresses: ['10.0.0.2'] },
    ]),
    opts,
  );
  if (r.status !== 'ok') throw new Error(JSON.stringify(r));
  t.equal(r.value.serviceKey, 'default/s');
  t.equal(r.value.endpoints.length, 2, 'an endpoint without addresses is skipped');
  t.same(
    r.value.endpoints[1],
    {
      address: '10.0.0.2',
      sortKey: '40a000002',
      ready: true,
      serving: true,
      terminating: false,
      nodeName: '',
      zone: '',
      zoneHints: null,
      nodeHints: null,
    },
    'unset conditions: ready and serving, not terminating',
  );
  t.same(r.value.endpoints[0]?.zoneHints, ['z']);

  const noPort = parseEndpointSlice(slice('s-1', 's', [ep('10.0.0.1')], { ports: [{ name: 'x' }] }), opts);
  t.same(noPort.status === 'ok' && noPort.value.ports, [], 'a port without a number is skipped, as kube-proxy does');

  const fqdn = parseEndpointSlice(
    slice('s-1', 's', [{ addresses: ['db.example.com'] }], { addressType: 'FQDN' }),
    opts,
  );
  t.equal(fqdn.status === 'ok' && fqdn.value.family, null, 'FQDN slices are accepted and carry no endpoints');

  const cases: [string, Record<string, unknown>, string][] = [
    [
      'no owner label',
      { ...slice('x', 's', []), metadata: { name: 'x', namespace: 'default' } },
      'metadata.labels[kubernetes.io/service-name]',
    ],
    ['bad address', slice('x', 's', [ep('10.0.0.999')]), 'endpoints[0].addresses[0]'],
    ['family mismatch', slice('x', 's', [ep('fd00::1')]), 'endpoints[0].addresses[0]'],
    ['bad addressType', slice('x', 's', [], { addressType: 'IPX' }), 'addressType'],
    ['port out of range', slice('x', 's', [], { ports: [{ port: 65536 }] }), 'ports[0].port'],
    ['bad protocol', slice('x', 's', [], { ports: [{ port: 80, protocol: 'GRE' }] }), 'ports[0].protocol'],
    [
      'condition not boolean',
      slice('x', 's', [{ addresses: ['10.0.0.1'], conditions: { ready: 'yes' } }]),
      'endpoints[0].conditions.ready',
    ],
  ];
  for (const [name, raw, field] of cases) t.equal(invalidField(parseEndpointSlice(raw, opts)), field, name);
});

t.test('Node', async (t) => {
  const r = parseNode(
    node(
      'n',
      [
        ['InternalIP', '10.0.0.1'],
        ['Hostname', 'n'],
        ['ExternalIP', '2001:DB8::1'],
        ['InternalIP', '10.0.0.1'],
      ],
      'z1',
    ),
  );
  if (r.status !== 'ok') throw new Error(JSON.stringify(r));
  t.same(r.value.addresses, [
    { type: 'InternalIP', address: '10.0.0.1' },
    { type: 'ExternalIP', address: '2001:db8::1' },
  ]);
  t.equal(r.value.zone, 'z1');
  t.equal(r.value.deleting, false);
  const going = parseNode({
    ...node('n', []),
    metadata: { name: 'n', deletionTimestamp: '2026-01-01T00:00:00Z' },
    spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] },
  });
  t.ok(
    going.status === 'ok' && going.value.deleting && going.value.toBeDeleted,
    'deletion and the autoscaler taint are seen (for /healthz)',
  );
  const bad = parseNode(node('n', [['InternalIP', 'nope']]));
  t.equal(bad.status === 'invalid' && bad.problem.field, 'status.addresses[0].address');
});
