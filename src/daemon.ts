// The `run` daemon: a source feeds the model, the planner re-plans what changed, and the
// bounded-frequency runner has the reconciler bring the kernel in step. Kernel access and the
// source come in as dependencies, so the same daemon runs against fakes in tests and dry runs.
import type { Config } from './config/config.ts';
import { formatProblem, type Problem } from './errors.ts';
import type { Ipvs } from './dataplane/ipvs/client.ts';
import type { Links } from './dataplane/links.ts';
import type { OwnershipStore } from './dataplane/ownership.ts';
import { Reconciler, type SyncResult } from './dataplane/reconciler.ts';
import { BoundedFrequencyRunner, systemClock, type Clock } from './dataplane/runner.ts';
import { applySysctls, ipvsSysctls, type SysctlWriter } from './dataplane/sysctl.ts';
import { Model } from './model/model.ts';
import type { Logger } from './observe/log.ts';
import { planConfigFrom } from './plan/from-manifests.ts';
import { Planner } from './plan/plan.ts';
import type { ServicePlan } from './plan/types.ts';
import type { Source, SourceBatch } from './sources/source.ts';

export interface DaemonDeps {
  ipvs: Ipvs;
  links: Links;
  owned: OwnershipStore;
  sysctl: SysctlWriter;
  log: Logger;
  kernelRelease: string;
  clock?: Clock;
}

export interface DaemonOptions {
  source: Source;
  config: Config;
  nodeName: string;
}

/** How many network programming latencies are kept (for the metrics). */
const LATENCY_SAMPLES = 1000;

/** How often a Service with draining destinations is looked at again. */
const DRAIN_CHECK_MS = 5000;

export class Daemon {
  readonly model: Model;
  readonly planner: Planner;
  readonly reconciler: Reconciler;
  readonly runner: BoundedFrequencyRunner;
  readonly #deps: DaemonDeps;
  readonly #opts: DaemonOptions;
  readonly #source: Source;
  readonly #clock: Clock;
  #dirty = new Set<string>();
  /** Service -> when its endpoints changed, until that change is in the kernel. */
  #triggers = new Map<string, number>();
  #drainTimer: unknown = null;
  #stopped = false;
  lastSync: SyncResult | null = null;
  /** Network programming latencies (trigger time -> kernel updated), ms, newest last. */
  readonly programmingLatencyMs: number[] = [];

  constructor(opts: DaemonOptions, deps: DaemonDeps) {
    this.#opts = opts;
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    const cfg = opts.config;
    this.model = new Model({ nodeName: opts.nodeName, proxyName: cfg.serviceProxyName });
    this.planner = new Planner(this.model, planConfigFrom(cfg));
    this.#source = opts.source;
    this.reconciler = new Reconciler(deps.ipvs, deps.links, deps.owned, {
      dummyInterface: cfg.dummyInterface,
      excludeCIDRs: cfg.ipvs.excludeCIDRs,
      gracefulTerminationSeconds: cfg.gracefulTerminationSeconds,
      clock: this.#clock,
      onError: (e) => deps.log.warn('kernel operation failed', { ...e }, `op:${e.op}:${e.code}`),
    });
    this.runner = new BoundedFrequencyRunner((r) => this.#sync(r.full), {
      minIntervalMs: cfg.ipvs.minSyncPeriodSeconds * 1000,
      maxIntervalMs: cfg.ipvs.syncPeriodSeconds * 1000,
      retryBaseMs: 1000,
      retryMaxMs: cfg.ipvs.syncPeriodSeconds * 1000,
      clock: this.#clock,
    });
  }

  /**
   * Kernel settings, then the source's first complete view, then the first (full) sync. Nothing
   * is programmed before the source has synced: a partial view would delete working Services.
   */
  async start(): Promise<void> {
    await this.#kernelSettings();
    await this.#source.start((b) => this.#apply(b));
    if (this.#stopped) return;
    this.planner.planAll();
    this.runner.start();
  }

  stop(): void {
    this.#stopped = true;
    this.#source.stop();
    this.runner.stop();
    if (this.#drainTimer !== null) this.#clock.clearTimeout(this.#drainTimer);
  }

  /** One full sync now, outside the runner (for --once). */
  async syncOnce(): Promise<SyncResult> {
    await this.#kernelSettings();
    await this.#source.start((b) => this.#apply(b));
    this.#source.stop();
    this.planner.planAll();
    await this.#sync(true);
    return this.lastSync!;
  }

  /** Asks the source for a fresh look (the folder source re-reads) and waits for it. */
  reload(): Promise<void> {
    return this.#source.refresh();
  }

  async #kernelSettings(): Promise<void> {
    const { config: cfg } = this.#opts;
    const { log } = this.#deps;
    for (const f of applySysctls(ipvsSysctls({ strictARP: cfg.ipvs.strictARP, kernelRelease: this.#deps.kernelRelease }), this.#deps.sysctl)) {
      log.warn('cannot set sysctl', f);
    }
    const t = cfg.ipvs;
    if (t.tcpTimeoutSeconds || t.tcpFinTimeoutSeconds || t.udpTimeoutSeconds) {
      try {
        await this.#deps.ipvs.setTimeouts({ tcp: Math.round(t.tcpTimeoutSeconds), tcpFin: Math.round(t.tcpFinTimeoutSeconds), udp: Math.round(t.udpTimeoutSeconds) });
      } catch (e) {
        log.warn('cannot set IPVS timeouts', { error: (e as Error).message });
      }
    }
  }

  /** Feeds a batch of changes to the model and asks for a sync when a plan changed. */
  #apply(batch: SourceBatch): void {
    const { log } = this.#deps;
    const report = (p: Problem) => log[p.severity === 'error' ? 'error' : 'warn'](formatProblem(p), { code: p.code }, `problem:${formatProblem(p)}`);
    batch.problems.forEach(report);
    let nodeChanged = false;
    for (const change of batch.changes) {
      const r = this.model.apply(change);
      const origin = batch.origins?.get(change);
      r.problems.forEach((p) => report({ ...p, ...origin }));
      nodeChanged ||= r.nodeChanged;
      for (const k of this.planner.update(r)) this.#dirty.add(k);
    }
    for (const [k, at] of batch.triggerTimes ?? []) if (!this.#triggers.has(k)) this.#triggers.set(k, at);
    if (nodeChanged) log.info('node changed: every Service re-planned', { node: this.model.nodeName });
    if (this.#dirty.size > 0) this.runner.request();
  }

  async #sync(full: boolean): Promise<boolean> {
    const { log } = this.#deps;
    const touched = new Set(this.#dirty);
    this.#dirty.clear();
    let plans: Map<string, ServicePlan | null>;
    if (full) {
      plans = new Map(this.planner.plans());
    } else {
      for (const k of this.reconciler.drainingServices()) touched.add(k);
      plans = new Map([...touched].map((k) => [k, this.planner.servicePlan(k) ?? null]));
    }
    const r = await this.reconciler.sync({ full, plans, addressInUse: (a) => this.planner.addressInUse(a) });
    this.lastSync = r;
    const fields = { full: r.full, services: r.services, operations: r.operations, errors: r.errors.length, durationMs: Math.round(r.durationMs) };
    if (r.errors.length > 0) {
      // Keep the failed Services dirty for the runner's retry (with backoff); an error not tied to
      // one Service (the dummy interface...) keeps them all. A failed full sync is retried full.
      const unattributed = r.errors.some((e) => !e.service);
      for (const k of unattributed ? touched : r.errors.map((e) => e.service!)) this.#dirty.add(k);
      log.warn('sync finished with errors; retrying with backoff', fields);
    } else if (r.operations > 0 || full) {
      log.info('sync done', fields);
    }
    this.#recordLatency(full ? null : touched, new Set(r.errors.map((e) => e.service ?? '')));
    this.#scheduleDrainCheck();
    return r.errors.length === 0;
  }

  #scheduleDrainCheck(): void {
    if (this.#stopped || this.#drainTimer !== null || this.reconciler.drainingServices().length === 0) return;
    this.#drainTimer = this.#clock.setTimeout(() => {
      this.#drainTimer = null;
      this.runner.request();
    }, DRAIN_CHECK_MS);
  }

  /** Endpoint changes that are now in the kernel: trigger time -> now, for the metrics. */
  #recordLatency(synced: Set<string> | null, failed: Set<string>): void {
    const now = this.#clock.now();
    for (const [k, at] of this.#triggers) {
      if (failed.has(k) || (synced && !synced.has(k))) continue;
      this.#triggers.delete(k);
      this.programmingLatencyMs.push(Math.max(0, now - at));
      if (this.programmingLatencyMs.length > LATENCY_SAMPLES) this.programmingLatencyMs.shift();
    }
  }
}
