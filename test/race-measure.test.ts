// The race harnesses' shared pieces that need no API server or VM (perf/race-measure.ts): CHURN_RATES, the paced
// writes of a churn window, the window's measurement and its table cells.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import {
  churnColumn,
  churnRates,
  churnRows,
  churnSeconds,
  churnWindow,
  paced,
  raceChange,
  settleSeconds,
  raceLocalEndpoints,
  raceNodeOf,
  raceNodes,
  type ChurnRun,
} from '../perf/race-measure.ts';

t.test('CHURN_RATES: 10 a second unless set, a list in its order, anything else refused with why', async (t) => {
  t.same(churnRates(undefined), [10]);
  t.same(churnRates(''), [10]);
  t.same(churnRates('1,3,10'), [1, 3, 10]);
  t.same(churnRates('0.5, 20'), [0.5, 20]);
  t.same(churnRates('100'), [100]);
  for (const bad of ['0', '0.05', '101', 'ten', '1,,2', '1;reboot', '-1', '1e1', '0x10', 'Infinity'])
    t.match(churnRates(bad), { error: /^CHURN_RATES: .* is not a rate of 0\.1\.\.100 writes a second$/ }, bad);
  t.match(churnRates(Array(11).fill('1').join(',')), { error: 'CHURN_RATES: at most 10 rates' });
  // What it quotes back is cut short and JSON-escaped: a log line gets no control characters from it.
  const r = churnRates('\u001b[2J' + 'x'.repeat(100));
  t.ok('error' in r && !/\u001b/.test(r.error) && r.error.length < 100, 'the bad value is quoted escaped and short');
});

t.test(
  'paced: rate writes a second for the window, numbered in order, every one answered before it returns',
  async (t) => {
    const started: number[] = [];
    const at: number[] = [];
    let answered = 0;
    const t0 = performance.now();
    const n = await paced(50, 0.4, async (k) => {
      started.push(k);
      at.push(performance.now() - t0);
      // Each write is answered later than the next one starts: the pace is not held up by the answers.
      await new Promise((r) => setTimeout(r, 60));
      answered++;
    });
    t.ok(n >= 15 && n <= 21, `about 50 a second for 0.4 s: ${n}`);
    t.same(started, [...Array(n).keys()], 'numbered 0, 1, ... in order');
    t.equal(answered, n, 'every write answered when it returns');
    // The k-th write starts about k * 20 ms in, not after the one before was answered (that would be 60 ms apart).
    t.ok(at[10]! < 10 * 20 + 40, `the 11th write started at ${at[10]!.toFixed(0)} ms`);
  },
);

t.test("churnColumn: a window's label head and cells, n/a for a proxy that stopped before it", async (t) => {
  const w = (rate: number, cpuS: number): ChurnRun => ({
    rate,
    writes: rate * 60,
    cpuS,
    childCpuS: 0,
    minuteCpuS: [],
    p50: 0.25,
    p99: 0.5,
    programmed: rate * 60,
  });
  const full = { churn: [w(1, 2), w(10, 20)] };
  const short = { churn: [w(1, 3)] };
  t.equal(churnColumn([10], 0).head, 'churn', 'one rate: the rows say "churn"');
  const second = churnColumn([1, 10], 1);
  t.equal(second.head, 'churn 10/s', 'several: each window says its rate');
  const cpu = second.at((c) => c.cpuS);
  t.equal(cpu(full), 20, 'the second window of a full run');
  t.ok(Number.isNaN(cpu(short)), 'a run that stopped after the first window has no cell for the second');
  t.equal(churnColumn([1, 10], 0).at((c) => c.cpuS)(short), 3);
});

t.test("churnRows: each window's shared rows around the harness's own, in window order", async (t) => {
  const w = (rate: number): ChurnRun => ({
    rate,
    writes: rate * 60,
    cpuS: rate / 2,
    childCpuS: rate,
    minuteCpuS: [rate / 4, rate / 8],
    p50: 0.25,
    p99: 1,
    programmed: rate * 60 - 1,
  });
  const run = { churn: [w(1), w(10)] };
  const rows = churnRows([1, 10], 60, 2, (head, at) => [
    { label: `${head}: with children`, get: at((c) => c.cpuS + c.childCpuS), digits: 1 },
  ]);
  t.same(
    rows.map((r) => r.label),
    [
      'churn 1/s for 60 s: CPU seconds, the process',
      'churn 1/s: with children',
      'churn 1/s: changes programmed by 5 s after it (latency observations)',
      'churn 1/s: programming latency p50, bucket bound (s)',
      'churn 1/s: programming latency p99, bucket bound (s)',
      'churn 10/s for 60 s: CPU seconds, the process',
      'churn 10/s: with children',
      'churn 10/s: changes programmed by 5 s after it (latency observations)',
      'churn 10/s: programming latency p50, bucket bound (s)',
      'churn 10/s: programming latency p99, bucket bound (s)',
    ],
  );
  t.same(
    rows.map((r) => r.get(run)),
    [0.5, 1.5, 59, 0.25, 1, 5, 15, 599, 0.25, 1],
    "each row reads its own window's field",
  );
  t.same(
    rows.map((r) => r.digits),
    [2, 1, 0, 2, 2, 2, 1, 0, 2, 2],
  );
  t.ok(
    rows.slice(5).every((r) => Number.isNaN(r.get({ churn: [w(1)] }))),
    'a run that stopped after the first window: n/a in every row of the second',
  );
  t.equal(
    churnRows([10], 60, 1, () => [])[1]!.label,
    'churn: changes programmed by 5 s after it (latency observations)',
  );
  // Two whole minutes or more: the lowest and highest minute follow the window's CPU.
  const long = churnRows([1, 10], 300, 1, () => []);
  t.same(
    long.slice(0, 3).map((r) => r.label),
    [
      'churn 1/s for 300 s: CPU seconds, the process',
      'churn 1/s: CPU seconds of the process in its lowest minute',
      'churn 1/s: CPU seconds of the process in its highest minute',
    ],
  );
  t.same(
    long.map((r) => r.get(run)).filter((_, i) => i % 6 === 1 || i % 6 === 2),
    [1 / 8, 1 / 4, 10 / 8, 10 / 4],
    "each window's own minutes",
  );
  t.ok(Number.isNaN(long[1]!.get({ churn: [{ ...w(1), minuteCpuS: [] }] })), 'no whole minute: n/a');
  t.equal(long.length, 12);
});

t.test('churnWindow: the CPU over the writes and the settling, what the histogram observed meanwhile', async (t) => {
  // A proxy's metrics: the histogram observes each write 0.1 s after it, plus one observation already there.
  let observed = 1;
  const server = createServer((_req, res) => {
    const le = (bound: string, n: number) =>
      `kubeproxy_network_programming_duration_seconds_bucket{le="${bound}"} ${n}\n`;
    res.end(le('0.25', observed) + le('1', observed) + le('+Inf', observed));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
  const edges: string[] = [];
  let alive = 0;
  const run = await churnWindow({
    pid: process.pid,
    rate: 50,
    seconds: 0.3,
    metrics: url,
    settleMs: 500,
    write: async () => {
      edges.push('write');
      setTimeout(() => observed++, 100);
      // Busy work: the window's CPU is this process's, and must show it.
      const until = performance.now() + 5;
      while (performance.now() < until);
    },
    alive: () => {
      alive++;
      edges.push('alive');
    },
    onCpu: (edge) => edges.push(edge),
    minuteMs: 100,
  });
  t.equal(run.rate, 50);
  t.equal(run.minuteCpuS.length, 3, 'a reading for each whole "minute" of the writes (100 ms here)');
  const byMinute = run.minuteCpuS.reduce((a, x) => a + x, 0);
  t.ok(
    run.minuteCpuS.every((x) => x >= 0) && byMinute > 0 && byMinute <= run.cpuS + 0.011,
    `the minutes are the window's CPU but the settling: ${run.minuteCpuS.join(', ')} of ${run.cpuS} s`,
  );
  t.ok(run.writes >= 10 && run.writes <= 16, `about 50 a second for 0.3 s: ${run.writes}`);
  t.equal(run.programmed, run.writes, 'each write observed once by the end of the settling, none from before');
  t.equal(run.p50, 0.25, 'the bucket the median falls in');
  t.ok(run.cpuS > 0, `the process's CPU in the window: ${run.cpuS} s`);
  t.equal(run.childCpuS, 0, 'no child processes');
  t.equal(alive, 1);
  t.same(
    edges.filter((e) => e !== 'write'),
    ['start', 'alive', 'end'],
    'the CPU read before the writes and after the liveness check',
  );
  t.equal(edges.indexOf('start'), 0, 'nothing written before the first reading');

  // A short window without a histogram, and with the liveness check given.
  const short = (alive: () => void) =>
    churnWindow({
      pid: process.pid,
      rate: 20,
      seconds: 0.1,
      metrics: null,
      settleMs: 10,
      write: async () => {},
      alive,
    });
  const none = await short(() => {});
  t.ok(Number.isNaN(none.programmed) && Number.isNaN(none.p99), 'no metrics: n/a');
  t.same(none.minuteCpuS, [], 'writes for less than a minute: no minute read');
  // A proxy gone by the end: the window throws what alive threw.
  await t.rejects(
    short(() => {
      throw new Error('gone');
    }),
    /gone/,
  );
});

t.test('CHURN_SECONDS: the fallback unless set, a whole 1..3600, anything else refused with why', async (t) => {
  t.equal(churnSeconds(undefined, 300), 300);
  t.equal(churnSeconds('', 60), 60);
  t.equal(churnSeconds('120', 300), 120, 'a value set wins over the fallback');
  t.equal(churnSeconds(' 1 ', 60), 1);
  t.equal(churnSeconds('3600', 60), 3600);
  for (const bad of ['0', '3601', '2.5', '-3', 'ten', '60;rm', '1e3'])
    t.match(churnSeconds(bad, 60), { error: /CHURN_SECONDS/ }, `${JSON.stringify(bad)} refused`);
});

t.test('SETTLE_SECONDS: 240 unless set, a whole 0..900 (0: no wait), anything else refused with why', async (t) => {
  t.equal(settleSeconds(undefined), 240);
  t.equal(settleSeconds(' '), 240);
  t.equal(settleSeconds('0'), 0);
  t.equal(settleSeconds('900'), 900);
  for (const bad of ['901', '-1', '2.5', 'x', '30;rm'])
    t.match(settleSeconds(bad), { error: /SETTLE_SECONDS/ }, `${JSON.stringify(bad)} refused`);
});

t.test('RACE_NODES: 1 unless set, a whole number 1..1000, anything else refused with why', async (t) => {
  t.equal(raceNodes(undefined), 1);
  t.equal(raceNodes(' '), 1);
  t.equal(raceNodes('50'), 50);
  for (const bad of ['0', '1001', '2.5', '-3', 'ten', '5;rm'])
    t.match(raceNodes(bad), { error: /RACE_NODES/ }, `${JSON.stringify(bad)} refused`);
});

t.test(
  "the race's endpoints spread over nodes: this node's share, and the changes follow the same placement",
  async (t) => {
    // One node: every endpoint is here, as the race always had it.
    t.equal(raceNodeOf(1, 7, 3), 'race-node');
    t.equal(raceLocalEndpoints(100, 10, 1), 1000);
    // 50 nodes: at most one endpoint of a Service here, and 1 in 50 of all of them.
    for (let i = 0; i < 200; i++) {
      const here = Array.from({ length: 10 }, (_, j) => raceNodeOf(50, i, j)).filter((n) => n === 'race-node');
      t.ok(here.length <= 1, `Service ${i}: ${here.length} endpoint here`);
    }
    t.equal(raceLocalEndpoints(10_000, 10, 50), 2000, '2% of 100 000');
    t.equal(raceNodeOf(50, 3, 1), 'race-node-4');
    // A change rewrites the slice with each endpoint on the node it was created on.
    const { body } = raceChange(10, 40, '10.99.0.1', 50) as { body: { endpoints: { nodeName: string }[] } };
    t.same(
      body.endpoints.map((e) => e.nodeName),
      Array.from({ length: 10 }, (_, j) => raceNodeOf(50, 40, j)),
    );
    t.equal(body.endpoints[0]!.nodeName, 'race-node-40');
    t.equal(body.endpoints[9]!.nodeName, 'race-node-49');
  },
);
