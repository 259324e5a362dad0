// CategorizeEndpoints, case by case as kube-proxy defines it.
import t from 'tap';
import { categorizeEndpoints, topologyModeFromHints, type PolicyInfo, type Topology } from '../src/model/endpoints.ts';
import type { Endpoint } from '../src/model/types.ts';

const here: Topology = { nodeName: 'node-a', zone: 'zone-a', nodeHints: true };
const cluster: PolicyInfo = {
  internalTrafficPolicyLocal: false,
  externalTrafficPolicyLocal: false,
  externallyAccessible: false,
};

function e(address: string, o: Partial<Endpoint> = {}): Endpoint {
  return {
    address,
    sortKey: address,
    family: 4,
    port: 80,
    ready: true,
    serving: true,
    terminating: false,
    nodeName: '',
    zone: '',
    zoneHints: null,
    nodeHints: null,
    ...o,
  };
}
const ips = (eps: Endpoint[]) => eps.map((x) => x.address).sort();

interface Case {
  name: string;
  policy?: Partial<PolicyInfo>;
  endpoints: Endpoint[];
  cluster: string[];
  local: string[];
  hasAny: boolean;
}

const cases: Case[] = [
  { name: 'no endpoints', endpoints: [], cluster: [], local: [], hasAny: false },
  {
    name: 'ready only',
    endpoints: [e('1'), e('2', { ready: false, serving: false })],
    cluster: ['1'],
    local: [],
    hasAny: true,
  },
  {
    name: 'serving-terminating fallback when nothing is ready',
    endpoints: [
      e('1', { ready: false, terminating: true }),
      e('2', { ready: false, serving: false, terminating: true }),
    ],
    cluster: ['1'],
    local: [],
    hasAny: true,
  },
  {
    name: 'not ready, not terminating endpoints are never used',
    endpoints: [e('1', { ready: false, serving: true, terminating: false })],
    cluster: [],
    local: [],
    hasAny: false,
  },
  {
    name: 'iTP Local: only local endpoints; cluster list not computed',
    policy: { internalTrafficPolicyLocal: true },
    endpoints: [e('1', { nodeName: 'node-a' }), e('2', { nodeName: 'node-b' })],
    cluster: [],
    local: ['1'],
    hasAny: true,
  },
  {
    name: 'iTP Local with no local endpoints: none, but hasAny',
    policy: { internalTrafficPolicyLocal: true },
    endpoints: [e('2', { nodeName: 'node-b' })],
    cluster: [],
    local: [],
    hasAny: true,
  },
  {
    name: 'eTP Local: local ready preferred over local terminating',
    policy: { externallyAccessible: true, externalTrafficPolicyLocal: true },
    endpoints: [
      e('1', { nodeName: 'node-a' }),
      e('3', { nodeName: 'node-a', ready: false, terminating: true }),
      e('2', { nodeName: 'node-b' }),
    ],
    cluster: ['1', '2'],
    local: ['1'],
    hasAny: true,
  },
  {
    name: 'eTP Local: local serving-terminating when no local ready one',
    policy: { externallyAccessible: true, externalTrafficPolicyLocal: true },
    endpoints: [e('3', { nodeName: 'node-a', ready: false, terminating: true }), e('2', { nodeName: 'node-b' })],
    cluster: ['2'],
    local: ['3'],
    hasAny: true,
  },
  {
    name: 'eTP Local is ignored for a Service nobody reaches from outside',
    policy: { externallyAccessible: false, externalTrafficPolicyLocal: false },
    endpoints: [e('1', { nodeName: 'node-a' }), e('2', { nodeName: 'node-b' })],
    cluster: ['1', '2'],
    local: [],
    hasAny: true,
  },
  {
    name: 'zone hints filter the cluster endpoints but not the local ones',
    policy: { externallyAccessible: true, externalTrafficPolicyLocal: true },
    endpoints: [
      e('1', { zoneHints: ['zone-a'], nodeName: 'node-x' }),
      e('2', { zoneHints: ['zone-b'], nodeName: 'node-a' }),
    ],
    cluster: ['1'],
    local: ['2'],
    hasAny: true,
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const r = categorizeEndpoints(c.endpoints, { ...cluster, ...c.policy }, here);
    t.same(ips(r.cluster), c.cluster, 'cluster');
    t.same(ips(r.local), c.local, 'local');
    t.equal(r.hasAny, c.hasAny, 'hasAny');
  });
}

t.test('topology mode', async (t) => {
  t.equal(
    topologyModeFromHints([e('1', { zoneHints: ['zone-a'] }), e('2', { zoneHints: ['zone-b'] })], here),
    'PreferSameZone',
  );
  t.equal(
    topologyModeFromHints([e('1', { zoneHints: ['zone-a'] }), e('2')], here),
    '',
    'a ready endpoint without hints disables them',
  );
  t.equal(
    topologyModeFromHints([e('1', { zoneHints: ['zone-a'] }), e('2', { ready: false })], here),
    'PreferSameZone',
    'unready endpoints do not count',
  );
  t.equal(topologyModeFromHints([e('1', { zoneHints: ['zone-b'] })], here), '', 'no hint for our zone');
  t.equal(
    topologyModeFromHints([e('1', { zoneHints: ['zone-a'] })], { ...here, zone: '' }),
    '',
    'a node without a zone label ignores zone hints',
  );
  t.equal(topologyModeFromHints([e('1', { zoneHints: ['zone-a'], nodeHints: ['node-a'] })], here), 'PreferSameNode');
  t.equal(
    topologyModeFromHints([e('1', { zoneHints: ['zone-a'], nodeHints: ['node-a'] })], { ...here, nodeHints: false }),
    'PreferSameZone',
    'node hints off by gate',
  );
  t.equal(topologyModeFromHints([], here), '', 'no endpoints: no hints');
});
