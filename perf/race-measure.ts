// What the race measures of a proxy process, wherever it runs (perf/race.lab.ts in the lab VM, perf/race-native.ts
// on the host): CPU from /proc, its child processes' too, memory, and the programming-latency histogram both kube-proxy
// and kube-ipvs export; and the race's objects (perf/race.ts and race-native.ts create them, both runs change them).
import { readFileSync, readdirSync } from 'node:fs';

/** Endpoint j of Service i (of `endpoints` each): 10.200+.x.y, unique, never reachable (programming, not traffic). */
export const raceEndpointIP = (endpoints: number, i: number, j: number) => {
  const n = i * endpoints + j;
  return `10.${200 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
};

/** The node under test. */
const RACE_NODE = 'race-node';

/**
 * The node endpoint j of Service i runs on, with the race's endpoints spread over `nodes` nodes (RACE_NODES): the node
 * under test, `race-node`, has those with (i + j) % nodes === 0 (all of them when nodes is 1: the race's default), the
 * others are on `race-node-K`. So a Service has at most one endpoint here, and endpoint 0 (the one the race changes) of
 * one Service in `nodes`.
 */
export const raceNodeOf = (nodes: number, i: number, j: number) => {
  const k = (i + j) % nodes;
  return k === 0 ? RACE_NODE : `race-node-${k}`;
};

/** How many of the race's endpoints are on `race-node` (see raceNodeOf): the hairpin entries each proxy should hold. */
export function raceLocalEndpoints(services: number, endpoints: number, nodes: number): number {
  let n = 0;
  for (let i = 0; i < services; i++) for (let j = 0; j < endpoints; j++) if (raceNodeOf(nodes, i, j) === RACE_NODE) n++;
  return n;
}

/** RACE_NODES: how many nodes the race's endpoints are spread over (1..1000, 1 when unset); the error says why not. */
export function raceNodes(value: string | undefined): number | { error: string } {
  if (value === undefined || value.trim() === '') return 1;
  const n = /^\s*[0-9]{1,4}\s*$/.test(value) ? Number(value) : NaN;
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : { error: 'RACE_NODES: a whole number, 1..1000' };
}

/** The quantile `p` of `xs` (nearest rank); NaN when empty. */
export const pct = (xs: number[], p: number) =>
  xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * p) - 1)]!;

/**
 * CPU seconds from /proc/PID/stat: the process's own (utime, stime) and its child processes', as a pod's cgroup
 * counts them: those it started and waited for (cutime, cstime: kube-proxy's `nft`, `iptables-restore` and `ipset`,
 * kube-ipvs' `iptables-save`/`-restore`) plus those still running (`live`, by pid, with what they waited for in
 * turn). A window's child CPU is the change in `children` plus the live ones at its end minus the live ones at its
 * start: at 10 000 Services one `nft` of kube-proxy's runs for minutes, and counted only once reaped it would be
 * missing from the window it ran in. Clock ticks, USER_HZ 100.
 */
export function cpuSeconds(pid: number): { self: number; children: number; live: Map<number, number> } {
  const f = statFields(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  const live = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(e)) continue;
    try {
      const c = statFields(readFileSync(`/proc/${e}/stat`, 'utf8'));
      if (Number(c[1]) === pid) live.set(Number(e), c.slice(11, 15).reduce((a, x) => a + Number(x), 0) / 100);
    } catch {
      // gone meanwhile
    }
  }
  return { self: ownCpu(f), children: (Number(f[13]) + Number(f[14])) / 100, live };
}
/** utime + stime of statFields' fields, in seconds. */
const ownCpu = (f: string[]) => (Number(f[11]) + Number(f[12])) / 100;
/** The process's own CPU seconds from /proc/PID/stat, without cpuSeconds' walk of /proc. */
export const selfCpu = (pid: number): number => ownCpu(statFields(readFileSync(`/proc/${pid}/stat`, 'utf8')));
/** /proc/PID/stat's fields after the command's name (which may hold spaces): [0] is the state, [1] the parent. */
export const statFields = (stat: string): string[] => stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
/** Child CPU seconds between two readings of cpuSeconds. */
export const childCpu = (a: ReturnType<typeof cpuSeconds>, b: ReturnType<typeof cpuSeconds>): number =>
  b.children -
  a.children +
  [...b.live.values()].reduce((x, y) => x + y, 0) -
  [...a.live.values()].reduce((x, y) => x + y, 0);
/** Each thread's name and CPU seconds (user, system), by thread id. */
export function threadCpu(pid: number): Map<string, { name: string; user: number; system: number }> {
  const out = new Map<string, { name: string; user: number; system: number }>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = statFields(stat);
      out.set(tid, { name, user: Number(f[11]) / 100, system: Number(f[12]) / 100 });
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}
/** What each kind of thread (by name) used between two readings, busiest first. */
export function threadDelta(a: ReturnType<typeof threadCpu>, b: ReturnType<typeof threadCpu>): string {
  const by = new Map<string, { user: number; system: number; n: number }>();
  for (const [tid, t] of b) {
    const was = a.get(tid) ?? { user: 0, system: 0 };
    const name = t.name.replace(/[0-9]+$/, '#');
    const x = by.get(name) ?? { user: 0, system: 0, n: 0 };
    x.user += t.user - was.user;
    x.system += t.system - was.system;
    x.n++;
    by.set(name, x);
  }
  return [...by]
    .sort((x, y) => y[1].user + y[1].system - (x[1].user + x[1].system))
    .map(([name, x]) => `${name}${x.n > 1 ? ` x${x.n}` : ''} ${x.user.toFixed(1)}/${x.system.toFixed(1)}`)
    .join(', ');
}
/** Resident memory by kind of mapping (/proc/PID/smaps): each file by name, anonymous memory...; largest first. */
export function rssParts(pid: number): string {
  const by = new Map<string, number>();
  let current = 'anonymous';
  try {
    for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
      const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
      if (head) {
        const path = head[1]!.trim();
        current = path === '' ? 'anonymous' : path.startsWith('[') ? path : path.slice(path.lastIndexOf('/') + 1);
        continue;
      }
      const rss = /^Rss:\s+(\d+) kB/.exec(line);
      if (rss) by.set(current, (by.get(current) ?? 0) + Number(rss[1]) / 1024);
    }
  } catch {
    return 'n/a';
  }
  return [...by]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([k, mb]) => `${k} ${mb.toFixed(0)}`)
    .join(', ');
}
export const rssMB = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;

/** The programming-latency histogram's cumulative buckets (le -> count), from the proxy's metrics. */
export async function latencyBuckets(url = 'http://127.0.0.1:10249/metrics'): Promise<Map<number, number>> {
  const text = await fetch(url)
    .then((r) => r.text())
    .catch(() => '');
  const out = new Map<number, number>();
  for (const m of text.matchAll(
    /^kubeproxy_network_programming_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} ([0-9.e+]+)$/gm,
  )) {
    const le = m[1] === '+Inf' ? Infinity : Number(m[1]);
    out.set(le, (out.get(le) ?? 0) + Number(m[2]));
  }
  return out;
}
/** The bucket bound a quantile falls under, between two snapshots. */
export function quantile(before: Map<number, number>, after: Map<number, number>, q: number): number {
  const les = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  if (total <= 0) return NaN;
  for (const le of les) if ((after.get(le) ?? 0) - (before.get(le) ?? 0) >= q * total) return le;
  return Infinity;
}

/** The race's Services live in race-0 ... race-9, svc-I in race-(I mod 10). */
export const RACE_NAMESPACES = 10;

type ApiCall = (method: string, path: string, body: unknown) => Promise<{ status: number; json: unknown }>;

/**
 * The race's cluster through the API: its namespaces, the node `race-node`, and `services` ClusterIP Services with
 * one EndpointSlice of `endpoints` ready endpoints each (16 writers at once). Objects there already are kept.
 */
export async function createRaceObjects(call: ApiCall, services: number, endpoints: number, nodes = 1): Promise<void> {
  const must = async (what: string, p: Promise<{ status: number; json: unknown }>) => {
    const r = await p;
    if (r.status !== 201 && r.status !== 409)
      throw new Error(`${what}: ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`);
  };
  for (let n = 0; n < RACE_NAMESPACES; n++)
    await must('namespace', call('POST', '/api/v1/namespaces', { metadata: { name: `race-${n}` } }));
  await must(
    'node',
    call('POST', '/api/v1/nodes', {
      metadata: { name: RACE_NODE },
      status: { addresses: [{ type: 'InternalIP', address: '192.168.100.1' }] },
    }),
  );
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < services; i = next++) {
      const ns = `race-${i % RACE_NAMESPACES}`;
      await must(
        `Service ${i}`,
        call('POST', `/api/v1/namespaces/${ns}/services`, {
          metadata: { name: `svc-${i}` },
          spec: { ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }] },
        }),
      );
      await must(
        `EndpointSlice ${i}`,
        call('POST', `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`, {
          metadata: { name: `svc-${i}-race`, labels: { 'kubernetes.io/service-name': `svc-${i}` } },
          addressType: 'IPv4',
          ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
          endpoints: Array.from({ length: endpoints }, (_, j) => ({
            addresses: [raceEndpointIP(endpoints, i, j)],
            conditions: { ready: true },
            nodeName: raceNodeOf(nodes, i, j),
          })),
        }),
      );
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

/**
 * The race's one change: endpoint 0 of Service i becomes `address`, stamped with the trigger time both proxies'
 * latency histogram reads. A merge patch (application/merge-patch+json) to `path`.
 */
export function raceChange(endpoints: number, i: number, address: string, nodes = 1): { path: string; body: unknown } {
  return {
    path: `/apis/discovery.k8s.io/v1/namespaces/race-${i % RACE_NAMESPACES}/endpointslices/svc-${i}-race`,
    body: {
      metadata: { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': new Date().toISOString() } },
      endpoints: Array.from({ length: endpoints }, (_, j) => ({
        addresses: [j === 0 ? address : raceEndpointIP(endpoints, i, j)],
        conditions: { ready: true },
        nodeName: raceNodeOf(nodes, i, j),
      })),
    },
  };
}

/**
 * CHURN_RATES ("10" when unset): the churn's writes a second, one window of CHURN_SECONDS per rate, in the order
 * given, e.g. "1,3,10". Each rate is 0.1..100 a second. The error says what was wrong with the value.
 */
export function churnRates(value: string | undefined): number[] | { error: string } {
  if (value === undefined || value.trim() === '') return [10];
  const parts = value.split(',');
  if (parts.length > 10) return { error: 'CHURN_RATES: at most 10 rates' };
  const rates: number[] = [];
  for (const part of parts) {
    const rate = /^\s*[0-9]+(\.[0-9]+)?\s*$/.test(part) ? Number(part) : NaN;
    if (!(rate >= 0.1 && rate <= 100))
      return { error: `CHURN_RATES: ${JSON.stringify(part.slice(0, 20))} is not a rate of 0.1..100 writes a second` };
    rates.push(rate);
  }
  return rates;
}

/**
 * A knob of whole seconds, `min..max`; `fallback` when unset. The error names the knob and says what was wrong with
 * the value.
 */
function wholeSeconds(
  name: string,
  value: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number | { error: string } {
  if (value === undefined || value.trim() === '') return fallback;
  const s = /^\s*[0-9]+\s*$/.test(value) ? Number(value) : NaN;
  if (!(s >= min && s <= max))
    return { error: `${name}: ${JSON.stringify(value.slice(0, 20))} is not a whole ${min}..${max} seconds` };
  return s;
}
/** CHURN_SECONDS: how long each churn window writes, a whole 1..3600 s; `fallback` when unset. */
export const churnSeconds = (value: string | undefined, fallback: number) =>
  wholeSeconds('CHURN_SECONDS', value, fallback, 1, 3600);
/**
 * SETTLE_SECONDS: how long after a proxy's IPVS virtual servers were deleted the next proxy that programs IPVS
 * starts, a whole 0..900 s; 240 when unset (perf/race.lab.ts says why).
 */
export const settleSeconds = (value: string | undefined) => wholeSeconds('SETTLE_SECONDS', value, 240, 0, 900);

/**
 * Calls `write(n)` `rate` times a second for `seconds` (n = 0, 1, ...; each on its own schedule, not after the one
 * before ends), then waits for every write to be answered. Returns how many writes were made.
 */
export async function paced(rate: number, seconds: number, write: (n: number) => Promise<void>): Promise<number> {
  const gap = 1000 / rate;
  const start = performance.now();
  const writes: Promise<void>[] = [];
  let n = 0;
  while (performance.now() - start < seconds * 1000) {
    writes.push(write(n));
    n++;
    await new Promise((r) => setTimeout(r, Math.max(0, start + n * gap - performance.now())));
  }
  await Promise.all(writes);
  return n;
}

/** One churn window of a race: CHURN_SECONDS of `rate` writes a second, and the 5 s after it. */
export interface ChurnRun {
  rate: number;
  writes: number;
  /** The process's own CPU seconds in the window (utime + stime). */
  cpuS: number;
  /** Its child processes' CPU seconds in the same window (cpuSeconds, childCpu). */
  childCpuS: number;
  /**
   * The process's own CPU seconds in each whole minute of the writes, in order (none when they last under a minute).
   * At 10 000 Services kube-proxy's sync runs for minutes under emulation, and what its process spends in one minute
   * depends on where that minute falls in it: the spread says how far one minute's number can be trusted.
   */
  minuteCpuS: number[];
  p50: number;
  p99: number;
  /**
   * Changes programmed in the window: observations of its network-programming latency histogram (kube-proxy and
   * kube-ipvs observe one per Service change carrying the trigger-time annotation, once synced).
   */
  programmed: number;
}

/**
 * For the table rows of the k-th churn window: their label's head ("churn 3/s" when there are several rates, "churn"
 * when one) and `at(f)`, a row's cell getter: f of that window, NaN for a proxy that stopped before it.
 */
export function churnColumn(rates: number[], k: number) {
  return {
    head: rates.length > 1 ? `churn ${rates[k]}/s` : 'churn',
    at:
      (f: (c: ChurnRun) => number) =>
      (r: { churn: ChurnRun[] }): number => {
        const c = r.churn[k];
        return c ? f(c) : NaN;
      },
  };
}

/** A table row of a churn window: its label, its cell getter (NaN: n/a) and the digits its cells show. */
export interface ChurnRow {
  label: string;
  get: (r: { churn: ChurnRun[] }) => number;
  digits: number;
}

/**
 * Every churn window's rows, as both races print them: the process's CPU seconds (`cpuDigits`; for a window of two
 * minutes or more, its lowest and highest minute too), then the harness's own rows (`own(head, at)`, from
 * churnColumn: how it counts child processes and CPU per change), then the changes programmed and the latency p50
 * and p99.
 */
export function churnRows(
  rates: number[],
  seconds: number,
  cpuDigits: number,
  own: (head: string, at: ReturnType<typeof churnColumn>['at']) => ChurnRow[],
): ChurnRow[] {
  return rates.flatMap((rate, k) => {
    const { head, at } = churnColumn(rates, k);
    return [
      {
        label: `churn ${rate}/s for ${seconds} s: CPU seconds, the process`,
        get: at((c) => c.cpuS),
        digits: cpuDigits,
      },
      // Two whole minutes or more: how far apart its minutes were (ChurnRun.minuteCpuS).
      ...(seconds >= 120
        ? [
            {
              label: `${head}: CPU seconds of the process in its lowest minute`,
              get: at((c) => (c.minuteCpuS.length ? Math.min(...c.minuteCpuS) : NaN)),
              digits: cpuDigits,
            },
            {
              label: `${head}: CPU seconds of the process in its highest minute`,
              get: at((c) => (c.minuteCpuS.length ? Math.max(...c.minuteCpuS) : NaN)),
              digits: cpuDigits,
            },
          ]
        : []),
      ...own(head, at),
      {
        label: `${head}: changes programmed by 5 s after it (latency observations)`,
        get: at((c) => c.programmed),
        digits: 0,
      },
      { label: `${head}: programming latency p50, bucket bound (s)`, get: at((c) => c.p50), digits: 2 },
      { label: `${head}: programming latency p99, bucket bound (s)`, get: at((c) => c.p99), digits: 2 },
    ];
  });
}

/**
 * One churn window of a race, measured: `write(n)` `rate` times a second for `seconds` (paced), `settleMs` more (5 s
 * unless given) for what was written last to get in, `alive()` (it throws when the proxy is gone), then the proxy's
 * CPU over all of it and what its programming-latency histogram at `metrics` observed meanwhile (null: it has none;
 * programmed is NaN).
 * `onCpu` runs right after each CPU reading, before the scrape that follows it (a proxy's answer to a scrape is not
 * the churn's CPU): the lab's race reads each thread's CPU there.
 */
export async function churnWindow(o: {
  pid: number;
  rate: number;
  seconds: number;
  metrics: string | null;
  write: (n: number) => Promise<void>;
  alive: () => void;
  onCpu?: (edge: 'start' | 'end') => void;
  settleMs?: number;
  /** How long a "minute" of minuteCpuS is (tests shorten it). */
  minuteMs?: number;
}): Promise<ChurnRun> {
  const buckets = () => (o.metrics ? latencyBuckets(o.metrics) : Promise.resolve(new Map<number, number>()));
  const before = await buckets();
  const cpu0 = cpuSeconds(o.pid);
  o.onCpu?.('start');
  const minuteMs = o.minuteMs ?? 60_000;
  const whole = Math.floor((o.seconds * 1000) / minuteMs);
  const minuteCpuS: number[] = [];
  let last = cpu0.self;
  const readMinute = () => {
    if (minuteCpuS.length >= whole) return;
    try {
      const now = selfCpu(o.pid);
      minuteCpuS.push(now - last);
      last = now;
    } catch {
      // gone: alive() says so after the writes
    }
  };
  const minutes = setInterval(readMinute, minuteMs);
  let writes: number;
  try {
    writes = await paced(o.rate, o.seconds, o.write);
  } finally {
    clearInterval(minutes);
  }
  // The last whole minute's tick can lose the race with the writes' end by a few milliseconds: read it now.
  readMinute();
  await new Promise((r) => setTimeout(r, o.settleMs ?? 5000));
  o.alive();
  const cpu1 = cpuSeconds(o.pid);
  o.onCpu?.('end');
  const after = await buckets();
  return {
    rate: o.rate,
    writes,
    cpuS: cpu1.self - cpu0.self,
    childCpuS: childCpu(cpu0, cpu1),
    minuteCpuS,
    p50: quantile(before, after, 0.5),
    p99: quantile(before, after, 0.99),
    programmed: o.metrics ? (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0) : NaN,
  };
}
