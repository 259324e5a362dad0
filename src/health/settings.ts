// Health-check settings: the config's defaults (`healthChecks:` in KubeIPVSConfiguration) and the
// per-Service annotations that override them. Pure. An invalid annotation is a warning naming the
// Service and the annotation, and the default is used (as with kube-ipvs.io/scheduler).
import { Codes, quote, type Problem } from '../errors.ts';
import { parseDuration } from '../config/duration.ts';

export type CheckKind = 'tcp' | 'http' | 'none';

export interface HealthSettings {
  kind: CheckKind;
  /** HTTP path (http only). */
  path: string;
  /** A port number, a port name from the EndpointSlice, or '' for the endpoint's own port. */
  port: number | string;
  intervalMs: number;
  timeoutMs: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
  /** 0: off. */
  slowStartMs: number;
  maxEjectionPercent: number;
}

/** The config's `healthChecks:` block. */
export interface HealthConfig extends HealthSettings {
  /** How often endpoints of Services that got no new connections lately are probed (Envoy's no_traffic_interval). */
  idleIntervalMs: number;
  /** The node's probe budget: intervals stretch rather than exceed it. */
  probesPerSecond: number;
  /** Passive outlier detection for Services without active checks (TCP backends whose connections never establish). */
  passive: boolean;
}

/**
 * Defaults: no probing unless an operator asks (probing every pod from every node is a choice);
 * when asked, a backend that refuses connections or stops answering is at weight 0 well under a
 * second: a probe every 200 ms with a 150 ms timeout (a TCP connect inside a cluster takes well
 * under a millisecond), unhealthy after 2 failures, the second probed at once after the first (at
 * worst 200 + 150 + 150 ms for a black hole, one interval for a refusal), healthy again after 2
 * successes. The budget, 250 probes a second, is what a node spends under 10% of one core on
 * (a TCP probe costs 300-400 µs of CPU, the kernel's connect and garbage collection included,
 * with 100 000 endpoints looked after: perf/health.bench.ts; at 300 a second the median was at
 * the 10% mark); up to 50 endpoints of busy Services get the full rate (idle Services' endpoints
 * ask for one probe each idleInterval), more stretch every interval alike.
 */
export function defaultHealthConfig(): HealthConfig {
  return {
    kind: 'none',
    path: '/',
    port: '',
    intervalMs: 200,
    timeoutMs: 150,
    unhealthyThreshold: 2,
    healthyThreshold: 2,
    slowStartMs: 0,
    maxEjectionPercent: 50,
    idleIntervalMs: 10_000,
    probesPerSecond: 250,
    passive: false,
  };
}

export const ANN = {
  check: 'kube-ipvs.io/health-check',
  path: 'kube-ipvs.io/health-check-path',
  port: 'kube-ipvs.io/health-check-port',
  interval: 'kube-ipvs.io/health-check-interval',
  timeout: 'kube-ipvs.io/health-check-timeout',
  unhealthy: 'kube-ipvs.io/health-check-unhealthy-threshold',
  healthy: 'kube-ipvs.io/health-check-healthy-threshold',
  slowStart: 'kube-ipvs.io/slow-start',
  maxEjection: 'kube-ipvs.io/max-ejection-percent',
} as const;

/** Shortest interval or timeout accepted (a probe storm is not a health check). */
export const MIN_INTERVAL_MS = 50;
/** Longest accepted: an hour. */
export const MAX_DURATION_MS = 3_600_000;

/** Reads one value; a text for the warning when it is not valid. */
export type Reader<T> = (v: string) => T | { invalid: string };

export const readers = {
  kind: ((v) =>
    v === 'tcp' || v === 'http' || v === 'none' ? v : { invalid: 'is not tcp, http or none' }) as Reader<CheckKind>,
  path: ((v) =>
    /^\/[\x21-\x7e]*$/.test(v) && v.length <= 1024
      ? v
      : { invalid: 'is not an absolute HTTP path (printable, no spaces, at most 1024)' }) as Reader<string>,
  port: ((v) => {
    if (/^[0-9]+$/.test(v)) {
      const n = Number(v);
      return n >= 1 && n <= 65535 ? n : { invalid: 'is not a port number (1-65535)' };
    }
    return /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(v) && v.length <= 63
      ? v
      : { invalid: 'is not a port number or a port name' };
  }) as Reader<number | string>,
  duration:
    (min: number, allowZero = false): Reader<number> =>
    (v) => {
      const s = parseDuration(v);
      if (s === null || s < 0) return { invalid: 'is not a duration such as "200ms" or "10s"' };
      const ms = Math.round(s * 1000);
      if (allowZero && ms === 0) return 0;
      if (ms < min || ms > MAX_DURATION_MS)
        return { invalid: `is not between ${min} ms and 1 h${allowZero ? ' (or 0s)' : ''}` };
      return ms;
    },
  count: ((v) =>
    /^[0-9]+$/.test(v) && Number(v) >= 1 && Number(v) <= 100
      ? Number(v)
      : { invalid: 'is not a count in 1-100' }) as Reader<number>,
  percent: ((v) =>
    /^[0-9]+$/.test(v) && Number(v) <= 100 ? Number(v) : { invalid: 'is not a percentage in 0-100' }) as Reader<number>,
};

/**
 * A Service's health annotations, read once when the Service is (src/model/validate.ts): what
 * they override, and a warning for each invalid one (its default is used).
 */
export function parseHealthAnnotations(
  serviceKey: string,
  annotations: Readonly<Record<string, string>>,
): { overrides: Partial<HealthSettings>; warnings: Problem[] } {
  const warnings: Problem[] = [];
  const overrides: Partial<HealthSettings> = {};
  const pick = <K extends keyof HealthSettings>(key: K, name: string, read: Reader<HealthSettings[K]>) => {
    const raw = annotations[name];
    if (raw === undefined) return;
    const v = read(raw.trim());
    if (typeof v === 'object' && v !== null && 'invalid' in v) {
      warnings.push({
        code: Codes.ANNOTATION_INVALID,
        severity: 'warning',
        kind: 'Service',
        name: serviceKey,
        field: `metadata.annotations[${name}]`,
        message: `${quote(raw)} ${v.invalid}; using the default`,
      });
      return;
    }
    overrides[key] = v;
  };
  pick('kind', ANN.check, readers.kind);
  pick('path', ANN.path, readers.path);
  pick('port', ANN.port, readers.port);
  pick('intervalMs', ANN.interval, readers.duration(MIN_INTERVAL_MS));
  pick('timeoutMs', ANN.timeout, readers.duration(MIN_INTERVAL_MS));
  pick('unhealthyThreshold', ANN.unhealthy, readers.count);
  pick('healthyThreshold', ANN.healthy, readers.count);
  pick('slowStartMs', ANN.slowStart, readers.duration(1000, true));
  pick('maxEjectionPercent', ANN.maxEjection, readers.percent);
  return { overrides, warnings };
}

/** The config's defaults with a Service's overrides on top. */
export function effectiveSettings(cfg: HealthSettings, overrides: Partial<HealthSettings>): HealthSettings {
  return {
    kind: overrides.kind ?? cfg.kind,
    path: overrides.path ?? cfg.path,
    port: overrides.port ?? cfg.port,
    intervalMs: overrides.intervalMs ?? cfg.intervalMs,
    timeoutMs: overrides.timeoutMs ?? cfg.timeoutMs,
    unhealthyThreshold: overrides.unhealthyThreshold ?? cfg.unhealthyThreshold,
    healthyThreshold: overrides.healthyThreshold ?? cfg.healthyThreshold,
    slowStartMs: overrides.slowStartMs ?? cfg.slowStartMs,
    maxEjectionPercent: overrides.maxEjectionPercent ?? cfg.maxEjectionPercent,
  };
}
