import t from 'tap';
import { Logger } from '../src/observe/log.ts';

t.test('JSON lines, levels, rate limiting by key', async (t) => {
  let now = 0;
  const lines: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l), now: () => now, level: 'info', rateLimitMs: 1000 });
  log.debug('hidden');
  log.info('hello', { a: 1, big: 5n });
  for (let i = 0; i < 5; i++) log.warn('op failed', { i }, 'op:x');
  now = 1500;
  log.warn('op failed', { i: 9 }, 'op:x');
  const recs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(
    recs.map((r) => r.msg),
    ['hello', 'op failed', 'op failed'],
  );
  t.equal(recs[0]?.big, '5', 'bigints are written as strings');
  t.equal(recs[2]?.suppressed, 4, 'the count of suppressed lines comes with the next one');
  t.equal(recs[2]?.i, 9);
});

t.test('text format', async (t) => {
  const lines: string[] = [];
  new Logger({ sink: (l) => lines.push(l), now: () => 0, format: 'text' }).error('boom', {
    code: 'EEXIST',
    what: 'a b',
  });
  t.equal(lines[0], '1970-01-01T00:00:00.000Z ERROR boom code=EEXIST what="a b"');
});
