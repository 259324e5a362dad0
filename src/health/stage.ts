// The health stage: probes the endpoints this node sends traffic to, reads the kernel's
// per-destination counters for passive detection and for which Services carry traffic, and hands
// the planner a weight factor per endpoint (through weight()). It tells the daemon which Services'
// weights changed (onChange), at once: a transition must not wait for minSyncPeriod.
// Decisions are pure (state.ts, schedule.ts, passive.ts); the prober and the counter reader are
// I/O with in-memory twins, and time comes from an injected clock.
import type { Clock } from '../dataplane/runner.ts';
import type { DestinationCounters, ServiceCounters, ServiceKey } from '../dataplane/ipvs/types.ts';
import type { Logger } from '../observe/log.ts';
import type { EndpointWeight } from '../plan/types.ts';
import { PassiveDetector } from './passive.ts';
import type { ProbeResult, ProbeTarget, Prober } from './probers.ts';
import { ProbeSchedule } from './schedule.ts';
import type { HealthConfig } from './settings.ts';
import {
  decideService,
  evictAfterMs,
  failOpen,
  newTarget,
  recordPassive,
  recordResult,
  type EndpointDecision,
  type Refusal,
  type TargetState,
  type Transition,
} from './state.ts';
import type { ServiceHealth } from './targets.ts';

/** The counters the stage reads (the metrics socket's client has them). */
export interface CounterReader {
  serviceCounters(): Promise<ServiceCounters[]>;
  destinationCounters(key: ServiceKey): Promise<DestinationCounters[]>;
}

/** What the stage counts, for the metrics (observe/ reads it at scrape time). */
export interface HealthCounters {
  probes: { ok: number; fail: number };
  transitions: Map<string, number>;
  passiveEjections: number;
}

export interface HealthStageOptions {
  config: HealthConfig;
  clock: Clock;
  prober: Prober;
  /** Without one, every Service counts as carrying traffic and passive detection is off. */
  counters?: CounterReader;
  log: Logger;
  /** Weights of these Services changed: re-plan and sync them now. */
  onChange: (services: string[]) => void;
  random?: () => number;
  /** Probes in flight at once (each waits at most its timeout). */
  maxInFlight?: number;
  /** Told of each probe and transition (the daemon counts them in its metrics). */
  observe?: { probe(ok: boolean, ms: number): void; transition(to: 'healthy' | 'unhealthy', reason: string): void };
}

/** How often the kernel's counters are read (it folds them every 2 s). */
export const COUNTER_INTERVAL_MS = 2000;
/** A Service with no new connection for this long is idle: its endpoints are probed every idleInterval. */
export const IDLE_AFTER_MS = 10_000;
/** While a ramp runs, weights are recomputed this often (at least). */
const RAMP_TICK_MS = 500;

interface Target {
  key: string;
  probe: ProbeTarget;
  state: TargetState;
  /** Services that use it. */
  services: Set<string>;
  inFlight: boolean;
  /** Passive-only: probed only while ejected, to confirm a recovery. */
  passiveOnly: boolean;
}

interface ServiceEntry {
  h: ServiceHealth;
  /** endpoint -> its target key (null: not probed). */
  targets: Map<string, string | null>;
  /** Endpoints not at full weight (absent: factor 1, not evicted, not refused). */
  decisions: Map<string, Decision>;
  /** endpoint -> when it was ejected (factor 0), for eviction. */
  ejectedAt: Map<string, number>;
  lastConns: number | null;
  lastTrafficAt: number;
  lastOutPkts: number | null;
  /** Reply packets moved in the last counter window. */
  flowing: boolean;
  warnedProbesBlocked: boolean;
}

const targetKey = (p: ProbeTarget) => `${p.kind}|${p.address}|${p.port}|${p.kind === 'http' ? p.path : ''}`;
/** A small, fixed vocabulary for metrics labels. */
export function reasonClass(reason: string): string {
  if (reason.startsWith('passive')) return 'passive';
  if (reason.startsWith('HTTP ')) return 'http_status';
  if (reason.startsWith('connection refused')) return 'refused';
  if (reason.startsWith('connection reset')) return 'reset';
  if (reason.startsWith('timeout')) return 'timeout';
  if (reason.includes('unreachable')) return 'unreachable';
  return 'other';
}

export class HealthStage {
  readonly #o: Required<Omit<HealthStageOptions, 'counters' | 'random' | 'observe'>> & {
    counters?: CounterReader;
    random: () => number;
    observe?: HealthStageOptions['observe'];
  };
  readonly #schedule: ProbeSchedule;
  readonly #targets = new Map<string, Target>();
  readonly #services = new Map<string, ServiceEntry>();
  readonly #passive = new PassiveDetector();
  /**
   * The budget, enforced: a token bucket of probesPerSecond (at most a tenth of a second's worth
   * saved up), so no burst (a thousand targets added at once, intervals stretched later) ever
   * probes faster than the node allows. Stretching the intervals keeps the backlog from growing.
   */
  #tokens = 1;
  #tokensTime = 0;
  #tokensAt(now: number): number {
    const pps = this.#o.config.probesPerSecond;
    return Math.min(Math.max(1, pps / 10), this.#tokens + ((now - this.#tokensTime) * pps) / 1000);
  }

  /** Services with a ramp running or an ejection not yet evicted: time alone changes their weights. */
  readonly #timed = new Set<string>();
  readonly counters: HealthCounters = { probes: { ok: 0, fail: 0 }, transitions: new Map(), passiveEjections: 0 };
  #timer: unknown = null;
  #timerAt = Infinity;
  #inFlight = 0;
  #running = false;
  #failOpen = false;
  #lastCounters = -Infinity;
  #reading = false;

  constructor(opts: HealthStageOptions) {
    this.#o = { maxInFlight: 512, random: Math.random, ...opts };
    this.#schedule = new ProbeSchedule({ probesPerSecond: opts.config.probesPerSecond, random: this.#o.random });
  }

  get failingOpen(): boolean {
    return this.#failOpen;
  }

  /** Probes per second asked for, and by how much intervals are stretched to fit the budget. */
  get budget(): { demand: number; stretch: number; targets: number } {
    return { demand: this.#schedule.demand, stretch: this.#schedule.stretch, targets: this.#schedule.size };
  }

  start(): void {
    this.#running = true;
    this.#arm();
  }

  stop(): void {
    this.#running = false;
    if (this.#timer !== null) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
  }

  /** What the planner asks: the weight factor of one endpoint of one Service. */
  weight(service: string, address: string, port: number): EndpointWeight {
    const s = this.#services.get(service);
    if (!s) return FULL;
    const endpoint = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
    const d = s.decisions.get(endpoint);
    return d ? { factor: d.factor, evict: d.evicted } : FULL;
  }

  /** A Service's health targets, as its plan now stands (null: it needs none). */
  setService(service: string, h: ServiceHealth | null): void {
    const now = this.#o.clock.now();
    const before = this.#services.get(service);
    if (!h) {
      if (!before) return;
      this.#services.delete(service);
      this.#timed.delete(service);
      for (const k of before.targets.values()) if (k) this.#release(k, service);
      return;
    }
    const entry: ServiceEntry = before ?? {
      h,
      targets: new Map(),
      decisions: new Map(),
      ejectedAt: new Map(),
      lastConns: null,
      lastTrafficAt: now,
      lastOutPkts: null,
      flowing: false,
      warnedProbesBlocked: false,
    };
    entry.h = h;
    const want = new Map<string, string | null>();
    for (const e of h.endpoints) {
      const k = e.probe ? targetKey(e.probe) : null;
      want.set(e.endpoint, k);
      if (!k || !e.probe) continue;
      let t = this.#targets.get(k);
      if (!t) {
        t = { key: k, probe: e.probe, state: newTarget(now), services: new Set(), inFlight: false, passiveOnly: true };
        this.#targets.set(k, t);
      }
      t.services.add(service);
    }
    for (const [ep, k] of entry.targets) if (k && want.get(ep) !== k) this.#release(k, service);
    entry.targets = want;
    for (const ep of [...entry.decisions.keys()]) if (!want.has(ep)) entry.decisions.delete(ep);
    for (const ep of [...entry.ejectedAt.keys()]) if (!want.has(ep)) entry.ejectedAt.delete(ep);
    this.#services.set(service, entry);
    for (const k of want.values()) if (k) this.#reschedule(this.#targets.get(k)!);
    this.#decide(new Set([service]), now, false);
    this.#arm();
  }

  #release(key: string, service: string): void {
    const t = this.#targets.get(key);
    if (!t) return;
    t.services.delete(service);
    if (t.services.size === 0) {
      this.#targets.delete(key);
      this.#schedule.remove(key);
      this.#passive.reset(`${t.probe.address}:${t.probe.port}`);
    } else this.#reschedule(t);
  }

  /**
   * A target's interval: the shortest its active Services ask for; idle ones wait idleInterval; passive-only ones are
   * probed only while ejected.
   */
  #reschedule(t: Target): void {
    const now = this.#o.clock.now();
    let interval = Infinity;
    let active = false;
    for (const s of t.services) {
      const e = this.#services.get(s);
      if (!e) continue;
      if (e.h.settings.kind === 'none') continue;
      active = true;
      const idle = this.#o.counters !== undefined && now - e.lastTrafficAt >= IDLE_AFTER_MS;
      interval = Math.min(
        interval,
        idle ? Math.max(this.#o.config.idleIntervalMs, e.h.settings.intervalMs) : e.h.settings.intervalMs,
      );
    }
    t.passiveOnly = !active;
    if (!active) {
      // Passive evidence ejected it: a TCP probe confirms the recovery.
      if (t.state.status === 'unhealthy') interval = this.#o.config.intervalMs;
      else {
        this.#schedule.remove(t.key);
        return;
      }
    }
    this.#schedule.set(t.key, interval, now);
  }

  #settingsOf(t: Target) {
    let timeout = Infinity;
    let unhealthy = Infinity;
    let healthy = Infinity;
    for (const s of t.services) {
      const e = this.#services.get(s);
      if (!e) continue;
      timeout = Math.min(timeout, e.h.settings.timeoutMs);
      unhealthy = Math.min(unhealthy, e.h.settings.unhealthyThreshold);
      healthy = Math.min(healthy, e.h.settings.healthyThreshold);
    }
    const c = this.#o.config;
    return {
      timeoutMs: Number.isFinite(timeout) ? timeout : c.timeoutMs,
      unhealthyThreshold: Number.isFinite(unhealthy) ? unhealthy : c.unhealthyThreshold,
      healthyThreshold: Number.isFinite(healthy) ? healthy : c.healthyThreshold,
    };
  }

  /** Arms the one timer for the next thing due: a probe, a counter read, a ramp step or an eviction. */
  #arm(): void {
    if (!this.#running) return;
    const now = this.#o.clock.now();
    let at = this.#schedule.nextAt();
    // A probe due with every probe slot taken waits for one to finish (its answer arms this again), not for a loop
    // of ticks that can start nothing.
    if (at <= now && this.#inFlight >= this.#o.maxInFlight) at = Infinity;
    // A probe due with the budget spent waits for the next token, not for a busy loop.
    if (at <= now && this.#tokensAt(now) < 1)
      at = now + Math.ceil((1 - this.#tokensAt(now)) * (1000 / this.#o.config.probesPerSecond));
    // (Not while a read is running: it re-arms when it ends; arming now would spin.)
    if (this.#o.counters && this.#services.size > 0 && !this.#reading)
      at = Math.min(at, Math.max(now, this.#lastCounters + COUNTER_INTERVAL_MS));
    at = Math.min(at, this.#nextDecisionAt(now));
    if (!Number.isFinite(at)) return;
    at = Math.max(at, now);
    if (at >= this.#timerAt) return;
    if (this.#timer !== null) this.#o.clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timer = null;
      this.#timerAt = Infinity;
      this.#tick();
    }, at - now);
  }

  /** When a ramp next moves a weight or an ejected endpoint is due for eviction. */
  #nextDecisionAt(now: number): number {
    let at = Infinity;
    for (const key of this.#timed) {
      const s = this.#services.get(key);
      if (!s) continue;
      for (const [ep, d] of s.decisions) {
        if (d.factor > 0 && d.factor < 1)
          at = Math.min(at, now + Math.min(RAMP_TICK_MS, Math.max(100, s.h.settings.slowStartMs / 20)));
        const ej = s.ejectedAt.get(ep);
        if (d.factor === 0 && ej !== undefined) {
          const due = ej + evictAfterMs(s.h.settings.intervalMs);
          if (due > now) at = Math.min(at, due);
        }
      }
    }
    return at;
  }

  #tick(): void {
    if (!this.#running) return;
    const now = this.#o.clock.now();
    const room = Math.min(this.#o.maxInFlight - this.#inFlight, Math.floor(this.#tokensAt(now)));
    const due = this.#schedule.takeDue(now, Math.max(0, room));
    this.#tokens = this.#tokensAt(now) - due.length;
    this.#tokensTime = now;
    for (const key of due) {
      const t = this.#targets.get(key);
      if (!t || t.inFlight) continue;
      this.#probe(t);
    }
    if (
      this.#o.counters &&
      this.#services.size > 0 &&
      now - this.#lastCounters >= COUNTER_INTERVAL_MS &&
      !this.#reading
    ) {
      this.#lastCounters = now;
      // (It catches its own errors; this is for a fault in its bookkeeping, e.g. re-arming.)
      this.#readCounters().catch((e: unknown) =>
        this.#o.log.warn('health counters round failed', { error: (e as Error).message }, 'health:counters'),
      );
    }
    // Ramps and evictions move with time alone.
    if (this.#timed.size > 0) this.#decide(new Set(this.#timed), now, false);
    this.#arm();
  }

  #probe(t: Target): void {
    t.inFlight = true;
    this.#inFlight++;
    const s = this.#settingsOf(t);
    const done = (r: ProbeResult) => {
      t.inFlight = false;
      this.#inFlight--;
      if (!this.#targets.has(t.key)) return this.#arm();
      const now = this.#o.clock.now();
      if (r.ok) this.counters.probes.ok++;
      else this.counters.probes.fail++;
      this.#o.observe?.probe(r.ok, r.ms);
      const tr = recordResult(t.state, r.ok, r.reason, now, s);
      if (tr) this.#transition(t, tr, now);
      if (tr && t.passiveOnly) this.#reschedule(t);
      // A result that goes against the state is confirmed at once rather than an interval later
      // (Envoy's unhealthy edge): a black hole costs timeout x threshold, not interval x threshold.
      const confirming = r.ok ? t.state.status === 'unhealthy' : t.state.status !== 'unhealthy';
      if (!tr && confirming && this.#schedule.has(t.key)) this.#schedule.dueNow(t.key, now);
      this.#arm();
    };
    this.#o.prober
      .probe(t.probe, s.timeoutMs)
      .then(done, (e: unknown) => done({ ok: false, reason: `error ${(e as Error).message}`, ms: 0 }));
  }

  #transition(t: Target, tr: Transition, now: number): void {
    const to = tr === 'down' ? 'unhealthy' : 'healthy';
    const label = `${to}|${tr === 'down' ? reasonClass(t.state.reason) : 'recovered'}`;
    this.counters.transitions.set(label, (this.counters.transitions.get(label) ?? 0) + 1);
    this.#o.observe?.transition(to, tr === 'down' ? reasonClass(t.state.reason) : 'recovered');
    const endpoint = `${t.probe.address}:${t.probe.port}`;
    const services = [...t.services].sort();
    if (tr === 'down')
      this.#o.log.warn(
        'endpoint unhealthy',
        { endpoint, services, reason: t.state.reason, check: t.passiveOnly ? 'passive' : t.probe.kind },
        `health:${t.key}:down`,
      );
    else this.#o.log.info('endpoint healthy again', { endpoint, services }, `health:${t.key}:up`);
    if (tr === 'up') this.#passive.reset(endpoint);
    this.#decide(new Set(t.services), now, true);
  }

  /**
   * Recomputes weight decisions for these Services (for all when the node's fail-open flips, which
   * only a transition can do: `transition`) and tells the daemon which Services changed.
   */
  #decide(services: Set<string>, now: number, transition: boolean): void {
    if (transition) {
      let probed = 0;
      let unhealthy = 0;
      for (const t of this.#targets.values()) {
        if (t.passiveOnly || t.state.status === 'unknown') continue;
        probed++;
        if (t.state.status === 'unhealthy') unhealthy++;
      }
      const fo = failOpen(unhealthy, probed);
      if (fo !== this.#failOpen) {
        this.#failOpen = fo;
        if (fo)
          this.#o.log.error(
            'nearly every endpoint probed from this node fails: the node’s own network is the likely fault; ejecting nothing (fail open)',
            { unhealthy, probed },
          );
        else this.#o.log.info('probes recover: health ejections resume', { unhealthy, probed });
        for (const k of this.#services.keys()) services.add(k);
      }
    }
    const changed: string[] = [];
    for (const key of services) {
      const s = this.#services.get(key);
      if (!s) {
        this.#timed.delete(key);
        continue;
      }
      const eps = [...s.targets].map(([endpoint, k]) => ({
        endpoint,
        state: (k ? this.#targets.get(k)?.state : undefined) ?? newTarget(now),
      }));
      const decisions = decideService(
        eps,
        s.h.settings.maxEjectionPercent,
        s.h.settings.slowStartMs,
        this.#failOpen,
        now,
      );
      let moved = false;
      let timed = false;
      for (const d of decisions) {
        const before = s.decisions.get(d.endpoint);
        if (d.factor === 0 && !s.ejectedAt.has(d.endpoint)) s.ejectedAt.set(d.endpoint, now);
        if (d.factor !== 0) s.ejectedAt.delete(d.endpoint);
        const evicted = d.factor === 0 && now - s.ejectedAt.get(d.endpoint)! >= evictAfterMs(s.h.settings.intervalMs);
        if ((d.factor > 0 && d.factor < 1) || (d.factor === 0 && !evicted)) timed = true;
        const wasFull = !before || (before.factor === 1 && !before.evicted && before.refused === null);
        const full = d.factor === 1 && !evicted && d.refused === null;
        if (
          before
            ? quantize(before.factor) !== quantize(d.factor) ||
              before.evicted !== evicted ||
              before.refused !== d.refused
            : !(wasFull && full)
        )
          moved = true;
        // Only what differs from full weight is kept: 100 000 healthy endpoints cost no object each.
        if (d.factor === 1 && !evicted && d.refused === null) s.decisions.delete(d.endpoint);
        else s.decisions.set(d.endpoint, { ...d, evicted });
      }
      if (timed) this.#timed.add(key);
      else this.#timed.delete(key);
      if (moved) changed.push(key);
      this.#warnBlocked(s);
    }
    if (changed.length > 0) this.#o.onChange(changed.sort());
  }

  /**
   * One line when every probe of a Service fails while its backends answer its traffic: the probes are likely blocked.
   */
  #warnBlocked(s: ServiceEntry): void {
    const probed = [...s.targets.values()]
      .filter((k): k is string => k !== null)
      .map((k) => this.#targets.get(k))
      .filter((t) => t && !t.passiveOnly);
    const allDown = probed.length > 0 && probed.every((t) => t!.state.status === 'unhealthy');
    if (allDown && s.flowing && !s.warnedProbesBlocked) {
      s.warnedProbesBlocked = true;
      this.#o.log.warn(
        'every health probe of this Service fails while its backends answer its traffic: are the node’s probes blocked (a NetworkPolicy, a host firewall)?',
        { service: s.h.service, endpoints: probed.length },
        `health:blocked:${s.h.service}`,
      );
    }
    if (!allDown) s.warnedProbesBlocked = false;
  }

  /** Reads the counters: which Services carry traffic (idle intervals), and passive evidence. */
  async #readCounters(): Promise<void> {
    const reader = this.#o.counters;
    if (!reader) return;
    this.#reading = true;
    try {
      const now = this.#o.clock.now();
      const byId = new Map<string, ServiceCounters>();
      for (const c of await reader.serviceCounters()) byId.set(c.id, c);
      const passiveSamples = new Map<string, { conns: number; outPkts: number; activeConns: number }>();
      const passiveServices = new Map<string, Set<string>>();
      for (const s of this.#services.values()) {
        let conns = 0;
        let outPkts = 0;
        for (const id of s.h.virtualServers) {
          const c = byId.get(id);
          if (c) {
            conns += c.conns;
            outPkts += c.outPkts;
          }
        }
        const wasIdle = now - s.lastTrafficAt >= IDLE_AFTER_MS;
        if (s.lastConns !== null && conns > s.lastConns) s.lastTrafficAt = now;
        s.flowing = s.lastOutPkts !== null && outPkts > s.lastOutPkts;
        const moved = s.lastConns !== null && conns !== s.lastConns;
        s.lastConns = conns;
        s.lastOutPkts = outPkts;
        if (wasIdle !== now - s.lastTrafficAt >= IDLE_AFTER_MS)
          for (const k of s.targets.values()) if (k) this.#reschedule(this.#targets.get(k)!);
        if (!s.h.passive || !moved) continue;
        // Per-destination counters only for Services whose connection count moved.
        for (const id of s.h.tcpVirtualServers) {
          const c = byId.get(id);
          if (!c) continue;
          for (const d of await reader.destinationCounters(c)) {
            const ep = d.address.includes(':') ? `[${d.address}]:${d.port}` : `${d.address}:${d.port}`;
            const acc = passiveSamples.get(ep) ?? { conns: 0, outPkts: 0, activeConns: 0 };
            acc.conns += d.conns;
            acc.outPkts += d.outPkts;
            acc.activeConns += d.activeConns;
            passiveSamples.set(ep, acc);
            const set = passiveServices.get(ep) ?? new Set();
            set.add(s.h.service);
            passiveServices.set(ep, set);
          }
        }
      }
      for (const [ep, sample] of passiveSamples) {
        const evidence = this.#passive.observe(ep, sample);
        if (!evidence) continue;
        for (const svc of passiveServices.get(ep) ?? []) {
          const s = this.#services.get(svc);
          const k = s?.targets.get(ep);
          const t = k ? this.#targets.get(k) : undefined;
          if (!t) continue;
          const tr = recordPassive(t.state, evidence, now);
          if (tr) {
            this.counters.passiveEjections++;
            this.#transition(t, tr, now);
            this.#reschedule(t);
          }
        }
      }
    } catch (e) {
      this.#o.log.warn('cannot read IPVS counters for health', { error: (e as Error).message }, 'health:counters');
    } finally {
      this.#reading = false;
      this.#arm();
    }
  }

  /** Every looked-after endpoint with its state, for /status and `kube-ipvs status`. */
  view(): HealthView[] {
    const out: HealthView[] = [];
    for (const [service, s] of [...this.#services].sort(([a], [b]) => (a < b ? -1 : 1))) {
      for (const [endpoint, k] of s.targets) {
        const t = k ? this.#targets.get(k) : undefined;
        const d = s.decisions.get(endpoint);
        out.push({
          service,
          endpoint,
          check: t ? (t.passiveOnly ? 'passive' : t.probe.kind) : 'unprobed',
          state: t?.state.status ?? 'unknown',
          reason: t?.state.reason ?? (s.h.unresolvedPort ? `probe port ${s.h.unresolvedPort} not found` : ''),
          since: t ? new Date(t.state.since).toISOString() : null,
          factor: d?.factor ?? 1,
          evicted: d?.evicted ?? false,
          refused: d?.refused ?? null,
          slowStart: d && d.factor > 0 && d.factor < 1 ? Math.round(d.factor * 100) : null,
          lastResult: t?.state.last ?? '',
        });
      }
    }
    return out;
  }

  /** Ejected endpoints per Service, refusals by kind: what the metrics read. */
  summary(): { ejected: Map<string, number>; refused: Record<Refusal, number>; byState: Record<string, number> } {
    const ejected = new Map<string, number>();
    const refused: Record<Refusal, number> = { cap: 0, 'fail-open': 0 };
    for (const [k, s] of this.#services) {
      let n = 0;
      for (const d of s.decisions.values()) {
        if (d.factor === 0) n++;
        if (d.refused) refused[d.refused]++;
      }
      if (n > 0) ejected.set(k, n);
    }
    const byState: Record<string, number> = { unknown: 0, healthy: 0, unhealthy: 0 };
    for (const t of this.#targets.values()) byState[t.state.status] = (byState[t.state.status] ?? 0) + 1;
    return { ejected, refused, byState };
  }
}

const FULL: EndpointWeight = { factor: 1, evict: false };
type Decision = EndpointDecision & { evicted: boolean };
/** Weights as the planner writes them (tenths): a ramp step that does not move a weight is no change. */
const quantize = (f: number) => (f === 0 ? -1 : f === 1 ? 100 : Math.round(f * 10)); // full is not the same as "almost"

export interface HealthView {
  service: string;
  endpoint: string;
  check: string;
  state: string;
  reason: string;
  since: string | null;
  factor: number;
  evicted: boolean;
  refused: Refusal | null;
  /** Percent of full weight while a slow start runs; null otherwise. */
  slowStart: number | null;
  lastResult: string;
}
