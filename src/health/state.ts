// The health decisions, pure over an injected time: each probe target's state machine
// (thresholds, reasons), slow-start ramps, the per-Service ejection cap and the node-wide fail-open.
// No I/O and no timers: the stage (stage.ts) feeds results in and reads weight factors out.

export type Status = 'unknown' | 'healthy' | 'unhealthy';

/** Why a target is unhealthy, and by which evidence. */
export type Source = 'probe' | 'passive';

export interface TargetState {
  status: Status;
  /** Consecutive results since the last change of kind. */
  successes: number;
  failures: number;
  /** When the status last changed (ms). */
  since: number;
  /** The failure that made it unhealthy, with its count ("connection refused x2"); '' when healthy. */
  reason: string;
  source: Source | null;
  /** When it last became healthy after being unhealthy (the slow-start ramp's start); null: never ejected. */
  recoveredAt: number | null;
  /** The last result's reason, for status. */
  last: string;
}

export interface Thresholds {
  unhealthyThreshold: number;
  healthyThreshold: number;
}

export function newTarget(now: number): TargetState {
  return {
    status: 'unknown',
    successes: 0,
    failures: 0,
    since: now,
    reason: '',
    source: null,
    recoveredAt: null,
    last: '',
  };
}

/** What one result did: 'down' or 'up' when the status changed, else null. */
export type Transition = 'down' | 'up' | null;

/**
 * One probe result. Unhealthy after `unhealthyThreshold` consecutive failures; healthy again
 * after `healthyThreshold` consecutive successes. A target never probed is 'unknown', which
 * counts as healthy: Kubernetes readiness is the ground truth until a probe says otherwise.
 */
export function recordResult(s: TargetState, ok: boolean, reason: string, now: number, t: Thresholds): Transition {
  s.last = ok ? 'ok' : reason;
  if (ok) {
    s.successes++;
    s.failures = 0;
    if (s.status === 'unknown') {
      s.status = 'healthy';
      s.since = now;
      return null;
    }
    if (s.status === 'unhealthy' && s.successes >= t.healthyThreshold) {
      s.status = 'healthy';
      s.since = now;
      s.reason = '';
      s.source = null;
      s.recoveredAt = now;
      return 'up';
    }
    return null;
  }
  s.failures++;
  s.successes = 0;
  if (s.status === 'unhealthy') {
    if (s.source === 'probe') s.reason = `${reason} x${s.failures}`;
    return null;
  }
  if (s.failures >= t.unhealthyThreshold) {
    s.status = 'unhealthy';
    s.since = now;
    s.reason = `${reason} x${s.failures}`;
    s.source = 'probe';
    return 'down';
  }
  return null;
}

/** Passive evidence (connections that never establish): unhealthy at once; a probe confirms recovery. */
export function recordPassive(s: TargetState, reason: string, now: number): Transition {
  if (s.status === 'unhealthy') return null;
  s.status = 'unhealthy';
  s.since = now;
  s.reason = reason;
  s.source = 'passive';
  s.successes = 0;
  s.failures = 0;
  return 'down';
}

/** Slow start: from 10% to full over `slowStartMs` after a recovery; 1 when off or done. */
export function rampFactor(s: TargetState, slowStartMs: number, now: number): number {
  if (s.status === 'unhealthy') return 0;
  if (slowStartMs <= 0 || s.recoveredAt === null) return 1;
  const done = (now - s.recoveredAt) / slowStartMs;
  if (done >= 1) return 1;
  return 0.1 + 0.9 * Math.max(0, done);
}

/** The node's own network is the likely fault when nearly everything it probes fails at once. */
export const FAIL_OPEN_FRACTION = 0.9;
/** ... and there is enough to judge: fewer probed targets never fail open. */
export const FAIL_OPEN_MIN_TARGETS = 3;

export function failOpen(unhealthy: number, probed: number): boolean {
  return probed >= FAIL_OPEN_MIN_TARGETS && unhealthy >= FAIL_OPEN_FRACTION * probed;
}

export interface EndpointHealth {
  /** The endpoint ("address:port") as the Service sees it. */
  endpoint: string;
  state: TargetState;
}

export type Refusal = 'cap' | 'fail-open';

export interface EndpointDecision {
  endpoint: string;
  /** 0: ejected; (0, 1): ramping; 1: full weight. */
  factor: number;
  /** Unhealthy but kept in: by the Service's ejection cap or the node's fail-open. */
  refused: Refusal | null;
}

/**
 * Weight factors for one Service's endpoints. At most `maxEjectionPercent` of them are ejected
 * (at least one when the percentage is above 0, as Envoy), the ones unhealthy longest first;
 * none when the node is failing open. Deterministic: the same states give the same answer.
 */
export function decideService(
  endpoints: readonly EndpointHealth[],
  maxEjectionPercent: number,
  slowStartMs: number,
  nodeFailOpen: boolean,
  now: number,
): EndpointDecision[] {
  const unhealthy = endpoints
    .filter((e) => e.state.status === 'unhealthy')
    .sort((a, b) => a.state.since - b.state.since || (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
  const cap = maxEjectionPercent <= 0 ? 0 : Math.max(1, Math.floor((endpoints.length * maxEjectionPercent) / 100));
  const ejected = new Set<string>();
  const refused = new Map<string, Refusal>();
  for (const e of unhealthy) {
    if (nodeFailOpen) refused.set(e.endpoint, 'fail-open');
    else if (ejected.size < cap) ejected.add(e.endpoint);
    else refused.set(e.endpoint, 'cap');
  }
  return endpoints.map((e) => ({
    endpoint: e.endpoint,
    factor: ejected.has(e.endpoint) ? 0 : refused.has(e.endpoint) ? 1 : rampFactor(e.state, slowStartMs, now),
    refused: refused.get(e.endpoint) ?? null,
  }));
}

/** How long an ejected endpoint keeps its destination (weight 0) before it is deleted, ending its connections. */
export function evictAfterMs(intervalMs: number): number {
  return Math.max(1000, 3 * intervalMs);
}
