// Keeps perf/race-native.ts (`npm run bench:race:native`) runnable: a small run against the test set-up's API
// server must finish with both proxies programming the churn, print its table, and leave no network namespace.
// (The full-size numbers come from `npm run bench:race:native`, not from the test suite.)
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { k8sBinaries } from './support/apiserver.ts';

t.setTimeout(5 * 60_000);
const built = k8sBinaries();
const nft = spawnSync('sh', ['-c', 'command -v nft']).status === 0;
if (process.getuid?.() !== 0) t.plan(0, 'native race skipped: needs root (kube-proxy runs in a network namespace)');
else if ('why' in built)
  t.plan(0, `native race skipped: needs the test set-up's kube-apiserver and kube-proxy: ${built.why}`);
else if (!nft) t.plan(0, 'native race skipped: no nft (Debian package nftables)');
else
  t.test('every proxy programs the churn, and the table compares them', async (t) => {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['perf/race-native.ts'], {
      env: {
        ...process.env,
        SERVICES: '40',
        ENDPOINTS: '3',
        CHURN_SECONDS: '3',
        // Two windows: the second at half the rate.
        CHURN_RATES: '10,5',
        PROXIES: 'kube-ipvs,kube-proxy-nftables',
      },
      timeout: 240_000,
    });
    t.match(stdout, /^\| 40 Services x 3 endpoints, natively \| kube-ipvs \| kube-proxy-nftables \|$/m, stderr);
    /** A row's two cells, as numbers (a ratio after a number is left off). */
    const cells = (label: string) =>
      new RegExp(`^\\| ${label} \\| ([^|]+) \\| ([^|]+) \\|$`, 'm')
        .exec(stdout)
        ?.slice(1)
        .map((c) => parseFloat(c));
    for (const [rate, low, high] of [
      [10, 25, 31],
      [5, 12, 16],
    ] as const) {
      const writes = Number(new RegExp(`kube-ipvs: churn ([0-9]+) writes at ${rate}/s`).exec(stderr)?.[1]);
      t.ok(writes >= low && writes <= high, `about ${rate} writes a second for 3 s: ${writes}`);
      const programmed = cells(`churn ${rate}/s: changes programmed by 5 s after it \\(latency observations\\)`);
      t.ok(
        programmed?.every((n) => n >= writes - 1),
        `at ${rate}/s each programmed the churn (${programmed?.join(', ')} of ${writes})`,
      );
      const cpu = cells(`churn ${rate}/s for 3 s: CPU seconds, the process`);
      t.ok(
        cpu?.every((s) => s > 0),
        `at ${rate}/s each used CPU in the window: ${cpu?.join(', ')}`,
      );
    }
    t.notMatch(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout, /kipvs-race-/, 'its namespace is gone');
  });
