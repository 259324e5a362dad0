// Health-check cost: ENDPOINTS endpoints (default 100 000: 10 000 Services x 10) probed with the
// default settings (TCP, 200 ms interval, 250 probes/s budget), measured in one run: probes per
// second and this process's CPU with health checks on, and the same stage with them off.
//   sudo npm run bench:health            (ENDPOINTS=... SECONDS=... WARMUP=... to scale it)
// Needs root: the endpoints are addresses of a network namespace of its own, every address of
// 10.200.0.0/15 local there (one route, no interface per address), with one listener answering all
// of them (another process: its CPU is not counted). The probing stage runs in that namespace.
import { execFileSync, spawn } from 'node:child_process';
import { systemClock } from '../src/dataplane/runner.ts';
import { SocketProber } from '../src/health/probers.ts';
import { defaultHealthConfig } from '../src/health/settings.ts';
import { HealthStage } from '../src/health/stage.ts';
import type { ServiceHealth } from '../src/health/targets.ts';
import { Logger } from '../src/observe/log.ts';
import { EXIT_DEADLOCK_V8_FLAGS, DAEMON_V8_FLAGS } from '../src/util/v8-flags.ts';

const ENDPOINTS = Number(process.env.ENDPOINTS ?? 100_000);
const SECONDS = Number(process.env.SECONDS ?? 20);
const WARMUP = Number(process.env.WARMUP ?? 5);
const NS = `kipvs-hbench-${process.pid}`;

export interface HealthBench {
  endpoints: number;
  on: {
    probesPerSecond: number;
    cpuPercent: number;
    userPercent: number;
    stretch: number;
    demand: number;
    failed: number;
  };
  off: { cpuPercent: number };
}

const addr = (i: number) => `10.${200 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

/** The measurement, inside the namespace. */
async function measure(endpoints: number, seconds: number): Promise<HealthBench> {
  const run = async (kind: 'tcp' | 'none') => {
    const cfg = { ...defaultHealthConfig(), kind };
    const stage = new HealthStage({
      config: cfg,
      clock: systemClock,
      prober: new SocketProber(),
      log: new Logger({ sink: () => {} }),
      onChange: () => {},
    });
    for (let s = 0; s < endpoints / 10; s++) {
      const h: ServiceHealth = {
        service: `bench/svc-${s}`,
        settings: cfg,
        passive: false,
        tcpVirtualServers: [],
        virtualServers: [],
        unresolvedPort: null,
        endpoints: Array.from({ length: 10 }, (_, k) => {
          const a = addr(s * 10 + k + 1);
          return {
            endpoint: `${a}:8080`,
            address: a,
            port: 8080,
            probe: kind === 'none' ? null : { kind: 'tcp' as const, address: a, port: 8080, path: '/' },
          };
        }),
      };
      stage.setService(h.service, h);
    }
    stage.start();
    // Warm up (the first probes, and the garbage collections that setting 100 000 targets up leaves), then measure.
    await new Promise((r) => setTimeout(r, WARMUP * 1000));
    const p0 = stage.counters.probes.ok + stage.counters.probes.fail;
    const f0 = stage.counters.probes.fail;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const wall = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(c0);
    const probes = stage.counters.probes.ok + stage.counters.probes.fail - p0;
    const failed = stage.counters.probes.fail - f0;
    const b = stage.budget;
    stage.stop();
    return {
      probesPerSecond: probes / wall,
      cpuPercent: ((cpu.user + cpu.system) / 1e6 / wall) * 100,
      userPercent: (cpu.user / 1e6 / wall) * 100,
      stretch: b.stretch,
      demand: b.demand,
      failed,
    };
  };
  const off = await run('none');
  const on = await run('tcp');
  return { endpoints, on, off: { cpuPercent: off.cpuPercent } };
}

export const describe = (r: HealthBench) =>
  `health checks, ${r.endpoints} endpoints, default settings (TCP every 200 ms, budget ${defaultHealthConfig().probesPerSecond} probes/s): ` +
  `${r.on.probesPerSecond.toFixed(0)} probes/s (asked ${r.on.demand.toFixed(0)}/s, intervals stretched x${r.on.stretch.toFixed(0)}; ${r.on.failed} failed), ` +
  `CPU ${r.on.cpuPercent.toFixed(1)}% of one core with checks on (${r.on.userPercent.toFixed(1)}% user, the rest the kernel's: connect, and over loopback the listener's side of each handshake too) vs ${r.off.cpuPercent.toFixed(1)}% off`;

/** Sets the namespace up, runs the measurement in it, and tears it down. */
export async function healthBench(endpoints = ENDPOINTS, seconds = SECONDS): Promise<HealthBench> {
  const sh = (...a: string[]) => execFileSync(a[0]!, a.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  sh('ip', 'netns', 'add', NS);
  const listener = spawn(
    'ip',
    [
      'netns',
      'exec',
      NS,
      process.execPath,
      ...EXIT_DEADLOCK_V8_FLAGS,
      '-e',
      "require('net').createServer((s) => s.on('error', () => {}).destroy()).listen({ port: 8080, host: '0.0.0.0', backlog: 4096 }, () => console.log('ready'))",
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    sh('ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up');
    // Every address of 10.200.0.0/15 is local in the namespace: one route instead of 100 000 addresses.
    sh('ip', 'netns', 'exec', NS, 'ip', 'route', 'add', 'local', '10.200.0.0/15', 'dev', 'lo');
    sh('ip', 'netns', 'exec', NS, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000');
    await new Promise((r) => listener.stdout.once('data', r));
    const child = spawn('ip', ['netns', 'exec', NS, process.execPath, ...DAEMON_V8_FLAGS, import.meta.filename], {
      env: { ...process.env, HEALTH_BENCH_CHILD: '1', ENDPOINTS: String(endpoints), SECONDS: String(seconds) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    if (code !== 0) throw new Error(`the measurement exited ${code}`);
    return JSON.parse(out) as HealthBench;
  } finally {
    listener.kill('SIGKILL');
    try {
      sh('ip', 'netns', 'del', NS);
    } catch {
      /* gone */
    }
  }
}

if (process.env.HEALTH_BENCH_CHILD) {
  process.stdout.write(JSON.stringify(await measure(ENDPOINTS, SECONDS)));
  setTimeout(() => process.exit(0), 20);
} else if (process.argv[1] === import.meta.filename) {
  if (process.getuid?.() !== 0) {
    console.log('health bench: needs root (a network namespace with the endpoints)');
    process.exit(1);
  }
  const r = await healthBench();
  console.log(describe(r));
  const target = r.on.cpuPercent < 10;
  console.log(target ? 'target met: under 10% of one core at the default budget' : 'TARGET MISSED: 10% of one core');
}
