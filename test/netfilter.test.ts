// Table-driven packet flows through the generated iptables rules, the ipsets and the IPVS virtual
// servers together: which endpoints, DROP/REJECT, masqueraded or not. A case per rule of the
// iptables stage, IPv4 and IPv6; and the rule count stays constant from 10 to 10 000 Services.
import t from 'tap';
import type { Config } from '../src/config/config.ts';
import { traceNetfilter, type NetPacket, type NetVerdict } from '../src/plan/netfilter-trace.ts';
import { defaultConfig } from '../src/config/config.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { planObjects } from './support/plan.ts';

const NODE_IP = '192.168.1.10';
const NODE_IP6 = 'fd00::10';
const NODE = node(
  'node-a',
  [
    ['InternalIP', NODE_IP],
    ['InternalIP', NODE_IP6],
  ],
  'zone-a',
);
const POD_A = '10.244.1.5'; // on node-a
const POD_B = '10.244.2.7'; // on node-b
const POD_A6 = 'fd00:244::5';
const POD_C = '10.244.3.9'; // a pod that is no endpoint of these Services
type T = Pick<typeof t, 'equal' | 'same'>;
const OUTSIDE = '198.51.100.20';
const cfg = (c: Partial<Config> = {}): Partial<Config> => ({ clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/56'], ...c });

const web = service('web', {
  clusterIPs: ['10.96.0.1', 'fd00:96::1'],
  type: 'NodePort',
  ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }],
  spec: { ipFamilies: ['IPv4', 'IPv6'] },
});
const webEps = [
  slice('web-4', 'web', [ep(POD_A, { node: 'node-a' }), ep(POD_B, { node: 'node-b' })]),
  slice('web-6', 'web', [ep(POD_A6, { node: 'node-a' })], { addressType: 'IPv6' }),
];
const local = service('local', {
  clusterIPs: ['10.96.0.2'],
  type: 'LoadBalancer',
  ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30081 }],
  lbIngress: [{ ip: '203.0.113.50' }],
  spec: { externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 },
});
const localEps = slice('local-1', 'local', [ep(POD_A, { node: 'node-a' }), ep(POD_B, { node: 'node-b' })]);
const ranged = service('ranged', {
  clusterIPs: ['10.96.0.3'],
  type: 'LoadBalancer',
  ports: [{ name: 'http', protocol: 'TCP', port: 443, targetPort: 8443, nodePort: 30443 }],
  lbIngress: [{ ip: '203.0.113.60' }],
  spec: { loadBalancerSourceRanges: ['198.51.100.0/28'] },
});
const rangedEps = slice('ranged-1', 'ranged', [ep(POD_B, { node: 'node-b' })], {
  ports: [{ name: 'http', protocol: 'TCP', port: 8443 }],
});
const ext = service('ext', {
  clusterIPs: ['10.96.0.4'],
  externalIPs: ['192.0.2.10', NODE_IP],
  ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 }],
});
const extEps = slice('ext-1', 'ext', [ep(POD_B, { node: 'node-b' })], {
  ports: [{ name: 'dns', protocol: 'UDP', port: 5353 }],
});
const ALL = [NODE, web, ...webEps, local, localEps, ranged, rangedEps, ext, extEps];

type Want = 'not-local' | 'local' | 'dropped' | 'rejected' | 'no-endpoints' | Record<string, boolean>;
interface Flow {
  name: string;
  pkt: Partial<NetPacket> & { destination: string; port: number };
  want: Want;
}

function check(t: T, v: NetVerdict, want: Want, name: string) {
  if (typeof want === 'string') {
    t.equal(v.result, want, name);
    return;
  }
  t.equal(v.result, 'forwarded', `${name}: forwarded`);
  if (v.result !== 'forwarded') return;
  t.same(
    Object.fromEntries(v.backends.map((b) => [b.backend, b.masqueraded])),
    want,
    `${name}: backend -> masqueraded`,
  );
}

function run(t: T, config: Partial<Config>, flows: Flow[]) {
  const { plan } = planObjects(ALL, { config: cfg(config) });
  for (const f of flows) {
    const pkt: NetPacket = { source: OUTSIDE, protocol: 'TCP', ...f.pkt };
    check(t, traceNetfilter(plan, [NODE_IP, NODE_IP6, '127.0.0.1'], pkt), f.want, f.name);
  }
}

t.test('masquerade: outside to ClusterIP yes, pod to ClusterIP no, masqueradeAll yes', async (t) => {
  run(t, {}, [
    {
      name: 'outside -> ClusterIP is masqueraded (clusterCIDR)',
      pkt: { destination: '10.96.0.1', port: 80 },
      want: { [`${POD_A}:8080`]: true, [`${POD_B}:8080`]: true },
    },
    {
      name: 'pod -> ClusterIP keeps its address',
      pkt: { source: POD_C, destination: '10.96.0.1', port: 80, inInterface: 'cbr0' },
      want: { [`${POD_A}:8080`]: false, [`${POD_B}:8080`]: false },
    },
    {
      name: 'the node -> ClusterIP is masqueraded',
      pkt: { source: NODE_IP, fromNode: true, destination: '10.96.0.1', port: 80 },
      want: { [`${POD_A}:8080`]: true, [`${POD_B}:8080`]: true },
    },
    {
      name: 'IPv6: outside -> ClusterIP masqueraded',
      pkt: { source: '2001:db8::1', destination: 'fd00:96::1', port: 80 },
      want: { [`[${POD_A6}]:8080`]: true },
    },
    {
      name: 'IPv6: pod -> ClusterIP not masqueraded',
      pkt: { source: 'fd00:244::9', destination: 'fd00:96::1', port: 80 },
      want: { [`[${POD_A6}]:8080`]: false },
    },
  ]);
  run(t, { iptables: { masqueradeAll: true, masqueradeBit: 14 } }, [
    {
      name: 'masqueradeAll: pod -> ClusterIP masqueraded',
      pkt: { source: POD_C, destination: '10.96.0.1', port: 80 },
      want: { [`${POD_A}:8080`]: true, [`${POD_B}:8080`]: true },
    },
  ]);
  run(t, { detectLocalMode: 'BridgeInterface', detectLocal: { bridgeInterface: 'cbr0', interfaceNamePrefix: '' } }, [
    {
      name: 'BridgeInterface: from cbr0 is local',
      pkt: { source: POD_C, destination: '10.96.0.1', port: 80, inInterface: 'cbr0' },
      want: { [`${POD_A}:8080`]: false, [`${POD_B}:8080`]: false },
    },
    {
      name: 'BridgeInterface: from eth0 is masqueraded',
      pkt: { source: POD_C, destination: '10.96.0.1', port: 80, inInterface: 'eth0' },
      want: { [`${POD_A}:8080`]: true, [`${POD_B}:8080`]: true },
    },
  ]);
  run(
    t,
    { detectLocalMode: 'InterfaceNamePrefix', detectLocal: { bridgeInterface: '', interfaceNamePrefix: 'veth' } },
    [
      {
        name: 'InterfaceNamePrefix: from veth123 is local',
        pkt: { source: POD_C, destination: '10.96.0.1', port: 80, inInterface: 'veth123' },
        want: { [`${POD_A}:8080`]: false, [`${POD_B}:8080`]: false },
      },
    ],
  );
});

t.test('NodePort and LoadBalancer: masqueraded under Cluster, client address kept under Local', async (t) => {
  run(t, {}, [
    {
      name: 'NodePort, eTP Cluster: masqueraded',
      pkt: { destination: NODE_IP, port: 30080 },
      want: { [`${POD_A}:8080`]: true, [`${POD_B}:8080`]: true },
    },
    {
      name: 'IPv6 NodePort, eTP Cluster: masqueraded',
      pkt: { source: '2001:db8::1', destination: NODE_IP6, port: 30080 },
      want: { [`[${POD_A6}]:8080`]: true },
    },
    {
      name: 'NodePort, eTP Local: local endpoint only, source kept',
      pkt: { destination: NODE_IP, port: 30081 },
      want: { [`${POD_A}:8080`]: false },
    },
    {
      name: 'LoadBalancer, eTP Local: local endpoint only, source kept',
      pkt: { destination: '203.0.113.50', port: 80 },
      want: { [`${POD_A}:8080`]: false },
    },
    {
      name: 'LoadBalancer, eTP Cluster: masqueraded',
      pkt: { source: '198.51.100.1', destination: '203.0.113.60', port: 443 },
      want: { [`${POD_B}:8443`]: true },
    },
    {
      name: "a port that is not a NodePort on the node IP is the node's own business",
      pkt: { destination: NODE_IP, port: 22 },
      want: 'local',
    },
  ]);
});

t.test(
  'externalTrafficPolicy: Local LoadBalancer IPs from inside the cluster reach every endpoint (kubernetes#93456)',
  async (t) => {
    run(t, {}, [
      {
        name: 'a pod -> Local LB IP: every endpoint, source kept',
        pkt: { source: POD_C, destination: '203.0.113.50', port: 80 },
        want: { [`${POD_A}:8080`]: false, [`${POD_B}:8080`]: false },
      },
      {
        name: 'the node -> Local LB IP: every endpoint',
        pkt: { source: NODE_IP, fromNode: true, destination: '203.0.113.50', port: 80 },
        want: { [`${POD_A}:8080`]: false, [`${POD_B}:8080`]: false },
      },
      {
        name: 'outside -> Local LB IP: the local endpoint only',
        pkt: { source: OUTSIDE, destination: '203.0.113.50', port: 80 },
        want: { [`${POD_A}:8080`]: false },
      },
    ]);
    const { plan } = planObjects(ALL, { config: cfg() });
    const fw = plan.virtualServers.filter((v) => v.fwmark !== undefined);
    t.equal(fw.length, 1, 'one firewall-mark virtual server, for the Local LoadBalancer port');
    t.equal(fw[0]!.fwmark! & (1 << 14), 0, 'its mark leaves the masquerade bit alone');
    t.same(plan.ipsets['KIPVS-LB-LOCAL-MARK']?.entries, [
      `203.0.113.50,tcp:80 skbmark 0x${fw[0]!.fwmark!.toString(16)}`,
    ]);
    t.equal(
      planObjects(ALL, { config: cfg() }).plan.virtualServers.find((v) => v.fwmark !== undefined)?.fwmark,
      fw[0]!.fwmark,
      'the same mark on every plan',
    );
  },
);

t.test('loadBalancerSourceRanges: listed sources only, also from the node itself', async (t) => {
  run(t, {}, [
    {
      name: 'allowed source',
      pkt: { source: '198.51.100.1', destination: '203.0.113.60', port: 443 },
      want: { [`${POD_B}:8443`]: true },
    },
    {
      name: 'other source dropped',
      pkt: { source: '198.51.100.200', destination: '203.0.113.60', port: 443 },
      want: 'dropped',
    },
    {
      name: 'the node itself, not listed, dropped (kubernetes#119656)',
      pkt: { source: '203.0.113.60', fromNode: true, destination: '203.0.113.60', port: 443 },
      want: 'dropped',
    },
    {
      name: 'no source ranges: anyone',
      pkt: { source: '198.51.100.200', destination: '203.0.113.50', port: 80 },
      want: { [`${POD_A}:8080`]: false },
    },
  ]);
});

t.test('loadBalancerSourceRanges of everyone (0.0.0.0/0): both halves of the address space pass', async (t) => {
  const everyone = service('everyone', {
    clusterIPs: ['10.96.0.9'],
    type: 'LoadBalancer',
    ports: [{ name: 'http', protocol: 'TCP', port: 443, targetPort: 8443, nodePort: 30444 }],
    lbIngress: [{ ip: '203.0.113.70' }],
    spec: { loadBalancerSourceRanges: ['0.0.0.0/0'] },
  });
  const { plan } = planObjects(
    [
      NODE,
      everyone,
      slice('everyone-1', 'everyone', [ep(POD_B, { node: 'node-b' })], {
        ports: [{ name: 'http', protocol: 'TCP', port: 8443 }],
      }),
    ],
    { config: cfg({}) },
  );
  t.same(plan.ipsets['KIPVS-LB-SRC-CIDR']!.entries.sort(), [
    '203.0.113.70,tcp:443,0.0.0.0/1',
    '203.0.113.70,tcp:443,128.0.0.0/1',
  ]);
  for (const source of ['1.2.3.4', '200.1.1.1', '127.0.0.1']) {
    const v = traceNetfilter(plan, [NODE_IP, NODE_IP6, '127.0.0.1'], {
      source,
      protocol: 'TCP',
      destination: '203.0.113.70',
      port: 443,
    });
    check(t, v, { [`${POD_B}:8443`]: true }, `from ${source}`);
  }
});

t.test('hairpin: an endpoint reaching itself through its Service is masqueraded', async (t) => {
  run(t, {}, [
    {
      name: 'pod A -> ClusterIP: to itself masqueraded, to B not',
      pkt: { source: POD_A, destination: '10.96.0.1', port: 80 },
      want: { [`${POD_A}:8080`]: true, [`${POD_B}:8080`]: false },
    },
    {
      name: 'IPv6 hairpin',
      pkt: { source: POD_A6, destination: 'fd00:96::1', port: 80 },
      want: { [`[${POD_A6}]:8080`]: true },
    },
  ]);
});

t.test('service addresses answer only on service ports (kubernetes#72236)', async (t) => {
  run(t, {}, [
    {
      name: 'ClusterIP, other port: rejected',
      pkt: { source: POD_B, destination: '10.96.0.1', port: 22 },
      want: 'rejected',
    },
    {
      name: 'ClusterIP, service port but other protocol: rejected',
      pkt: { source: POD_B, destination: '10.96.0.1', port: 80, protocol: 'UDP' },
      want: 'rejected',
    },
    {
      name: 'LoadBalancer IP, other port: rejected',
      pkt: { destination: '203.0.113.50', port: 8080 },
      want: 'rejected',
    },
    { name: 'ExternalIP, other port: rejected', pkt: { destination: '192.0.2.10', port: 80 }, want: 'rejected' },
    {
      name: 'IPv6 ClusterIP, other port: rejected',
      pkt: { source: 'fd00:244::9', destination: 'fd00:96::1', port: 22 },
      want: 'rejected',
    },
    {
      name: 'ping a ClusterIP: answered by the node',
      pkt: { source: POD_B, destination: '10.96.0.1', port: 0, protocol: 'ICMP' },
      want: 'local',
    },
    { name: 'not a local address: routed, not ours', pkt: { destination: '10.99.0.1', port: 80 }, want: 'not-local' },
  ]);
});

t.test(
  'an ExternalIP equal to a node IP keeps working, and the node IP keeps its other ports (kubernetes#93175)',
  async (t) => {
    const { plan } = planObjects(ALL, { config: cfg() });
    t.notOk(plan.addresses.includes(NODE_IP), 'the node IP is not put on the dummy interface');
    t.ok(plan.addresses.includes('192.0.2.10'), 'another ExternalIP is');
    run(t, {}, [
      {
        name: 'ExternalIP = node IP: served',
        pkt: { destination: NODE_IP, port: 53, protocol: 'UDP' },
        want: { [`${POD_B}:5353`]: true },
      },
      {
        name: 'ExternalIP: served and masqueraded (eTP Cluster)',
        pkt: { destination: '192.0.2.10', port: 53, protocol: 'UDP' },
        want: { [`${POD_B}:5353`]: true },
      },
      { name: 'SSH on that node IP is not rejected', pkt: { destination: NODE_IP, port: 22 }, want: 'local' },
    ]);
  },
);

t.test('healthCheckNodePorts are in their set; NodePorts on the selected addresses only', async (t) => {
  const { plan } = planObjects(ALL, { config: cfg() });
  t.same(plan.ipsets['KIPVS-HC-NODE-PORT']?.entries, ['32000']);
  t.same(plan.ipsets['KIPVS-NODE-PORT-LOCAL']?.entries, [`${NODE_IP},tcp:30081`]);
  const narrowed = planObjects(ALL, { config: cfg({ nodePortAddresses: ['192.168.1.0/24'] }) }).plan;
  t.notOk(narrowed.ipsets['KIPVS6-NODE-PORT']?.entries.length, 'no IPv6 NodePort entries outside nodePortAddresses');
});

t.test('the iptables rule count is the same for 10 and 10 000 Services', async (t) => {
  const objs = (n: number) => {
    const out: Record<string, unknown>[] = [NODE];
    for (let i = 0; i < n; i++) {
      out.push(
        service(`s${i}`, {
          clusterIPs: [`10.96.${i >> 8}.${i & 255}`],
          type: i % 2 ? 'NodePort' : 'LoadBalancer',
          lbIngress: [{ ip: `203.0.${i >> 8}.${i & 255}` }],
          ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30000 + (i % 2000) }],
          spec: { loadBalancerSourceRanges: ['10.0.0.0/8'] },
        }),
      );
      out.push(slice(`s${i}-1`, `s${i}`, [ep(`10.244.${i >> 8}.${i & 255}`)]));
    }
    return out;
  };
  const rules = (n: number) => {
    const { plan } = planObjects(objs(n), { config: cfg() });
    return {
      rules: Object.values(plan.iptables)
        .join('')
        .split('\n')
        .filter((l) => l.startsWith('-A ')).length,
      entries: Object.values(plan.ipsets).reduce((s, p) => s + p.entries.length, 0),
    };
  };
  const small = rules(10);
  const big = rules(10_000);
  t.equal(big.rules, small.rules, `${small.rules} rules either way`);
  t.ok(
    big.entries > small.entries * 500,
    `the per-Service facts are in ipsets (${small.entries} -> ${big.entries} entries)`,
  );
  t.ok(defaultConfig().iptables.masqueradeBit === 14);
});

t.test("the planner keeps each set's size as its entries come and go", async (t) => {
  const { planner } = planObjects(ALL, { config: cfg() });
  const counted = () => {
    const n = new Map<string, number>();
    for (const e of planner.setEntries()) {
      const set = e.slice(0, e.indexOf(' '));
      n.set(set, (n.get(set) ?? 0) + 1);
    }
    return Object.fromEntries([...n].sort());
  };
  const sizes = () => Object.fromEntries([...planner.setSizes()].sort());
  t.ok(Object.keys(sizes()).length >= 5, `several sets have entries (${Object.keys(sizes()).join(', ')})`);
  t.same(sizes(), counted(), 'as first planned');
  const change = (previous: unknown, current: unknown) => {
    planner.model.apply({ kind: 'Service', previous, current });
    planner.update({ changedServices: ['default/local'], nodeChanged: false, problems: [] });
  };
  change(local, null);
  t.same(sizes(), counted(), 'a Service gone');
  t.notOk(planner.setSizes().has('KIPVS-HC-NODE-PORT'), 'a set left with no entry is not there');
  change(null, local);
  t.same(sizes(), counted(), 'the Service back');
  t.equal(planner.setSizes().get('KIPVS-HC-NODE-PORT'), 1);
  planner.planAll();
  t.same(sizes(), counted(), 'everything planned again');
});
