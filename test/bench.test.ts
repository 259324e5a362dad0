// Keeps perf/plan.bench.ts runnable: a small run must finish and print its measurements.
// (The full-size numbers come from `npm run bench`, not from the test suite.)
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';

t.test('plan benchmark runs at small scale', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', 'perf/plan.bench.ts'], {
    env: { ...process.env, BENCH_CHILD: 'test', SERVICES: '300', ENDPOINTS: '5', ROUNDS: '2', CHANGES: '50' },
  });
  t.match(stdout, /300 Services x 5 endpoints/);
  t.match(stdout, /virtual servers planned +360\b/, '300 ClusterIPs + 60 NodePorts on one node address');
  t.match(stdout, /one slice change, median +[0-9.]+ µs/);
  t.match(stdout, /time targets met/);
});

t.test('the daemon applies its own V8 flags unless told to keep the defaults', async (t) => {
  const { applyDaemonV8Flags, DAEMON_V8_FLAGS } = await import('../src/util/v8-flags.ts');
  t.same(applyDaemonV8Flags({ KUBE_IPVS_V8_DEFAULTS: '1' }), [], 'opt-out applies nothing');
  t.ok(DAEMON_V8_FLAGS.includes('--optimize-for-size'));
  // The entry point applies them: the source of cli.ts calls it before main().
  const { readFile } = await import('node:fs/promises');
  const cli = await readFile('src/cli.ts', 'utf8');
  t.match(cli, /applyDaemonV8Flags\(\);\s*\n\s*main\(/);
});
