// Keeps the race's Node floor (perf/watch-floor.ts, `node-watch-floor` in bench:race) runnable against a real API
// server: it must see every EndpointSlice of the watch's initial events, and refuse what it cannot use.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { DAEMON_V8_FLAGS } from '../src/util/v8-flags.ts';
import { ApiServer, k8sBinaries } from './support/apiserver.ts';

t.setTimeout(3 * 60_000);

/** Runs the floor until `until` matches its stdout, or it exits, or `ms` pass; it is killed either way. */
async function runFloor(args: string[], until: RegExp, ms = 30_000) {
  const p: ChildProcess = spawn(process.execPath, [...DAEMON_V8_FLAGS, 'perf/watch-floor.ts', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((res) => {
    const timer = setTimeout(() => res(null), ms);
    p.stdout!.on('data', () => {
      if (until.test(stdout)) {
        clearTimeout(timer);
        res(null);
      }
    });
    p.once('exit', (c) => {
      clearTimeout(timer);
      res(c);
    });
  });
  if (p.exitCode === null && p.signalCode === null) {
    p.kill('SIGKILL');
    await new Promise((r) => p.once('exit', r));
  }
  return { code, stdout, stderr };
}

t.test('refuses what it cannot use', async (t) => {
  const usage = await runFloor([], /never/);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /usage: watch-floor\.ts KUBECONFIG EXPECTED/);
  const dir = mkdtempSync(join(tmpdir(), 'kipvs-floor-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bad = join(dir, 'kubeconfig');
  writeFileSync(bad, 'clusters: [{cluster: {server: "https://127.0.0.1:1"}}]\n');
  const noToken = await runFloor([bad, '3'], /never/);
  t.equal(noToken.code, 2);
  t.match(noToken.stderr, /no server or token/);
});

const built = k8sBinaries();
if ('why' in built) {
  t.test('sees every EndpointSlice of a real API server', { skip: `no API server: ${built.why}` }, () => {});
} else {
  t.test('sees every EndpointSlice of a real API server', async (t) => {
    const api = new ApiServer(built.bin);
    t.teardown(() => api.stop());
    await api.start();
    for (let i = 0; i < 3; i++) {
      const r = await api.request('POST', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', {
        metadata: { name: `floor-${i}`, labels: { 'kubernetes.io/service-name': `floor-${i}` } },
        addressType: 'IPv4',
        ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
        endpoints: [{ addresses: [`10.1.0.${i + 1}`], conditions: { ready: true } }],
      });
      t.equal(r.status, 201, `slice ${i} created`);
    }
    const all = await runFloor([api.kubeconfig(), '3'], /^synced 3$/m);
    t.match(all.stdout, /^synced 3$/m, all.stderr);
    t.equal(all.code, null, 'still watching when it had them all');
    // One more expected than there are: it never says it has them.
    const short = await runFloor([api.kubeconfig(), '4'], /^synced/m, 5_000);
    t.notMatch(short.stdout, /synced/);
  });
}
