// Builders for raw Kubernetes objects as they arrive from YAML or the API server.
// Defaults are minimal; tests spell out what they are about.

type Obj = Record<string, unknown>;

export interface SvcOpts {
  ns?: string;
  type?: string;
  clusterIPs?: string[] | 'None';
  ports?: Obj[];
  externalIPs?: string[];
  lbIngress?: Obj[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  spec?: Obj;
}

export function service(name: string, o: SvcOpts = {}): Obj {
  const ips = o.clusterIPs ?? ['10.96.0.1'];
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: o.ns ?? 'default', labels: o.labels, annotations: o.annotations },
    spec: {
      type: o.type ?? 'ClusterIP',
      clusterIP: ips === 'None' ? 'None' : ips[0],
      clusterIPs: ips === 'None' ? ['None'] : ips,
      ports: o.ports ?? [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
      externalIPs: o.externalIPs,
      ...o.spec,
    },
    status: o.lbIngress ? { loadBalancer: { ingress: o.lbIngress } } : {},
  };
}

export interface EpOpts {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  node?: string;
  zone?: string;
  zones?: string[];
  nodes?: string[];
}

export function ep(address: string, o: EpOpts = {}): Obj {
  const hints: Obj = {};
  if (o.zones) hints.forZones = o.zones.map((name) => ({ name }));
  if (o.nodes) hints.forNodes = o.nodes.map((name) => ({ name }));
  return {
    addresses: [address],
    conditions: { ready: o.ready ?? true, serving: o.serving ?? o.ready ?? true, terminating: o.terminating ?? false },
    nodeName: o.node,
    zone: o.zone,
    hints: o.zones || o.nodes ? hints : undefined,
  };
}

export function slice(
  name: string,
  service: string,
  endpoints: Obj[],
  o: { ns?: string; addressType?: string; ports?: Obj[]; labels?: Record<string, string> } = {},
): Obj {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: o.ns ?? 'default', labels: { 'kubernetes.io/service-name': service, ...o.labels } },
    addressType: o.addressType ?? 'IPv4',
    ports: o.ports ?? [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints,
  };
}

export function node(name: string, addresses: [string, string][], zone?: string): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: zone ? { 'topology.kubernetes.io/zone': zone } : {} },
    status: { addresses: addresses.map(([type, address]) => ({ type, address })) },
  };
}
