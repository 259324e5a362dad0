import t from 'tap';
import { BoundedFrequencyRunner, systemClock } from '../../src/dataplane/runner.ts';
import { ManualClock } from '../support/clock.ts';

function setup(
  result: (runs: number, clock: ManualClock) => boolean | Promise<boolean> = () => true,
  minIntervalMs = 1000,
) {
  const clock = new ManualClock();
  const runs: { at: number; full: boolean }[] = [];
  const start = clock.now();
  const r = new BoundedFrequencyRunner(
    async ({ full }) => {
      runs.push({ at: clock.now() - start, full });
      return result(runs.length, clock);
    },
    { minIntervalMs, maxIntervalMs: 30_000, retryBaseMs: 500, retryMaxMs: 8000, clock },
  );
  return { clock, runs, r };
}

t.test('starts with a full sync, then one every maxInterval', async (t) => {
  const { clock, runs, r } = setup();
  r.start();
  await clock.advance(0);
  t.same(runs, [{ at: 0, full: true }]);
  await clock.advance(65_000);
  t.same(
    runs.map((x) => x.at),
    [0, 30_000, 60_000],
  );
  t.ok(
    runs.every((x) => x.full),
    'periodic syncs are full',
  );
  r.stop();
});

t.test('requests are rate limited by minInterval and coalesced', async (t) => {
  const { clock, runs, r } = setup();
  r.start();
  await clock.advance(0);
  r.request();
  r.request();
  await clock.advance(500);
  t.equal(runs.length, 1, 'not before minInterval');
  await clock.advance(600);
  t.same(
    runs.map((x) => [x.at, x.full]),
    [
      [0, true],
      [1000, false],
    ],
    'one incremental sync for two requests',
  );
  await clock.advance(5000);
  r.request();
  await clock.advance(0);
  t.equal(runs.at(-1)?.at, 6100, 'runs at once when minInterval has passed');
  r.stop();
});

t.test('a request during a running sync runs right after it', async (t) => {
  const clock = new ManualClock();
  const runs: number[] = [];
  let release: (() => void) | null = null;
  const r = new BoundedFrequencyRunner(
    () => {
      runs.push(clock.now());
      return new Promise<boolean>((res) => (release = () => res(true)));
    },
    { minIntervalMs: 0, maxIntervalMs: 30_000, retryBaseMs: 500, retryMaxMs: 8000, clock },
  );
  r.start();
  await clock.advance(0);
  r.request();
  await clock.advance(10);
  t.equal(runs.length, 1, 'no overlap');
  (release as unknown as () => void)();
  await clock.advance(0);
  t.equal(runs.length, 2, 'the pending request ran');
  (release as unknown as () => void)();
  r.stop();
});

t.test('failures back off exponentially, success resets', async (t) => {
  let fail = true;
  const { clock, runs, r } = setup(() => !fail);
  r.start();
  await clock.advance(0);
  await clock.advance(10_000);
  t.same(
    runs.map((x) => x.at),
    [0, 1000, 2000, 4000, 8000],
    'retry at min interval, then 1 s, 2 s, 4 s (base 0.5 s doubled, floored by minInterval)',
  );
  t.equal(r.failures, 5);
  fail = false;
  await clock.advance(8000);
  t.equal(r.failures, 0);
  const n = runs.length;
  await clock.advance(20_000);
  t.equal(runs.length, n, 'no more retries after success (next one is the periodic sync)');
  r.stop();
});

t.test('stop cancels everything', async (t) => {
  const { clock, runs, r } = setup();
  r.start();
  await clock.advance(0);
  r.stop();
  r.request();
  await clock.advance(100_000);
  t.equal(runs.length, 1);
});

t.test('a fault in the runner itself is reported and syncing goes on (not stuck "running")', async (t) => {
  // The clock refuses one timer: the runner's own rescheduling after a sync throws, which used to be
  // a promise nobody handled (Node ends the process on it) and left the runner marked running.
  class RefusingClock extends ManualClock {
    refuse = false;
    override setTimeout(fn: () => void, ms: number) {
      if (this.refuse) {
        this.refuse = false;
        throw new Error('no timer for you');
      }
      return super.setTimeout(fn, ms);
    }
  }
  const clock = new RefusingClock();
  const runs: number[] = [];
  const errors: unknown[] = [];
  const r = new BoundedFrequencyRunner(
    async () => {
      runs.push(clock.now());
      // A request during the second sync: the runner arms a timer for it when the sync ends, and that one fails.
      if (runs.length === 2) r.request();
      clock.refuse = runs.length === 2;
      return true;
    },
    {
      minIntervalMs: 1000,
      maxIntervalMs: 30_000,
      retryBaseMs: 500,
      retryMaxMs: 8000,
      clock,
      onError: (e) => errors.push(e),
    },
  );
  r.start();
  await clock.advance(0);
  r.request();
  await clock.advance(1000);
  t.equal(runs.length, 2, 'the second sync ran');
  t.same(
    errors.map((e) => (e as Error).message),
    ['no timer for you'],
    'the fault reached onError',
  );
  r.request();
  await clock.advance(8000);
  t.equal(runs.length, 3, 'a later request still syncs');
  await clock.advance(30_000);
  t.ok(runs.length >= 4, 'and the periodic resync goes on');
  r.stop();
});

t.test(
  'the periodic full sync is spaced by its own duration (1% of the time, capped at 1 h), a check every maxInterval between',
  async (t) => {
    const clock = new ManualClock();
    const start = clock.now();
    // How long each full sync takes, in order; other syncs take no time.
    const took = [100_000, 6_000, 6_000, 200, 200];
    const fulls: number[] = [];
    const checks: number[] = [];
    const r = new BoundedFrequencyRunner(
      ({ full, check }) => {
        if (check) checks.push(clock.now() - start);
        if (!full) return Promise.resolve(true);
        t.notOk(check, 'a full sync is not also a check');
        fulls.push(clock.now() - start);
        const d = took[fulls.length - 1] ?? 0;
        return new Promise<boolean>((res) => clock.setTimeout(() => res(true), d));
      },
      { minIntervalMs: 1000, maxIntervalMs: 30_000, retryBaseMs: 500, retryMaxMs: 8000, clock },
    );
    r.start();
    await clock.advance(0);
    t.equal(r.fullIntervalMs, 30_000, 'maxInterval before any full sync finished');
    await clock.advance(100_000);
    t.equal(r.fullIntervalMs, 3_600_000, 'a 100 s sync: 100x would be 10 000 s, capped at an hour');
    t.same(checks, [], 'no check while the cold sync runs');
    await clock.advance(3_600_000);
    t.same(fulls, [0, 3_600_000], 'the next full sync an hour after the cold one began');
    t.same(
      checks.filter((c) => c < 3_600_000),
      Array.from({ length: 116 }, (_, k) => 130_000 + 30_000 * k),
      'a check every 30 s from the end of the cold sync until then',
    );
    await clock.advance(4_861_000 - 3_700_000);
    t.same(
      fulls,
      [0, 3_600_000, 4_200_000, 4_800_000, 4_830_000, 4_860_000],
      'after 6 s ones, 600 s; after 0.2 s ones (20 s), maxInterval again',
    );
    t.equal(checks.filter((c) => c > 3_600_000 && c < 4_200_000).length, 19, 'checks between those too');
    const before = fulls.length;
    r.request();
    await clock.advance(1000);
    t.equal(fulls.length, before, 'a requested sync is not a full one');
    r.requestFull();
    await clock.advance(1000);
    t.equal(fulls.length, before + 1, 'requestFull: the next sync is a full one, right after the last');
    r.stop();
  },
);

t.test('a check that fails is retried with backoff, still a check', async (t) => {
  const clock = new ManualClock();
  const start = clock.now();
  const runs: [number, boolean, boolean][] = [];
  let failChecks = 0;
  const r = new BoundedFrequencyRunner(
    async ({ full, check }) => {
      runs.push([clock.now() - start, full, check]);
      if (full) await new Promise<void>((res) => clock.setTimeout(res, 10_000)); // 10 s: full every 1 000 s
      return !(check && failChecks-- > 0);
    },
    { minIntervalMs: 0, maxIntervalMs: 30_000, retryBaseMs: 500, retryMaxMs: 8000, clock },
  );
  r.start();
  await clock.advance(10_000);
  failChecks = 2;
  await clock.advance(32_000);
  t.same(
    runs,
    [
      [0, true, false],
      [40_000, false, true],
      [40_500, false, true],
      [41_500, false, true],
    ],
    'two failed checks, retried at 0.5 s and 1 s, the third succeeds',
  );
  await clock.advance(30_000);
  t.same(runs.at(-1), [71_500, false, true], 'the next one 30 s after the check that succeeded');
  r.stop();
});

t.test('an incremental sync arms one timer (the periodic resync keeps its own, untouched)', async (t) => {
  class CountingClock extends ManualClock {
    set = 0;
    cleared = 0;
    override setTimeout(fn: () => void, ms: number) {
      this.set++;
      return super.setTimeout(fn, ms);
    }
    override clearTimeout(h: unknown) {
      this.cleared++;
      super.clearTimeout(h);
    }
  }
  const clock = new CountingClock();
  const runs: boolean[] = [];
  const r = new BoundedFrequencyRunner(
    async ({ full }) => {
      runs.push(full);
      return true;
    },
    { minIntervalMs: 0, maxIntervalMs: 30_000, retryBaseMs: 500, retryMaxMs: 8000, clock },
  );
  r.start();
  await clock.advance(0);
  const [set0, cleared0] = [clock.set, clock.cleared];
  for (let i = 0; i < 10; i++) {
    r.request();
    await clock.advance(100);
  }
  t.equal(runs.length, 11, 'every request synced');
  t.equal(clock.set - set0, 10, 'one timer a request');
  t.equal(clock.cleared - cleared0, 0, 'none cleared');
  await clock.advance(30_000);
  t.same(runs.slice(11), [true], 'the periodic resync still comes, on its own timer: once, 30 s after the last one');
  r.stop();
});

t.test('the periodic resync falling due during a sync runs right after it, as a full one', async (t) => {
  const { clock, runs, r } = setup(async (n, clock) => {
    // The request at 29.9 s takes 1 s: the resync falls due while it runs.
    if (n === 2) await new Promise<void>((res) => clock.setTimeout(res, 1000));
    return true;
  }, 0);
  r.start();
  await clock.advance(29_900);
  r.request();
  await clock.advance(2000);
  t.same(runs, [
    { at: 0, full: true },
    { at: 29_900, full: false },
    { at: 30_900, full: true },
  ]);
  r.stop();
});

t.test(
  'the real clock: a timer due now runs as an immediate, a later one not before its time; either can be cleared',
  async (t) => {
    const fired: string[] = [];
    const start = Date.now();
    systemClock.setTimeout(() => fired.push('now'), 0);
    const cleared = systemClock.setTimeout(() => fired.push('now, cleared'), 0);
    systemClock.clearTimeout(cleared);
    let lateAt = 0;
    systemClock.setTimeout(() => {
      lateAt = Date.now();
      fired.push('later');
    }, 30);
    const clearedLater = systemClock.setTimeout(() => fired.push('later, cleared'), 10);
    systemClock.clearTimeout(clearedLater);
    await new Promise((r) => setImmediate(r));
    t.same(fired, ['now'], 'the one due now ran at the next turn; the cleared one did not');
    await new Promise((r) => setTimeout(r, 80));
    t.same(fired, ['now', 'later'], 'the later one ran; the cleared later one did not');
    t.ok(lateAt - start >= 29, `not before its time (${lateAt - start} ms)`);
  },
);
