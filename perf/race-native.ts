// `npm run bench:race:native`: the race's churn without emulation. On this host's own kernel, one proxy at a time
// watches the same real API server (the test set-up's etcd and kube-apiserver) holding SERVICES Services x ENDPOINTS
// endpoints; per proxy: cold start, then CHURN_SECONDS of 10 EndpointSlice writes a second (one endpoint replaced,
// as in the lab's race), and over that window its CPU seconds (the process; its child processes apart), the changes
// it programmed and their latency (its own histogram, kube-proxy's metric, from the trigger-time annotation the writes
// carry), and its resident memory after. Prints one table with ratios to kube-ipvs.
//
// Why beside the lab's race (perf/race.ts): under emulation kube-proxy cannot keep up with the churn (one `nft` run
// of its takes tens of seconds there, and it programmed 1 of 600 changes in the lab), so its process's CPU in the lab
// is that of a proxy waiting for its child. Here every proxy programs the churn, and the process CPU compares the
// same work.
//
// What differs from a node, and is the same for each proxy: kube-proxy runs in a network namespace of its own (its
// nftables table and sysctls stay there) and reaches the API server through a relay in this process; kube-ipvs runs
// with --dry-run, because this kernel has no IPVS: its IPVS and dummy interface are the in-memory ones and its
// iptables-restore and ipset work is recorded, not run (kernel work the lab's profile put at about a tenth of its
// churn CPU: perf/RESULTS.md). kube-proxy's `ipvs` mode needs IPVS and is not in this race.
//
// Needs root, `nft` and the test set-up (`npm run test:setup`). Env: SERVICES (1000), ENDPOINTS (10),
// CHURN_SECONDS (60), CHURN_RATES (10 writes a second; "1,3,10": a churn window at each rate in turn), COLD_LIMIT
// (600 s), PROXIES (default "kube-ipvs,kube-proxy-nftables,node-watch-floor"; also kube-proxy-iptables;
// node-watch-floor is perf/watch-floor.ts: a Node process that only receives the changes). A proxy that does not have
// every Service within COLD_LIMIT is a row of n/a (exit status 1); the others still run.
// RACE_KEEP=DIR keeps each proxy's log there; KIPVS_SYNC_PERIOD=10m sets kube-ipvs' ipvs.syncPeriod
// and KIPVS_FLAGS=--a,--b=1 adds node flags to its (experiments).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, cpSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DAEMON_V8_FLAGS } from '../src/util/v8-flags.ts';
import { ApiServer, k8sBinaries } from '../test/support/apiserver.ts';
import {
  type ChurnRun,
  churnRows,
  churnSeconds,
  churnRates,
  churnWindow,
  createRaceObjects,
  raceChange,
  raceNodes,
  rssMB,
} from './race-measure.ts';

const SERVICES = Number(process.env.SERVICES ?? 1000);
const ENDPOINTS = Number(process.env.ENDPOINTS ?? 10);
const COLD_LIMIT = Number(process.env.COLD_LIMIT ?? 600);
const KNOWN = ['kube-ipvs', 'kube-proxy-nftables', 'kube-proxy-iptables', 'node-watch-floor'];
/** KIPVS_FLAGS=--a,--b=1: more node flags for kube-ipvs (e.g. --cpu-prof,--cpu-prof-dir=DIR). */
const KIPVS_FLAGS = (process.env.KIPVS_FLAGS ?? '')
  .split(',')
  .filter((f) => /^--[a-z0-9-]+(=[A-Za-z0-9_./-]*)?$/.test(f));
const PROXIES = (process.env.PROXIES ?? 'kube-ipvs,kube-proxy-nftables,node-watch-floor').split(',');

const fail = (why: string): never => {
  process.stderr.write(`bench:race:native: ${why}\n`);
  process.exit(3);
};
if (!Number.isInteger(SERVICES) || SERVICES < 1 || SERVICES > 50_000) fail('SERVICES must be 1..50000');
if (!Number.isInteger(ENDPOINTS) || ENDPOINTS < 1 || ENDPOINTS > 100) fail('ENDPOINTS must be 1..100');
const CHURN_SECONDS = ((s) => (typeof s === 'number' ? s : fail(s.error)))(churnSeconds(process.env.CHURN_SECONDS, 60));
if (!Number.isInteger(COLD_LIMIT) || COLD_LIMIT < 1) fail('COLD_LIMIT must be a whole number of seconds');
/** CHURN_RATES=1,10: a churn window at each rate in turn (writes a second; 10 when unset). */
const CHURN_RATES = ((r) => ('error' in r ? fail(r.error) : r))(churnRates(process.env.CHURN_RATES));
/** RACE_NODES=50: the endpoints spread over that many nodes (race-measure.ts raceNodeOf); 1 when unset. */
const RACE_NODES = ((n) => (typeof n === 'number' ? n : fail(n.error)))(raceNodes(process.env.RACE_NODES));
for (const p of PROXIES)
  if (!KNOWN.includes(p)) fail(`unknown proxy ${JSON.stringify(p)} (known: ${KNOWN.join(', ')})`);
if (process.getuid?.() !== 0) fail('needs root: kube-proxy programs netfilter in a network namespace');
const tools = PROXIES.some((p) => p.startsWith('kube-proxy-')) ? ['ip', 'nft', 'iptables-save'] : [];
for (const tool of tools)
  if (spawnSync('sh', ['-c', 'command -v "$1"', 'sh', tool]).status !== 0) fail(`${tool} is not installed`);
const built = k8sBinaries();
if (!('bin' in built)) fail(`no kube-apiserver/kube-proxy: ${built.why} (npm run test:setup)`);
const bin = (built as { bin: string }).bin;

const log = (s: string) => process.stderr.write(`race-native: ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A command's output; its failure is an error that says what ran. */
const run = (cmd: string, args: string[]): string => {
  // A listing of 10 000 Services' rules is tens of MB (spawnSync's default bound is 1 MiB).
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 512 * 1024 * 1024 });
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message || `exit ${r.status}`}`);
  return r.stdout;
};

// kube-proxy's network namespace: a veth pair to it, the API server relayed on the host's end.
const NETNS = `kipvs-race-${process.pid}`;
const VETH = `kr${process.pid % 100_000}`;
const HOST_IP = '10.251.77.1';
const NS_IP = '10.251.77.2';
const inNs = (cmd: string, args: string[]) => run('ip', ['netns', 'exec', NETNS, cmd, ...args]);

interface Result {
  proxy: string;
  coldS: number;
  /** One window per rate of CHURN_RATES, in order (fewer when the run stopped short). */
  churn: ChurnRun[];
  rssMB: number;
  /** Why this proxy's run stopped short. */
  failed?: string;
}
const NO_RESULT = { coldS: NaN, churn: [], rssMB: NaN };

const api = new ApiServer(bin);
const dir = mkdtempSync(join(tmpdir(), 'kipvs-race-native-'));
let relay: Server | null = null;
let proxyProcess: ChildProcess | null = null;
let fresh = 0;
/** A new address for endpoint 0 of a Service (the change a rollout makes). */
const freshIP = () => {
  fresh++;
  return `10.250.${(fresh >> 8) & 255}.${fresh & 255}`;
};

async function change(i: number): Promise<void> {
  const { path, body } = raceChange(ENDPOINTS, i, freshIP(), RACE_NODES);
  const r = await api.request('PATCH', path, body, undefined, 'application/merge-patch+json');
  if (r.status !== 200) throw new Error(`PATCH slice ${i}: ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`);
}

function namespaceUp(): void {
  run('ip', ['netns', 'add', NETNS]);
  run('ip', ['link', 'add', `${VETH}h`, 'type', 'veth', 'peer', 'name', `${VETH}n`]);
  run('ip', ['link', 'set', `${VETH}n`, 'netns', NETNS]);
  run('ip', ['addr', 'add', `${HOST_IP}/30`, 'dev', `${VETH}h`]);
  run('ip', ['link', 'set', `${VETH}h`, 'up']);
  inNs('ip', ['addr', 'add', `${NS_IP}/30`, 'dev', `${VETH}n`]);
  inNs('ip', ['link', 'set', `${VETH}n`, 'up']);
  inNs('ip', ['link', 'set', 'lo', 'up']);
}

function namespaceDown(): void {
  // The host end first: deleting it takes its peer with it at once. Deleting the namespace alone frees its devices
  // only when the kernel gets round to tearing it down, which after kube-proxy's 10 000 Services' rules was too late
  // for the next kube-proxy's `ip link add` of the same name (RTNETLINK: File exists).
  spawnSync('ip', ['link', 'del', `${VETH}h`]);
  spawnSync('ip', ['netns', 'del', NETNS]);
}

/** The proxy started, with where its metrics are and how to tell it has every Service. */
function start(proxy: string, out: number, kubeconfig: string, nsKubeconfig: string) {
  if (proxy.startsWith('kube-proxy-')) {
    const mode = proxy.slice('kube-proxy-'.length);
    const cfg = join(dir, `${proxy}.yaml`);
    // JSON is YAML: kube-proxy reads it as its config file.
    writeFileSync(
      cfg,
      JSON.stringify({
        apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
        kind: 'KubeProxyConfiguration',
        mode,
        hostnameOverride: 'race-node',
        clientConnection: { kubeconfig: nsKubeconfig },
        clusterCIDR: '10.244.0.0/16',
        conntrack: { maxPerCore: 0 },
        metricsBindAddress: `${NS_IP}:10249`,
        healthzBindAddress: `${NS_IP}:10256`,
      }),
    );
    const count =
      mode === 'nftables'
        ? () => (inNs('nft', ['list', 'map', 'ip', 'kube-proxy', 'service-ips']).match(/goto service-/g) ?? []).length
        : () => (inNs('iptables-save', ['-t', 'nat']).match(/^-A KUBE-SERVICES .* -j KUBE-SVC-/gm) ?? []).length;
    return {
      // `ip netns exec` execs kube-proxy: the pid is kube-proxy's.
      child: spawn('ip', ['netns', 'exec', NETNS, join(bin, 'kube-proxy'), '--config', cfg, '--v=2'], {
        stdio: ['ignore', out, out],
      }),
      metrics: `http://${NS_IP}:10249/metrics`,
      synced: () => {
        try {
          return count() >= SERVICES;
        } catch {
          return false; // its table is not there yet
        }
      },
    };
  }
  const logFile = join(dir, `${proxy}.log`);
  // kube-ipvs' config as the lab's race gives it: kube-proxy's clusterCIDR; KIPVS_SYNC_PERIOD=10m sets its
  // ipvs.syncPeriod (an experiment: without the periodic resync in the window).
  const cfg = join(dir, 'kube-ipvs.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      apiVersion: 'kube-ipvs.io/v1alpha1',
      kind: 'KubeIPVSConfiguration',
      clusterCIDR: '10.244.0.0/16',
      ...(process.env.KIPVS_SYNC_PERIOD ? { ipvs: { syncPeriod: process.env.KIPVS_SYNC_PERIOD } } : {}),
    }),
  );
  const args =
    proxy === 'node-watch-floor'
      ? ['perf/watch-floor.ts', kubeconfig, String(SERVICES)]
      : ['src/cli.ts', 'run', '--kubeconfig', kubeconfig, '--config', cfg, '--dry-run', '--node', 'race-node'];
  return {
    child: spawn(process.execPath, [...DAEMON_V8_FLAGS, ...(proxy === 'kube-ipvs' ? KIPVS_FLAGS : []), ...args], {
      stdio: ['ignore', out, out],
      env: { ...process.env, NODE_ENV: 'production' },
    }),
    metrics: proxy === 'kube-ipvs' ? 'http://127.0.0.1:10249/metrics' : null,
    synced: () => {
      const text = readFileSync(logFile, 'utf8');
      if (proxy === 'node-watch-floor') return /^synced /m.test(text);
      // The first full sync with every Service (and the API server's own `kubernetes` Service).
      return [...text.matchAll(/sync done full=true services=([0-9]+)/g)].some((m) => Number(m[1]) >= SERVICES);
    },
  };
}

/** The API server, to kube-proxy's namespace: a relay on the veth's host end (it exists while the namespace does). */
async function relayUp(): Promise<void> {
  relay = createServer((c) => {
    const u = connect(api.apiPort, '127.0.0.1');
    c.pipe(u);
    u.pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((res, rej) => relay!.once('error', rej).listen(6443, HOST_IP, res));
}

async function race(proxy: string, kubeconfig: string, nsKubeconfig: string): Promise<Result> {
  const logFile = join(dir, `${proxy}.log`);
  const out = openSync(logFile, 'w');
  try {
    if (proxy.startsWith('kube-proxy-')) {
      namespaceUp();
      await relayUp();
    }
    const t0 = performance.now();
    const p = start(proxy, out, kubeconfig, nsKubeconfig);
    proxyProcess = p.child;
    const pid = p.child.pid!;
    const exited = () => p.child.exitCode !== null || p.child.signalCode !== null;
    const died = () => new Error(`${proxy} exited:\n${readFileSync(logFile, 'utf8').slice(-3000)}`);
    while (!p.synced()) {
      if (exited()) throw died();
      if (performance.now() - t0 > COLD_LIMIT * 1000) throw new Error(`${proxy}: not synced within ${COLD_LIMIT} s`);
      await sleep(200);
    }
    const coldS = (performance.now() - t0) / 1000;
    log(`${proxy}: every Service in after ${coldS.toFixed(1)} s`);
    // 20 changes 300 ms apart (code run for the first time runs before the window), then 5 s quiet.
    for (let k = 0; k < 20; k++) {
      await change((k * 7919) % SERVICES);
      await sleep(300);
    }
    await sleep(5000);
    const churn: ChurnRun[] = [];
    let written = 0;
    for (const rate of CHURN_RATES) {
      const run = await churnWindow({
        pid,
        rate,
        seconds: CHURN_SECONDS,
        metrics: p.metrics,
        write: (k) => change((20 * 7919 + (written + k) * 104_729) % SERVICES),
        alive: () => {
          if (exited()) throw died();
        },
      });
      written += run.writes;
      churn.push(run);
      log(
        `${proxy}: churn ${run.writes} writes at ${rate}/s: ${run.cpuS.toFixed(2)} CPU s (children ${run.childCpuS.toFixed(2)} s), ` +
          `${run.programmed} programmed`,
      );
    }
    const result: Result = { proxy, coldS, churn, rssMB: rssMB(pid) };
    log(`${proxy}: RSS after the churn ${result.rssMB.toFixed(0)} MB`);
    return result;
  } finally {
    const child = proxyProcess;
    proxyProcess = null;
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    }
    closeSync(out);
    relay?.close();
    relay = null;
    if (proxy.startsWith('kube-proxy-')) namespaceDown();
  }
}

function table(results: Result[]): string {
  const base = results.find((r) => r.proxy === 'kube-ipvs');
  const fmt = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
  const ratio = (v: number, b: number | undefined) =>
    b !== undefined && Number.isFinite(v) && Number.isFinite(b) && b > 0 ? ` (${(v / b).toFixed(1)}x)` : '';
  const row = (label: string, get: (r: Result) => number, digits: number) =>
    `| ${label} | ${results.map((r) => `${fmt(get(r), digits)}${r === base ? '' : ratio(get(r), base && get(base))}`).join(' | ')} |`;
  return [
    `| ${SERVICES} Services x ${ENDPOINTS} endpoints, natively | ${results.map((r) => r.proxy).join(' | ')} |`,
    `| --- |${results.map(() => ' --- |').join('')}`,
    row('cold start to every Service programmed (s)', (r) => r.coldS, 1),
    ...churnRows(CHURN_RATES, CHURN_SECONDS, 2, (head, at) => [
      { label: `${head}: CPU seconds of its child processes`, get: at((c) => c.childCpuS), digits: 2 },
      { label: `${head}: process CPU per write (ms)`, get: at((c) => (c.cpuS / c.writes) * 1000), digits: 2 },
    ]).map((x) => row(x.label, x.get, x.digits)),
    row('resident memory after the churn (MB)', (r) => r.rssMB, 0),
    ...results.filter((r) => r.failed).map((r) => `\n${r.proxy}: ${r.failed}`),
  ].join('\n');
}

const cleanup = () => {
  proxyProcess?.kill('SIGKILL');
  relay?.close();
  namespaceDown();
};
process.once('SIGINT', () => {
  cleanup();
  process.exit(130);
});
process.once('SIGTERM', () => {
  cleanup();
  process.exit(143);
});
try {
  await api.start();
  const t0 = performance.now();
  await createRaceObjects((m, path, body) => api.request(m, path, body), SERVICES, ENDPOINTS, RACE_NODES);
  log(`${SERVICES} Services x ${ENDPOINTS} endpoints created in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const kubeconfig = api.kubeconfig();
  const nsKubeconfig = join(dir, 'kubeconfig-netns');
  writeFileSync(nsKubeconfig, readFileSync(kubeconfig, 'utf8').replace(api.url, `https://${HOST_IP}:6443`));
  const results: Result[] = [];
  for (const proxy of PROXIES)
    try {
      results.push(await race(proxy, kubeconfig, nsKubeconfig));
    } catch (e) {
      // One proxy that never synced (or died) is a row of n/a, and the next one still runs.
      log(`${proxy}: ${(e as Error).message}`);
      process.exitCode = 1;
      results.push({ proxy, failed: (e as Error).message.split('\n')[0]!, ...NO_RESULT });
    }
  process.stdout.write(`${table(results)}\n`);
} catch (e) {
  log(String((e as Error).stack ?? e));
  process.exitCode = 1;
} finally {
  cleanup();
  await api.stop();
  // RACE_KEEP=DIR: each proxy's log (and kube-proxy's config) kept there.
  if (process.env.RACE_KEEP) cpSync(dir, process.env.RACE_KEEP, { recursive: true });
  rmSync(dir, { recursive: true, force: true });
}
