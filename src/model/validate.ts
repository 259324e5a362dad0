// Raw Kubernetes objects (from YAML files or the API server) in, normalized model objects out.
// Each object is either accepted, ignored on purpose (not ours to proxy), or rejected with one
// Problem that names the offending fields. Nothing here throws on bad input.
import { Codes, quote, type Problem } from '../errors.ts';
import {
  canonicalIP,
  formatIP,
  ipFamily,
  ipSortKey,
  parseCIDR,
  parseIP,
  sameText,
  specialAddress,
  type Family,
} from '../util/ip.ts';
import {
  PROTOCOLS,
  type EndpointSlice,
  type EndpointSlicePort,
  type NodeInfo,
  type Protocol,
  type Service,
  type ServicePort,
  type SliceEndpoint,
} from './types.ts';
import { isValidScheduler, SCHEDULERS } from './schedulers.ts';
import { parseHealthAnnotations } from '../health/settings.ts';

export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
export const LABEL_HEADLESS = 'service.kubernetes.io/headless';
export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';
export const LABEL_ZONE = 'topology.kubernetes.io/zone';
export const ANNOTATION_SCHEDULER = 'kube-ipvs.io/scheduler';
export const TAINT_TO_BE_DELETED = 'ToBeDeletedByClusterAutoscaler';
export const ANNOTATION_TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time';
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;
export const TRAFFIC_DISTRIBUTIONS = ['PreferClose', 'PreferSameZone', 'PreferSameNode'] as const;

export type Parsed<T> =
  | { status: 'ok'; value: T; warnings: Problem[] }
  | { status: 'ignored'; reason: string; warnings: Problem[] }
  | { status: 'invalid'; problem: Problem };

export interface ObjectRef {
  kind: string;
  /** "namespace/name", or "name" for cluster-scoped objects. */
  name: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Collects field errors for one object; the object is rejected if any were found. */
class Fields {
  readonly errors: { field: string; message: string }[] = [];
  fail(field: string, message: string): void {
    this.errors.push({ field, message });
  }
  obj(v: unknown, field: string): Obj {
    if (v === undefined || v === null) return {};
    if (!isObj(v)) {
      this.fail(field, 'must be an object');
      return {};
    }
    return v;
  }
  arr(v: unknown, field: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.fail(field, 'must be a list');
      return [];
    }
    return v;
  }
  str(v: unknown, field: string, dflt = ''): string {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'string') {
      this.fail(field, `must be a string, got ${quote(v)}`);
      return dflt;
    }
    return v;
  }
  bool(v: unknown, field: string): boolean | null {
    if (v === undefined || v === null) return null;
    if (typeof v !== 'boolean') {
      this.fail(field, `must be true or false, got ${quote(v)}`);
      return null;
    }
    return v;
  }
  port(v: unknown, field: string, allowZero: boolean): number {
    if (v === undefined || v === null) return 0;
    const min = allowZero ? 0 : 1;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 65535) {
      this.fail(field, `${quote(v)} is not a port number (${min}-65535)`);
      return 0;
    }
    return v;
  }
  ip(v: unknown, field: string): string | null {
    const s = this.str(v, field);
    const c = canonicalIP(s);
    if (!c) this.fail(field, `${quote(v)} is not a valid IP address`);
    return c;
  }
  /** An address traffic is sent to or served on: never loopback, link-local, multicast... */
  usableIP(v: unknown, field: string): string | null {
    return this.usableParsed(v, field)?.address ?? null;
  }
  /** usableIP, with the address's sort key (one parse for both). */
  usableParsed(v: unknown, field: string): { address: string; sortKey: string; family: Family } | null {
    const s = this.str(v, field);
    const p = parseIP(s);
    if (!p) {
      this.fail(field, `${quote(v)} is not a valid IP address`);
      return null;
    }
    const address = sameText(formatIP(p), s);
    const why = specialAddress(p);
    if (why) {
      this.fail(field, `${address} is ${why}: never a Service address or an endpoint`);
      return null;
    }
    return { address, sortKey: ipSortKey(p), family: p.family };
  }
  oneOf<T extends string>(v: unknown, field: string, allowed: readonly T[], dflt: T): T {
    if (v === undefined || v === null || v === '') return dflt;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(field, `${quote(v)} is not one of ${allowed.join(', ')}`);
      return dflt;
    }
    return v as T;
  }
  protocol(v: unknown, field: string): Protocol {
    return this.oneOf(v, field, PROTOCOLS, 'TCP');
  }
  problem(ref: ObjectRef): Problem | null {
    const [first, ...more] = this.errors;
    if (!first) return null;
    const also = more.map((e) => `; ${e.field}: ${e.message}`).join('');
    return {
      code: Codes.OBJECT_INVALID,
      severity: 'error',
      kind: ref.kind,
      name: ref.name,
      field: first.field,
      message: `${first.message}${also} (object ignored)`,
    };
  }
}

// Kubernetes' naming rules (k8s.io/apimachinery/pkg/util/validation), as the API server applies them.
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
/** The API server's cap on one object's annotations (keys and values). */
const ANNOTATIONS_MAX_BYTES = 256 * 1024;

export type NameRule = 'dns1035' | 'dns1123' | 'subdomain' | 'labelValue' | 'portName';
const RULES: Record<NameRule, { re: RegExp; max: number; what: string }> = {
  dns1035: {
    re: DNS1035_LABEL,
    max: 63,
    what: 'a DNS-1035 label (lower case letters, digits and "-", starting with a letter, at most 63)',
  },
  dns1123: { re: DNS1123_LABEL, max: 63, what: 'a DNS-1123 label (lower case letters, digits and "-", at most 63)' },
  subdomain: {
    re: DNS1123_SUBDOMAIN,
    max: 253,
    what: 'a DNS-1123 subdomain (lower case letters, digits, "-" and ".", at most 253)',
  },
  labelValue: { re: LABEL_VALUE, max: 63, what: 'a label value (letters, digits, "-", "_" and ".", at most 63)' },
  portName: {
    re: /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/,
    max: 15,
    what: 'an IANA service name (lower case letters, digits and "-", with a letter, at most 15)',
  },
};

/** Why `v` breaks the naming rule, or null. */
export function badName(v: string, rule: NameRule): string | null {
  const r = RULES[rule];
  if (v.length > r.max || !r.re.test(v) || (rule === 'portName' && (!/[a-z]/.test(v) || v.includes('--'))))
    return `${quote(v, 70)} is not ${r.what}`;
  return null;
}

function checkName(f: Fields, field: string, v: string, rule: NameRule): void {
  const why = v === '' ? null : badName(v, rule);
  if (why) f.fail(field, why);
}

function metadata(raw: Obj, f: Fields, namespaced: boolean, nameRule: NameRule) {
  const md = f.obj(raw.metadata, 'metadata');
  const name = f.str(md.name, 'metadata.name');
  if (!name) f.fail('metadata.name', 'is required');
  checkName(f, 'metadata.name', name, nameRule);
  const namespace = namespaced ? f.str(md.namespace, 'metadata.namespace', 'default') || 'default' : '';
  if (namespaced) checkName(f, 'metadata.namespace', namespace, 'dns1123');
  const labels = stringMap(md.labels, 'metadata.labels', f);
  for (const [k, v] of Object.entries(labels)) {
    if (!QUALIFIED_NAME.test(k) || k.length > 317) f.fail('metadata.labels', `${quote(k, 70)} is not a label key`);
    else checkName(f, `metadata.labels[${k}]`, v, 'labelValue');
  }
  const annotations = stringMap(md.annotations, 'metadata.annotations', f);
  let annotationBytes = 0;
  for (const [k, v] of Object.entries(annotations)) {
    annotationBytes += Buffer.byteLength(k) + Buffer.byteLength(v);
    if (!QUALIFIED_NAME.test(k) || k.length > 317)
      f.fail('metadata.annotations', `${quote(k, 70)} is not an annotation key`);
  }
  if (annotationBytes > ANNOTATIONS_MAX_BYTES)
    f.fail(
      'metadata.annotations',
      `${annotationBytes} bytes, more than the ${ANNOTATIONS_MAX_BYTES} the API server allows`,
    );
  let createdAt: number | null = null;
  if (md.creationTimestamp !== undefined && md.creationTimestamp !== null) {
    // RFC 3339 as the API server writes it; YAML may also hand over a Date.
    const t =
      md.creationTimestamp instanceof Date
        ? md.creationTimestamp.getTime()
        : typeof md.creationTimestamp === 'string' && RFC3339.test(md.creationTimestamp)
          ? Date.parse(md.creationTimestamp)
          : NaN;
    if (Number.isFinite(t)) createdAt = t;
    else f.fail('metadata.creationTimestamp', `${quote(md.creationTimestamp)} is not an RFC 3339 time`);
  }
  return { name, namespace, labels, annotations, createdAt, key: namespaced ? `${namespace}/${name}` : name };
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function stringMap(v: unknown, field: string, f: Fields): Record<string, string> {
  const o = f.obj(v, field);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(o)) out[k] = f.str(val, `${field}.${k}`);
  return out;
}

/** The identity of a raw object for error lines, even when the object is malformed. */
export function refOf(kind: string, raw: unknown): ObjectRef {
  const md = isObj(raw) && isObj(raw.metadata) ? raw.metadata : {};
  const name = typeof md.name === 'string' ? md.name : '<unnamed>';
  if (kind === 'Node') return { kind, name };
  const ns = typeof md.namespace === 'string' && md.namespace ? md.namespace : 'default';
  return { kind, name: `${ns}/${name}` };
}

/**
 * Labels that make kube-proxy (and us) skip a Service or EndpointSlice: another proxy's
 * service-proxy-name, or the headless marker. `proxyName` is the name kube-ipvs answers to.
 */
function ignoredByLabels(labels: Record<string, string>, proxyName: string): string | null {
  if (LABEL_SERVICE_PROXY_NAME in labels && labels[LABEL_SERVICE_PROXY_NAME] !== proxyName) {
    return `labelled ${LABEL_SERVICE_PROXY_NAME}=${labels[LABEL_SERVICE_PROXY_NAME]}`;
  }
  if (LABEL_HEADLESS in labels) return `labelled ${LABEL_HEADLESS}`;
  return null;
}

export interface ParseOptions {
  /** The service-proxy-name kube-ipvs answers to. */
  proxyName: string;
}

export function parseService(raw: unknown, opts: ParseOptions): Parsed<Service> {
  const ref = refOf('Service', raw);
  if (!isObj(raw)) return { status: 'invalid', problem: new Fields().problem(ref) ?? notAnObject(ref) };
  const f = new Fields();
  const md = metadata(raw, f, true, 'dns1035');
  const spec = f.obj(raw.spec, 'spec');
  const status = f.obj(raw.status, 'status');
  const warnings: Problem[] = [];

  const type = f.oneOf(
    spec.type,
    'spec.type',
    ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const,
    'ClusterIP',
  );

  const rawIPs = f.arr(spec.clusterIPs, 'spec.clusterIPs');
  const ipTexts: unknown[] =
    rawIPs.length > 0 ? rawIPs : spec.clusterIP === undefined || spec.clusterIP === null ? [] : [spec.clusterIP];
  const ipField = (i: number) => (rawIPs.length > 0 ? `spec.clusterIPs[${i}]` : 'spec.clusterIP');
  const headless = ipTexts.length > 0 && ipTexts[0] === 'None';
  const clusterIPs: string[] = [];
  if (!headless) {
    ipTexts.forEach((t, i) => {
      if (t === '') return;
      const ip = f.usableIP(t, ipField(i));
      if (ip) clusterIPs.push(ip);
    });
    if (clusterIPs.length === 2 && ipFamily(clusterIPs[0]!) === ipFamily(clusterIPs[1]!)) {
      f.fail('spec.clusterIPs', 'two ClusterIPs must be of different families');
    }
    if (clusterIPs.length > 2) f.fail('spec.clusterIPs', 'at most two ClusterIPs (one per family)');
  }

  const rawPorts = f.arr(spec.ports, 'spec.ports');
  const ports: ServicePort[] = rawPorts.map((p, i) => {
    const field = `spec.ports[${i}]`;
    const po = f.obj(p, field);
    const name = f.str(po.name, `${field}.name`);
    checkName(f, `${field}.name`, name, 'portName');
    if (name === '' && rawPorts.length > 1)
      f.fail(`${field}.name`, 'is required when a Service has more than one port');
    return {
      name,
      protocol: f.protocol(po.protocol, `${field}.protocol`),
      port:
        po.port === undefined ? (f.fail(`${field}.port`, 'is required'), 0) : f.port(po.port, `${field}.port`, false),
      nodePort: f.port(po.nodePort, `${field}.nodePort`, true),
    };
  });
  // As the API server: names, protocol+port and protocol+nodePort are unique within a Service
  // (one Service's two ports on one virtual server would fight over it).
  const seen = new Set<string>();
  ports.forEach((p, i) => {
    for (const [k, field, what] of [
      [`name ${p.name}`, 'name', `duplicate port name ${quote(p.name)}`],
      [
        `port ${p.protocol}/${p.port}`,
        'port',
        `${p.protocol} port ${p.port} is already spec.ports[${ports.findIndex((q) => q.protocol === p.protocol && q.port === p.port)}]`,
      ],
      ...(p.nodePort
        ? [
            [
              `nodePort ${p.protocol}/${p.nodePort}`,
              'nodePort',
              `${p.protocol} nodePort ${p.nodePort} is already used by spec.ports[${ports.findIndex((q) => q.protocol === p.protocol && q.nodePort === p.nodePort)}]`,
            ],
          ]
        : []),
    ] as [string, string, string][]) {
      if (seen.has(k)) f.fail(`spec.ports[${i}].${field}`, what);
      seen.add(k);
    }
  });

  const externalIPs = f
    .arr(spec.externalIPs, 'spec.externalIPs')
    .flatMap((t, i) => f.usableIP(t, `spec.externalIPs[${i}]`) ?? []);
  const loadBalancerIPs: string[] = [];
  const lb = f.obj(status.loadBalancer, 'status.loadBalancer');
  f.arr(lb.ingress, 'status.loadBalancer.ingress').forEach((ing, i) => {
    const field = `status.loadBalancer.ingress[${i}]`;
    const io = f.obj(ing, field);
    const mode = f.oneOf(io.ipMode, `${field}.ipMode`, ['VIP', 'Proxy'] as const, 'VIP');
    if (io.ip === undefined || io.ip === null || io.ip === '') return; // hostname-only ingress
    const ip = f.usableIP(io.ip, `${field}.ip`);
    if (ip && mode === 'VIP') loadBalancerIPs.push(ip);
  });
  const loadBalancerSourceRanges = f
    .arr(spec.loadBalancerSourceRanges, 'spec.loadBalancerSourceRanges')
    .flatMap((t, i) => {
      const text = typeof t === 'string' ? t.trim() : t;
      const c = typeof text === 'string' ? parseCIDR(text) : null;
      if (!c) {
        f.fail(`spec.loadBalancerSourceRanges[${i}]`, `${quote(t)} is not a CIDR`);
        return [];
      }
      return [c.text];
    });

  const affinity = f.oneOf(spec.sessionAffinity, 'spec.sessionAffinity', ['None', 'ClientIP'] as const, 'None');
  let affinityTimeoutSeconds = 0;
  if (affinity === 'ClientIP') {
    const cfg = f.obj(
      f.obj(spec.sessionAffinityConfig, 'spec.sessionAffinityConfig').clientIP,
      'spec.sessionAffinityConfig.clientIP',
    );
    const t = cfg.timeoutSeconds;
    affinityTimeoutSeconds = DEFAULT_AFFINITY_TIMEOUT_SECONDS;
    if (t !== undefined && t !== null) {
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > MAX_AFFINITY_TIMEOUT_SECONDS) {
        f.fail(
          'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
          `${quote(t)} is not in 1-${MAX_AFFINITY_TIMEOUT_SECONDS}`,
        );
      } else {
        affinityTimeoutSeconds = t;
      }
    }
  }
  const itp = f.oneOf(
    spec.internalTrafficPolicy,
    'spec.internalTrafficPolicy',
    ['Cluster', 'Local'] as const,
    'Cluster',
  );
  const etp = f.oneOf(
    spec.externalTrafficPolicy,
    'spec.externalTrafficPolicy',
    ['Cluster', 'Local'] as const,
    'Cluster',
  );
  const healthCheckNodePort = f.port(spec.healthCheckNodePort, 'spec.healthCheckNodePort', true);
  const trafficDistribution = f.oneOf(
    spec.trafficDistribution,
    'spec.trafficDistribution',
    [...TRAFFIC_DISTRIBUTIONS, ''] as const,
    '',
  );

  let scheduler = '';
  const ann = md.annotations[ANNOTATION_SCHEDULER];
  if (ann !== undefined) {
    if (isValidScheduler(ann)) scheduler = ann;
    else
      warnings.push({
        code: Codes.ANNOTATION_INVALID,
        severity: 'warning',
        kind: 'Service',
        name: md.key,
        field: `metadata.annotations[${ANNOTATION_SCHEDULER}]`,
        message: `${quote(ann)} is not an IPVS scheduler (${SCHEDULERS.join(', ')}); using the default scheduler`,
      });
  }

  const health = parseHealthAnnotations(md.key, md.annotations);
  warnings.push(...health.warnings);

  const problem = f.problem({ kind: 'Service', name: md.key });
  if (problem) return { status: 'invalid', problem };

  const ignored = ignoredByLabels(md.labels, opts.proxyName);
  if (ignored) return { status: 'ignored', reason: ignored, warnings };
  if (type === 'ExternalName') return { status: 'ignored', reason: 'type ExternalName', warnings };
  if (headless) return { status: 'ignored', reason: 'headless (clusterIP None)', warnings };
  if (clusterIPs.length === 0) {
    warnings.push({
      code: Codes.OBJECT_UNSUPPORTED,
      severity: 'warning',
      kind: 'Service',
      name: md.key,
      field: 'spec.clusterIP',
      message: 'no ClusterIP allocated yet; nothing to program until it has one',
    });
    return { status: 'ignored', reason: 'no ClusterIP', warnings };
  }

  const externallyAccessible = type !== 'ClusterIP' || externalIPs.length > 0;
  return {
    status: 'ok',
    warnings,
    value: {
      key: md.key,
      namespace: md.namespace,
      name: md.name,
      createdAt: md.createdAt,
      type: type,
      clusterIPs: clusterIPs.slice(), // of its exact length (grown by push it keeps room for 16 more)
      externalIPs: [...new Set(externalIPs)],
      loadBalancerIPs: type === 'LoadBalancer' ? [...new Set(loadBalancerIPs)] : [],
      loadBalancerSourceRanges: type === 'LoadBalancer' ? loadBalancerSourceRanges : [],
      ports: type === 'ClusterIP' ? ports.map((p) => ({ ...p, nodePort: 0 })) : ports,
      affinityTimeoutSeconds,
      internalTrafficPolicyLocal: itp === 'Local',
      externalTrafficPolicyLocal: externallyAccessible && etp === 'Local',
      healthCheckNodePort: type === 'LoadBalancer' && etp === 'Local' ? healthCheckNodePort : 0,
      trafficDistribution,
      scheduler,
      healthOverrides: health.overrides,
    },
  };
}

function notAnObject(ref: ObjectRef): Problem {
  return {
    code: Codes.OBJECT_INVALID,
    severity: 'error',
    kind: ref.kind,
    name: ref.name,
    message: 'is not an object (object ignored)',
  };
}

function hintNames(v: unknown, field: string, f: Fields, rule: NameRule): string[] | null {
  const list = f.arr(v, field);
  if (list.length === 0) return null;
  return list.map((h, i) => named(f, f.obj(h, `${field}[${i}]`).name, `${field}[${i}].name`, rule));
}

/** A string field that names something (a node, a zone): checked against its naming rule. */
function named(f: Fields, v: unknown, field: string, rule: NameRule): string {
  const s = f.str(v, field);
  checkName(f, field, s, rule);
  return s;
}

/**
 * `previous`: the version of this slice in force, if any. An endpoint whose first address is, as written, one the
 * previous version read (its canonical text) takes that reading (address, sort key) instead of parsing it again: a
 * rollout's update changes one or two of a slice's addresses and repeats the rest.
 */
export function parseEndpointSlice(raw: unknown, opts: ParseOptions, previous?: EndpointSlice): Parsed<EndpointSlice> {
  const ref = refOf('EndpointSlice', raw);
  if (!isObj(raw)) return { status: 'invalid', problem: notAnObject(ref) };
  const f = new Fields();
  const md = metadata(raw, f, true, 'subdomain');
  const serviceName = md.labels[LABEL_SERVICE_NAME];
  if (!serviceName) f.fail(`metadata.labels[${LABEL_SERVICE_NAME}]`, 'is missing: the slice has no owning Service');
  else checkName(f, `metadata.labels[${LABEL_SERVICE_NAME}]`, serviceName, 'dns1035');
  const addressType = f.oneOf(raw.addressType, 'addressType', ['IPv4', 'IPv6', 'FQDN'] as const, 'IPv4');
  if (raw.addressType === undefined) f.fail('addressType', 'is required');
  const family: Family | null = addressType === 'IPv4' ? 4 : addressType === 'IPv6' ? 6 : null;

  const ports: EndpointSlicePort[] = [];
  f.arr(raw.ports, 'ports').forEach((p, i) => {
    const po = f.obj(p, `ports[${i}]`);
    // kube-proxy skips a port with no number rather than rejecting the slice.
    if (po.port === undefined || po.port === null) return;
    const name = f.str(po.name, `ports[${i}].name`);
    checkName(f, `ports[${i}].name`, name, 'dns1123');
    ports.push({
      name,
      protocol: f.protocol(po.protocol, `ports[${i}].protocol`),
      port: f.port(po.port, `ports[${i}].port`, false),
    });
  });

  const endpoints: SliceEndpoint[] = [];
  // FQDN slices (kube-proxy ignores them) hold names, not addresses: nothing to read.
  f.arr(family === null ? [] : raw.endpoints, 'endpoints').forEach((e, i) => {
    const field = `endpoints[${i}]`;
    const eo = f.obj(e, field);
    const addrs = f.arr(eo.addresses, `${field}.addresses`);
    if (addrs.length === 0) return; // kube-proxy skips endpoints without addresses
    // A slice in force passed every check: each endpoint's address is canonical, valid, and of the slice's family.
    const known = previous?.endpoints[i];
    const parsedAddress =
      known !== undefined && previous!.family !== null && addrs[0] === known.address
        ? { address: known.address, sortKey: known.sortKey, family: previous!.family }
        : f.usableParsed(addrs[0], `${field}.addresses[0]`);
    const address = parsedAddress?.address ?? null;
    if (parsedAddress && family !== null && parsedAddress.family !== family) {
      f.fail(`${field}.addresses[0]`, `${address} is not an ${addressType} address`);
    }
    const cond = f.obj(eo.conditions, `${field}.conditions`);
    const hints = f.obj(eo.hints, `${field}.hints`);
    endpoints.push({
      address: address ?? '',
      sortKey: parsedAddress?.sortKey ?? '',
      ready: f.bool(cond.ready, `${field}.conditions.ready`) ?? true,
      serving: f.bool(cond.serving, `${field}.conditions.serving`) ?? true,
      terminating: f.bool(cond.terminating, `${field}.conditions.terminating`) ?? false,
      nodeName: named(f, eo.nodeName, `${field}.nodeName`, 'subdomain'),
      zone: named(f, eo.zone, `${field}.zone`, 'labelValue'),
      zoneHints: hintNames(hints.forZones, `${field}.hints.forZones`, f, 'labelValue'),
      nodeHints: hintNames(hints.forNodes, `${field}.hints.forNodes`, f, 'subdomain'),
    });
  });

  const problem = f.problem({ kind: 'EndpointSlice', name: md.key });
  if (problem) return { status: 'invalid', problem };
  const ignored = ignoredByLabels(md.labels, opts.proxyName);
  if (ignored) return { status: 'ignored', reason: ignored, warnings: [] };
  return {
    status: 'ok',
    warnings: [],
    // Arrays of their exact length: grown by push they keep room for 16 more (kept for as long as the slice is).
    value: {
      key: md.key,
      serviceKey: `${md.namespace}/${serviceName}`,
      family,
      ports: ports.slice(),
      endpoints: endpoints.slice(),
    },
  };
}

export function parseNode(raw: unknown): Parsed<NodeInfo> {
  const ref = refOf('Node', raw);
  if (!isObj(raw)) return { status: 'invalid', problem: notAnObject(ref) };
  const f = new Fields();
  const md = metadata(raw, f, false, 'subdomain');
  const status = f.obj(raw.status, 'status');
  const warnings: Problem[] = [];
  const addresses: NodeInfo['addresses'] = [];
  f.arr(status.addresses, 'status.addresses').forEach((a, i) => {
    const ao = f.obj(a, `status.addresses[${i}]`);
    const type = f.str(ao.type, `status.addresses[${i}].type`);
    if (type !== 'InternalIP' && type !== 'ExternalIP') return;
    const ip = f.ip(ao.address, `status.addresses[${i}].address`);
    const why = ip && specialAddress(ip);
    if (why) {
      // Not the Node's fault alone (it is still this node): the address just never gets NodePorts.
      warnings.push({
        code: Codes.OBJECT_UNSUPPORTED,
        severity: 'warning',
        kind: 'Node',
        name: ref.name,
        field: `status.addresses[${i}].address`,
        message: `${ip} is ${why}: no NodePort is served on it`,
      });
      return;
    }
    if (ip && !addresses.some((x) => x.address === ip)) addresses.push({ type, address: ip });
  });
  const spec = f.obj(raw.spec, 'spec');
  const podCIDRs: string[] = [];
  const cidrTexts = Array.isArray(spec.podCIDRs)
    ? spec.podCIDRs
    : typeof spec.podCIDR === 'string'
      ? [spec.podCIDR]
      : [];
  for (const c of cidrTexts) {
    const p = typeof c === 'string' ? parseCIDR(c) : null;
    if (p && !podCIDRs.includes(p.text)) podCIDRs.push(p.text);
  }
  const taints = f.arr(spec.taints, 'spec.taints');
  const toBeDeleted = taints.some((x) => isObj(x) && x.key === TAINT_TO_BE_DELETED);
  const deleting =
    isObj(raw.metadata) && raw.metadata.deletionTimestamp !== undefined && raw.metadata.deletionTimestamp !== null;
  const problem = f.problem(ref);
  if (problem) return { status: 'invalid', problem };
  return {
    status: 'ok',
    warnings,
    value: {
      name: md.name,
      labels: md.labels,
      zone: md.labels[LABEL_ZONE] ?? '',
      addresses,
      podCIDRs,
      deleting,
      toBeDeleted,
    },
  };
}
