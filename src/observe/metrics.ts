// Prometheus metrics. kube-proxy's names, labels and buckets where the meaning is the same (so
// existing dashboards and alerts keep working), and kube-ipvs' own under the `kubeipvs_` prefix.
// Values that already live elsewhere (source counters, the kernel's IPVS counters, the plan) are
// read at scrape time by collectors instead of being copied on every change.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import type { Family } from '../util/ip.ts';
import { version } from '../version.ts';

export const exponentialBuckets = (start: number, factor: number, count: number): number[] =>
  Array.from({ length: count }, (_, i) => start * factor ** i);
export const linearBuckets = (start: number, width: number, count: number): number[] =>
  Array.from({ length: count }, (_, i) => start + width * i);

/** kube-proxy's sync duration buckets: 1 ms doubling to about 16 s. */
export const SYNC_BUCKETS = exponentialBuckets(0.001, 2, 15);
/** kube-proxy's network programming buckets: 0.25 s, 0.5 s, 1-59 s, 60-115 s by 5, 2-5 min by 30 s. */
export const PROGRAMMING_BUCKETS = [
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
];

export const ipFamilyLabel = (f: Family): 'IPv4' | 'IPv6' => (f === 6 ? 'IPv6' : 'IPv4');

/** What a collector hands to the registry: prom-client's metric object shape. */
export interface CollectedValue {
  labels: Record<string, string | number>;
  value: number;
}

/**
 * A metric whose values are produced at scrape time by `collect` (no label hashing per value:
 * thousands of IPVS series stay cheap).
 */
export class ScrapeMetric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  readonly aggregator = 'sum' as const;
  readonly #collect: () => Promise<CollectedValue[]> | CollectedValue[];

  constructor(
    name: string,
    help: string,
    type: 'counter' | 'gauge',
    collect: () => Promise<CollectedValue[]> | CollectedValue[],
  ) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.#collect = collect;
  }

  async get() {
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: await this.#collect(),
    };
  }

  reset(): void {}
}

/**
 * How often the event-loop delay monitor behind `nodejs_eventloop_lag_*` samples (ms). prom-client's default, 10 ms,
 * is a timer waking the main thread 100 times a second. An idle daemon here (1 000 Services, no writes and no resync
 * in the minute measured, V8 interpreter only) used 0.14 CPU s a minute with it, 0.04 at 100 ms, 0.01 at 1 s; under
 * the lab's emulation every wakeup costs an order of magnitude more. At 100 ms a stall of 100 ms or more is always
 * seen, a shorter one in proportion to its length, and a scrape every 30 s still summarises 300 samples.
 */
export const EVENT_LOOP_MONITORING_PRECISION_MS = 100;

export class Metrics {
  readonly registry = new Registry();

  // kube-proxy's (pkg/proxy/metrics), same names, labels and buckets.
  readonly syncDuration: Histogram<'ip_family'>;
  readonly syncFullDuration: Histogram<'ip_family'>;
  readonly syncPartialDuration: Histogram<'ip_family'>;
  readonly programmingDuration: Histogram<'ip_family'>;
  readonly lastSyncTimestamp: Gauge<'ip_family'>;
  readonly lastQueuedTimestamp: Gauge<'ip_family'>;
  readonly endpointChangesPending: Gauge;
  readonly endpointChangesTotal: Counter;
  readonly serviceChangesPending: Gauge;
  readonly serviceChangesTotal: Counter;
  readonly healthzTotal: Counter<'code'>;
  readonly livezTotal: Counter<'code'>;
  readonly conntrackDuration: Histogram<'ip_family'>;
  readonly conntrackDeleted: Counter<'ip_family'>;
  readonly iptablesRestoreFailures: Counter<'ip_family'>;

  // kube-ipvs' own.
  readonly kernelOperations: Counter<'operation'>;
  readonly kernelFailures: Counter<'operation' | 'errno'>;
  readonly rejectedObjects: Counter<'kind'>;
  readonly syncs: Counter<'type' | 'result'>;
  readonly healthCheckNodePortErrors: Counter;
  readonly healthProbes: Counter<'result'>;
  readonly healthProbeDuration: Histogram<'result'>;
  readonly healthTransitions: Counter<'to' | 'reason'>;
  readonly ipsetFailures: Counter;
  readonly ipsetNetlinkFailures: Counter;
  readonly toolDuration: Histogram<'tool'>;
  readonly asideWrites: Counter<'result'>;
  readonly driftFound: Counter<'what'>;
  readonly kubeProxyLeftovers: Counter<'kind'>;
  readonly kubeProxyCleanupErrors: Counter;
  readonly kubeProxyRunning: Gauge;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const r = this.registry;
    const registers = [r];
    if (opts.defaultMetrics !== false)
      collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: EVENT_LOOP_MONITORING_PRECISION_MS });
    // Prometheus' build_info convention: constant 1, the facts in labels (joined onto other series).
    new Gauge({
      name: 'kubeipvs_build_info',
      help: 'kube-ipvs version and the Node.js it runs on; always 1',
      labelNames: ['version', 'nodejs_version'] as const,
      registers,
    }).set({ version: version(), nodejs_version: process.version }, 1);
    const histogram = (name: string, help: string, buckets: number[]) =>
      new Histogram({ name, help, buckets, labelNames: ['ip_family'] as const, registers });
    this.syncDuration = histogram(
      'kubeproxy_sync_proxy_rules_duration_seconds',
      'SyncProxyRules latency in seconds',
      SYNC_BUCKETS,
    );
    this.syncFullDuration = histogram(
      'kubeproxy_sync_full_proxy_rules_duration_seconds',
      'SyncProxyRules latency in seconds for full resyncs',
      SYNC_BUCKETS,
    );
    this.syncPartialDuration = histogram(
      'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      'SyncProxyRules latency in seconds for partial resyncs',
      SYNC_BUCKETS,
    );
    this.programmingDuration = histogram(
      'kubeproxy_network_programming_duration_seconds',
      'In Cluster Network Programming Latency in seconds',
      PROGRAMMING_BUCKETS,
    );
    this.lastSyncTimestamp = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time proxy rules were successfully synced',
      labelNames: ['ip_family'] as const,
      registers,
    });
    this.lastQueuedTimestamp = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      help: 'The last time a sync of proxy rules was queued',
      labelNames: ['ip_family'] as const,
      registers,
    });
    this.endpointChangesPending = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      help: 'Pending proxy rules Endpoint changes',
      registers,
    });
    this.endpointChangesTotal = new Counter({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      help: 'Cumulative proxy rules Endpoint changes',
      registers,
    });
    this.serviceChangesPending = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_service_changes_pending',
      help: 'Pending proxy rules Service changes',
      registers,
    });
    this.serviceChangesTotal = new Counter({
      name: 'kubeproxy_sync_proxy_rules_service_changes_total',
      help: 'Cumulative proxy rules Service changes',
      registers,
    });
    this.healthzTotal = new Counter({
      name: 'kubeproxy_proxy_healthz_total',
      help: 'Cumulative proxy healthz HTTP status',
      labelNames: ['code'] as const,
      registers,
    });
    this.livezTotal = new Counter({
      name: 'kubeproxy_proxy_livez_total',
      help: 'Cumulative proxy livez HTTP status',
      labelNames: ['code'] as const,
      registers,
    });

    this.conntrackDuration = histogram(
      'kubeproxy_conntrack_reconciler_sync_duration_seconds',
      'ReconcileConntrackFlowsLatency latency in seconds',
      SYNC_BUCKETS,
    );
    this.conntrackDeleted = new Counter({
      name: 'kubeproxy_conntrack_reconciler_deleted_entries_total',
      help: 'Cumulative conntrack flows deleted by conntrack reconciler',
      labelNames: ['ip_family'] as const,
      registers,
    });
    this.iptablesRestoreFailures = new Counter({
      name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
      help: 'Cumulative proxy iptables restore failures',
      labelNames: ['ip_family'] as const,
      registers,
    });
    this.ipsetFailures = new Counter({
      name: 'kubeipvs_ipset_restore_failures_total',
      help: 'Failed ipset restore runs',
      registers,
    });
    this.asideWrites = new Counter({
      name: 'kubeipvs_sync_aside_writes_total',
      help: 'Destination writes alongside a running sync (endpoint changes during a full resync, health moves), by result',
      labelNames: ['result'] as const,
      registers,
    });
    this.driftFound = new Counter({
      name: 'kubeipvs_periodic_check_drift_total',
      help: 'Periodic checks between full resyncs that found something of ours gone or changed behind our back (a full resync follows at once), by what: interface, virtual_server',
      labelNames: ['what'] as const,
      registers,
    });
    this.kubeProxyLeftovers = new Counter({
      name: 'kubeipvs_kube_proxy_leftovers_removed_total',
      help: "kube-proxy's leftovers removed from this node after it stopped, by kind (iptables_chain, ipset, nftables_table, virtual_server, address)",
      labelNames: ['kind'] as const,
      registers,
    });
    this.kubeProxyCleanupErrors = new Counter({
      name: 'kubeipvs_kube_proxy_cleanup_errors_total',
      help: "Failures removing kube-proxy's leftovers (retried at the next full sync)",
      registers,
    });
    this.kubeProxyRunning = new Gauge({
      name: 'kubeipvs_kube_proxy_running',
      help: '1 while kube-proxy looks alive on this node (its leftovers are kept until it stops), else 0',
      registers,
    });
    this.toolDuration = new Histogram({
      name: 'kubeipvs_tool_duration_seconds',
      help: 'Runs of the system tools (iptables-restore, iptables-save, ipset, conntrack...), by tool and subcommand, start to exit',
      labelNames: ['tool'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.ipsetNetlinkFailures = new Counter({
      name: 'kubeipvs_ipset_netlink_failures_total',
      help: 'Incremental ipset changes the kernel refused over netlink (they were retried with ipset restore)',
      registers,
    });
    this.kernelOperations = new Counter({
      name: 'kubeipvs_kernel_operations_total',
      help: 'Kernel operations (IPVS over generic netlink, links and addresses over rtnetlink) by operation',
      labelNames: ['operation'] as const,
      registers,
    });
    this.kernelFailures = new Counter({
      name: 'kubeipvs_kernel_operation_failures_total',
      help: 'Failed kernel operations by operation and errno',
      labelNames: ['operation', 'errno'] as const,
      registers,
    });
    this.rejectedObjects = new Counter({
      name: 'kubeipvs_rejected_objects_total',
      help: 'Kubernetes objects (or manifest files) rejected as invalid, by kind',
      labelNames: ['kind'] as const,
      registers,
    });
    this.syncs = new Counter({
      name: 'kubeipvs_syncs_total',
      help: 'Syncs of the kernel state by type (full, partial) and result (success, error)',
      labelNames: ['type', 'result'] as const,
      registers,
    });
    this.healthProbes = new Counter({
      name: 'kubeipvs_health_probes_total',
      help: 'Health probes of endpoints by result (ok, fail)',
      labelNames: ['result'] as const,
      registers,
    });
    this.healthProbeDuration = new Histogram({
      name: 'kubeipvs_health_probe_duration_seconds',
      help: 'How long health probes took, by result',
      labelNames: ['result'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5],
      registers,
    });
    this.healthTransitions = new Counter({
      name: 'kubeipvs_health_transitions_total',
      help: 'Endpoint health transitions, by new state and reason (refused, reset, timeout, unreachable, http_status, passive, other; recovered)',
      labelNames: ['to', 'reason'] as const,
      registers,
    });
    this.healthCheckNodePortErrors = new Counter({
      name: 'kubeipvs_health_check_node_port_errors_total',
      help: 'healthCheckNodePort servers that could not listen',
      registers,
    });
  }

  readonly #textSources: (() => Promise<Buffer[]>)[] = [];

  /**
   * Adds series rendered directly in the text format at scrape time, as bytes (for families with
   * tens of thousands of series, where building label objects for the registry, or one 10 MB
   * string, costs too much), in parts.
   */
  addText(source: () => Promise<Buffer[]>): void {
    this.#textSources.push(source);
  }

  /** Adds a metric computed at scrape time. */
  add(metric: ScrapeMetric): void {
    this.registry.registerMetric(metric as unknown as Metric);
  }

  /** One observation of a sync for each address family it covered. */
  observeSync(full: boolean, seconds: number, families: Iterable<Family>): void {
    for (const f of families) {
      const labels = { ip_family: ipFamilyLabel(f) };
      this.syncDuration.observe(labels, seconds);
      (full ? this.syncFullDuration : this.syncPartialDuration).observe(labels, seconds);
    }
  }

  /**
   * The whole exposition, as served: the registry's metrics, then the directly rendered ones, in
   * parts (not copied into one 10 MB buffer: a scrape writes them one after the other).
   */
  async exposition(): Promise<Buffer[]> {
    const [registry, ...rendered] = await Promise.all([this.registry.metrics(), ...this.#textSources.map((f) => f())]);
    const parts: Buffer[] = [Buffer.from(registry)];
    for (const r of rendered) parts.push(NEWLINE, ...r);
    return parts;
  }

  /** The same as one string. */
  async text(): Promise<string> {
    return Buffer.concat(await this.exposition()).toString();
  }
}

const NEWLINE = Buffer.from('\n');

/** A label value escaped for the text format. */
export function escapeLabel(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;
}

/** `k1="v1",k2="v2"` for the text format. */
export function labelString(labels: Record<string, string | number>): string {
  let out = '';
  for (const k in labels) out += `${out ? ',' : ''}${k}="${escapeLabel(String(labels[k]))}"`;
  return out;
}
