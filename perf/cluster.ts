// The synthetic cluster the benchmarks share: Services with one TCP port (every fifth a NodePort,
// every seventh with ClientIP affinity), one EndpointSlice each with `endpoints` endpoints across
// three zones (every other one hinted), and the node they are planned for.
export const ZONES = ['zone-a', 'zone-b', 'zone-c'];
const ip = (base: number, i: number) => `10.${base + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

export function syntheticCluster(endpoints: number) {
  const serviceObj = (i: number) => {
    const nodePort = i % 5 === 0;
    return {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `svc-${i}`, namespace: `ns-${i % 100}` },
      spec: {
        type: nodePort ? 'NodePort' : 'ClusterIP',
        clusterIP: ip(96, i),
        clusterIPs: [ip(96, i)],
        ports: [
          {
            name: 'http',
            protocol: 'TCP',
            port: 80,
            targetPort: 8080,
            ...(nodePort ? { nodePort: 30000 + ((i / 5) % 2768) } : {}),
          },
        ],
        ...(i % 7 === 0 ? { sessionAffinity: 'ClientIP' } : {}),
      },
    };
  };
  /** `version` flips one endpoint's readiness: the change a rollout makes. */
  const sliceObj = (i: number, version: number) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `svc-${i}-abcde`,
      namespace: `ns-${i % 100}`,
      labels: { 'kubernetes.io/service-name': `svc-${i}` },
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: Array.from({ length: endpoints }, (_, k) => {
      const zone = ZONES[k % 3]!;
      return {
        addresses: [ip(128, i * endpoints + k)],
        conditions: {
          ready: !(k === 0 && version % 2 === 1),
          serving: true,
          terminating: k === 0 && version % 2 === 1,
        },
        nodeName: `node-${(i + k) % 50}`,
        zone,
        ...(i % 2 === 0 ? { hints: { forZones: [{ name: zone }] } } : {}),
      };
    }),
  });
  const node = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node-0', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
    status: { addresses: [{ type: 'InternalIP', address: '192.168.0.10' }] },
  };
  return { serviceObj, sliceObj, node };
}
