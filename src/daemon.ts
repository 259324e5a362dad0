// The `run` daemon: a source feeds the model, the planner re-plans what changed, and the
// bounded-frequency runner has the reconciler bring the kernel in step. Kernel access and the
// source come in as dependencies, so the same daemon runs against fakes in tests and dry runs.
import { availableParallelism } from 'node:os';
import type { Config } from './config/config.ts';
import { Codes, formatProblem, type Problem } from './errors.ts';
import type { Ipvs } from './dataplane/ipvs/client.ts';
import type { ConntrackCleaner } from './dataplane/conntrack.ts';
import type { Links } from './dataplane/links.ts';
import type { LeftoverResult } from './dataplane/kube-proxy.ts';
import type { NetfilterApplier } from './dataplane/netfilter.ts';
import type { OwnershipStore } from './dataplane/ownership.ts';
import { Reconciler, type SyncResult } from './dataplane/reconciler.ts';
import { BoundedFrequencyRunner, systemClock, type Clock } from './dataplane/runner.ts';
import { applySysctls, conntrackSysctls, ipvsSysctls, type SysctlWriter } from './dataplane/sysctl.ts';
import { Model } from './model/model.ts';
import { ProxyHealth } from './observe/health.ts';
import type { Logger } from './observe/log.ts';
import { ipFamilyLabel, Metrics } from './observe/metrics.ts';
import { registerScrapeMetrics } from './observe/daemon-metrics.ts';
import type { HealthCheckTarget } from './observe/service-health.ts';
import type { Family } from './util/ip.ts';
import { planConfigFrom } from './plan/config.ts';
import { SocketProber, type Prober } from './health/probers.ts';
import { HealthStage, type CounterReader } from './health/stage.ts';
import { serviceHealthOf } from './health/targets.ts';
import { conflictProblem, inFwmarkRange, Planner } from './plan/plan.ts';
import type { ServicePlan } from './plan/types.ts';
import type { Source, SourceBatch } from './sources/source.ts';

export interface DaemonDeps {
  ipvs: Ipvs;
  links: Links;
  owned: OwnershipStore;
  sysctl: SysctlWriter;
  log: Logger;
  kernelRelease: string;
  /** CPUs for conntrack.maxPerCore (default: what this process may use). */
  cpus?: number;
  clock?: Clock;
  /** Created by the daemon when not given (run.ts gives one, to count kernel operations too). */
  metrics?: Metrics;
  /** The iptables stage; without it only IPVS is programmed (tests of the IPVS path). */
  netfilter?: NetfilterApplier;
  /** Deletes stale UDP conntrack entries after endpoints or UDP service addresses go away. */
  conntrack?: ConntrackCleaner;
  /** Told whenever the set of healthCheckNodePorts or their local endpoint counts change. */
  onHealthCheckTargets?: (targets: ReadonlyMap<number, HealthCheckTarget>) => void;
  /** Health probes (default: real TCP and HTTP from this node). */
  prober?: Prober;
  /** Where health reads IPVS counters (passive detection, idle Services); none: neither. */
  healthCounters?: CounterReader;
  /**
   * Where destinations are written alongside a running sync (endpoint changes during a full resync,
   * health moves): a socket of its own, so its dumps do not queue behind the sync's. Default: `ipvs`.
   */
  asideIpvs?: Ipvs;
  /** The jitter source of health probes (tests pin it). */
  random?: () => number;
  /**
   * kube-proxy's leftovers (src/dataplane/kube-proxy.ts): whether it still runs here, and its netfilter state's
   * removal. None: never looked for (tests of other paths, --dry-run).
   */
  kubeProxy?: { running(): string | null; removeNetfilter(): Promise<LeftoverResult> };
}

/** One kernel operation that failed, kept for the status view. */
export interface RecentError {
  at: number;
  op: string;
  code: string;
  message: string;
  service?: string;
}

const RECENT_ERRORS = 50;

export interface DaemonOptions {
  source: Source;
  config: Config;
  nodeName: string;
}

/** How many network programming latencies are kept (for the metrics). */
const LATENCY_SAMPLES = 1000;

/** How often a Service with draining destinations is looked at again. */
const DRAIN_CHECK_MS = 5000;
/**
 * Virtual servers looked up by each periodic check between full resyncs (every syncPeriod; Reconciler.probe), in turn:
 * a flush of IPVS is seen at the first, one virtual server removed by hand within (virtual servers / 8) checks, or
 * at the next full resync, whichever comes first.
 */
export const PROBE_VIRTUAL_SERVERS = 8;
/**
 * An incremental sync over this many Services or more is a long one: an endpoint change arriving while it runs is
 * written alongside, as during a full resync. The sync right after a full resync at 10 000 Services under churn checks
 * every Service changed meanwhile (562 in the lab, 15 s under emulation, a destination dump each); a sync of one or two
 * Services (a change's own) is over in milliseconds, and writing beside it would only do the work twice.
 */
export const LONG_SYNC_SERVICES = 32;

/** How often kube-ipvs looks whether kube-proxy has stopped, while it runs beside it (reading /proc only). */
const KUBE_PROXY_CHECK_MS = 1000;

/** NodePorts kube-proxy may have left in IPVS: the API server's default --service-node-port-range. */
const NODE_PORT_RANGE = [30000, 32767] as const;

export class Daemon {
  readonly model: Model;
  readonly planner: Planner;
  /** Backend health: probes and kernel counters in, weight factors out (src/health/). */
  readonly health: HealthStage;
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
  /** When the last sync ended, and the last one without errors (clock ms; 0: never). */
  lastSyncAt = 0;
  lastSuccessAt = 0;
  readonly metrics: Metrics;
  /** /healthz and /livez: whether changes reach the kernel (kube-proxy's semantics). */
  readonly proxyHealth: ProxyHealth;
  /** Newest last. */
  readonly recentErrors: RecentError[] = [];
  /** Services with Service / EndpointSlice changes not in the kernel yet (kube-proxy's pending gauges). */
  readonly #pendingServiceChanges = new Set<string>();
  readonly #pendingEndpointChanges = new Set<string>();
  /** Service -> its healthCheckNodePort target, for Services that have one. */
  readonly #hcTargets = new Map<string, { port: number; target: HealthCheckTarget }>();
  /** Network programming latencies (trigger time -> kernel updated), ms, newest last. */
  readonly programmingLatencyMs: number[] = [];

  constructor(opts: DaemonOptions, deps: DaemonDeps) {
    this.#opts = opts;
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    const cfg = opts.config;
    this.metrics = deps.metrics ?? new Metrics({ defaultMetrics: false });
    // kube-proxy: unhealthy when a queued change is not in the kernel after 2 x syncPeriod.
    this.proxyHealth = new ProxyHealth(2 * cfg.ipvs.syncPeriodSeconds * 1000, this.#clock);
    this.model = new Model({ nodeName: opts.nodeName, proxyName: cfg.serviceProxyName });
    this.health = new HealthStage({
      config: cfg.healthChecks,
      clock: this.#clock,
      prober: deps.prober ?? new SocketProber(),
      ...(deps.healthCounters ? { counters: deps.healthCounters } : {}),
      ...(deps.random ? { random: deps.random } : {}),
      log: deps.log,
      onChange: (services) => this.#healthChanged(services),
      observe: {
        probe: (ok, ms) => {
          this.metrics.healthProbes.inc({ result: ok ? 'ok' : 'fail' });
          this.metrics.healthProbeDuration.observe({ result: ok ? 'ok' : 'fail' }, ms / 1000);
        },
        transition: (to, reason) => this.metrics.healthTransitions.inc({ to, reason }),
      },
    });
    this.planner = new Planner(this.model, planConfigFrom(cfg), (svc, address, port) =>
      this.health.weight(svc, address, port),
    );
    this.#source = opts.source;
    this.reconciler = new Reconciler(deps.ipvs, deps.links, deps.owned, {
      ...(deps.asideIpvs ? { asideIpvs: deps.asideIpvs } : {}),
      dummyInterface: cfg.dummyInterface,
      excludeCIDRs: cfg.ipvs.excludeCIDRs,
      gracefulTerminationSeconds: cfg.gracefulTerminationSeconds,
      clock: this.#clock,
      // A recorded virtual server off our interface is ours only if it is a NodePort on one of
      // this node's addresses or carries one of our firewall marks.
      recordedMayBeOurs: (s) =>
        s.fwmark !== undefined
          ? inFwmarkRange(s.fwmark)
          : s.address !== undefined && this.planner.nodeAddresses.has(s.address),
      onError: (e) => {
        deps.log.warn('kernel operation failed', { ...e }, `op:${e.op}:${e.code}`);
        this.recentErrors.push({ at: this.#clock.now(), ...e });
        if (this.recentErrors.length > RECENT_ERRORS) this.recentErrors.shift();
      },
    });
    registerScrapeMetrics(this.metrics, {
      planner: this.planner,
      health: this.health,
      counters: this.#source.counters,
    });
    this.runner = new BoundedFrequencyRunner((r) => this.#sync(r.full, r.check), {
      minIntervalMs: cfg.ipvs.minSyncPeriodSeconds * 1000,
      maxIntervalMs: cfg.ipvs.syncPeriodSeconds * 1000,
      retryBaseMs: 1000,
      retryMaxMs: cfg.ipvs.syncPeriodSeconds * 1000,
      clock: this.#clock,
      onError: (e) =>
        deps.log.error('sync runner fault; retrying', { error: (e as Error).stack ?? String(e) }, 'sync-runner'),
    });
  }

  /**
   * Kernel settings, then the source's first complete view, then the first (full) sync. Nothing
   * is programmed before the source has synced: a partial view would delete working Services.
   */
  async start(): Promise<void> {
    this.#reportOwnership();
    await this.#kernelSettings();
    await this.#source.start((b) => this.#apply(b));
    if (this.#stopped) return;
    this.planner.planAll();
    this.#reportConflicts();
    this.#updateHealthCheckTargets(this.planner.plans().keys());
    this.#updateHealthTargets(this.model.serviceKeys());
    this.#started = true;
    this.health.start();
    this.runner.start();
  }

  /** Why the ownership record read at start was not usable (null: fine or absent). */
  get ownershipProblem(): string | null {
    return this.#deps.owned.problem ?? null;
  }

  get source(): Source {
    return this.#source;
  }

  stop(): void {
    this.#stopped = true;
    this.#source.stop();
    this.health.stop();
    this.runner.stop();
    if (this.#drainTimer !== null) this.#clock.clearTimeout(this.#drainTimer);
    if (this.#kubeProxyTimer !== null) this.#clock.clearTimeout(this.#kubeProxyTimer);
  }

  /** One full sync now, outside the runner (for --once). */
  async syncOnce(): Promise<SyncResult> {
    this.#reportOwnership();
    await this.#kernelSettings();
    await this.#source.start((b) => this.#apply(b));
    this.#source.stop();
    this.planner.planAll();
    this.#reportConflicts();
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
    const sysctls = [
      ...ipvsSysctls({ strictARP: cfg.ipvs.strictARP, kernelRelease: this.#deps.kernelRelease }),
      ...conntrackSysctls(cfg.conntrack, this.#deps.cpus ?? availableParallelism(), (p) => this.#deps.sysctl.read(p)),
    ];
    for (const f of applySysctls(sysctls, this.#deps.sysctl)) {
      log.warn('cannot set sysctl', f);
    }
    const t = cfg.ipvs;
    if (t.tcpTimeoutSeconds || t.tcpFinTimeoutSeconds || t.udpTimeoutSeconds) {
      try {
        await this.#deps.ipvs.setTimeouts({
          tcp: Math.round(t.tcpTimeoutSeconds),
          tcpFin: Math.round(t.tcpFinTimeoutSeconds),
          udp: Math.round(t.udpTimeoutSeconds),
        });
      } catch (e) {
        log.warn('cannot set IPVS timeouts', { error: (e as Error).message });
      }
    }
  }

  /** Feeds a batch of changes to the model and asks for a sync when a plan changed. */
  #apply(batch: SourceBatch): void {
    const { log } = this.#deps;
    const report = (p: Problem) => {
      if (p.severity === 'error') this.metrics.rejectedObjects.inc({ kind: p.kind ?? 'file' });
      log[p.severity === 'error' ? 'error' : 'warn'](formatProblem(p), { code: p.code }, `problem:${formatProblem(p)}`);
    };
    batch.problems.forEach(report);
    const rulesBefore = this.planner.netfilter;
    let nodeChanged = false;
    const endpointChanged = new Set<string>();
    for (const change of batch.changes) {
      const r = this.model.apply(change);
      const origin = batch.origins?.get(change);
      r.problems.forEach((p) => report({ ...p, ...origin }));
      nodeChanged ||= r.nodeChanged;
      const changed = this.planner.update(r);
      for (const k of changed) this.#dirty.add(k);
      if (this.#started) this.#updateHealthTargets(r.nodeChanged ? this.model.serviceKeys() : changed);
      if (change.kind === 'Service') {
        this.metrics.serviceChangesTotal.inc();
        for (const k of changed) this.#pendingServiceChanges.add(k);
      } else if (change.kind === 'EndpointSlice') {
        this.metrics.endpointChangesTotal.inc();
        for (const k of changed) {
          this.#pendingEndpointChanges.add(k);
          endpointChanged.add(k);
        }
      }
      this.#updateHealthCheckTargets(changed);
    }
    // A full resync can run for seconds (minutes at 10 000 Services under emulation), and so can the sync right
    // after it, which checks every Service changed meanwhile: an endpoint change does not wait for either, its
    // destinations are written alongside (one write for the batch).
    if (this.#syncingLong && this.#started && endpointChanged.size > 0) this.#writeAside(endpointChanged, true);
    this.#reportConflicts();
    if (nodeChanged) {
      this.proxyHealth.syncNode(this.model.node);
      this.#updateHealthCheckTargets(this.planner.plans().keys());
    }
    this.metrics.serviceChangesPending.set(this.#pendingServiceChanges.size);
    this.metrics.endpointChangesPending.set(this.#pendingEndpointChanges.size);
    if (this.#dirty.size > 0) {
      this.proxyHealth.queued();
      for (const f of this.#families(this.#dirty))
        this.metrics.lastQueuedTimestamp.set({ ip_family: ipFamilyLabel(f) }, this.#clock.now() / 1000);
    }
    for (const [k, at] of batch.triggerTimes ?? []) if (!this.#triggers.has(k)) this.#triggers.set(k, at);
    if (nodeChanged) log.info('node changed: every Service re-planned', { node: this.model.nodeName });
    // The constant rules' inputs changed (detectLocalMode NodeCIDR: the Node's podCIDRs): a sync, even when no
    // Service's plan did.
    if (this.#dirty.size > 0 || this.planner.netfilter !== rulesBefore) this.runner.request();
  }

  /** A record that could not be read is said once, loudly: what kube-ipvs owns is narrower until it is rewritten. */
  #reportOwnership(): void {
    const why = this.#deps.owned.problem;
    if (why)
      this.#deps.log.error(formatProblem({ code: Codes.OWNERSHIP_RECORD_INVALID, severity: 'error', message: why }), {
        code: Codes.OWNERSHIP_RECORD_INVALID,
      });
  }

  #started = false;

  /** Tells the health stage what each of these Services' plans now asks it to look after. */
  #updateHealthTargets(keys: Iterable<string>): void {
    const cfg = this.#opts.config.healthChecks;
    for (const k of keys) {
      const svc = this.model.service(k);
      const plan = this.planner.servicePlan(k);
      this.health.setService(k, svc && plan ? serviceHealthOf(svc, plan, this.model, cfg) : null);
    }
  }

  /**
   * Health moved these Services' weights: re-plan them and get them to the kernel now, not after
   * minSyncPeriod, and not after a sync that is running (a full one can take seconds): their
   * destinations are written at once, alongside it; the sync right after checks everything.
   */
  #healthChanged(services: string[]): void {
    const replanned = this.planner.replan(services);
    for (const k of replanned) this.#dirty.add(k);
    if (this.#syncing && this.#started) this.#writeAside(replanned, false);
    if (this.#dirty.size > 0) this.runner.requestNow();
  }

  #syncing = false;
  /** A full sync runs, or an incremental one over LONG_SYNC_SERVICES or more (endpoint changes go alongside it). */
  #syncingLong = false;
  /** Services whose destinations wait for the write alongside the running sync; `latency`: an endpoint change's. */
  #aside = new Map<string, boolean>();
  #asideRunning = false;

  /**
   * Writes these Services' destinations now, alongside the running sync (reconciler.syncDestinations):
   * one write at a time, what arrives meanwhile goes in the next. The sync right after still checks
   * everything (the Services stay dirty). `latency`: an endpoint change, whose programming latency is
   * recorded once its destinations are in (a Service with a virtual server not in the kernel yet waits
   * for the sync).
   */
  #writeAside(keys: Iterable<string>, latency: boolean): void {
    for (const k of keys) this.#aside.set(k, latency || (this.#aside.get(k) ?? false));
    if (this.#asideRunning || this.#aside.size === 0) return;
    this.#asideRunning = true;
    const over = () => {
      this.#asideRunning = false;
      if (this.#aside.size > 0 && this.#syncing) this.#writeAside([], false);
    };
    this.#asideLoop().then(over, (e: unknown) => {
      this.#deps.log.warn('writing destinations alongside the sync failed', { error: (e as Error).message });
      over();
    });
  }

  async #asideLoop(): Promise<void> {
    while (this.#aside.size > 0 && !this.#stopped) {
      const batch = new Map(this.#aside);
      this.#aside.clear();
      const plans = new Map<string, ServicePlan>();
      for (const k of batch.keys()) {
        const p = this.planner.servicePlan(k);
        if (p) plans.set(k, p);
      }
      const r = await this.reconciler.syncDestinations(plans);
      this.metrics.asideWrites.inc({ result: r.errors.length === 0 ? 'success' : 'error' });
      const failed = new Set(r.errors.map((e) => e.service ?? ''));
      if (failed.has('')) continue;
      const done = new Set([...plans.keys()].filter((k) => batch.get(k) && !failed.has(k) && !r.incomplete.has(k)));
      if (done.size > 0) this.#recordLatency(done, failed);
    }
  }

  /** One line per Service whose refused claims changed: what it lost and to whom, or that it has everything again. */
  #reportConflicts(): void {
    const { log } = this.#deps;
    for (const { service, conflicts } of this.planner.takeConflictChanges()) {
      if (conflicts.length === 0) {
        log.info('conflict over: the Service has all it asks for', { service });
        continue;
      }
      for (const c of conflicts) {
        const p = conflictProblem(c);
        log.error(formatProblem(p), { code: p.code }, `conflict:${service}:${c.what}`);
      }
    }
  }

  /** One sync (the runner's); while it runs, health writes destinations on its own (#healthChanged). */
  async #sync(full: boolean, check = false): Promise<boolean> {
    this.#syncing = true;
    try {
      return await this.#syncNow(full, check);
    } finally {
      this.#syncing = false;
      this.#syncingLong = false;
    }
  }

  /**
   * `check`: the periodic check between full resyncs (BoundedFrequencyRunner): the netfilter part as a full sync does
   * it (a constant number of tool runs: the rules compared, the sets' sizes compared), then a few lookups of IPVS
   * (Reconciler.probe). Something of ours gone or changed asks for a full resync at once.
   */
  async #syncNow(full: boolean, check = false): Promise<boolean> {
    const { log } = this.#deps;
    // kube-proxy gone before this full sync reads the kernel: the takeover after it may use what it read.
    const kubeProxyGone =
      full && (this.#takeover === 'pending' || this.#takeover === 'failed') && this.#deps.kubeProxy?.running() === null;
    const touched = new Set(this.#dirty);
    this.#dirty.clear();
    this.proxyHealth.syncStarted();
    let plans: Map<string, ServicePlan | null>;
    if (full) {
      plans = new Map(this.planner.plans());
    } else {
      for (const k of this.reconciler.drainingServices()) touched.add(k);
      plans = new Map([...touched].map((k) => [k, this.planner.servicePlan(k) ?? null]));
    }
    this.#syncingLong = full || plans.size >= LONG_SYNC_SERVICES;
    // ipsets first (the rules reference them), then the constant rules, then IPVS.
    const nfStarted = this.#clock.now();
    const nfErrors = await this.#syncNetfilter(full || check);
    const netfilterMs = this.#clock.now() - nfStarted;
    const r = await this.reconciler.sync({
      full,
      plans,
      addressInUse: (a) => this.planner.addressInUse(a),
      latest: (k) => this.planner.servicePlan(k),
    });
    for (const e of nfErrors) {
      const err = { op: e.op, code: 'NETFILTER', message: e.message };
      r.errors.push(err);
      this.recentErrors.push({ at: this.#clock.now(), ...err });
      if (this.recentErrors.length > RECENT_ERRORS) this.recentErrors.shift();
    }
    if (r.staleUdp.length > 0 && this.#deps.conntrack) await this.#deps.conntrack.clean(r.staleUdp);
    this.lastSync = r;
    this.#observeSync(r, full ? null : touched);
    const fields = {
      full: r.full,
      services: r.services,
      operations: r.operations,
      errors: r.errors.length,
      durationMs: Math.round(r.durationMs),
      netfilterMs: Math.round(netfilterMs),
      ...(r.kernelRead ? { kernelRead: r.kernelRead } : {}),
    };
    if (r.tableProblem !== undefined)
      log.warn(
        'could not read the IPVS table in one go; listing each virtual server instead',
        { error: r.tableProblem },
        'ipvs-table',
      );
    if (r.errors.length > 0) {
      // Keep the failed Services dirty for the runner's retry (with backoff); an error not tied to
      // one Service (the dummy interface...) keeps them all. A failed full sync is retried full.
      const unattributed = r.errors.some((e) => !e.service);
      for (const k of unattributed ? touched : r.errors.map((e) => e.service!)) this.#dirty.add(k);
      log.warn('sync finished with errors; retrying with backoff', fields);
    } else if (full) {
      log.info('sync done', fields);
    } else if (r.operations > 0) {
      // At ten endpoint changes a second a line per sync is most of what the daemon writes: one a minute, with how
      // many were left out (the metrics count every sync).
      log.info('sync done', fields, 'sync-done:partial');
    }
    this.#recordLatency(full ? null : touched, new Set(r.errors.map((e) => e.service ?? '')));
    this.#scheduleDrainCheck();
    if (check && !full) await this.#probe();
    if (r.errors.length === 0 && full) this.#fullSyncOk = true;
    const takeover = this.#takeover === 'pending' || (this.#takeover === 'failed' && full);
    if (r.errors.length === 0 && this.#fullSyncOk && takeover) await this.#takeOver(kubeProxyGone);
    return r.errors.length === 0;
  }

  /**
   * Whether kube-proxy's leftovers are still to be looked for (pending), kube-proxy still runs (waiting), their
   * netfilter part is being removed (removing), or done.
   */
  #takeover: 'pending' | 'waiting' | 'removing' | 'failed' | 'done' = 'pending';
  #fullSyncOk = false;
  #kubeProxyTimer: unknown = null;
  /** The netfilter part of the last takeover (outside the runner): settled unless the state is 'removing'. */
  #takeoverTask: Promise<void> = Promise.resolve();

  /**
   * Once kube-proxy no longer runs here and a full sync of ours is in (every rule and virtual server kube-ipvs
   * needs is in place, so nothing depends on kube-proxy's any more): its chains, ipsets, nftables tables, IPVS
   * virtual servers and dummy-interface addresses are removed. While it runs, nothing of it is touched (it would
   * put it back, and in ipvs mode it shares our virtual servers); /proc is looked at every second until it stops.
   * A failure is logged and counted, and retried at the next full sync. `fresh`: kube-proxy was gone before the full
   * sync just done read the kernel, so its reading of IPVS and the interface serves (no dumps of them again).
   *
   * The IPVS and interface part runs here, in the runner (it changes what the reconciler keeps). The netfilter part
   * (saving and restoring every iptables table of both backends and families, `ipset list`, `nft list tables`) does
   * not touch anything of ours: it runs beside the syncs that follow, so a change is not held behind it (under the
   * lab's emulation it held the first changes after a cold start for seconds; on a node leaving kube-proxy's
   * iptables mode at scale, its save and restore of kube-proxy's rules are the slow part). Its tools and our syncs'
   * then meet as any two writers do: separate kernel transactions (iptables-nft), or the xtables lock (legacy), which
   * both wait 5 s for (`-w 5`); a restore of ours that waits longer fails and is retried like any failed sync.
   */
  async #takeOver(fresh: boolean): Promise<void> {
    const kp = this.#deps.kubeProxy;
    const { log } = this.#deps;
    if (!kp || this.#opts.config.kubeProxyLeftovers === 'keep') {
      this.#takeover = 'done';
      return;
    }
    const why = kp.running();
    this.metrics.kubeProxyRunning.set(why ? 1 : 0);
    if (why) {
      if (this.#takeover !== 'waiting')
        log.info('kube-proxy still runs on this node: its leftovers stay until it stops', { why });
      this.#takeover = 'waiting';
      this.#watchKubeProxy();
      return;
    }
    const [lo, hi] = NODE_PORT_RANGE;
    const ipvs = await this.reconciler.takeOver((p) => p >= lo && p <= hi, fresh);
    this.#takeover = 'removing';
    this.#takeoverTask = this.#finishTakeover(kp, ipvs).catch((e: unknown) => {
      // Not expected (each step reports its own failures): the takeover is retried as after any failure.
      this.metrics.kubeProxyCleanupErrors.inc();
      log.warn("removing kube-proxy's leftovers failed; retrying at the next full sync", {
        errors: [e instanceof Error ? e.message : String(e)],
      });
      this.#takeover = 'failed';
    });
  }

  /** The takeover's netfilter part and its report (IPVS' part done): outside the runner. */
  async #finishTakeover(
    kp: NonNullable<DaemonDeps['kubeProxy']>,
    ipvs: Awaited<ReturnType<Reconciler['takeOver']>>,
  ): Promise<void> {
    const { log } = this.#deps;
    const nf = await kp.removeNetfilter();
    if (ipvs.staleUdp.length > 0 && this.#deps.conntrack) await this.#deps.conntrack.clean(ipvs.staleUdp);
    const count = (kind: string, n: number) => n > 0 && this.metrics.kubeProxyLeftovers.inc({ kind }, n);
    const ipsets = nf.removed.filter((x) => x.startsWith('ipset ')).length;
    const tables = nf.removed.filter((x) => x.startsWith('nftables ')).length;
    count('iptables_chain', nf.removed.length - ipsets - tables);
    count('ipset', ipsets);
    count('nftables_table', tables);
    count('virtual_server', ipvs.services.length);
    count('address', ipvs.addresses.length);
    const errors = [...nf.errors, ...ipvs.errors.map((e) => `${e.op}: ${e.message}`)];
    const removed = nf.removed.length + ipvs.services.length + ipvs.addresses.length;
    if (nf.unchecked.length > 0)
      log.warn("some of kube-proxy's leftovers could not be looked for", { why: nf.unchecked });
    if (removed > 0 || ipvs.adopted.length > 0)
      log.info("removed kube-proxy's leftovers", {
        netfilter: nf.removed,
        virtualServers: ipvs.services,
        addresses: ipvs.addresses,
        adoptedAddresses: ipvs.adopted,
      });
    if (errors.length > 0) {
      this.metrics.kubeProxyCleanupErrors.inc(errors.length);
      log.warn("removing kube-proxy's leftovers failed; retrying at the next full sync", { errors });
      this.#takeover = 'failed';
      return;
    }
    this.#takeover = 'done';
  }

  /** Resolves when no takeover of kube-proxy's leftovers is under way (its netfilter part runs outside the runner). */
  takeoverSettled(): Promise<void> {
    return this.#takeoverTask;
  }

  /** While kube-proxy runs: a look every second; once it has stopped, a sync that takes over. */
  #watchKubeProxy(): void {
    if (this.#stopped || this.#kubeProxyTimer !== null) return;
    this.#kubeProxyTimer = this.#clock.setTimeout(() => {
      this.#kubeProxyTimer = null;
      if (this.#stopped) return;
      if (this.#deps.kubeProxy?.running()) return this.#watchKubeProxy();
      this.#takeover = 'pending';
      this.runner.request();
    }, KUBE_PROXY_CHECK_MS);
  }

  #netfilterDirty = true;

  async #syncNetfilter(full: boolean): Promise<{ op: string; message: string }[]> {
    const nf = this.#deps.netfilter;
    if (!nf) return [];
    const changed = this.planner.takeSetChanges();
    const errors = await nf.syncSets(
      (e) => this.planner.setEntryWanted(e),
      this.planner.setEntries(),
      changed,
      full || this.#netfilterDirty,
      this.planner.setSizes(),
    );
    if (errors.length > 0) {
      this.#netfilterDirty = true;
      return errors;
    }
    const ruleErrors = await nf.syncRules(this.planner.netfilter, full);
    this.#netfilterDirty = ruleErrors.length > 0;
    return ruleErrors;
  }

  /** Metrics and health after a sync. */
  #observeSync(r: SyncResult, touched: Set<string> | null): void {
    const now = this.#clock.now();
    const families = this.#families(touched ?? this.planner.plans().keys());
    this.metrics.observeSync(r.full, r.durationMs / 1000, families);
    this.metrics.syncs.inc({ type: r.full ? 'full' : 'partial', result: r.errors.length === 0 ? 'success' : 'error' });
    this.lastSyncAt = now;
    // A change stops being pending once a sync covered its Service without an error that could be its.
    const failed = new Set(r.errors.map((e) => e.service ?? ''));
    if (!failed.has('')) {
      for (const set of [this.#pendingServiceChanges, this.#pendingEndpointChanges]) {
        for (const k of set) if ((touched === null || touched.has(k)) && !failed.has(k)) set.delete(k);
      }
    }
    this.metrics.serviceChangesPending.set(this.#pendingServiceChanges.size);
    this.metrics.endpointChangesPending.set(this.#pendingEndpointChanges.size);
    if (r.errors.length === 0) {
      this.lastSuccessAt = now;
      for (const f of families) this.metrics.lastSyncTimestamp.set({ ip_family: ipFamilyLabel(f) }, now / 1000);
    }
    // Healthy progress: every error (if any) belongs to one Service. Such a Service keeps being
    // retried and is visible in the logs, metrics and status, but it does not take the whole node
    // out of load balancers; a failure not tied to a Service (the dummy interface, the ownership
    // record) does, once changes wait longer than 2 x syncPeriod, as in kube-proxy.
    if (!r.errors.some((e) => !e.service)) this.proxyHealth.updated();
    else this.proxyHealth.syncFailed();
  }

  /** Address families of these Services' virtual servers (IPv4 when there are none). */
  #families(keys: Iterable<string>): Family[] {
    const out = new Set<Family>();
    for (const k of keys) {
      for (const vs of this.planner.servicePlan(k)?.virtualServers ?? []) {
        out.add(vs.family);
        if (out.size === 2) return [4, 6];
      }
    }
    return out.size === 0 ? [4] : [...out];
  }

  #updateHealthCheckTargets(keys: Iterable<string>): void {
    let changed = false;
    for (const k of keys) {
      const p = this.planner.servicePlan(k);
      const before = this.#hcTargets.get(k);
      if (!p || p.healthCheckNodePort === 0) {
        if (before) {
          this.#hcTargets.delete(k);
          changed = true;
        }
        continue;
      }
      if (before && before.port === p.healthCheckNodePort && before.target.localEndpoints === p.localEndpoints)
        continue;
      this.#hcTargets.set(k, { port: p.healthCheckNodePort, target: { service: k, localEndpoints: p.localEndpoints } });
      changed = true;
    }
    if (changed) this.#deps.onHealthCheckTargets?.(this.healthCheckTargets());
  }

  /** healthCheckNodePort -> the Service it answers for. */
  healthCheckTargets(): Map<number, HealthCheckTarget> {
    return new Map([...this.#hcTargets.values()].map((t) => [t.port, t.target]));
  }

  /** The IPVS part of a periodic check: a full resync asked for at once when something of ours is not as left. */
  async #probe(): Promise<void> {
    let found: Awaited<ReturnType<Reconciler['probe']>>;
    try {
      found = await this.reconciler.probe(PROBE_VIRTUAL_SERVERS);
    } catch (e) {
      this.#deps.log.warn(
        'periodic check: IPVS lookup failed; full resync now',
        { error: (e as Error).message },
        'drift:lookup',
      );
      this.runner.requestFull();
      return;
    }
    if (!found) return;
    this.metrics.driftFound.inc({ what: found.what });
    this.#deps.log.warn(`periodic check: ${found.detail}; full resync now`, {}, `drift:${found.what}`);
    this.runner.requestFull();
  }

  /** Pending Service and EndpointSlice changes (Services whose change is not in the kernel yet). */
  pendingChanges(): { services: number; endpoints: number; dirty: number } {
    return {
      services: this.#pendingServiceChanges.size,
      endpoints: this.#pendingEndpointChanges.size,
      dirty: this.#dirty.size,
    };
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
      this.metrics.programmingDuration.observe(
        { ip_family: ipFamilyLabel(this.#families([k])[0]!) },
        Math.max(0, now - at) / 1000,
      );
      if (this.programmingLatencyMs.length > LATENCY_SAMPLES) this.programmingLatencyMs.shift();
    }
  }
}
