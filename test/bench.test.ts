// Keeps perf/plan.bench.ts, perf/synthetic-scrape.ts and perf/health.bench.ts runnable: a small run must finish and
// print its measurements.
// (The full-size numbers come from `npm run bench`, not from the test suite.)
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { DAEMON_V8_FLAGS, EXIT_DEADLOCK_V8_FLAGS } from '../src/util/v8-flags.ts';

t.test('plan benchmark runs at small scale', async (t) => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [...EXIT_DEADLOCK_V8_FLAGS, '--expose-gc', 'perf/plan.bench.ts'],
    {
      env: { ...process.env, BENCH_CHILD: 'test', SERVICES: '300', ENDPOINTS: '5', ROUNDS: '2', CHANGES: '50' },
    },
  );
  t.match(stdout, /300 Services x 5 endpoints/);
  t.match(stdout, /virtual servers planned +360\b/, '300 ClusterIPs + 60 NodePorts on one node address');
  t.match(stdout, /one slice change, median +[0-9.]+ µs/);
  t.match(stdout, /time targets met/);
});

t.test('synthetic scrape benchmark runs at small scale', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, [...DAEMON_V8_FLAGS, 'perf/synthetic-scrape.ts'], {
    env: { ...process.env, SERVICES: '200', ENDPOINTS: '3' },
  });
  t.match(stdout, /of 200 virtual servers x 3, real-server limit 1000: idle [0-9]+ ms, busy [0-9]+ ms/);
  t.match(stdout, /real-server limit 0: idle [0-9]+ ms/);
});

t.test(
  'health benchmark runs at small scale',
  { skip: process.getuid?.() === 0 ? false : 'needs root: its endpoints live in a network namespace' },
  async (t) => {
    // 200 endpoints at 200 ms ask 1 000 probes/s: the budget (250/s) holds them, and every probe reaches the listener.
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [...EXIT_DEADLOCK_V8_FLAGS, 'perf/health.bench.ts'],
      { env: { ...process.env, ENDPOINTS: '200', SECONDS: '2', WARMUP: '1' } },
    );
    const m =
      /health checks, 200 endpoints.*?: ([0-9]+) probes\/s \(asked ([0-9]+)\/s, intervals stretched x[0-9]+; ([0-9]+) failed\), CPU [0-9.]+% of one core/.exec(
        stdout,
      );
    t.ok(m, stdout);
    if (!m) return;
    t.ok(Number(m[1]) > 125 && Number(m[1]) <= 275, `probes/s within the budget, and near it: ${m[1]}`);
    t.ok(Number(m[2]) >= 900, `demand counted: ${m[2]}`);
    t.equal(Number(m[3]), 0, 'no probe failed');
  },
);

t.test('every launcher passes the V8 flags kube-ipvs is measured with', async (t) => {
  const { readFile } = await import('node:fs/promises');
  const flags = DAEMON_V8_FLAGS.join(' ');
  const cli = await readFile('src/cli.ts', 'utf8');
  t.equal(cli.split('\n')[0], `#!/usr/bin/env -S node ${flags}`, 'the bin');
  const pkg = JSON.parse(await readFile('package.json', 'utf8'));
  for (const s of ['start', 'plan']) t.ok(pkg.scripts[s].startsWith(`node ${flags} src/cli.ts `), `npm run ${s}`);
  for (const s of ['bench:scrape', 'bench:lab', 'bench:lab:scrape'])
    t.match(pkg.scripts[s], `node ${flags} `, `npm run ${s} measures with them`);
  const lab = await readFile('test/lab/support/node.ts', 'utf8');
  t.match(lab, /DAEMON_V8_FLAGS/, 'the lab starts kube-ipvs with them');
  // The exit-deadlock flags also go to every test process, here and in the lab VM.
  t.same(pkg.tap['node-arg'], EXIT_DEADLOCK_V8_FLAGS, 'tap.node-arg');
  const labTap = await readFile('test/lab/run-cases.sh', 'utf8');
  for (const f of EXIT_DEADLOCK_V8_FLAGS) t.match(labTap, `--node-arg=${f} `, `the lab's tap passes ${f}`);
});
