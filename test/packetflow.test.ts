// Table-driven packet-flow tests: given the objects and a packet, where does it land?
// Each case names the Kubernetes rule it proves.
import t from 'tap';
import type { Config } from '../src/config/config.ts';
import type { Protocol } from '../src/model/types.ts';
import { trace } from '../src/plan/trace.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { planObjects } from './support/plan.ts';

type Expect = string[] | 'dropped' | 'not-a-service';
interface Flow {
  to: string; // "addr:port" or "[v6]:port"
  proto?: Protocol;
  from?: string;
  expect: Expect;
  persistent?: number;
  scheduler?: string;
}
interface Case {
  name: string;
  objects: Record<string, unknown>[];
  config?: Partial<Config>;
  flows: Flow[];
}

const NODE = node(
  'node-a',
  [
    ['InternalIP', '192.168.1.10'],
    ['ExternalIP', '203.0.113.10'],
    ['InternalIP', 'fd00::10'],
  ],
  'zone-a',
);
const two = [ep('10.0.1.1', { node: 'node-a', zone: 'zone-a' }), ep('10.0.2.2', { node: 'node-b', zone: 'zone-b' })];

const cases: Case[] = [
  {
    name: 'ClusterIP forwards to every ready endpoint',
    objects: [NODE, service('s'), slice('s-1', 's', two)],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '10.96.0.1:81', expect: 'not-a-service' },
      { to: '10.96.0.1:80', proto: 'UDP', expect: 'not-a-service' },
    ],
  },
  {
    name: 'a Service without endpoints has a virtual server that drops',
    objects: [NODE, service('s')],
    flows: [{ to: '10.96.0.1:80', expect: 'dropped' }],
  },
  {
    name: 'dual-stack: each family reaches endpoints of its own family',
    objects: [
      NODE,
      service('s', {
        clusterIPs: ['10.96.0.1', 'fd00:96::1'],
        type: 'NodePort',
        ports: [{ name: 'http', port: 80, nodePort: 30080 }],
      }),
      slice('s-v4', 's', two),
      slice('s-v6', 's', [ep('fd00:244::1', { node: 'node-b' })], { addressType: 'IPv6' }),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '[fd00:96::1]:80', expect: ['[fd00:244::1]:8080'] },
      { to: '[fd00::10]:30080', expect: ['[fd00:244::1]:8080'] },
      { to: '192.168.1.10:30080', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
    ],
  },
  {
    name: 'single-stack IPv4: IPv6 slices and IPv6 externalIPs are ignored',
    objects: [
      NODE,
      service('s', { externalIPs: ['198.51.100.1', '2001:db8::1'] }),
      slice('s-v6', 's', [ep('fd00:244::1')], { addressType: 'IPv6' }),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: 'dropped' },
      { to: '198.51.100.1:80', expect: 'dropped' },
      { to: '[2001:db8::1]:80', expect: 'not-a-service' },
    ],
  },
  {
    name: 'NodePort listens on every node address by default',
    objects: [
      NODE,
      service('s', { type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] }),
      slice('s-1', 's', two),
    ],
    flows: [
      { to: '192.168.1.10:30080', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '203.0.113.10:30080', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '10.96.0.1:30080', expect: 'not-a-service' },
    ],
  },
  {
    name: 'nodePortAddresses limits NodePorts to the listed CIDRs',
    config: { nodePortAddresses: ['192.168.0.0/16'] },
    objects: [
      NODE,
      service('s', { type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] }),
      slice('s-1', 's', two),
    ],
    flows: [
      { to: '192.168.1.10:30080', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '203.0.113.10:30080', expect: 'not-a-service' },
      { to: '[fd00::10]:30080', expect: 'not-a-service' },
    ],
  },
  {
    name: 'nodePortAddresses "primary" uses the first InternalIP of each family',
    config: { nodePortAddresses: ['primary'] },
    objects: [
      NODE,
      service('s', { type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] }),
      slice('s-1', 's', two),
    ],
    flows: [
      { to: '192.168.1.10:30080', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '203.0.113.10:30080', expect: 'not-a-service' },
    ],
  },
  {
    name: 'LoadBalancer: VIP ingress gets a virtual server, ipMode Proxy does not, and NodePort 0 gets none',
    objects: [
      NODE,
      service('s', {
        type: 'LoadBalancer',
        ports: [{ name: 'http', port: 80 }],
        lbIngress: [{ ip: '198.51.100.7' }, { ip: '198.51.100.8', ipMode: 'Proxy' }, { hostname: 'lb.example.com' }],
        spec: { allocateLoadBalancerNodePorts: false },
      }),
      slice('s-1', 's', two),
    ],
    flows: [
      { to: '198.51.100.7:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '198.51.100.8:80', expect: 'not-a-service' },
      { to: '192.168.1.10:0', expect: 'not-a-service' },
    ],
  },
  {
    name: 'externalIPs get virtual servers on a ClusterIP Service',
    objects: [NODE, service('s', { externalIPs: ['198.51.100.1'] }), slice('s-1', 's', two)],
    flows: [{ to: '198.51.100.1:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] }],
  },
  {
    name: "headless, ExternalName, another proxy's and headless-labelled Services get nothing",
    objects: [
      NODE,
      service('headless', { clusterIPs: 'None' }),
      service('ext', { clusterIPs: [], type: 'ExternalName', spec: { externalName: 'example.com' } }),
      service('other', { clusterIPs: ['10.96.0.3'], labels: { 'service.kubernetes.io/service-proxy-name': 'cilium' } }),
      service('mine', {
        clusterIPs: ['10.96.0.4'],
        labels: { 'service.kubernetes.io/service-proxy-name': 'kube-ipvs' },
      }),
      service('hl', { clusterIPs: ['10.96.0.5'], labels: { 'service.kubernetes.io/headless': '' } }),
      slice('mine-1', 'mine', two),
      slice('other-1', 'other', two),
    ],
    flows: [
      { to: '10.96.0.3:80', expect: 'not-a-service' },
      { to: '10.96.0.4:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '10.96.0.5:80', expect: 'not-a-service' },
    ],
  },
  {
    name: 'slices are merged and duplicates removed; slices labelled for another proxy are ignored',
    objects: [
      NODE,
      service('s'),
      slice('s-a', 's', [ep('10.0.1.1'), ep('10.0.2.2')]),
      slice('s-b', 's', [ep('10.0.2.2'), ep('10.0.3.3')]),
      slice('s-c', 's', [ep('10.0.4.4')], { labels: { 'service.kubernetes.io/service-proxy-name': 'cilium' } }),
    ],
    flows: [{ to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080', '10.0.3.3:8080'] }],
  },
  {
    name: 'a named targetPort resolves per slice: the same port name, different numbers',
    objects: [
      NODE,
      service('s', { ports: [{ name: 'http', port: 80, targetPort: 'web' }] }),
      slice('s-a', 's', [ep('10.0.1.1')], { ports: [{ name: 'http', port: 8080 }] }),
      slice('s-b', 's', [ep('10.0.2.2')], { ports: [{ name: 'http', port: 9090 }] }),
    ],
    flows: [{ to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.2.2:9090'] }],
  },
  {
    name: 'multi-port Services: slice ports match by name and protocol; UDP and SCTP',
    objects: [
      NODE,
      service('s', {
        ports: [
          { name: 'dns', protocol: 'UDP', port: 53 },
          { name: 'dns-tcp', protocol: 'TCP', port: 53 },
          { name: 'sig', protocol: 'SCTP', port: 3868 },
        ],
      }),
      slice('s-1', 's', [ep('10.0.1.1')], {
        ports: [
          { name: 'dns', protocol: 'UDP', port: 5353 },
          { name: 'dns-tcp', protocol: 'TCP', port: 5354 },
          { name: 'sig', protocol: 'TCP', port: 3868 }, // protocol mismatch: not the SCTP port
        ],
      }),
    ],
    flows: [
      { to: '10.96.0.1:53', proto: 'UDP', expect: ['10.0.1.1:5353'] },
      { to: '10.96.0.1:53', proto: 'TCP', expect: ['10.0.1.1:5354'] },
      { to: '10.96.0.1:3868', proto: 'SCTP', expect: 'dropped' },
    ],
  },
  {
    name: 'terminating endpoints are used only when no endpoint is ready, and only while serving',
    objects: [
      NODE,
      service('ready-left', { clusterIPs: ['10.96.0.1'] }),
      slice('a', 'ready-left', [ep('10.0.1.1'), ep('10.0.2.2', { ready: false, serving: true, terminating: true })]),
      service('all-terminating', { clusterIPs: ['10.96.0.2'] }),
      slice('b', 'all-terminating', [
        ep('10.0.1.1', { ready: false, serving: true, terminating: true }),
        ep('10.0.2.2', { ready: false, serving: false, terminating: true }),
      ]),
      service('none-serving', { clusterIPs: ['10.96.0.3'] }),
      slice('c', 'none-serving', [
        ep('10.0.1.1', { ready: false, serving: false, terminating: true }),
        ep('10.0.2.2', { ready: false, serving: false }),
      ]),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080'] },
      { to: '10.96.0.2:80', expect: ['10.0.1.1:8080'] },
      { to: '10.96.0.3:80', expect: 'dropped' },
    ],
  },
  {
    name: 'zone hints: used when every ready endpoint has one and one names this zone',
    objects: [
      NODE,
      service('hinted', { clusterIPs: ['10.96.0.1'] }),
      slice('a', 'hinted', [
        ep('10.0.1.1', { zones: ['zone-a'] }),
        ep('10.0.2.2', { zones: ['zone-b'] }),
        ep('10.0.3.3', { zones: ['zone-a', 'zone-c'] }),
      ]),
      service('one-unhinted', { clusterIPs: ['10.96.0.2'] }),
      slice('b', 'one-unhinted', [ep('10.0.1.1', { zones: ['zone-a'] }), ep('10.0.2.2')]),
      service('not-for-us', { clusterIPs: ['10.96.0.3'] }),
      slice('c', 'not-for-us', [ep('10.0.1.1', { zones: ['zone-b'] }), ep('10.0.2.2', { zones: ['zone-c'] })]),
      service('unready-unhinted', { clusterIPs: ['10.96.0.4'] }),
      slice('d', 'unready-unhinted', [
        ep('10.0.1.1', { zones: ['zone-a'] }),
        ep('10.0.2.2', { zones: ['zone-b'] }),
        ep('10.0.9.9', { ready: false }),
      ]),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.3.3:8080'] },
      { to: '10.96.0.2:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '10.96.0.3:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '10.96.0.4:80', expect: ['10.0.1.1:8080'] },
    ],
  },
  {
    name: 'node hints (PreferSameNode) win over zone hints when every endpoint has one for some node',
    objects: [
      NODE,
      service('s', { clusterIPs: ['10.96.0.1'], spec: { trafficDistribution: 'PreferSameNode' } }),
      slice('a', 's', [
        ep('10.0.1.1', { node: 'node-a', zones: ['zone-a'], nodes: ['node-a'] }),
        ep('10.0.1.2', { node: 'node-x', zones: ['zone-a'], nodes: ['node-x'] }),
        ep('10.0.2.2', { node: 'node-b', zones: ['zone-b'], nodes: ['node-b'] }),
      ]),
      service('elsewhere', { clusterIPs: ['10.96.0.2'], spec: { trafficDistribution: 'PreferSameNode' } }),
      slice('b', 'elsewhere', [
        ep('10.0.1.2', { zones: ['zone-a'], nodes: ['node-x'] }),
        ep('10.0.2.2', { zones: ['zone-b'], nodes: ['node-b'] }),
      ]),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080'] },
      { to: '10.96.0.2:80', expect: ['10.0.1.2:8080'] }, // no node hint for us: falls back to zone hints
    ],
  },
  {
    name: 'node hints are ignored when the PreferSameTrafficDistribution gate is off',
    config: { featureGates: { PreferSameTrafficDistribution: false } },
    objects: [
      NODE,
      service('s', { clusterIPs: ['10.96.0.1'] }),
      slice('a', 's', [
        ep('10.0.1.1', { zones: ['zone-a'], nodes: ['node-a'] }),
        ep('10.0.1.2', { zones: ['zone-a'], nodes: ['node-x'] }),
      ]),
    ],
    flows: [{ to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.1.2:8080'] }],
  },
  {
    name: "internalTrafficPolicy Local: the ClusterIP reaches this node's endpoints only, none means dropped",
    objects: [
      NODE,
      service('local', { clusterIPs: ['10.96.0.1'], spec: { internalTrafficPolicy: 'Local' } }),
      slice('a', 'local', two),
      service('remote-only', { clusterIPs: ['10.96.0.2'], spec: { internalTrafficPolicy: 'Local' } }),
      slice('b', 'remote-only', [ep('10.0.2.2', { node: 'node-b' })]),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080'] },
      { to: '10.96.0.2:80', expect: 'dropped' },
    ],
  },
  {
    name: 'externalTrafficPolicy Local: NodePort, LoadBalancer and externalIP reach local endpoints, the ClusterIP all',
    objects: [
      NODE,
      service('s', {
        type: 'LoadBalancer',
        externalIPs: ['198.51.100.1'],
        ports: [{ name: 'http', port: 80, nodePort: 30080 }],
        lbIngress: [{ ip: '198.51.100.7' }],
        spec: { externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 },
      }),
      slice('a', 's', two),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'] },
      { to: '192.168.1.10:30080', expect: ['10.0.1.1:8080'] },
      { to: '198.51.100.7:80', expect: ['10.0.1.1:8080'] },
      { to: '198.51.100.1:80', expect: ['10.0.1.1:8080'] },
    ],
  },
  {
    name: 'externalTrafficPolicy Local falls back to local serving-terminating endpoints; none local means dropped',
    objects: [
      NODE,
      service('s', {
        type: 'NodePort',
        clusterIPs: ['10.96.0.1'],
        ports: [{ name: 'http', port: 80, nodePort: 30080 }],
        spec: { externalTrafficPolicy: 'Local' },
      }),
      slice('a', 's', [
        ep('10.0.1.1', { node: 'node-a', ready: false, serving: true, terminating: true }),
        ep('10.0.2.2', { node: 'node-b' }),
      ]),
      service('r', {
        type: 'NodePort',
        clusterIPs: ['10.96.0.2'],
        ports: [{ name: 'http', port: 80, nodePort: 30081 }],
        spec: { externalTrafficPolicy: 'Local' },
      }),
      slice('b', 'r', [ep('10.0.2.2', { node: 'node-b' })]),
    ],
    flows: [
      { to: '192.168.1.10:30080', expect: ['10.0.1.1:8080'] },
      { to: '10.96.0.1:80', expect: ['10.0.2.2:8080'] },
      { to: '192.168.1.10:30081', expect: 'dropped' },
    ],
  },
  {
    name: 'ClientIP affinity becomes IPVS persistence (default 10800 s)',
    objects: [
      NODE,
      service('a', { clusterIPs: ['10.96.0.1'], spec: { sessionAffinity: 'ClientIP' } }),
      service('b', {
        clusterIPs: ['10.96.0.2'],
        spec: { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } },
      }),
      service('c', { clusterIPs: ['10.96.0.3'], spec: { sessionAffinity: 'None' } }),
      slice('a-1', 'a', two),
      slice('b-1', 'b', two),
      slice('c-1', 'c', two),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'], persistent: 10800 },
      { to: '10.96.0.2:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'], persistent: 60 },
      { to: '10.96.0.3:80', expect: ['10.0.1.1:8080', '10.0.2.2:8080'], persistent: 0 },
    ],
  },
  {
    name: 'scheduler: config default, valid annotation, invalid annotation falls back',
    config: { ipvs: { ...defaultIpvs(), scheduler: 'wrr' } },
    objects: [
      NODE,
      service('a', { clusterIPs: ['10.96.0.1'] }),
      service('b', { clusterIPs: ['10.96.0.2'], annotations: { 'kube-ipvs.io/scheduler': 'mh' } }),
      service('c', { clusterIPs: ['10.96.0.3'], annotations: { 'kube-ipvs.io/scheduler': 'fastest' } }),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: 'dropped', scheduler: 'wrr' },
      { to: '10.96.0.2:80', expect: 'dropped', scheduler: 'mh' },
      { to: '10.96.0.3:80', expect: 'dropped', scheduler: 'wrr' },
    ],
  },
  {
    name: 'endpoints on a node named like this one are local; without a Node object nothing has NodePorts',
    objects: [
      service('s', {
        type: 'NodePort',
        clusterIPs: ['10.96.0.1'],
        ports: [{ name: 'http', port: 80, nodePort: 30080 }],
        spec: { internalTrafficPolicy: 'Local' },
      }),
      slice('a', 's', two),
    ],
    flows: [
      { to: '10.96.0.1:80', expect: ['10.0.1.1:8080'] },
      { to: '192.168.1.10:30080', expect: 'not-a-service' },
    ],
  },
];

function defaultIpvs() {
  return {
    scheduler: 'rr',
    syncPeriodSeconds: 30,
    minSyncPeriodSeconds: 0,
    strictARP: false,
    excludeCIDRs: [],
    tcpTimeoutSeconds: 0,
    tcpFinTimeoutSeconds: 0,
    udpTimeoutSeconds: 0,
  };
}

function parseTo(to: string): { address: string; port: number } {
  const m = /^\[(.+)\]:(\d+)$/.exec(to) ?? /^(.+):(\d+)$/.exec(to);
  return { address: m![1]!, port: Number(m![2]) };
}

for (const c of cases) {
  t.test(c.name, async (t) => {
    const { plan } = planObjects(c.objects, { ...(c.config ? { config: c.config } : {}) });
    for (const f of c.flows) {
      const { address, port } = parseTo(f.to);
      const v = trace(plan, { source: f.from ?? '10.0.9.9', destination: address, port, protocol: f.proto ?? 'TCP' });
      const label = `${f.proto ?? 'TCP'} ${f.to}`;
      if (f.expect === 'dropped' || f.expect === 'not-a-service') {
        t.equal(v.result, f.expect, label);
      } else {
        t.equal(v.result, 'forwarded', label);
        t.same(v.result === 'forwarded' ? [...v.backends].sort() : [], [...f.expect].sort(), `${label} backends`);
      }
      if (f.persistent !== undefined)
        t.equal(
          v.result === 'forwarded' ? v.virtualServer.persistenceTimeoutSeconds : -1,
          f.persistent,
          `${label} persistence`,
        );
      if (f.scheduler !== undefined)
        t.equal(v.result !== 'not-a-service' ? v.virtualServer.scheduler : '', f.scheduler, `${label} scheduler`);
    }
  });
}
