// `npm run bench:race`: kube-ipvs against kube-proxy v1.35.4 (ipvs and nftables modes) on the same kernel, one
// proxy at a time, watching the same real API server. On the host: an etcd and kube-apiserver (the test set-up's
// binaries), SERVICES Services x ENDPOINTS endpoints created through the API; then one lab VM boot runs
// perf/race.lab.ts, which measures each proxy in turn and prints the table. Needs root and the test set-up
// (`npm run test:setup`). SERVICES (default 1000), ENDPOINTS (10), CHANGES (20), CHURN_SECONDS (60; 300 from 10 000
// Services up, perf/race.lab.ts says why), CHURN_RATES
// (10: writes a second; "1,3,10" runs a churn window at each rate in turn, 0.1..100 each),
// QUIET_SECONDS (0; N: each proxy's CPU over N s with no writes, before the churn), SETTLE_SECONDS (240: the wait
// before a proxy that programs IPVS, after the last one's virtual servers were deleted), COLD_LIMIT (1800 s),
// PROXIES (default "kube-ipvs,kube-proxy-ipvs,kube-proxy-nftables"; also kube-ipvs-base and node-watch-floor, the
// CPU and memory of a Node process that only receives the changes: perf/watch-floor.ts), LAB_TIMEOUT (7200 s);
// RACE_CORE=1 lets kube-ipvs dump core in the VM (/lab-results: keep it with LAB_KEEP=DIR); RACE_PROFILE=1 keeps a CPU
// profile of kube-ipvs' whole run there (`node perf/profile.ts FILE`); RACE_PERF=1 a `perf record` of each proxy
// through each churn window (with the guest's kallsyms: `perf report -i F --kallsyms K`; with
// KIPVS_FLAGS=--perf-basic-prof,--interpreted-frames-native-stack kube-ipvs' JavaScript functions by name too, from
// the perf-PID.map kept beside, which perf reads from /tmp); MIN_SYNC_PERIOD=1s runs
// kube-ipvs with that ipvs.minSyncPeriod (its default is 0, as kube-proxy's ipvs mode's), SYNC_PERIOD=10s with that
// ipvs.syncPeriod (both builds: at 10 000 Services a periodic resync then runs through most of the churn);
// KIPVS_FLAGS=--a,--b=1 adds V8 flags to kube-ipvs', KIPVS_SYNC_PERIOD=10m and KIPVS_MIN_SYNC_PERIOD=1s set its
// ipvs.syncPeriod and ipvs.minSyncPeriod (kube-ipvs only, not kube-ipvs-base) and MALLOC_ARENA_MAX=N sets glibc's
// for it (experiments).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiServer, k8sBinaries } from '../test/support/apiserver.ts';
import { owned } from '../test/support/owned.ts';
import { imageBuilt, labPrepared } from '../test/support/setup-state.ts';
import { churnRates, churnSeconds, createRaceObjects, raceNodes, settleSeconds } from './race-measure.ts';
import { spawnSync } from 'node:child_process';

const SERVICES = Number(process.env.SERVICES ?? 1000);
const ENDPOINTS = Number(process.env.ENDPOINTS ?? 10);

const fail = (why: string): never => {
  process.stderr.write(`bench:race: ${why}\n`);
  process.exit(3);
};
if (!Number.isInteger(SERVICES) || SERVICES < 1 || SERVICES > 50_000) fail('SERVICES must be 1..50000');
if (!Number.isInteger(ENDPOINTS) || ENDPOINTS < 1 || ENDPOINTS > 100) fail('ENDPOINTS must be 1..100');
{
  const rates = churnRates(process.env.CHURN_RATES);
  if ('error' in rates) fail(rates.error);
  const seconds = churnSeconds(process.env.CHURN_SECONDS, 60);
  if (typeof seconds !== 'number') fail(seconds.error);
  const settle = settleSeconds(process.env.SETTLE_SECONDS);
  if (typeof settle !== 'number') fail(settle.error);
}
const NODES = ((n) => (typeof n === 'number' ? n : fail(n.error)))(raceNodes(process.env.RACE_NODES));
const prepared = labPrepared();
if ('why' in prepared) fail(`the lab is not prepared: ${prepared.why}`);
// kube-ipvs runs in the race as shipped: the image's node and /opt/kube-ipvs, copied into the VM's memory first
// (a node reads them from its own disk; the VM would read 2 000 small files through 9p).
const image = imageBuilt();
if (!('env' in image)) fail(`kube-ipvs runs in the race from its image: ${image.why}`);
const rootfs = (image as { env: Record<string, string> }).env.IMAGE_ROOTFS!;
const built = k8sBinaries();
if (!('bin' in built)) fail(`no kube-apiserver/kube-proxy: ${built.why}`);
const bin = (built as { bin: string }).bin;

const api = new ApiServer(bin);
await api.start();
const share = mkdtempSync(join(tmpdir(), 'kipvs-race-'));
try {
  const t0 = performance.now();
  await createRaceObjects((m, path, body) => api.request(m, path, body), SERVICES, ENDPOINTS, NODES);
  process.stderr.write(
    `bench:race: ${SERVICES} Services x ${ENDPOINTS} endpoints created through the API in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
  );
  writeFileSync(
    join(share, 'kubeconfig'),
    readFileSync(api.kubeconfig(), 'utf8').replace(api.url, 'https://10.0.2.100:6443'),
  );
  writeFileSync(join(share, 'k8s-bin'), bin);
  writeFileSync(join(share, 'image-rootfs'), rootfs);
  // KIPVS_BASE=DIR: another build's /opt/kube-ipvs (an image rootfs's), raced as PROXIES' kube-ipvs-base in the same
  // boot: an A/B of two builds on one VM (runs are minutes apart and the host is shared: compare within a run).
  if (process.env.KIPVS_BASE) {
    const base = process.env.KIPVS_BASE;
    if (!existsSync(join(base, 'dist/cli.js'))) fail(`KIPVS_BASE=${base}: no dist/cli.js there`);
    writeFileSync(join(share, 'kipvs-base'), base);
  }
  const env = {
    ...process.env,
    LAB_SHARE: share,
    LAB_HOST_PORT: String(api.apiPort),
    LAB_TIMEOUT: process.env.LAB_TIMEOUT ?? '7200',
  };
  const guestEnv = [
    'SERVICES',
    'ENDPOINTS',
    'CHANGES',
    'CHURN_SECONDS',
    'CHURN_RATES',
    'QUIET_SECONDS',
    'SYNC_PERIOD',
    'SETTLE_SECONDS',
    'COLD_LIMIT',
    'PROXIES',
    'RACE_CORE',
    'RACE_PROFILE',
    'RACE_PERF',
    'MIN_SYNC_PERIOD',
    'KIPVS_FLAGS',
    'KIPVS_SYNC_PERIOD',
    'KIPVS_MIN_SYNC_PERIOD',
    'MALLOC_ARENA_MAX',
    'RACE_NODES',
  ]
    .filter((k) => process.env[k] !== undefined)
    .map(
      (k) =>
        `${k}=${Number.isNaN(Number(process.env[k])) ? (process.env[k] ?? '').replace(/[^a-z0-9,.=-]/g, '') : Number(process.env[k])}`,
    )
    .join(' ');
  const [cmd, args] = owned('bash', [
    'test/lab/boot.sh',
    `SERVICES=${SERVICES} ENDPOINTS=${ENDPOINTS} ${guestEnv} node --liftoff-only perf/race.lab.ts`,
  ]);
  const r = spawnSync(cmd, args, { stdio: 'inherit', env });
  process.exitCode = r.status ?? 1;
} finally {
  await api.stop();
  rmSync(share, { recursive: true, force: true });
}
