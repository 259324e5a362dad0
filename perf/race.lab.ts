// Inside the lab VM (started by perf/race.ts): each proxy alone on the node in turn, from a clean kernel, watching
// the host's API server that holds SERVICES Services x ENDPOINTS endpoints. Per proxy:
//   1. cold start: process start to every Service's endpoints in the kernel (polled);
//   2. CHANGES EndpointSlice writes (one endpoint replaced), 3 s apart: API answer to the kernel showing it;
//   3. churn: 10 writes a second (or each rate of CHURN_RATES in turn) for CHURN_SECONDS: the proxy's CPU seconds (and
//      in each whole minute),
//      and its own programming-latency histogram (kube-proxy's metric, kube-ipvs' too: from the trigger-time
//      annotation the writes carry);
//   4. resident memory after the churn.
// Both run with their default periodic resync (30 s), as in production. Prints one table, with ratios to kube-ipvs.
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  readFileSync,
  writeFileSync,
  mkdtempSync,
  openSync,
  closeSync,
  statSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { NetlinkIpvs } from '../src/dataplane/ipvs/client.ts';
import { labApi, K8S_BIN_FILE, KUBECONFIG } from '../test/lab/support/api.ts';
import { resetNode } from '../test/lab/support/hygiene.ts';
import { LAB_V8_FLAGS, procEnv } from '../test/lab/support/node.ts';
import {
  childCpu,
  type ChurnRun,
  churnRows,
  churnRates,
  churnSeconds,
  churnWindow,
  cpuSeconds,
  pct,
  RACE_NAMESPACES,
  raceChange,
  raceLocalEndpoints,
  raceNodes,
  rssMB,
  rssParts,
  settleSeconds,
  threadCpu,
  threadDelta,
} from './race-measure.ts';

const SERVICES = Number(process.env.SERVICES ?? 1000);
const ENDPOINTS = Number(process.env.ENDPOINTS ?? 10);
const CHANGES = Number(process.env.CHANGES ?? 20);
/**
 * CHURN_SECONDS: 60 when unset, 300 from 10 000 Services up. There kube-proxy's sync lasts minutes under emulation and
 * what its process spends in one minute depends on where in that sync the minute falls (3.2 to 26.2 s for `nftables`'
 * in one boot and the next, perf/RESULTS.md); five minutes hold more of its cycle.
 */
const CHURN_SECONDS = (() => {
  const s = churnSeconds(process.env.CHURN_SECONDS, SERVICES >= 10_000 ? 300 : 60);
  if (typeof s !== 'number') throw new Error(s.error);
  return s;
})();
/** CHURN_RATES=1,10: a churn window at each rate in turn (writes a second; 10 when unset). */
const CHURN_RATES = (() => {
  const r = churnRates(process.env.CHURN_RATES);
  if ('error' in r) throw new Error(r.error);
  return r;
})();
/** RACE_NODES=50: the endpoints spread over that many nodes, this one holding 1 in 50 (race-measure.ts raceNodeOf). */
const RACE_NODES = (() => {
  const n = raceNodes(process.env.RACE_NODES);
  if (typeof n !== 'number') throw new Error(n.error);
  return n;
})();
/** The hairpin entries a proxy holds once every Service is in: one per endpoint on this node. */
const LOCAL_ENDPOINTS = raceLocalEndpoints(SERVICES, ENDPOINTS, RACE_NODES);
/** QUIET_SECONDS=60: before the churn, the proxy's CPU over that long with no writes (what it spends idle). */
const QUIET_SECONDS = Number(process.env.QUIET_SECONDS ?? 0);
/**
 * SETTLE_SECONDS (240): how long after a proxy's virtual servers were deleted the next proxy that programs IPVS
 * starts (race-measure.ts settleSeconds). The kernel keeps
 * a deleted destination in a list of its own (ip_vs_ctl.c's dest trash) until its expiry timer, every 60 s, finds
 * it idle for 120 s: 3 to 4 minutes. Each destination added meanwhile is looked for in that list, entry by entry,
 * first: the next proxy's cold start pays for the last one's 100 000 destinations (2.1x slower at 10 000 Services
 * right after kube-proxy `ipvs`' flush, perf/RESULTS.md).
 */
const SETTLE_SECONDS = (() => {
  const s = settleSeconds(process.env.SETTLE_SECONDS);
  if (typeof s !== 'number') throw new Error(s.error);
  return s;
})();
/** When the last proxy's IPVS virtual servers were deleted (performance.now()), if any were. */
const ipvsDeleted = { at: -Infinity };
const COLD_LIMIT = Number(process.env.COLD_LIMIT ?? 1800);
const PROXIES = (process.env.PROXIES ?? 'kube-ipvs,kube-proxy-ipvs,kube-proxy-nftables').split(',');
/** Not a proxy: the CPU a Node process spends receiving the same changes and doing nothing (perf/watch-floor.ts). */
const FLOOR = 'node-watch-floor';
/** Where each proxy serves its metrics in the race (kube-proxy's default, and kube-ipvs' config here). */
const METRICS = 'http://127.0.0.1:10249/metrics';
const maybeApi = labApi({ keepAlive: true });
if (!maybeApi) throw new Error('no API server: run through perf/race.ts');
const api = maybeApi;
/**
 * kube-ipvs as shipped: the image's node binary and /opt/kube-ipvs (perf/race.ts checks the image is built), copied
 * into this VM's memory as a node has them on its disk, run as the image's entrypoint runs them: the V8 flags on
 * its CLI's first line, NODE_ENV=production, no compile cache.
 */
const app = mkdtempSync('/tmp/kipvs-race-app-');
{
  const rootfs = readFileSync('/lab-results/image-rootfs', 'utf8').trim();
  const t = performance.now();
  execFileSync('cp', ['-a', join(rootfs, 'opt/kube-ipvs'), join(rootfs, 'usr/bin/node'), app]);
  process.stderr.write(
    `race: the image's kube-ipvs copied into memory in ${((performance.now() - t) / 1000).toFixed(1)} s\n`,
  );
}
const appCli = join(app, 'kube-ipvs/dist/cli.js');
/** How the image's entrypoint runs a CLI: the V8 flags on its first line. */
const cliArgs = (cli: string) => [
  ...readFileSync(cli, 'utf8').split('\n')[0]!.split(' ').slice(3),
  ...LAB_V8_FLAGS,
  cli,
];
const CLI = cliArgs(appCli);
/** kube-ipvs-base: another build's /opt/kube-ipvs (KIPVS_BASE on the host), run by the same node binary. */
const baseCli = (() => {
  if (!PROXIES.includes('kube-ipvs-base')) return null;
  const from = readFileSync('/lab-results/kipvs-base', 'utf8').trim();
  execFileSync('cp', ['-a', from, join(app, 'kube-ipvs-base')]);
  return cliArgs(join(app, 'kube-ipvs-base/dist/cli.js'));
})();
const appNode = join(app, 'node');
const appEnv: NodeJS.ProcessEnv = { ...procEnv, NODE_ENV: 'production' };
delete appEnv.NODE_COMPILE_CACHE;
const kubeProxyBin = join(readFileSync(K8S_BIN_FILE, 'utf8').trim(), 'kube-proxy');
const dir = mkdtempSync('/tmp/kipvs-race-');
const log = (s: string) => process.stderr.write(`race: ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let fresh = 0;
/** A new address for endpoint 0 of a Service (the change a rollout makes). */
const freshIP = () => {
  fresh++;
  return `10.250.${(fresh >> 8) & 255}.${fresh & 255}`;
};

// The Services' ClusterIPs, by "namespace/name".
const vips = new Map<string, string>();
{
  const r = await api('GET', '/api/v1/services');
  for (const s of (r.json.items ?? []) as {
    metadata: { namespace: string; name: string };
    spec: { clusterIP: string };
  }[])
    vips.set(`${s.metadata.namespace}/${s.metadata.name}`, s.spec.clusterIP);
}
const key = (i: number) => `race-${i % RACE_NAMESPACES}/svc-${i}`;

/** Replaces endpoint 0 of Service i with `address`, stamped with the trigger time the proxies' latency metric reads. */
async function change(i: number, address: string): Promise<void> {
  const { path, body } = raceChange(ENDPOINTS, i, address, RACE_NODES);
  const r = await api('PATCH', path, body, 'application/merge-patch+json');
  if (r.status !== 200) throw new Error(`PATCH slice ${i}: ${r.status} ${r.text.slice(0, 300)}`);
}

interface Kernel {
  /** Services with all their endpoints in the kernel. */
  complete(): Promise<number>;
  /**
   * Whether the rest of what every Service needs is in too. kube-proxy's ipvs mode fills its ipsets after the
   * virtual servers, one `ipset add` process per entry (its KUBE-LOOP-BACK set has one per endpoint on this node):
   * until then traffic from outside the cluster to a ClusterIP is not masqueraded and an endpoint reaching itself
   * fails.
   */
  rules(): Promise<boolean>;
  /** Whether `address` serves Service i. */
  has(i: number, address: string): Promise<boolean>;
  /** Writes what the kernel holds for changes never seen to `file`. */
  dump(file: string, pending: [number, { address: string }][]): void;
  close(): void;
}

/** Entries per ipset (`ipset list -t`). */
function ipsetCounts(): Map<string, number> {
  const out = new Map<string, number>();
  let name = '';
  for (const line of execFileSync('ipset', ['list', '-t'], { encoding: 'utf8' }).split('\n')) {
    if (line.startsWith('Name: ')) name = line.slice(6).trim();
    else if (line.startsWith('Number of entries: ')) out.set(name, Number(line.slice(19)));
  }
  return out;
}

/** `prefix`: the proxy's ipset names (KIPVS or KUBE): its ClusterIP set and its per-endpoint hairpin set. */
async function ipvsKernel(prefix: string): Promise<Kernel> {
  const ipvs = await NetlinkIpvs.open({ timeoutMs: 120_000 });
  // A Service once complete is not dumped again (10 000 destination dumps a poll would slow the proxy measured).
  const done = new Set<string>();
  return {
    async complete() {
      for (const s of await ipvs.services()) {
        if (s.port !== 80 || s.fwmark !== undefined || done.has(s.address)) continue;
        const d = await ipvs.destinations(s);
        if (d.filter((x) => x.weight > 0).length >= ENDPOINTS) done.add(s.address);
      }
      return done.size;
    },
    async rules() {
      const counts = ipsetCounts();
      return (
        (counts.get(`${prefix}-CLUSTER-IP`) ?? 0) >= SERVICES &&
        (counts.get(`${prefix}-LOOP-BACK`) ?? 0) >= LOCAL_ENDPOINTS
      );
    },
    async has(i, address) {
      const vip = vips.get(key(i))!;
      const d = await ipvs.destinations({ family: 4, protocol: 'TCP', address: vip, port: 80 }).catch(() => []);
      return d.some((x) => x.address === address && x.weight > 0);
    },
    dump(file, pending) {
      const lines = pending.map(([i, c]) => `${key(i)} ${vips.get(key(i))} wanted ${c.address}`);
      writeFileSync(
        file,
        `${lines.join('\n')}\n${execFileSync('ipvsadm', ['-Ln'], { encoding: 'utf8', maxBuffer: 1 << 28 })}`,
      );
    },
    close: () => ipvs.close(),
  };
}

/**
 * node-watch-floor (perf/watch-floor.ts) holds nothing in the kernel: "complete" once it has had every slice of the
 * watch's initial events (its `synced N` line), and no change is ever seen there (the race skips that phase for it).
 */
function floorKernel(log: string): Kernel {
  return {
    complete: async () => Number(/^synced (\d+)$/m.exec(readFileSync(log, 'utf8'))?.[1] ?? 0),
    rules: async () => true,
    has: async () => false,
    dump: () => {},
    close: () => {},
  };
}

function nftKernel(): Kernel {
  // Asynchronous, so that the change phase's writer keeps its 3 s while a listing runs (a minute at 10 000 Services).
  // A failed run (the table not made yet) reads as empty.
  const nft = (...args: string[]) =>
    new Promise<string>((resolve) =>
      execFile('nft', args, { encoding: 'utf8', maxBuffer: 1 << 28 }, (err, out) => resolve(err ? '' : out)),
    );
  let listed = { at: -Infinity, text: '' };
  return {
    async complete() {
      return ((await nft('list', 'map', 'ip', 'kube-proxy', 'service-ips')).match(/goto service-/g) ?? []).length;
    },
    // One transaction: the map is filled with everything else.
    rules: async () => true,
    async has(i, address) {
      // Each endpoint has a chain named for its Service and address ("endpoint-HASH-ns/name/tcp/http__ADDRESS/PORT"),
      // made in the same transaction that points the Service's chain at it; a changed endpoint's address is new. So
      // the chains' names tell, and `nft list chains` reads names alone: `nft list chain` of the Service's chain
      // (what this looked at before) loads every rule and set of the table first, a minute at 10 000 Services under
      // emulation. One listing serves every change pending in a round of looks: it is fresh for 250 ms after it
      // ended (at 1 000 Services one takes seconds; timed from its start, each look of a round listed again).
      if (performance.now() - listed.at > 250) {
        const text = await nft('list', 'chains', 'ip');
        listed = { at: performance.now(), text };
      }
      return listed.text.includes(`-${key(i)}/tcp/http__${address}/`);
    },
    dump(file, pending) {
      // From the last listing of chain names, not `nft list table`: at 10 000 Services that listing loads and prints
      // every rule and set under emulation, which held the race's churn back by minutes once.
      const names = listed.text.split('\n').map((l) => l.trim());
      const lines = pending.map(([i, c]) => {
        const have = names.filter((l) => l.includes(`-${key(i)}/tcp/http__`));
        return `${key(i)} wanted ${c.address}; its endpoint chains in the last listing: ${have.join(' ') || 'none'}`;
      });
      writeFileSync(file, `${lines.join('\n')}\n`);
    },
    close: () => {},
  };
}

/** Each proxy's output goes to /lab-results/race-PROXY.log (kept with LAB_KEEP=DIR). */
const logFile = (proxy: string) => `/lab-results/race-${proxy}.log`;
const output = (proxy: string) => openSync(logFile(proxy), 'w');

function start(proxy: string): ChildProcess {
  const out = output(proxy);
  try {
    return spawnProxy(proxy, out);
  } finally {
    closeSync(out);
  }
}

function spawnProxy(proxy: string, out: number): ChildProcess {
  if (proxy === FLOOR) {
    const script = fileURLToPath(new URL('./watch-floor.ts', import.meta.url));
    // kube-ipvs' node binary and V8 flags (CLI without its script)
    return spawn(appNode, [...CLI.slice(0, -1), script, KUBECONFIG, String(SERVICES)], {
      stdio: ['ignore', out, out],
      env: appEnv,
    });
  }
  if (proxy === 'kube-ipvs' || proxy === 'kube-ipvs-base') {
    const cfg = join(dir, 'kube-ipvs.yaml');
    writeFileSync(
      cfg,
      stringify({
        apiVersion: 'kube-ipvs.io/v1alpha1',
        kind: 'KubeIPVSConfiguration',
        stateDirectory: join(dir, 'state'),
        clusterCIDR: '10.244.0.0/16',
        // MIN_SYNC_PERIOD=1s: kube-ipvs batches changes as kube-proxy's iptables and nftables modes do by default
        // (its own default, as kube-proxy's ipvs mode's, is 0: every change synced at once).
        ipvs: {
          ...(process.env.MIN_SYNC_PERIOD ? { minSyncPeriod: process.env.MIN_SYNC_PERIOD } : {}),
          // KIPVS_MIN_SYNC_PERIOD: the same for kube-ipvs alone, not kube-ipvs-base (an A/B of batching in one boot).
          ...(process.env.KIPVS_MIN_SYNC_PERIOD && proxy === 'kube-ipvs'
            ? { minSyncPeriod: process.env.KIPVS_MIN_SYNC_PERIOD }
            : {}),
          // SYNC_PERIOD=10s: ipvs.syncPeriod for kube-ipvs and kube-ipvs-base (a periodic resync always running
          // somewhere in the churn at 10 000 Services: it is spaced at most 10x syncPeriod).
          ...(process.env.SYNC_PERIOD ? { syncPeriod: process.env.SYNC_PERIOD } : {}),
          // KIPVS_SYNC_PERIOD=10m: kube-ipvs' ipvs.syncPeriod (an experiment, like KIPVS_FLAGS: kube-ipvs only).
          ...(process.env.KIPVS_SYNC_PERIOD && proxy === 'kube-ipvs'
            ? { syncPeriod: process.env.KIPVS_SYNC_PERIOD }
            : {}),
        },
      }),
    );
    // RACE_PROFILE=1: a CPU profile of kube-ipvs' whole run in /lab-results (kept with LAB_KEEP=DIR).
    const prof = process.env.RACE_PROFILE === '1' ? ['--cpu-prof', '--cpu-prof-dir=/lab-results'] : [];
    // KIPVS_FLAGS=--a,--b=1: more V8 flags for kube-ipvs (experiments); MALLOC_ARENA_MAX: glibc's, for it alone.
    const extra = (process.env.KIPVS_FLAGS ?? '').split(',').filter((f) => /^--[a-z0-9-]+(=[a-z0-9.]+)?$/.test(f));
    // The experiment's flags go to kube-ipvs only: kube-ipvs-base is the reference.
    const cli = proxy === 'kube-ipvs' ? [...CLI.slice(0, -1), ...extra, CLI.at(-1)!] : baseCli!;
    const args = [...prof, ...cli, 'run', '--kubeconfig', KUBECONFIG, '--config', cfg, '--node', 'race-node'];
    const env = process.env.MALLOC_ARENA_MAX ? { ...appEnv, MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX } : appEnv;
    if (process.env.RACE_CORE === '1') {
      // A native crash leaves its core in /lab-results (keep it with LAB_KEEP) for gdb on the host.
      writeFileSync('/proc/sys/kernel/core_pattern', '/lab-results/core.%e.%p');
      return spawn('sh', ['-c', 'ulimit -c unlimited && exec "$0" "$@"', appNode, ...args], {
        stdio: ['ignore', out, out],
        env,
      });
    }
    return spawn(appNode, args, { stdio: ['ignore', out, out], env });
  }
  const mode = proxy.replace('kube-proxy-', '');
  const cfg = join(dir, `${proxy}.yaml`);
  writeFileSync(
    cfg,
    stringify({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      mode,
      hostnameOverride: 'race-node',
      clientConnection: { kubeconfig: KUBECONFIG },
      clusterCIDR: '10.244.0.0/16',
      conntrack: { maxPerCore: 0 },
    }),
  );
  // --v=4: its log says when each sync ran and how long it took (kept with LAB_KEEP).
  return spawn(kubeProxyBin, ['--config', cfg, '--v=4'], { stdio: ['ignore', out, out] });
}

interface Result {
  proxy: string;
  coldVsS: number;
  coldS: number;
  changeMs: number[];
  unseen: number;
  /** One churn window per rate of CHURN_RATES, in order. */
  churn: ChurnRun[];
  rssMB: number;
  /** Why this proxy's run stopped short (it died...): what it measured before stays, the rest is n/a. */
  failed?: string;
}

/** A run that stopped short, with what it had measured by then. */
class RaceFailure extends Error {
  readonly partial: Partial<Result>;
  constructor(message: string, partial: Partial<Result>) {
    super(message);
    this.partial = partial;
  }
}

async function race(proxy: string): Promise<Result> {
  const left = resetNode();
  if (left.length) log(`cleared before ${proxy}: ${left.join('; ')}`);
  const programsIpvs = proxy.startsWith('kube-ipvs') || proxy === 'kube-proxy-ipvs';
  const settle = ipvsDeleted.at + SETTLE_SECONDS * 1000 - performance.now();
  if (programsIpvs && settle > 0) {
    log(`${proxy}: waiting ${(settle / 1000).toFixed(0)} s for the kernel to free the last proxy's IPVS destinations`);
    await sleep(settle);
  }
  const kernel =
    proxy === FLOOR
      ? floorKernel(logFile(proxy))
      : proxy === 'kube-proxy-nftables'
        ? nftKernel()
        : await ipvsKernel(proxy.startsWith('kube-ipvs') ? 'KIPVS' : 'KUBE');
  const t0 = performance.now();
  const p = start(proxy);
  const startedMs = Date.now();
  log(`${proxy}: started at ${new Date(startedMs).toISOString()}`);
  const pid = p.pid!;
  // Killed by a signal (an abort), a process has a signalCode and no exitCode.
  const gone = () => p.exitCode !== null || p.signalCode !== null;
  const alive = (phase: string) => {
    if (gone()) throw new Error(`${proxy} died during ${phase}: ${p.exitCode ?? p.signalCode}`);
  };
  const got: Partial<Result> = {};
  try {
    // 1. cold start: every Service's endpoints, then every rule; given up after COLD_LIMIT seconds (the rest is
    // measured all the same: changes then wait behind the first sync, as they would on the node).
    let coldVsS = Infinity;
    let coldS = Infinity;
    for (;;) {
      if (gone()) throw new Error(`${proxy} exited: ${p.exitCode ?? p.signalCode}`);
      const elapsed = (performance.now() - t0) / 1000;
      if (coldVsS === Infinity && (await kernel.complete()) >= SERVICES) {
        coldVsS = (performance.now() - t0) / 1000;
        log(`${proxy}: every virtual server in ${coldVsS.toFixed(1)} s`);
      }
      if (coldVsS !== Infinity && (await kernel.rules())) {
        coldS = (performance.now() - t0) / 1000;
        break;
      }
      if (elapsed > COLD_LIMIT) {
        log(`${proxy}: not complete after ${COLD_LIMIT} s (COLD_LIMIT); measuring the rest all the same`);
        break;
      }
      await sleep(500);
    }
    log(`${proxy}: cold start ${coldS.toFixed(1)} s`);
    Object.assign(got, { coldVsS, coldS });
    // 2. changes, 3 s apart, each watched until it is in, at most 5 minutes after the last was written. The writer
    // keeps its own schedule: a look that takes long (kube-proxy `nftables`' chain listing, a minute at 10 000
    // Services under emulation) delays no write, so 20 changes cost a proxy that never programs them 60 s + 5 min.
    const pending = new Map<number, { address: string; at: number }>();
    const changeMs: number[] = [];
    let unseen = 0;
    let stopAt = Infinity;
    let writing = proxy !== FLOOR; // the floor programs nothing: no change of its to see
    const write: { error: Error | null } = { error: null }; // an object: set in a callback, read here
    const writer = (async () => {
      if (!writing) return;
      const first = performance.now();
      for (let written = 0; written < CHANGES; written++) {
        const wait = first + written * 3000 - performance.now();
        if (wait > 0) await sleep(wait);
        const i = Math.floor((written * 7919) % SERVICES);
        const address = freshIP();
        await change(i, address);
        pending.set(i, { address, at: performance.now() });
      }
    })().then(
      () => {
        writing = false;
        stopAt = performance.now() + 300_000;
      },
      (e: unknown) => {
        writing = false;
        write.error = e instanceof Error ? e : new Error('a change could not be written');
      },
    );
    while (writing || pending.size > 0) {
      if (write.error !== null) break;
      for (const [i, c] of pending) {
        // The deadline is checked between looks, not only after a round of 20 of them (the 10 000 race's nftables
        // phase once polled for 30 minutes).
        if (performance.now() > stopAt) break;
        if (await kernel.has(i, c.address)) {
          changeMs.push(performance.now() - c.at);
          pending.delete(i);
        }
      }
      if (performance.now() > stopAt) {
        unseen = pending.size;
        break;
      }
      await sleep(proxy === 'kube-proxy-nftables' ? 100 : 10);
    }
    await writer;
    if (write.error !== null) throw write.error;
    log(`${proxy}: ${changeMs.length} changes seen, median ${pct(changeMs, 0.5).toFixed(0)} ms, ${unseen} unseen`);
    if (unseen > 0) kernel.dump(`/lab-results/race-${proxy}-unseen.txt`, [...pending.entries()]);
    Object.assign(got, { changeMs, unseen });
    alive('the changes');
    // 2b. (QUIET_SECONDS) the same process with nothing to do: what of the churn's CPU is not the changes'
    if (QUIET_SECONDS > 0) {
      const q0 = cpuSeconds(pid);
      const qt0 = threadCpu(pid);
      await sleep(QUIET_SECONDS * 1000);
      alive('the quiet window');
      const q1 = cpuSeconds(pid);
      log(
        `${proxy}: quiet ${QUIET_SECONDS} s: ${(q1.self - q0.self).toFixed(1)} CPU s (and ${childCpu(q0, q1).toFixed(1)} s in its child processes); by thread (user/system s): ${threadDelta(qt0, threadCpu(pid))}`,
      );
    }
    // 3. churn: one window per rate (CHURN_RATES), in the order given
    const churn: ChurnRun[] = [];
    got.churn = churn;
    let churnWrites = 0;
    for (const rate of CHURN_RATES) {
      let threads0: ReturnType<typeof threadCpu> = new Map(); // read at the window's start (onCpu)
      let threads = '';
      // RACE_PERF=1: `perf record` on the proxy (every thread, kernel and native frames) through the window, in
      // /lab-results (kept with LAB_KEEP=DIR) with the guest's kallsyms: where emulated time goes below JavaScript.
      let perf: ChildProcess | null = null;
      let perfEnded: Promise<unknown> = Promise.resolve();
      const run = await churnWindow({
        pid,
        rate,
        seconds: CHURN_SECONDS,
        metrics: METRICS,
        write: (n) =>
          change((CHANGES * 7919 + (churnWrites + n) * 104729) % SERVICES, freshIP()).catch(
            (e: Error) => void log(`churn write: ${e.message}`),
          ),
        alive: () => alive(`the churn at ${rate}/s`),
        onCpu: (edge) => {
          if (edge === 'start') threads0 = threadCpu(pid);
          else threads = threadDelta(threads0, threadCpu(pid));
          if (process.env.RACE_PERF !== '1') return;
          if (edge === 'start') {
            // The modules are all loaded before the first proxy starts: one copy of the symbols serves every window.
            if (!existsSync('/lab-results/kallsyms'))
              writeFileSync('/lab-results/kallsyms', readFileSync('/proc/kallsyms'));
            const data = `/lab-results/perf-${proxy}-${rate}.data`;
            // No build-id cache: copying the node binary into ~/.debug at exit took minutes under emulation.
            const args = ['record', '-F', '199', '-g', '--no-buildid-cache', '-p', String(pid), '-o', data];
            const recorder = spawn('perf', args, { stdio: 'ignore' });
            // Ended: exited, or never started (no exit event follows a failed spawn).
            perfEnded = new Promise((r) => {
              recorder.once('exit', r);
              recorder.once('error', (e) => {
                log(`perf: ${e.message}`);
                r(null);
              });
            });
            perf = recorder;
          } else perf?.kill('SIGINT');
        },
      });
      if (perf) {
        const recorder: ChildProcess = perf;
        const timer = setTimeout(() => recorder.kill('SIGKILL'), 60_000); // its data is written by then, or lost
        await perfEnded;
        clearTimeout(timer);
        // With KIPVS_FLAGS=--perf-basic-prof,--interpreted-frames-native-stack V8 names the code it made (each
        // interpreted function too) in /tmp/perf-PID.map, which `perf report` reads from /tmp: kept as it was then.
        // Only one this process wrote: the guest's /tmp may show an older file of the same name from below.
        const map = `/tmp/perf-${pid}.map`;
        const mapWritten = statSync(map, { throwIfNoEntry: false })?.mtimeMs;
        if (mapWritten !== undefined && mapWritten >= startedMs) copyFileSync(map, `/lab-results/perf-${pid}.map`);
      }
      churnWrites += run.writes;
      churn.push(run);
      log(`${proxy}: churn at ${rate}/s, CPU by thread (user/system s): ${threads}`);
      log(
        `${proxy}: churn at ${rate}/s: ${run.writes} writes, ${run.cpuS.toFixed(1)} CPU s (and ${run.childCpuS.toFixed(1)} s in its child processes), ${run.programmed} programmed`,
      );
      if (run.minuteCpuS.length)
        log(`${proxy}: churn at ${rate}/s: CPU s by minute ${run.minuteCpuS.map((x) => x.toFixed(1)).join(', ')}`);
    }
    if (proxy.startsWith('kube-ipvs')) {
      // Where its time in system tools went (a first sync's netfilter stage is most of its cold start).
      const text = await fetch(METRICS)
        .then((r) => r.text())
        .catch(() => '');
      for (const m of text.matchAll(/^kubeipvs_tool_duration_seconds_(sum|count)\{tool="([^"]+)"\} ([0-9.e+]+)$/gm))
        log(`${proxy}: tool ${m[2]} ${m[1]} ${Number(m[3]).toFixed(m[1] === 'sum' ? 2 : 0)}`);
      // What its resident memory is made of (Node's own gauges): the JavaScript heap, buffers, the rest.
      const mem = [
        'nodejs_heap_size_total_bytes',
        'nodejs_heap_size_used_bytes',
        'nodejs_external_memory_bytes',
        'process_resident_memory_bytes',
      ].map(
        (n) =>
          `${n.replace(/^(nodejs|process)_|_bytes$/g, '')} ${(Number(new RegExp(`^${n} ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20).toFixed(0)} MB`,
      );
      log(`${proxy}: memory ${mem.join(', ')}`);
    }
    const rss = rssMB(pid);
    log(`${proxy}: resident memory by mapping (MB): ${rssParts(pid)}`);
    log(`${proxy}: RSS after the churn ${rss.toFixed(0)} MB`);
    return { proxy, coldVsS, coldS, changeMs, unseen, churn, rssMB: rss };
  } catch (e) {
    throw new RaceFailure((e as Error).message, got);
  } finally {
    p.kill('SIGTERM');
    await new Promise((r) => (gone() ? r(null) : p.once('exit', r)));
    kernel.close();
    if (proxy.startsWith('kube-ipvs'))
      execFileSync(appNode, [...CLI, 'cleanup', '--config', join(dir, 'kube-ipvs.yaml')], {
        stdio: 'ignore',
        env: appEnv,
      });
    else if (proxy !== FLOOR)
      try {
        execFileSync(kubeProxyBin, ['--cleanup'], { stdio: 'ignore' });
      } catch {
        // its cleanup exits non-zero when there was nothing of a mode
      }
    // Their virtual servers are gone now, their destinations in the kernel's trash.
    if (programsIpvs) ipvsDeleted.at = performance.now();
  }
}

// A node that has run any proxy has the netfilter modules loaded; the first proxy here would pay for loading them
// (seconds each under TCG) and the others not. Every one of them is loaded first, for all alike.
{
  const t = performance.now();
  const release = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  const names = execFileSync('find', [`/lib/modules/${release}/kernel/net`, '-path', '*netfilter*', '-name', '*.ko*'], {
    encoding: 'utf8',
  })
    .split('\n')
    .filter(Boolean)
    .map((f) => f.slice(f.lastIndexOf('/') + 1).replace(/\.ko.*$/, ''))
    // not the legacy tables (each would register hooks an nft node does not have)
    .filter((n) => !/^(ip6?table|arptable|ebtable)_/.test(n));
  let loaded = 0;
  for (const n of names)
    try {
      execFileSync('modprobe', [n], { stdio: 'ignore' });
      loaded++;
    } catch {
      // some need hardware or conflict: what a node would not have either
    }
  log(`${loaded} of ${names.length} netfilter modules loaded in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

const results: Result[] = [];
for (const proxy of PROXIES) {
  try {
    results.push(await race(proxy));
  } catch (e) {
    // One proxy failing does not stop the others' runs; the table says it failed and why.
    const failed = (e as Error).message;
    log(`${proxy}: FAILED: ${failed}`);
    const n = NaN;
    results.push({
      proxy,
      coldVsS: n,
      coldS: n,
      changeMs: [],
      unseen: 0,
      churn: [],
      rssMB: n,
      ...(e instanceof RaceFailure ? e.partial : {}),
      failed,
    });
  }
}
api.destroy();

const base = results.find((r) => r.proxy === 'kube-ipvs');
const ratio = (v: number, b: number | undefined) =>
  b === undefined || !Number.isFinite(v) || !Number.isFinite(b) || b === 0 ? '' : ` (${(v / b).toFixed(1)}x)`;
const fmt = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : v === Infinity ? '>max' : 'n/a');
const row = (name: string, f: (r: Result) => number, digits = 1, unit = '') =>
  `| ${name} | ${results.map((r) => `${fmt(f(r), digits)}${unit}${r === base ? '' : ratio(f(r), base && f(base))}`).join(' | ')} |`;
console.log(
  [
    `Race: ${SERVICES} Services x ${ENDPOINTS} endpoints, one proxy at a time on the lab VM (TCG), the same API server; ratios to kube-ipvs`,
    '',
    `| | ${results.map((r) => r.proxy).join(' | ')} |`,
    `| --- | ${results.map(() => '---').join(' | ')} |`,
    row('cold start to every endpoint in IPVS / in nftables (s)', (r) => r.coldVsS),
    row('cold start to every rule and set entry too (s)', (r) => r.coldS),
    row(`one change, median of ${CHANGES} (ms)`, (r) => pct(r.changeMs, 0.5), 0),
    row('one change, p99 (ms)', (r) => pct(r.changeMs, 0.99), 0),
    `| changes not seen within 5 min | ${results.map((r) => String(r.unseen)).join(' | ')} |`,
    ...(results.some((r) => r.failed)
      ? [`| run failed | ${results.map((r) => (r.failed ?? '').replace(/[|\n]/g, ' ')).join(' | ')} |`]
      : []),
    ...churnRows(CHURN_RATES, CHURN_SECONDS, 1, (head, at) => [
      {
        label: `${head}: CPU seconds with its child processes (as its cgroup counts)`,
        get: at((c) => c.cpuS + c.childCpuS),
        digits: 1,
      },
      // What a programmed change cost, all its CPU counted: a proxy that programs few of the writes spends little.
      {
        label: `${head}: CPU ms per change programmed, with child processes`,
        get: at((c) => (c.programmed > 0 ? (1000 * (c.cpuS + c.childCpuS)) / c.programmed : NaN)),
        digits: 0,
      },
    ]).map((x) => row(x.label, x.get, x.digits)),
    row('resident memory after the churn (MB)', (r) => r.rssMB, 0),
  ].join('\n'),
);
console.log(`\n${JSON.stringify(results.map((r) => ({ ...r, changeMs: r.changeMs.map(Math.round) })))}`);
