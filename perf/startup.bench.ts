// Start-up benchmark: the sources run through Node's type stripping (development, tests) against
// the compiled JavaScript of `npm run build` (dist/: the image and the published bin).
//   npm run bench:startup          (SERVICES=2000 ROUNDS=3 npm run bench:startup to scale it)
// Three commands, each launcher in turn, ROUNDS times, with kube-ipvs' V8 flags:
//   help     the modules loaded, nothing done: the launcher's own cost
//   run      `run --manifests DIR --dry-run --once` on SERVICES Services x 10 endpoints: read,
//            model, plan, program the in-memory kernel, exit
//   kube     `run --kubeconfig` against an API server that refuses: to the first list attempt, with
//            the Kubernetes client library loaded (what a node's daemon pays before it lists)
// Reported: median wall time and median peak RSS (/usr/bin/time; VmHWM for kube), and ratios to the sources.
// BUNDLE=images/.cache/rootfs/opt/kube-ipvs/dist/cli.js adds the image's bundle (images/bundle.ts).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DAEMON_V8_FLAGS } from '../src/util/v8-flags.ts';
import { syntheticCluster } from './cluster.ts';

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const repo = resolve(import.meta.dirname, '..');
const dist = join(repo, 'dist/cli.js');
if (!existsSync(dist)) {
  process.stderr.write('dist/cli.js is missing: run `npm run build` first\n');
  process.exit(2);
}
if (!existsSync('/usr/bin/time')) {
  process.stderr.write('/usr/bin/time is missing (Debian package `time`)\n');
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'kipvs-startup-'));
const { serviceObj, sliceObj, node } = syntheticCluster(10);
const list = (items: unknown[]) => JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
writeFileSync(join(dir, 'node.json'), JSON.stringify(node));
writeFileSync(join(dir, 'services.json'), list(Array.from({ length: SERVICES }, (_, i) => serviceObj(i))));
writeFileSync(join(dir, 'slices.json'), list(Array.from({ length: SERVICES }, (_, i) => sliceObj(i, 0))));

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
// BUNDLE=FILE adds a launcher (the image's bundle, measured against tsc's output).
const launchers: Record<string, string> = {
  sources: join(repo, 'src/cli.ts'),
  compiled: dist,
  ...(process.env.BUNDLE ? { bundle: resolve(process.env.BUNDLE) } : {}),
};
// An API server that refuses connections: `run` loads the Kubernetes source (the client library)
// and tries its first list; the time to that attempt's log line ("watch failed") is its start-up.
writeFileSync(
  join(dir, 'kubeconfig'),
  [
    'apiVersion: v1',
    'kind: Config',
    'clusters: [{name: c, cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}}]',
    'users: [{name: u, user: {token: bench}}]',
    'contexts: [{name: x, context: {cluster: c, user: u}}]',
    'current-context: x',
  ].join('\n') + '\n',
);
const commands = {
  help: ['help'],
  run: ['run', '--manifests', dir, '--node', 'node-0', '--dry-run', '--once'],
  kube: ['run', '--kubeconfig', join(dir, 'kubeconfig'), '--node', 'node-0', '--dry-run'],
} as const;
type Sample = { ms: number; rssKb: number };

/** `kube`: start to the first failed list's log line, and the peak RSS then (VmHWM); the daemon is stopped. */
function untilFirstList(launcher: string, args: readonly string[]): Promise<Sample> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, [...DAEMON_V8_FLAGS, launcher, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const limit = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (!/watch failed/.test(err) || p.exitCode !== null) return;
      const ms = performance.now() - t0;
      const hwm = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'));
      p.kill('SIGKILL');
      clearTimeout(limit);
      res({ ms, rssKb: Number(hwm?.[1] ?? 0) });
    });
    p.on('exit', (code, sig) => {
      clearTimeout(limit);
      rej(new Error(`${launcher} kube: exited (${code ?? sig}) before a list: ${err.slice(-2000)}`));
    });
  });
}
const samples: Record<string, Sample[]> = {};
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const [cmd, args] of Object.entries(commands)) {
      // Alternate which launcher goes first so drift on a shared host falls on both.
      const names = Object.keys(launchers);
      const order = r % 2 ? [...names].reverse() : names;
      for (const l of order) {
        if (cmd === 'kube') {
          (samples[`${cmd} ${l}`] ??= []).push(await untilFirstList(launchers[l]!, args));
          continue;
        }
        const res = spawnSync(
          '/usr/bin/time',
          ['-f', '%e %M', process.execPath, ...DAEMON_V8_FLAGS, launchers[l]!, ...args],
          { encoding: 'utf8', maxBuffer: 1 << 30 },
        );
        if (res.status !== 0) throw new Error(`${l} ${cmd} failed (${res.status}): ${res.stderr.slice(-2000)}`);
        const [s, kb] = res.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
        (samples[`${cmd} ${l}`] ??= []).push({ ms: s! * 1000, rssKb: kb! });
      }
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

process.stdout.write(
  `start-up benchmark: ${SERVICES} Services x 10 endpoints, ${ROUNDS} rounds, node ${process.version}, medians\n`,
);
for (const cmd of Object.keys(commands)) {
  const med = (l: string) => {
    const s = samples[`${cmd} ${l}`]!;
    return { ms: median(s.map((x) => x.ms)), rss: median(s.map((x) => x.rssKb)) };
  };
  const src = med('sources');
  const cols = Object.keys(launchers).map((l) => {
    const m = med(l);
    return `${l} ${m.ms.toFixed(0).padStart(6)} ms ${(m.rss / 1024).toFixed(0).padStart(4)} MB${l === 'sources' ? '' : ` (${(m.ms / src.ms).toFixed(2)}x, ${(m.rss / src.rss).toFixed(2)}x)`}`;
  });
  process.stdout.write(`  ${cmd.padEnd(5)} ${cols.join('   ')}\n`);
}
process.stdout.write('  (x, x): time and RSS relative to the sources\n');
