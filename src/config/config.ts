// Configuration: our own KubeIPVSConfiguration, or kube-proxy's KubeProxyConfiguration taken as
// is, so a cluster can hand kube-ipvs its kube-proxy ConfigMap. Both go through one field table:
// every field is applied, accepted as belonging to another proxy mode, or allowed only at its
// default. Anything else is an error that names the field; nothing is silently dropped.
import { parseAllDocuments } from 'yaml';
import { Codes, quote, type Problem } from '../errors.ts';
import { isValidScheduler, SCHEDULERS } from '../model/schedulers.ts';
import { canonicalIP, parseBindAddress, parseCIDR } from '../util/ip.ts';
import { formatDuration, parseDuration } from './duration.ts';
import { defaultHealthConfig, MIN_INTERVAL_MS, readers, type HealthConfig, type Reader } from '../health/settings.ts';

export const KUBE_IPVS_API_VERSION = 'kube-ipvs.io/v1alpha1';
export const KUBE_IPVS_KIND = 'KubeIPVSConfiguration';
export const KUBE_PROXY_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KUBE_PROXY_KIND = 'KubeProxyConfiguration';

export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix';
/** auto: readable text when stderr is a terminal, JSON lines otherwise. */
export type LogFormat = 'json' | 'text' | 'auto';

export interface Config {
  /** Where the config came from: built-in defaults, our own kind, or kube-proxy's. */
  source: 'defaults' | typeof KUBE_IPVS_KIND | typeof KUBE_PROXY_KIND;
  /** The service.kubernetes.io/service-proxy-name value kube-ipvs answers to. */
  serviceProxyName: string;
  hostnameOverride: string;
  bindAddress: string;
  healthzBindAddress: string;
  metricsBindAddress: string;
  clusterCIDRs: string[];
  /** CIDRs and/or "primary"; empty means every node address. */
  nodePortAddresses: string[];
  detectLocalMode: DetectLocalMode;
  detectLocal: { bridgeInterface: string; interfaceNamePrefix: string };
  configSyncPeriodSeconds: number;
  clientConnection: { kubeconfig: string; qps: number; burst: number; contentType: string; acceptContentTypes: string };
  ipvs: {
    scheduler: string;
    syncPeriodSeconds: number;
    minSyncPeriodSeconds: number;
    strictARP: boolean;
    excludeCIDRs: string[];
    tcpTimeoutSeconds: number;
    tcpFinTimeoutSeconds: number;
    udpTimeoutSeconds: number;
  };
  iptables: { masqueradeAll: boolean; masqueradeBit: number };
  conntrack: {
    maxPerCore: number;
    min: number;
    tcpEstablishedTimeoutSeconds: number;
    tcpCloseWaitTimeoutSeconds: number;
    tcpBeLiberal: boolean;
    udpTimeoutSeconds: number;
    udpStreamTimeoutSeconds: number;
  };
  featureGates: Record<string, boolean>;
  /** kube-ipvs only: the dummy interface that holds service addresses. */
  dummyInterface: string;
  /** kube-ipvs only: where the record of what kube-ipvs created lives (a tmpfs: gone at reboot, like IPVS state). */
  stateDirectory: string;
  /** kube-ipvs only: a removed TCP backend with connections left is deleted after this long. */
  gracefulTerminationSeconds: number;
  /**
   * kube-ipvs only: what kube-proxy left on this node (its chains, ipsets, nftables tables, IPVS virtual servers and
   * dummy-interface addresses). remove: removed once kube-proxy no longer runs here and our first full sync is in.
   */
  kubeProxyLeftovers: 'remove' | 'keep';
  /** kube-ipvs only: at most this many real servers get per-backend series per scrape (0: none). */
  metrics: { realServerSeriesLimit: number };
  /** kube-ipvs only: backend health checks (`healthChecks:`); per-Service annotations override. */
  healthChecks: HealthConfig;
  logging: { format: LogFormat; verbosity: number };
}

/** Feature gates kube-ipvs implements; any other gate named in a config is an error. */
export const FEATURE_GATES: Record<string, boolean> = {
  PreferSameTrafficDistribution: true,
};

export function defaultConfig(): Config {
  return {
    source: 'defaults',
    serviceProxyName: 'kube-ipvs',
    hostnameOverride: '',
    bindAddress: '0.0.0.0',
    healthzBindAddress: '0.0.0.0:10256',
    metricsBindAddress: '127.0.0.1:10249',
    clusterCIDRs: [],
    nodePortAddresses: [],
    detectLocalMode: 'ClusterCIDR',
    detectLocal: { bridgeInterface: '', interfaceNamePrefix: '' },
    configSyncPeriodSeconds: 15 * 60,
    clientConnection: {
      kubeconfig: '',
      qps: 5,
      burst: 10,
      contentType: 'application/vnd.kubernetes.protobuf',
      acceptContentTypes: '',
    },
    ipvs: {
      scheduler: 'rr',
      syncPeriodSeconds: 30,
      minSyncPeriodSeconds: 0,
      strictARP: false,
      excludeCIDRs: [],
      tcpTimeoutSeconds: 0,
      tcpFinTimeoutSeconds: 0,
      udpTimeoutSeconds: 0,
    },
    iptables: { masqueradeAll: false, masqueradeBit: 14 },
    conntrack: {
      maxPerCore: 32768,
      min: 131072,
      tcpEstablishedTimeoutSeconds: 24 * 3600,
      tcpCloseWaitTimeoutSeconds: 3600,
      tcpBeLiberal: false,
      udpTimeoutSeconds: 0,
      udpStreamTimeoutSeconds: 0,
    },
    featureGates: { ...FEATURE_GATES },
    dummyInterface: 'kube-ipvs0',
    stateDirectory: '/run/kube-ipvs',
    gracefulTerminationSeconds: 15 * 60,
    kubeProxyLeftovers: 'remove',
    metrics: { realServerSeriesLimit: 1000 },
    healthChecks: defaultHealthConfig(),
    logging: { format: 'auto', verbosity: 0 },
  };
}

/** Thrown inside a field handler; turned into a Problem naming the field. */
class BadValue extends Error {}

type Setter = (c: Config, v: unknown) => void;
type Rule =
  | { apply: Setter }
  /** Valid in kube-proxy but only meaningful for another mode or platform: accepted, not used. */
  | { otherMode: string }
  /** Accepted only at kube-proxy's default (or unset); `isDefault` says whether a value is one. */
  | { defaultOnly: (v: unknown) => boolean; why: string }
  /** A nested object whose fields have their own rules. */
  | { fields: Record<string, Rule> }
  /** A free-form map (featureGates); the setter validates the keys. */
  | { map: Setter };

// Value readers. A null or absent value means "kube-proxy's default" and never reaches them.
const str = (v: unknown): string => {
  if (typeof v !== 'string') throw new BadValue(`must be a string, got ${quote(v)}`);
  return v;
};
const bool = (v: unknown): boolean => {
  if (typeof v !== 'boolean') throw new BadValue(`must be true or false, got ${quote(v)}`);
  return v;
};
const int =
  (min: number, max: number) =>
  (v: unknown): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw new BadValue(`must be an integer in ${min}-${max}, got ${quote(v)}`);
    return v;
  };
const num = (v: unknown): number => {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new BadValue(`must be a non-negative number, got ${quote(v)}`);
  return v;
};
/** The longest duration a timer can hold (Node's setTimeout: 2^31-1 ms, about 596 hours); longer ones fire at once. */
const MAX_TIMER_SECONDS = Math.floor((2 ** 31 - 1) / 1000);
const duration = (v: unknown, max = MAX_TIMER_SECONDS): number => {
  const d = typeof v === 'string' ? parseDuration(v) : null;
  if (d === null || d < 0 || !Number.isFinite(d))
    throw new BadValue(`${quote(v)} is not a duration such as "30s" or "1m0s"`);
  if (d > max) throw new BadValue(`${quote(v)} is longer than ${formatDuration(max)}, the most kube-ipvs can wait for`);
  return d;
};
/** An IPVS or conntrack timeout: whole seconds the kernel keeps as a 32-bit number. */
const kernelSeconds = (v: unknown): number => Math.round(duration(v, 2 ** 31 - 1));
/** A network interface name (IFNAMSIZ: 15), or its prefix: it goes into iptables rules. */
const interfaceName = (v: unknown): string => {
  const s = str(v);
  if (s !== '' && (!/^[A-Za-z0-9_.-]{1,15}$/.test(s) || s === '.' || s === '..'))
    throw new BadValue(`${quote(s)} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)`);
  return s;
};
/** A node name (hostnameOverride): a DNS-1123 subdomain, as the API server requires. */
const nodeName = (v: unknown): string => {
  const s = str(v).trim().toLowerCase();
  if (s !== '' && (s.length > 253 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(s)))
    throw new BadValue(`${quote(s)} is not a node name (a DNS-1123 subdomain)`);
  return s;
};
/** A label value (serviceProxyName is matched against a label). */
const labelValue = (v: unknown): string => {
  const s = str(v);
  if (s.length > 63 || !/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(s))
    throw new BadValue(`${quote(s)} is not a label value (letters, digits, "-", "_" and ".", at most 63)`);
  return s;
};
/** Media types for the API client's headers: no line breaks or other header text. */
const mediaTypes = (v: unknown): string => {
  const s = str(v);
  if (
    s !== '' &&
    !/^[A-Za-z0-9.+*/-]+(\s*;\s*[A-Za-z0-9.+-]+=[A-Za-z0-9.+-]+)*(\s*,\s*[A-Za-z0-9.+*/-]+(\s*;\s*[A-Za-z0-9.+-]+=[A-Za-z0-9.+-]+)*)*$/.test(
      s,
    )
  )
    throw new BadValue(`${quote(s)} is not a list of media types`);
  return s;
};
const cidrs = (v: unknown, allowPrimary = false): string[] => {
  const list =
    typeof v === 'string'
      ? v
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : v;
  if (!Array.isArray(list)) throw new BadValue('must be a list of CIDRs');
  return list.map((item) => {
    if (allowPrimary && item === 'primary') return 'primary';
    const c = typeof item === 'string' ? parseCIDR(item.trim()) : null;
    if (!c) throw new BadValue(`${quote(item)} is not a CIDR${allowPrimary ? ' or "primary"' : ''}`);
    return c.text;
  });
};
const hostPortText = (v: unknown): string => {
  const s = str(v);
  const b = parseBindAddress(s);
  if (!b || (b.host !== undefined && !canonicalIP(b.host))) throw new BadValue(`${quote(s)} is not an IP:port`);
  return s;
};
const oneOf =
  <T extends string>(allowed: readonly T[]) =>
  (v: unknown): T => {
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v))
      throw new BadValue(`${quote(v)} is not one of ${allowed.join(', ')}`);
    return v as T;
  };
const zeroish = (v: unknown) =>
  v === false || v === '' || v === 0 || v === '0s' || (Array.isArray(v) && v.length === 0);

/** kube-proxy writes "" and 0 for "use the default"; so do we. */
const unlessEmpty =
  (read: (v: unknown) => unknown, set: (c: Config, v: never) => void): Setter =>
  (c, v) => {
    if (v === '' || v === 0) return;
    set(c, read(v) as never);
  };

const RULES: Record<string, Rule> = {
  kind: { apply: () => {} },
  apiVersion: { apply: () => {} },
  mode: { apply: () => {} }, // checked before the walk, with its own code
  hostnameOverride: { apply: (c, v) => (c.hostnameOverride = nodeName(v)) },
  bindAddress: {
    apply: unlessEmpty(
      (v) =>
        canonicalIP(str(v)) ??
        (() => {
          throw new BadValue(`${quote(v)} is not an IP address`);
        })(),
      (c, v: string) => (c.bindAddress = v),
    ),
  },
  healthzBindAddress: { apply: unlessEmpty(hostPortText, (c, v: string) => (c.healthzBindAddress = v)) },
  metricsBindAddress: { apply: unlessEmpty(hostPortText, (c, v: string) => (c.metricsBindAddress = v)) },
  clusterCIDR: { apply: (c, v) => (c.clusterCIDRs = cidrs(v)) },
  nodePortAddresses: {
    apply: (c, v) => {
      const list = cidrs(v, true);
      if (list.includes('primary') && list.length > 1) throw new BadValue('"primary" cannot be combined with CIDRs');
      c.nodePortAddresses = list;
    },
  },
  detectLocalMode: {
    apply: unlessEmpty(
      oneOf(['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix'] as const),
      (c, v: DetectLocalMode) => (c.detectLocalMode = v),
    ),
  },
  detectLocal: {
    fields: {
      bridgeInterface: { apply: (c, v) => (c.detectLocal.bridgeInterface = interfaceName(v)) },
      interfaceNamePrefix: { apply: (c, v) => (c.detectLocal.interfaceNamePrefix = interfaceName(v)) },
    },
  },
  configSyncPeriod: {
    apply: unlessEmpty(duration, (c, v: number) => (c.configSyncPeriodSeconds = v || c.configSyncPeriodSeconds)),
  },
  clientConnection: {
    fields: {
      kubeconfig: { apply: (c, v) => (c.clientConnection.kubeconfig = str(v)) },
      qps: { apply: unlessEmpty(num, (c, v: number) => (c.clientConnection.qps = v)) },
      burst: { apply: unlessEmpty(int(0, 1e6), (c, v: number) => (c.clientConnection.burst = v)) },
      contentType: { apply: unlessEmpty(mediaTypes, (c, v: string) => (c.clientConnection.contentType = v)) },
      acceptContentTypes: { apply: (c, v) => (c.clientConnection.acceptContentTypes = mediaTypes(v)) },
    },
  },
  ipvs: {
    fields: {
      scheduler: {
        apply: unlessEmpty(
          (v) => {
            if (!isValidScheduler(v))
              throw new BadValue(`${quote(v)} is not an IPVS scheduler (${SCHEDULERS.join(', ')})`);
            return v;
          },
          (c, v: string) => (c.ipvs.scheduler = v),
        ),
      },
      syncPeriod: {
        apply: unlessEmpty(duration, (c, v: number) => (c.ipvs.syncPeriodSeconds = v || c.ipvs.syncPeriodSeconds)),
      },
      minSyncPeriod: { apply: (c, v) => (c.ipvs.minSyncPeriodSeconds = duration(v)) },
      strictARP: { apply: (c, v) => (c.ipvs.strictARP = bool(v)) },
      excludeCIDRs: { apply: (c, v) => (c.ipvs.excludeCIDRs = cidrs(v)) },
      tcpTimeout: { apply: (c, v) => (c.ipvs.tcpTimeoutSeconds = kernelSeconds(v)) },
      tcpFinTimeout: { apply: (c, v) => (c.ipvs.tcpFinTimeoutSeconds = kernelSeconds(v)) },
      udpTimeout: { apply: (c, v) => (c.ipvs.udpTimeoutSeconds = kernelSeconds(v)) },
    },
  },
  iptables: {
    fields: {
      masqueradeAll: { apply: (c, v) => (c.iptables.masqueradeAll = bool(v)) },
      masqueradeBit: { apply: (c, v) => (c.iptables.masqueradeBit = int(0, 31)(v)) },
      syncPeriod: { otherMode: 'iptables' },
      minSyncPeriod: { otherMode: 'iptables' },
      localhostNodePorts: { otherMode: 'iptables' },
    },
  },
  conntrack: {
    fields: {
      maxPerCore: { apply: (c, v) => (c.conntrack.maxPerCore = int(0, 2 ** 31 - 1)(v)) },
      min: { apply: (c, v) => (c.conntrack.min = int(0, 2 ** 31 - 1)(v)) },
      tcpEstablishedTimeout: { apply: (c, v) => (c.conntrack.tcpEstablishedTimeoutSeconds = kernelSeconds(v)) },
      tcpCloseWaitTimeout: { apply: (c, v) => (c.conntrack.tcpCloseWaitTimeoutSeconds = kernelSeconds(v)) },
      tcpBeLiberal: { apply: (c, v) => (c.conntrack.tcpBeLiberal = bool(v)) },
      udpTimeout: { apply: (c, v) => (c.conntrack.udpTimeoutSeconds = kernelSeconds(v)) },
      udpStreamTimeout: { apply: (c, v) => (c.conntrack.udpStreamTimeoutSeconds = kernelSeconds(v)) },
    },
  },
  featureGates: {
    map: (c, v) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v))
        throw new BadValue('must be a map of gate name to true/false');
      for (const [gate, on] of Object.entries(v)) {
        if (!(gate in FEATURE_GATES))
          throw new BadValue(
            `feature gate ${gate} is not implemented by kube-ipvs (known: ${Object.keys(FEATURE_GATES).join(', ')})`,
          );
        c.featureGates[gate] = bool(on);
      }
    },
  },
  logging: {
    fields: {
      format: {
        apply: unlessEmpty(oneOf(['json', 'text', 'auto'] as const), (c, v: LogFormat) => (c.logging.format = v)),
      },
      verbosity: { apply: (c, v) => (c.logging.verbosity = int(0, 10)(v)) },
      flushFrequency: { otherMode: 'klog' },
      options: { otherMode: 'klog' },
    },
  },
  winkernel: { otherMode: 'kernelspace (Windows)' },
  nftables: { otherMode: 'nftables' },
  bindAddressHardFail: { defaultOnly: zeroish, why: 'kube-ipvs always fails hard on an unusable bind address' },
  enableProfiling: { defaultOnly: zeroish, why: 'profiling endpoints are not served' },
  portRange: { defaultOnly: zeroish, why: 'the userspace proxy port range does not exist in kube-ipvs' },
  showHiddenMetricsForVersion: { defaultOnly: zeroish, why: 'kube-ipvs has no hidden metrics' },
  oomScoreAdj: {
    defaultOnly: (v) => v === -999,
    why: 'kube-ipvs does not change its OOM score; set it in the pod spec',
  },
};

/** Fields only our own kind has. */
const KUBE_IPVS_RULES: Record<string, Rule> = {
  ...RULES,
  serviceProxyName: { apply: unlessEmpty(labelValue, (c, v: string) => (c.serviceProxyName = v)) },
  dummyInterface: {
    apply: unlessEmpty(
      (v) => {
        const s = str(v);
        if (!/^[A-Za-z0-9_.-]{1,15}$/.test(s))
          throw new BadValue(`${quote(s)} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)`);
        return s;
      },
      (c, v: string) => (c.dummyInterface = v),
    ),
  },
  stateDirectory: {
    apply: unlessEmpty(
      (v) => {
        const s = str(v);
        if (!s.startsWith('/')) throw new BadValue(`${quote(s)} must be an absolute path`);
        return s;
      },
      (c, v: string) => (c.stateDirectory = v),
    ),
  },
  gracefulTerminationTimeout: { apply: unlessEmpty(duration, (c, v: number) => (c.gracefulTerminationSeconds = v)) },
  kubeProxyLeftovers: {
    apply: unlessEmpty(oneOf(['remove', 'keep'] as const), (c, v: 'remove' | 'keep') => (c.kubeProxyLeftovers = v)),
  },
  metrics: {
    fields: {
      realServerSeriesLimit: { apply: (c, v) => (c.metrics.realServerSeriesLimit = int(0, 10_000_000)(v)) },
    },
  },
  healthChecks: {
    fields: {
      default: { apply: (c, v) => (c.healthChecks.kind = health(readers.kind)(v)) },
      path: { apply: (c, v) => (c.healthChecks.path = health(readers.path)(v)) },
      port: { apply: (c, v) => (c.healthChecks.port = v === '' ? '' : health(readers.port)(v)) },
      interval: { apply: (c, v) => (c.healthChecks.intervalMs = health(readers.duration(MIN_INTERVAL_MS))(v)) },
      timeout: { apply: (c, v) => (c.healthChecks.timeoutMs = health(readers.duration(MIN_INTERVAL_MS))(v)) },
      unhealthyThreshold: { apply: (c, v) => (c.healthChecks.unhealthyThreshold = health(readers.count)(v)) },
      healthyThreshold: { apply: (c, v) => (c.healthChecks.healthyThreshold = health(readers.count)(v)) },
      slowStart: { apply: (c, v) => (c.healthChecks.slowStartMs = health(readers.duration(1000, true))(v)) },
      maxEjectionPercent: { apply: (c, v) => (c.healthChecks.maxEjectionPercent = health(readers.percent)(v)) },
      idleInterval: { apply: (c, v) => (c.healthChecks.idleIntervalMs = health(readers.duration(MIN_INTERVAL_MS))(v)) },
      probesPerSecond: { apply: (c, v) => (c.healthChecks.probesPerSecond = int(1, 1_000_000)(v)) },
      passive: { apply: (c, v) => (c.healthChecks.passive = bool(v)) },
    },
  },
};

/** A health setting read as its annotation is (numbers given as numbers are fine here). */
function health<T>(read: Reader<T>): (v: unknown) => T {
  return (v) => {
    if (typeof v !== 'string' && typeof v !== 'number')
      throw new BadValue(`must be a string or a number, got ${quote(v)}`);
    const r = read(String(v));
    if (typeof r === 'object' && r !== null && 'invalid' in r) throw new BadValue(`${quote(v)} ${r.invalid}`);
    return r;
  };
}

function walk(
  obj: Record<string, unknown>,
  rules: Record<string, Rule>,
  prefix: string,
  cfg: Config,
  problem: (code: Problem['code'], field: string, message: string) => void,
): void {
  for (const [key, value] of Object.entries(obj)) {
    const field = prefix ? `${prefix}.${key}` : key;
    const rule = rules[key];
    if (!rule) {
      problem(Codes.CONFIG_UNKNOWN_FIELD, field, 'unknown field');
      continue;
    }
    if (value === null || value === undefined) continue; // kube-proxy's "unset": keep the default
    try {
      if ('apply' in rule) rule.apply(cfg, value);
      else if ('map' in rule) rule.map(cfg, value);
      else if ('fields' in rule) {
        if (typeof value !== 'object' || Array.isArray(value)) throw new BadValue('must be an object');
        walk(value as Record<string, unknown>, rule.fields, field, cfg, problem);
      } else if ('defaultOnly' in rule) {
        if (!rule.defaultOnly(value))
          problem(
            Codes.CONFIG_UNSUPPORTED_FIELD,
            field,
            `${quote(value)} is not supported: ${rule.why}; remove the field or leave it at its default`,
          );
      }
      // otherMode: accepted and not used.
    } catch (e) {
      if (!(e instanceof BadValue)) throw e;
      problem(Codes.CONFIG_INVALID_VALUE, field, e.message);
    }
  }
}

export interface ConfigResult {
  /** null when any problem was found: a config is used whole or not at all. */
  config: Config | null;
  problems: Problem[];
}

/** Parses config text (YAML or JSON). `file` names it in problems. */
export function parseConfig(text: string, file = '<config>'): ConfigResult {
  const problems: Problem[] = [];
  const problem = (code: Problem['code'], field: string, message: string) =>
    problems.push({ code, severity: 'error', file, kind: 'config', field, message });
  const docs = parseAllDocuments(text).filter((d) => !(d.contents === null && d.errors.length === 0));
  if (docs.length !== 1) {
    problem(Codes.CONFIG_UNREADABLE, '', `expected exactly one YAML document, found ${docs.length}`);
    return { config: null, problems };
  }
  const doc = docs[0]!;
  if (doc.errors.length > 0) {
    problem(Codes.CONFIG_UNREADABLE, '', doc.errors.map((e) => e.message.split('\n')[0]).join('; '));
    return { config: null, problems };
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    // The yaml package refuses excessive alias expansion ("billion laughs") with a ReferenceError.
    problem(
      Codes.CONFIG_UNREADABLE,
      '',
      /alias/i.test((e as Error).message)
        ? 'more than 100 YAML aliases expanded'
        : (e as Error).message.split('\n')[0]!,
    );
    return { config: null, problems };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    problem(Codes.CONFIG_UNREADABLE, '', 'the config must be a YAML mapping');
    return { config: null, problems };
  }
  const obj = raw as Record<string, unknown>;
  const cfg = defaultConfig();
  let rules: Record<string, Rule>;
  if (obj.kind === KUBE_PROXY_KIND && obj.apiVersion === KUBE_PROXY_API_VERSION) {
    cfg.source = KUBE_PROXY_KIND;
    rules = RULES;
    const mode = obj.mode ?? '';
    if (mode !== '' && mode !== 'ipvs') {
      problem(
        Codes.CONFIG_UNSUPPORTED_MODE,
        'mode',
        `${quote(mode)}: kube-ipvs is an IPVS proxy; set mode to "ipvs" (or leave it empty) to use this KubeProxyConfiguration`,
      );
    }
  } else if (obj.kind === KUBE_IPVS_KIND && obj.apiVersion === KUBE_IPVS_API_VERSION) {
    cfg.source = KUBE_IPVS_KIND;
    rules = KUBE_IPVS_RULES;
    if (obj.mode !== undefined && obj.mode !== 'ipvs')
      problem(Codes.CONFIG_UNSUPPORTED_MODE, 'mode', 'kube-ipvs only has mode "ipvs"');
  } else {
    problem(
      Codes.CONFIG_UNREADABLE,
      'kind',
      `${quote(obj.apiVersion)} ${quote(obj.kind)} is not a config kube-ipvs reads (${KUBE_IPVS_API_VERSION} ${KUBE_IPVS_KIND}, or ${KUBE_PROXY_API_VERSION} ${KUBE_PROXY_KIND})`,
    );
    return { config: null, problems };
  }
  walk(obj, rules, '', cfg, problem);
  // What no single field can say (kube-proxy's validation says the same).
  if (problems.length === 0) {
    if (cfg.ipvs.minSyncPeriodSeconds > cfg.ipvs.syncPeriodSeconds) {
      problem(
        Codes.CONFIG_INVALID_VALUE,
        'ipvs.minSyncPeriod',
        `${formatDuration(cfg.ipvs.minSyncPeriodSeconds)} is longer than ipvs.syncPeriod (${formatDuration(cfg.ipvs.syncPeriodSeconds)})`,
      );
    }
    if (cfg.detectLocalMode === 'BridgeInterface' && !cfg.detectLocal.bridgeInterface)
      problem(
        Codes.CONFIG_INVALID_VALUE,
        'detectLocal.bridgeInterface',
        'is required with detectLocalMode: BridgeInterface',
      );
    if (cfg.detectLocalMode === 'InterfaceNamePrefix' && !cfg.detectLocal.interfaceNamePrefix)
      problem(
        Codes.CONFIG_INVALID_VALUE,
        'detectLocal.interfaceNamePrefix',
        'is required with detectLocalMode: InterfaceNamePrefix',
      );
  }
  return { config: problems.length === 0 ? cfg : null, problems };
}
