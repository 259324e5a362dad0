import t from 'tap';
import { TokenBucket } from '../src/sources/rate-limit.ts';

t.test('burst first, then qps', async (t) => {
  let now = 0;
  const slept: number[] = [];
  const b = new TokenBucket(
    5,
    3,
    () => now,
    async (ms) => {
      slept.push(ms);
      now += ms;
    },
  );
  for (let i = 0; i < 3; i++) await b.take();
  t.same(slept, [], 'the burst goes at once');
  await b.take();
  await b.take();
  t.same(slept, [200, 200], 'then one every 1/qps seconds');
  now += 10_000;
  for (let i = 0; i < 3; i++) await b.take();
  t.equal(slept.length, 2, 'idle time refills up to the burst, not beyond');
  await b.take();
  t.equal(slept.length, 3);
});
