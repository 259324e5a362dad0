// The race harnesses' shared pieces that need no API server or VM (perf/race-measure.ts): CHURN_RATES and the
// paced writes of a churn window.
import t from 'tap';
import { churnColumn, churnRates, paced, type ChurnRun } from '../perf/race-measure.ts';

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
