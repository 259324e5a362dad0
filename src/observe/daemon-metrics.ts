// The daemon's series computed at scrape time: Local traffic policies without local endpoints
// (kube-proxy's), conflicts between Services, the health stage's state, the watch's counters.
import type { HealthStage } from '../health/stage.ts';
import type { Planner } from '../plan/plan.ts';
import type { SourceCounters } from '../sources/source.ts';
import { ipFamilyLabel, ScrapeMetric, type Metrics } from './metrics.ts';

export function registerScrapeMetrics(
  m: Metrics,
  d: { planner: Planner; health: HealthStage; counters: SourceCounters | undefined },
): void {
  m.add(
    new ScrapeMetric(
      'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      'Number of services with a Local traffic policy and no endpoints',
      'gauge',
      () => {
        const counts = new Map<string, number>();
        for (const p of d.planner.plans().values()) {
          for (const n of p.noLocalEndpoints) {
            const k = `${ipFamilyLabel(n.family)}/${n.policy}`;
            counts.set(k, (counts.get(k) ?? 0) + 1);
          }
        }
        return (['IPv4', 'IPv6'] as const).flatMap((f) =>
          (['internal', 'external'] as const).map((policy) => ({
            labels: { ip_family: f, traffic_policy: policy },
            value: counts.get(`${f}/${policy}`) ?? 0,
          })),
        );
      },
    ),
  );
  m.add(
    new ScrapeMetric(
      'kubeipvs_service_conflicts',
      'Virtual servers, service addresses and node ports a Service asks for and does not get, because another Service holds them',
      'gauge',
      () => {
        const counts = new Map<string, number>();
        for (const c of d.planner.conflicts()) counts.set(c.service, (counts.get(c.service) ?? 0) + 1);
        return [...counts].map(([k, value]) => ({
          labels: { namespace: k.slice(0, k.indexOf('/')), service: k.slice(k.indexOf('/') + 1) },
          value,
        }));
      },
    ),
  );
  // Health: bounded like the per-backend series (one series per Service with ejections, at most 1000).
  const gauge = (name: string, help: string, f: () => { labels: Record<string, string>; value: number }[]) =>
    m.add(new ScrapeMetric(name, help, 'gauge', f));
  gauge(
    'kubeipvs_health_endpoints',
    'Endpoints looked after by health checks, by state (unknown: not probed yet)',
    () => Object.entries(d.health.summary().byState).map(([state, value]) => ({ labels: { state }, value })),
  );
  gauge(
    'kubeipvs_health_ejected_endpoints',
    'Endpoints at weight 0 because of health, per Service (at most 1000 Services)',
    () =>
      [...d.health.summary().ejected]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .slice(0, 1000)
        .map(([k, value]) => ({
          labels: { namespace: k.slice(0, k.indexOf('/')), service: k.slice(k.indexOf('/') + 1) },
          value,
        })),
  );
  gauge(
    'kubeipvs_health_ejections_refused',
    'Unhealthy endpoints kept in, by why: the Service ejection cap, or the node failing open',
    () => {
      const r = d.health.summary().refused;
      return [
        { labels: { why: 'cap' }, value: r.cap },
        { labels: { why: 'fail_open' }, value: r['fail-open'] },
      ];
    },
  );
  gauge(
    'kubeipvs_health_fail_open',
    'Whether this node fails open (1): nearly every endpoint it probes fails, the node is the likely fault, nothing is ejected',
    () => [{ labels: {}, value: d.health.failingOpen ? 1 : 0 }],
  );
  gauge(
    'kubeipvs_health_probe_budget_stretch',
    'How much probe intervals are stretched to stay within healthChecks.probesPerSecond (1: not at all)',
    () => [{ labels: {}, value: d.health.budget.stretch }],
  );
  gauge('kubeipvs_health_probe_demand', 'Probes per second the health targets ask for, before stretching', () => [
    { labels: {}, value: d.health.budget.demand },
  ]);
  const c = d.counters;
  if (!c) return;
  const counter = (name: string, help: string, v: () => number) =>
    m.add(new ScrapeMetric(name, help, 'counter', () => [{ labels: {}, value: v() }]));
  counter('kubeipvs_watch_events_total', 'Object events received from the API server', () => c.events);
  counter('kubeipvs_watch_reconnects_total', 'Watches re-established after an error or a stall', () => c.reconnects);
  counter('kubeipvs_watch_relists_total', 'Full relists (410 Gone, or a watch that could not resume)', () => c.relists);
  counter(
    'kubeipvs_watch_errors_total',
    'Failed list or watch requests, and watch events that could not be used',
    () => c.errors,
  );
  counter(
    'kubeipvs_watch_stalls_total',
    'Watches restarted because they were silent past the stall bound',
    () => c.stalls,
  );
  m.add(
    new ScrapeMetric(
      'kubeipvs_watch_last_event_age_seconds',
      'Seconds since the last object event from the API server (-1: none yet)',
      'gauge',
      () => [{ labels: {}, value: c.lastEventAt === 0 ? -1 : (Date.now() - c.lastEventAt) / 1000 }],
    ),
  );
}
