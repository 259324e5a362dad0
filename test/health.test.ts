// The health stage: decisions table-driven over an injected clock (thresholds, the ejection cap,
// fail-open, slow-start ramps, the probe budget, passive evidence), then the stage and the daemon
// end to end against in-memory probers and kernels.
import t from 'tap';
import { defaultConfig, parseConfig } from '../src/config/config.ts';
import { Daemon } from '../src/daemon.ts';
import { toDesired } from '../src/dataplane/desired.ts';
import { SCHED_FLAG_FALLBACK } from '../src/dataplane/ipvs/constants.ts';
import { FakeIpvs } from '../src/dataplane/ipvs/fake.ts';
import { serviceCountersOf } from '../src/dataplane/ipvs/types.ts';
import { FakeLinks } from '../src/dataplane/links.ts';
import { MemoryOwnership } from '../src/dataplane/ownership.ts';
import { PassiveDetector } from '../src/health/passive.ts';
import { FakeProber } from '../src/health/probers.ts';
import { HealthStage } from '../src/health/stage.ts';
import { JITTER, ProbeSchedule } from '../src/health/schedule.ts';
import { defaultHealthConfig, effectiveSettings, parseHealthAnnotations } from '../src/health/settings.ts';
import {
  decideService,
  evictAfterMs,
  failOpen,
  newTarget,
  rampFactor,
  recordPassive,
  recordResult,
  type TargetState,
} from '../src/health/state.ts';
import { Logger } from '../src/observe/log.ts';
import { daemonStatus } from '../src/observe/server.ts';
import { ManualClock } from './support/clock.ts';
import { holdNextServiceDump } from './support/hold.ts';
import { ep, node, service, slice } from './support/objects.ts';
import { planObjects } from './support/plan.ts';
import { PushSource } from './support/source.ts';

const th = { unhealthyThreshold: 2, healthyThreshold: 2 };

t.test('a target: unhealthy after N failures, healthy after M successes, with the reason', async (t) => {
  type Step = [ok: boolean, reason: string, status: TargetState['status'], transition: 'down' | 'up' | null];
  const table: [string, Step[]][] = [
    [
      'one failure is not enough',
      [
        [false, 'connection refused', 'unknown', null],
        [true, 'ok', 'healthy', null],
      ],
    ],
    [
      'two in a row are',
      [
        [false, 'connection refused', 'unknown', null],
        [false, 'connection refused', 'unhealthy', 'down'],
      ],
    ],
    [
      'a success in between resets the count',
      [
        [true, 'ok', 'healthy', null],
        [false, 'timeout', 'healthy', null],
        [true, 'ok', 'healthy', null],
        [false, 'timeout', 'healthy', null],
        [false, 'timeout', 'unhealthy', 'down'],
      ],
    ],
    [
      'back after two successes',
      [
        [false, 'timeout', 'unknown', null],
        [false, 'timeout', 'unhealthy', 'down'],
        [true, 'ok', 'unhealthy', null],
        [false, 'timeout', 'unhealthy', null],
        [true, 'ok', 'unhealthy', null],
        [true, 'ok', 'healthy', 'up'],
      ],
    ],
  ];
  for (const [name, steps] of table) {
    const s = newTarget(0);
    steps.forEach(([ok, reason, status, tr], i) => {
      t.equal(recordResult(s, ok, reason, i * 100, th), tr, `${name}: step ${i} transition`);
      t.equal(s.status, status, `${name}: step ${i} status`);
    });
  }
  const s = newTarget(0);
  recordResult(s, false, 'connection refused', 0, th);
  recordResult(s, false, 'connection refused', 100, th);
  t.equal(s.reason, 'connection refused x2', 'the reason says what and how often');
  recordResult(s, false, 'connection refused', 200, th);
  t.equal(s.reason, 'connection refused x3');
  t.equal(s.since, 100, 'since the transition');
  const p = newTarget(0);
  t.equal(recordPassive(p, 'passive: 6 new connections, no packet back, none established', 50), 'down');
  t.equal(p.source, 'passive');
  t.equal(recordPassive(p, 'x', 60), null, 'already down');
});

t.test('slow start ramps from 10% to full; off or never ejected is full', async (t) => {
  const s = newTarget(0);
  recordResult(s, false, 'timeout', 0, th);
  recordResult(s, false, 'timeout', 1, th);
  t.equal(rampFactor(s, 10_000, 2), 0, 'unhealthy: 0');
  recordResult(s, true, 'ok', 1000, th);
  recordResult(s, true, 'ok', 2000, th);
  t.equal(s.recoveredAt, 2000);
  t.same(
    [0, 2500, 5000, 7500, 10_000, 20_000].map((dt) => +rampFactor(s, 10_000, 2000 + dt).toFixed(3)),
    [0.1, 0.325, 0.55, 0.775, 1, 1],
  );
  t.equal(rampFactor(s, 0, 2500), 1, 'slow start off');
  t.equal(rampFactor(newTarget(0), 10_000, 5), 1, 'a new endpoint is not ramped');
});

t.test('the ejection cap, its order, and the node-wide fail-open', async (t) => {
  const down = (since: number): TargetState => ({
    ...newTarget(0),
    status: 'unhealthy',
    since,
    reason: 'timeout x2',
    source: 'probe',
  });
  const up = (): TargetState => ({ ...newTarget(0), status: 'healthy' });
  const eps = [
    { endpoint: '10.0.0.1:80', state: down(300) },
    { endpoint: '10.0.0.2:80', state: down(100) },
    { endpoint: '10.0.0.3:80', state: down(200) },
    { endpoint: '10.0.0.4:80', state: up() },
  ];
  const d = decideService(eps, 50, 0, false, 1000);
  t.same(
    d.map((x) => [x.endpoint, x.factor, x.refused]),
    [
      ['10.0.0.1:80', 1, 'cap'],
      ['10.0.0.2:80', 0, null],
      ['10.0.0.3:80', 0, null],
      ['10.0.0.4:80', 1, null],
    ],
    '3 of 4 fail: 2 ejected, the longest unhealthy first',
  );
  t.same(decideService(eps, 100, 0, false, 1000).filter((x) => x.factor === 0).length, 3, '100%: all that fail');
  t.same(decideService(eps, 0, 0, false, 1000).filter((x) => x.factor === 0).length, 0, '0%: never');
  t.same(
    decideService([{ endpoint: 'a', state: down(1) }], 50, 0, false, 10).map((x) => x.factor),
    [0],
    'at least one can be ejected (a single dead backend fails fast)',
  );
  t.same(
    decideService(eps, 50, 0, true, 1000).map((x) => [x.factor, x.refused]),
    [
      [1, 'fail-open'],
      [1, 'fail-open'],
      [1, 'fail-open'],
      [1, null],
    ],
    'fail-open: nothing ejected',
  );
  t.equal(failOpen(9, 10), true, '90% of what this node probes');
  t.equal(failOpen(8, 10), false);
  t.equal(failOpen(2, 2), false, 'too few to judge');
  t.equal(evictAfterMs(200), 1000);
  t.equal(evictAfterMs(1000), 3000);
});

t.test('the schedule: jittered intervals, one heap, and the budget stretches every interval alike', async (t) => {
  let r = 0.5;
  const sch = new ProbeSchedule({ probesPerSecond: 100, random: () => r });
  for (let i = 0; i < 10; i++) sch.set(`t${i}`, 200, 0); // 10 x 5/s = 50/s: within budget
  t.equal(sch.demand, 50);
  t.equal(sch.stretch, 1);
  const first = sch.takeDue(1000);
  t.equal(first.length, 10, 'all due within their first interval');
  t.equal(sch.nextAt(), 1000 + 200, 'then every 200 ms (jitter 0 at r = 0.5)');
  for (let i = 10; i < 40; i++) sch.set(`t${i}`, 200, 1000); // 40 x 5/s = 200/s: twice the budget
  t.equal(sch.stretch, 2, 'twice the demand: intervals twice as long');
  t.equal(sch.effectiveInterval('t0'), 400);
  r = 0.999;
  sch.takeDue(1200);
  t.ok(sch.nextAt() <= 1200 + 400 * (1 + JITTER) + 1, 'jitter stays within 10%');
  // A late tick (the event loop was busy for seconds) probes each due target once, not in a loop.
  const late = sch.takeDue(60_000);
  t.equal(new Set(late).size, late.length, 'each target once');
  t.ok(late.length <= 40);
  sch.remove('t0');
  t.notOk(sch.has('t0'));
  t.equal(sch.size, 39);
  // A target removed and added again (an endpoint that left and came back) keeps no trace of its
  // old entry: the heap item left behind must not pass for the new one.
  const again = new ProbeSchedule({ probesPerSecond: 100, random: () => 0.5 });
  again.set('a', 200, 0);
  again.remove('a');
  again.set('a', 10_000, 0);
  t.equal(again.nextAt(), 5000, 'due when its new entry says');
  t.same(again.takeDue(200), [], "not at the old entry's time");
});

t.test('the schedule heap against a plain list, through random adds, moves, removals and takes', async (t) => {
  // random() = 0.5: no jitter, first probe half an interval in; a budget never reached: no stretch.
  const sch = new ProbeSchedule({ probesPerSecond: 1e9, random: () => 0.5 });
  const model = new Map<string, { interval: number; due: number }>();
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  let now = 0;
  let bad = 0;
  for (let step = 0; step < 3000; step++) {
    const key = `k${rand(40)}`;
    const op = rand(5);
    if (op === 0) {
      const interval = 100 * (1 + rand(5));
      const m = model.get(key);
      if (!m) model.set(key, { interval, due: now + interval / 2 });
      else if (m.interval !== interval) model.set(key, { interval, due: Math.min(m.due, now + interval) });
      sch.set(key, interval, now);
    } else if (op === 1) {
      model.delete(key);
      sch.remove(key);
    } else if (op === 2) {
      const m = model.get(key);
      if (m && m.due > now) m.due = now;
      sch.dueNow(key, now);
    } else {
      now += rand(120);
      const want: string[] = [];
      for (;;) {
        let top: string | null = null;
        for (const [k, m] of model) if (m.due <= now && (top === null || m.due < model.get(top)!.due)) top = k;
        if (top === null) break;
        want.push(top);
        const m = model.get(top)!;
        m.due = m.due + m.interval > now ? m.due + m.interval : now + m.interval;
      }
      const got = sch.takeDue(now);
      if (got.length !== want.length || new Set(got).size !== new Set(want).size || got.some((k) => !want.includes(k)))
        bad++;
    }
    const min = Math.min(...[...model.values()].map((m) => m.due));
    if (sch.nextAt() !== min || sch.size !== model.size) bad++;
  }
  t.equal(bad, 0, 'the same next due time, the same targets taken, every step');
});

t.test('passive evidence: a black hole, not a slow backend, not idle connections', async (t) => {
  const p = new PassiveDetector();
  const feed = (ep: string, samples: [number, number, number][]) =>
    samples.map(([conns, outPkts, active]) => p.observe(ep, { conns, outPkts, activeConns: active }));
  t.same(
    feed('hole', [
      [0, 0, 0],
      [5, 0, 5],
      [11, 0, 11],
    ]).map((x) => x !== null),
    [false, false, true],
    'new connections, no packet back, twice: evidence (IPVS counts them active)',
  );
  t.same(
    feed('slow', [
      [0, 0, 0],
      [5, 3, 0],
      [11, 9, 0],
      [20, 15, 1],
    ]).filter(Boolean),
    [],
    'a slow backend answers its SYNs',
  );
  t.same(
    feed('idle', [
      [100, 5000, 4],
      [100, 5000, 4],
      [100, 5000, 4],
    ]).filter(Boolean),
    [],
    'long-lived idle connections: no new connection, no evidence',
  );
  t.same(
    feed('few', [
      [0, 0, 0],
      [1, 0, 0],
      [2, 0, 0],
      [3, 0, 0],
    ]).filter(Boolean),
    [],
    'one connection a window is too little to judge',
  );
  t.same(
    feed('reset', [
      [50, 0, 0],
      [2, 0, 0],
      [7, 0, 0],
    ]).filter(Boolean),
    [],
    'counters that went back start over',
  );
});

t.test('settings: annotations over config defaults; a bad annotation is a warning and the default', async (t) => {
  const { overrides, warnings } = parseHealthAnnotations('default/web', {
    'kube-ipvs.io/health-check': 'http',
    'kube-ipvs.io/health-check-path': '/ready',
    'kube-ipvs.io/health-check-port': 'metrics',
    'kube-ipvs.io/health-check-interval': '1s',
    'kube-ipvs.io/health-check-timeout': '10ms',
    'kube-ipvs.io/health-check-unhealthy-threshold': '3',
    'kube-ipvs.io/health-check-healthy-threshold': 'lots',
    'kube-ipvs.io/slow-start': '30s',
    'kube-ipvs.io/max-ejection-percent': '150',
  });
  const s = effectiveSettings(defaultHealthConfig(), overrides);
  t.same(
    [s.kind, s.path, s.port, s.intervalMs, s.unhealthyThreshold, s.slowStartMs],
    ['http', '/ready', 'metrics', 1000, 3, 30_000],
  );
  t.same([s.timeoutMs, s.healthyThreshold, s.maxEjectionPercent], [150, 2, 50], 'the invalid ones keep the defaults');
  t.same(warnings.map((w) => w.field).sort(), [
    'metadata.annotations[kube-ipvs.io/health-check-healthy-threshold]',
    'metadata.annotations[kube-ipvs.io/health-check-timeout]',
    'metadata.annotations[kube-ipvs.io/max-ejection-percent]',
  ]);
  t.match(warnings[0]?.message, /using the default/);
  const cfg = parseConfig(
    'apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\nhealthChecks: {default: tcp, interval: 500ms, probesPerSecond: 50, passive: true, idleInterval: 30s, port: 8081}',
  );
  t.same(cfg.problems, []);
  t.same(
    [
      cfg.config?.healthChecks.kind,
      cfg.config?.healthChecks.intervalMs,
      cfg.config?.healthChecks.probesPerSecond,
      cfg.config?.healthChecks.passive,
      cfg.config?.healthChecks.idleIntervalMs,
      cfg.config?.healthChecks.port,
    ],
    ['tcp', 500, 50, true, 30_000, 8081],
  );
  t.equal(
    parseConfig('apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\nhealthChecks: {default: icmp}').config,
    null,
    'an unknown check in the config is an error',
  );
  t.equal(defaultConfig().healthChecks.kind, 'none', 'nothing is probed unless an operator asks');
});

t.test(
  'the plan: weights from health, rr becomes wrr while ramping, sh/mh fall back, evicted endpoints set apart',
  async (t) => {
    const objs = [
      node('node-a', [['InternalIP', '192.168.1.10']]),
      service('web', { clusterIPs: ['10.96.0.1'] }),
      slice('web-1', 'web', [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')]),
    ];
    const r = planObjects(objs);
    const weights = new Map([
      ['10.0.0.1', { factor: 0, evict: false }],
      ['10.0.0.2', { factor: 0.5, evict: false }],
      ['10.0.0.3', { factor: 1, evict: false }],
    ]);
    r.planner.weights = (_s, a) => weights.get(a) ?? { factor: 1, evict: false };
    r.planner.replan(['default/web']);
    const vs = r.planner.servicePlan('default/web')!.virtualServers[0]!;
    t.same(
      vs.realServers.map((x) => `${x.address}=${x.weight}`),
      ['10.0.0.1=0', '10.0.0.2=5', '10.0.0.3=10'],
      'ejected 0, ramping half of 10, full 10',
    );
    t.equal(vs.scheduler, 'wrr', 'rr ignores weights: wrr while the ramp runs');
    weights.set('10.0.0.2', { factor: 1, evict: false });
    weights.set('10.0.0.1', { factor: 0, evict: true });
    r.planner.replan(['default/web']);
    const after = r.planner.servicePlan('default/web')!.virtualServers[0]!;
    t.same(
      after.realServers.map((x) => `${x.address}=${x.weight}`),
      ['10.0.0.2=1', '10.0.0.3=1'],
      'no ramp: weights 1 again, rr again',
    );
    t.equal(after.scheduler, 'rr');
    t.same(after.evicted, [{ address: '10.0.0.1', port: 8080 }], 'the evicted endpoint is listed for deletion');
    t.ok(toDesired(after).evicted.has('10.0.0.1:8080'));
    const sh = toDesired({ ...after, scheduler: 'sh' });
    t.equal(
      sh.service.flags & SCHED_FLAG_FALLBACK,
      SCHED_FLAG_FALLBACK,
      'sh falls back from a weight-0 destination instead of dropping',
    );
    t.equal(toDesired({ ...after, scheduler: 'mh' }).service.flags & SCHED_FLAG_FALLBACK, SCHED_FLAG_FALLBACK);
    t.equal(toDesired({ ...after, scheduler: 'wrr' }).service.flags & SCHED_FLAG_FALLBACK, 0);
  },
);

/** A daemon with health checks on, over a fake prober, fake kernel and a manual clock. */
async function healthDaemon(
  t: { teardown: (f: () => void) => void },
  annotations: Record<string, string> = {},
  backends = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'],
  cfgEdit: (c: ReturnType<typeof defaultConfig>) => void = () => {},
) {
  const clock = new ManualClock();
  const ipvs = new FakeIpvs();
  const prober = new FakeProber(() => clock.now());
  const cfg = defaultConfig();
  cfg.ipvs.minSyncPeriodSeconds = 1; // kube-proxy's default: health must not wait for it
  cfg.healthChecks.kind = 'tcp';
  cfgEdit(cfg);
  const source = new PushSource();
  source.initial = [
    { kind: 'Node', previous: null, current: node('node-a', [['InternalIP', '192.168.1.10']]) },
    { kind: 'Service', previous: null, current: service('web', { clusterIPs: ['10.96.0.1'], annotations }) },
    {
      kind: 'EndpointSlice',
      previous: null,
      current: slice(
        'web-1',
        'web',
        backends.map((a) => ep(a)),
      ),
    },
  ];
  const logs: string[] = [];
  const daemon = new Daemon(
    { source, config: cfg, nodeName: 'node-a' },
    {
      ipvs,
      links: new FakeLinks(),
      owned: new MemoryOwnership(),
      sysctl: { read: () => null, write: () => {} },
      log: new Logger({ sink: (l) => void logs.push(l) }),
      kernelRelease: '6.1.0',
      clock,
      prober,
      random: () => 0.5,
      healthCounters: ipvs,
    },
  );
  t.teardown(() => daemon.stop());
  await daemon.start();
  await clock.advance(0);
  await daemon.runner.whenIdle();
  const key = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.1', port: 80 };
  const weights = async () => Object.fromEntries((await ipvs.destinations(key)).map((d) => [d.address, d.weight]));
  return { clock, ipvs, prober, daemon, logs, weights, key, source };
}

t.test(
  'a refusing backend is at weight 0 in the kernel within 2 intervals, without waiting for minSyncPeriod',
  async (t) => {
    const { clock, prober, weights, daemon, logs } = await healthDaemon(t);
    await clock.advance(600); // every endpoint probed healthy a few times
    t.same(await weights(), { '10.0.0.1': 1, '10.0.0.2': 1, '10.0.0.3': 1, '10.0.0.4': 1 });
    const failedAt = clock.now();
    prober.answers.set('10.0.0.2:8080', { ok: false, reason: 'connection refused' });
    let zeroAt = 0;
    for (let step = 0; step < 40 && !zeroAt; step++) {
      await clock.advance(20);
      if ((await weights())['10.0.0.2'] === 0) zeroAt = clock.now();
    }
    t.ok(zeroAt > 0, 'ejected');
    t.ok(
      zeroAt - failedAt <= 2 * 200 * (1 + 0.1) + 40,
      `weight 0 after ${zeroAt - failedAt} ms (two probes at 200 ms; minSyncPeriod is 1 s)`,
    );
    t.ok(
      logs.some((l) => l.includes('endpoint unhealthy') && l.includes('connection refused x2')),
      'one log line, with the reason',
    );
    const v = daemonStatus(daemon).health?.endpoints.find((e) => e.endpoint === '10.0.0.2:8080');
    t.match(v, { state: 'unhealthy', reason: 'connection refused x2', factor: 0, check: 'tcp' }, '/status shows it');
    t.match(await daemon.metrics.text(), /kubeipvs_health_transitions_total\{to="unhealthy",reason="refused"\} 1/);
    // Evicted after a while: the destination goes, so IPVS ends its connections.
    await clock.advance(1200);
    t.same(
      Object.keys(await weights()).sort(),
      ['10.0.0.1', '10.0.0.3', '10.0.0.4'],
      'evicted once it stayed down 1 s',
    );
    // It comes back: two good probes, and it is in again at once.
    prober.answers.delete('10.0.0.2:8080');
    await clock.advance(500);
    t.equal((await weights())['10.0.0.2'], 1, 'back in');
    t.match(await daemon.metrics.text(), /kubeipvs_health_transitions_total\{to="healthy",reason="recovered"\} 1/);
  },
);

t.test('the cap holds in the daemon: 3 of 4 failing, 2 ejected; all failing from this node, none', async (t) => {
  const { clock, prober, weights, daemon } = await healthDaemon(t);
  await clock.advance(600);
  for (const a of ['10.0.0.1', '10.0.0.2', '10.0.0.3'])
    prober.answers.set(`${a}:8080`, { ok: false, reason: 'timeout' });
  await clock.advance(800);
  const w = await weights();
  t.equal(Object.values(w).filter((x) => x === 0).length, 2, `two ejected (${JSON.stringify(w)})`);
  t.equal(w['10.0.0.4'], 1);
  t.same(
    daemonStatus(daemon).health?.endpoints.filter((e) => e.refused === 'cap').length,
    1,
    'the third refused by the cap, and shown',
  );
  prober.answers.set('10.0.0.4:8080', { ok: false, reason: 'timeout' });
  await clock.advance(800);
  t.same(
    await weights(),
    { '10.0.0.1': 1, '10.0.0.2': 1, '10.0.0.3': 1, '10.0.0.4': 1 },
    'everything fails from this node: fail open, nothing ejected',
  );
  t.equal(daemonStatus(daemon).health?.failingOpen, true);
  t.match(await daemon.metrics.text(), /^kubeipvs_health_fail_open 1$/m);
});

t.test('slow start: a recovered backend ramps over the window', async (t) => {
  const { clock, prober, weights, ipvs, key } = await healthDaemon(t, { 'kube-ipvs.io/slow-start': '10s' }, [
    '10.0.0.1',
    '10.0.0.2',
  ]);
  await clock.advance(600);
  prober.answers.set('10.0.0.1:8080', { ok: false, reason: 'connection refused' });
  await clock.advance(600);
  t.equal((await weights())['10.0.0.1'], 0);
  prober.answers.delete('10.0.0.1:8080');
  await clock.advance(500);
  const seen: number[] = [];
  for (let s = 0; s < 12; s++) {
    seen.push((await weights())['10.0.0.1'] ?? -1);
    await clock.advance(1000);
  }
  t.ok(seen[0]! >= 1 && seen[0]! <= 3, `starts near 10% of 10 (${seen.join(' ')})`);
  const last = seen.reduce((m, w, i) => (w > 1 ? i : m), 0);
  const ramp = seen.slice(0, last + 1);
  t.ok(
    ramp.length >= 7 && Math.max(...ramp) >= 8 && ramp.every((w, i) => i === 0 || w >= ramp[i - 1]!),
    `never goes down while it ramps towards 10 (${seen.join(' ')})`,
  );
  t.equal(seen.at(-1), 1, 'then full weight (1, rr) when it is over');
  t.equal((await ipvs.service(key))?.scheduler, 'rr', 'and rr again');
});

t.test(
  'passive: connections that never establish eject a backend of a Service without probes; a probe confirms recovery',
  async (t) => {
    const { clock, prober, weights, ipvs, key, daemon } = await healthDaemon(
      t,
      {},
      ['10.0.0.1', '10.0.0.2', '10.0.0.3'],
      (c) => {
        c.healthChecks.kind = 'none';
        c.healthChecks.passive = true;
      },
    );
    t.equal(prober.calls.length, 0, 'no probes without active checks');
    // The black hole drops probes too (until it is fixed).
    prober.answers.set('10.0.0.1:8080', { ok: false, reason: 'timeout' });
    let conns = 0;
    let outPkts = 0;
    for (let w = 0; w < 4; w++) {
      conns += 6;
      outPkts += 40;
      ipvs.setCounters(key, null, { conns: conns * 3, outPkts });
      ipvs.setCounters(key, { address: '10.0.0.1', port: 8080 }, { conns, outPkts: 0 }); // black hole
      ipvs.setCounters(key, { address: '10.0.0.2', port: 8080 }, { conns, outPkts }); // answers
      ipvs.setCounters(key, { address: '10.0.0.3', port: 8080 }, { conns: 0, outPkts: 0 }); // idle
      await clock.advance(2000);
    }
    const w = await weights();
    t.ok(
      w['10.0.0.1'] === 0 || w['10.0.0.1'] === undefined,
      `the black hole is ejected (weight 0, or already evicted: ${w['10.0.0.1']})`,
    );
    t.equal(w['10.0.0.2'], 1, 'the one that answers is not');
    t.equal(w['10.0.0.3'], 1, 'the idle one is not');
    t.match(
      daemonStatus(daemon).health?.endpoints.find((e) => e.endpoint === '10.0.0.1:8080'),
      { check: 'passive', state: 'unhealthy', reason: /passive: \d+ new connections, not one packet back/ },
    );
    t.ok(
      prober.calls.some((c) => c.target === '10.0.0.1:8080'),
      'then probed, to confirm recovery',
    );
    t.notOk(
      prober.calls.some((c) => c.target !== '10.0.0.1:8080'),
      'and only it',
    );
    prober.answers.delete('10.0.0.1:8080');
    await clock.advance(1000);
    t.equal((await weights())['10.0.0.1'] ?? 1, 1, 'it answers probes: back');
  },
);

t.test('metrics and status carry the health view', async (t) => {
  const { clock, daemon } = await healthDaemon(t);
  await clock.advance(600);
  const text = await daemon.metrics.text();
  t.match(text, /kubeipvs_health_probes_total\{result="ok"\} \d+/);
  t.match(text, /kubeipvs_health_probe_duration_seconds_bucket/);
  t.match(text, /kubeipvs_health_endpoints\{state="healthy"\} 4/);
  t.match(text, /kubeipvs_health_probe_budget_stretch 1/);
  const st = daemonStatus(daemon).health!;
  t.equal(st.endpoints.length, 4);
  t.ok(st.endpoints.every((e) => e.state === 'healthy' && e.factor === 1));
});

t.test(
  'a transition during a long sync is in the kernel before that sync ends, and the sync does not undo it',
  async (t) => {
    const { clock, prober, weights, ipvs, daemon } = await healthDaemon(t);
    await clock.advance(600);
    // The next full sync hangs in its first dump until released.
    const { held, release, services } = holdNextServiceDump(ipvs);
    // (Health's own counter reads go around the hold.)
    ipvs.serviceCounters = async () => (await services()).map(serviceCountersOf);
    await clock.advance(30_000); // the periodic full sync starts, and waits
    t.ok(held(), 'a full sync is running');
    prober.answers.set('10.0.0.3:8080', { ok: false, reason: 'connection refused' });
    await clock.advance(500);
    t.equal((await weights())['10.0.0.3'], 0, 'weight 0 while the full sync still runs');
    const mark = ipvs.ops.length;
    release();
    await clock.advance(100);
    await daemon.runner.whenIdle();
    t.same(
      ipvs.ops.slice(mark).filter((o) => o.destination === '10.0.0.3:8080' && o.weight !== 0),
      [],
      'the full sync never put the old weight back, not even for a moment',
    );
    t.equal(
      (await weights())['10.0.0.3'],
      0,
      'and still 0 once it is done: it wrote the latest plan, not the one it started with',
    );
  },
);

t.test('every probe slot taken: due probes wait for an answer, not for ticks that can start nothing', async (t) => {
  // A clock that counts timers armed for now, and stops a loop of them (the stage before this fix re-armed at once,
  // for ever, while every slot was taken: a 1 ms poll on Node's timers, a spin on a clock with no floor).
  class CountingClock extends ManualClock {
    atNow = 0;
    override setTimeout(fn: () => void, ms: number) {
      if (ms <= 0 && ++this.atNow > 1000) throw new Error('a loop of timers due now');
      return super.setTimeout(fn, ms);
    }
  }
  const clock = new CountingClock();
  const pending: ((r: { ok: boolean; reason: string; ms: number }) => void)[] = [];
  const prober = { probe: () => new Promise<{ ok: boolean; reason: string; ms: number }>((r) => pending.push(r)) };
  const cfg = { ...defaultHealthConfig(), kind: 'tcp' as const };
  const stage = new HealthStage({
    config: cfg,
    clock,
    prober,
    maxInFlight: 2,
    log: new Logger({ sink: () => {} }),
    onChange: () => {},
    random: () => 0.5,
  });
  stage.setService('ns/s', {
    service: 'ns/s',
    settings: cfg,
    passive: false,
    tcpVirtualServers: [],
    virtualServers: [],
    unresolvedPort: null,
    endpoints: Array.from({ length: 5 }, (_, k) => ({
      endpoint: `10.0.0.${k}:80`,
      address: `10.0.0.${k}`,
      port: 80,
      probe: { kind: 'tcp' as const, address: `10.0.0.${k}`, port: 80, path: '/' },
    })),
  });
  stage.start();
  await clock.advance(1000);
  t.equal(pending.length, 2, 'two probes in flight, the slots they have');
  t.ok(clock.atNow < 50, `no loop of ticks meanwhile (${clock.atNow} timers armed for now)`);
  pending.shift()!({ ok: true, reason: 'ok', ms: 1 });
  await clock.advance(10);
  t.equal(pending.length, 2, 'an answer frees a slot, and a due probe takes it at once');
  stage.stop();
});

t.test('the budget holds: a thousand targets added at once never probe faster than probesPerSecond', async (t) => {
  const clock = new ManualClock();
  const prober = new FakeProber(() => clock.now());
  const cfg = { ...defaultHealthConfig(), kind: 'tcp' as const, probesPerSecond: 50 };
  const stage = new HealthStage({
    config: cfg,
    clock,
    prober,
    log: new Logger({ sink: () => {} }),
    onChange: () => {},
    random: () => 0.5,
  });
  for (let s = 0; s < 100; s++) {
    stage.setService(`ns/s${s}`, {
      service: `ns/s${s}`,
      settings: cfg,
      passive: false,
      tcpVirtualServers: [],
      virtualServers: [],
      unresolvedPort: null,
      endpoints: Array.from({ length: 10 }, (_, k) => ({
        endpoint: `10.${s}.0.${k}:80`,
        address: `10.${s}.0.${k}`,
        port: 80,
        probe: { kind: 'tcp' as const, address: `10.${s}.0.${k}`, port: 80, path: '/' },
      })),
    });
  }
  stage.start();
  t.equal(stage.budget.demand, 5000, '1000 targets every 200 ms ask 5000 probes/s');
  t.equal(stage.budget.stretch, 100, 'intervals stretched 100x');
  await clock.advance(4000);
  stage.stop();
  const perSecond = [0, 1, 2, 3].map(
    (s) =>
      prober.calls.filter((c) => c.at >= clock.now() - 4000 + s * 1000 && c.at < clock.now() - 4000 + (s + 1) * 1000)
        .length,
  );
  t.ok(
    perSecond.every((n) => n <= 50 + 5),
    `at most the budget (and a tenth of a second saved up) each second: ${perSecond.join(' ')}`,
  );
  t.ok(
    perSecond.every((n) => n >= 40),
    'and the budget is used',
  );
});
