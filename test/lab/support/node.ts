// Builds a small Kubernetes node inside the lab VM and drives it:
//   root namespace = the node (runs kube-ipvs); bridge kbr0 10.244.0.1/24 = the pod network;
//   be1..beN       = backend pods on the bridge, each running echo.ts;
//   client         = a pod on its own veth (10.250.0.2 via 10.250.0.1), so replies from
//                    backends come back through the node (same-bridge clients need the
//                    iptables stage: see DESIGN.md, Labs);
//   ext            = an external client (192.168.100.2) reaching the node IP 192.168.100.1.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { NetlinkIpvs } from '../../../src/dataplane/ipvs/client.ts';
import { serviceId } from '../../../src/dataplane/ipvs/types.ts';
import { DAEMON_V8_FLAGS, EXIT_DEADLOCK_V8_FLAGS } from '../../../src/util/v8-flags.ts';
import { spawnOwned } from '../../support/owned.ts';
import { resetNode, watchExit } from './hygiene.ts';

/** Every long-lived process a case starts dies with the case's process (support/owned.ts). */
export const spawn = spawnOwned;

export const NODE_IP = '192.168.100.1';
export const EXT_IP = '192.168.100.2';
export const CLIENT_IP = '10.250.0.2';
const repo = resolve(import.meta.dirname, '../../..');
const nodeBin = process.execPath;
/**
 * Every Node process in the VM runs with `--liftoff-only`: under qemu TCG, V8 aborted now and then
 * inside a WebAssembly tier-up ("Check failed: it->second.Size() > offset" from
 * Runtime_WasmTriggerTierUp; the only WebAssembly is Node's TypeScript stripper), with and without
 * kube-ipvs' own flags. --no-wasm-tier-up leaves dynamic tiering on (so did not help);
 * --liftoff-only turns both off, and --no-liftoff (TurboFan only) made start-up so slow under TCG
 * that the lab's Kubernetes case timed out. Never seen outside the emulator: a lab setting.
 */
export const LAB_V8_FLAGS = ['--liftoff-only'];
/** A TypeScript program run the lab's way (and safe from Node's exit deadlock: src/util/v8-flags.ts). */
export const nodeArgs = (script: string, ...args: string[]) => [
  ...LAB_V8_FLAGS,
  ...EXIT_DEADLOCK_V8_FLAGS,
  script,
  ...args,
];
/** How a node runs kube-ipvs: node with the shipped V8 flags, then the CLI. */
export const CLI = [...DAEMON_V8_FLAGS, ...LAB_V8_FLAGS, join(repo, 'src/cli.ts')];

/**
 * The environment for the node's own processes (kube-ipvs, backends, clients): without the test
 * runner's NODE_OPTIONS and coverage hooks, as they would run on a real node (V8's coverage
 * instrumentation has crashed short-lived processes under TCG).
 */
export const procEnv: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^(NODE_OPTIONS|NODE_V8_COVERAGE|TAP.*|_TAPJS.*)$/.test(k)),
);

/** A short command; none may block a case for more than a minute. */
export const sh = (cmd: string, ...args: string[]) =>
  execFileSync(cmd, args, { encoding: 'utf8', env: procEnv, timeout: 60_000 });
const ns = (name: string, ...cmd: string[]) => sh('ip', 'netns', 'exec', name, ...cmd);

function veth(
  nsName: string,
  hostIf: string,
  nsAddr: string,
  gw: string,
  bridge?: string,
  hostAddr?: string,
  v6?: { nsAddr: string; gw: string; hostAddr?: string },
) {
  sh('ip', 'netns', 'add', nsName);
  sh('ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nsName);
  if (bridge) sh('ip', 'link', 'set', hostIf, 'master', bridge);
  if (hostAddr) sh('ip', 'addr', 'add', hostAddr, 'dev', hostIf);
  sh('ip', 'link', 'set', hostIf, 'up');
  ns(nsName, 'ip', 'link', 'set', 'lo', 'up');
  ns(nsName, 'ip', 'addr', 'add', nsAddr, 'dev', 'eth0');
  ns(nsName, 'ip', 'link', 'set', 'eth0', 'up');
  ns(nsName, 'ip', 'route', 'add', 'default', 'via', gw);
  if (v6) {
    if (v6.hostAddr) sh('ip', '-6', 'addr', 'add', v6.hostAddr, 'dev', hostIf, 'nodad');
    ns(nsName, 'ip', '-6', 'addr', 'add', v6.nsAddr, 'dev', 'eth0', 'nodad');
    ns(nsName, 'ip', '-6', 'route', 'add', 'default', 'via', v6.gw);
  }
}

/** The kernel's IPVS state as waitKernel() shows it: service id -> scheduler, timeout, destination -> weight. */
export type KernelView = Record<string, { scheduler: string; timeout: number; dests: Record<string, number> }>;

/** The pod network's IPv6 side (dual-stack cases). */
export const POD6_GW = 'fd00:244::1';
export const CLIENT_IP6 = 'fd00:250::2';

export class LabNode {
  readonly manifests: string;
  readonly stateDir: string;
  readonly backends: string[] = [];
  readonly #children: ChildProcess[] = [];
  /** Each backend's echo server. */
  readonly #servers = new Map<string, ChildProcess>();
  #proxy: ChildProcess | null = null;
  #shutDown = false;
  proxyLog = '';

  constructor() {
    const base = mkdtempSync('/tmp/kipvs-lab-');
    this.manifests = join(base, 'manifests');
    this.stateDir = join(base, 'state');
    mkdirSync(this.manifests);
  }

  /** The network, and `count` backends named be1..beN at 10.244.0.11.. */
  async build(count: number): Promise<void> {
    // A clean node whatever an earlier case file left behind (it may have hung and been killed).
    const left = resetNode();
    if (left.length) process.stderr.write(`lab: removed what an earlier case left: ${left.join('; ')}\n`);
    sh('ip', 'link', 'add', 'kbr0', 'type', 'bridge');
    sh('ip', 'addr', 'add', '10.244.0.1/24', 'dev', 'kbr0');
    sh('ip', '-6', 'addr', 'add', `${POD6_GW}/64`, 'dev', 'kbr0', 'nodad');
    sh('ip', 'link', 'set', 'kbr0', 'up');
    writeFileSync('/proc/sys/net/ipv4/ip_forward', '1');
    writeFileSync('/proc/sys/net/ipv6/conf/all/forwarding', '1');
    for (let i = 1; i <= count; i++) {
      const name = `be${i}`;
      veth(name, `vbe${i}`, `10.244.0.${10 + i}/24`, '10.244.0.1', 'kbr0', undefined, {
        nsAddr: `fd00:244::${10 + i}/64`,
        gw: POD6_GW,
      });
      this.backends.push(name);
      this.#servers.set(
        name,
        await this.#startChild(name, [join(repo, 'test/lab/support/echo.ts'), name, '8080'], /ready/),
      );
    }
    veth('client', 'vclient', `${CLIENT_IP}/24`, '10.250.0.1', undefined, '10.250.0.1/24', {
      nsAddr: `${CLIENT_IP6}/64`,
      gw: 'fd00:250::1',
      hostAddr: 'fd00:250::1/64',
    });
    veth('ext', 'vext', `${EXT_IP}/24`, NODE_IP, undefined, `${NODE_IP}/24`);
  }

  /** Kills a backend's server: its port refuses connections (RST). */
  async stopBackend(name: string): Promise<void> {
    const c = this.#servers.get(name);
    this.#servers.delete(name);
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((r) => {
      c.once('exit', () => r());
      c.kill('SIGKILL');
    });
  }

  /** (Re)starts a backend's server: `delayMs` makes it slow to greet; `udpSink` never answers UDP. */
  async startBackend(name: string, opts: { delayMs?: number; udpSink?: boolean } = {}): Promise<void> {
    await this.stopBackend(name);
    this.#servers.set(
      name,
      await this.#startChild(
        name,
        [
          join(repo, 'test/lab/support/echo.ts'),
          name,
          '8080',
          String(opts.delayMs ?? 0),
          opts.udpSink ? 'udp-sink' : '',
        ],
        /ready/,
      ),
    );
  }

  /** Drops every TCP packet to a backend's port inside its namespace (a black hole), or stops that. */
  blackhole(name: string, on: boolean): void {
    ns(name, 'iptables', on ? '-I' : '-D', 'INPUT', '-p', 'tcp', '--dport', '8080', '-j', 'DROP');
  }

  backendIP(name: string): string {
    return `10.244.0.${10 + Number(name.slice(2))}`;
  }

  backendIP6(name: string): string {
    return `fd00:244::${10 + Number(name.slice(2))}`;
  }

  #startChild(nsName: string, args: string[], ready: RegExp): Promise<ChildProcess> {
    const child = spawn('ip', ['netns', 'exec', nsName, nodeBin, ...LAB_V8_FLAGS, ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: procEnv,
    });
    this.#children.push(child);
    return new Promise((res, rej) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d.toString();
        if (ready.test(out)) res(child);
      });
      child.on('exit', (code) => rej(new Error(`${args.join(' ')} exited ${code}`)));
    });
  }

  /** Replaces the manifest folder's content: one file per call name. */
  write(file: string, objects: Record<string, unknown>[]): void {
    writeFileSync(join(this.manifests, `${file}.yaml`), objects.map((o) => stringify(o)).join('---\n'));
  }

  remove(file: string): void {
    rmSync(join(this.manifests, `${file}.yaml`), { force: true });
  }

  /** Starts `kube-ipvs run` on the folder, or on an API server (a real process, as on a node). */
  startProxy(extraConfig: Record<string, unknown> = {}, source: string[] = ['--manifests', this.manifests]): void {
    const cfgFile = join(this.stateDir, '..', 'config.yaml');
    writeFileSync(
      cfgFile,
      stringify({
        apiVersion: 'kube-ipvs.io/v1alpha1',
        kind: 'KubeIPVSConfiguration',
        stateDirectory: this.stateDir,
        ...extraConfig,
      }),
    );
    this.startProxyCommand(nodeBin, [...CLI, 'run', ...source, '--config', cfgFile, '--node', 'lab-node']);
  }

  /**
   * Starts kube-ipvs by another command line (the image case: from the image's root); its log is kept as startProxy's.
   */
  startProxyCommand(cmd: string, args: string[], env: NodeJS.ProcessEnv = procEnv): void {
    // The log says when the process was started and ended: how long a (re)start took to its first lines is in it.
    this.proxyLog += `\n[kube-ipvs started ${new Date().toISOString()}]\n`;
    this.#proxyLogFrom = this.proxyLog.length;
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    this.#proxy = p;
    p.stderr!.on('data', (d) => (this.proxyLog += d.toString()));
    p.on(
      'exit',
      (code, signal) =>
        (this.proxyLog += `\n[kube-ipvs exited ${new Date().toISOString()}: code ${code}, signal ${signal}]\n`),
    );
  }

  /** Where the running proxy's own log starts in proxyLog. */
  #proxyLogFrom = 0;

  /**
   * Waits until the proxy started last says it is running (its start-up: kernel settings, the source's first
   * read), so that a test's time for the kernel to follow a change is not spent by a slow start. Rejects when
   * the proxy exits first or `ms` pass. Returns how long it waited, in ms.
   */
  async waitProxyRunning(ms = 120_000): Promise<number> {
    const started = Date.now();
    const p = this.#proxy;
    for (;;) {
      if (this.proxyLog.includes('"msg":"kube-ipvs running"', this.#proxyLogFrom)) return Date.now() - started;
      if (!p || p.exitCode !== null || p.signalCode !== null)
        throw new Error(`kube-ipvs exited before it was running\nproxy log:\n${this.proxyLog.slice(-3000)}`);
      if (Date.now() - started > ms)
        throw new Error(`kube-ipvs not running after ${ms} ms\nproxy log:\n${this.proxyLog.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The running proxy's process id (null: none). */
  get proxyPid(): number | null {
    return this.#proxy?.pid ?? null;
  }

  killProxy(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.#proxy;
    this.#proxy = null;
    if (!p || p.exitCode !== null) return Promise.resolve();
    return new Promise((res) => {
      // A proxy that has not exited 60 s after SIGTERM is killed, and says so (a stop that hangs is a finding).
      const hard =
        signal === 'SIGKILL'
          ? undefined
          : setTimeout(() => {
              process.stderr.write(`lab: kube-ipvs still running 60 s after ${signal}: SIGKILL\n`);
              this.proxyLog += `\n[lab] still running 60 s after ${signal}: killed\n`;
              p.kill('SIGKILL');
            }, 60_000);
      p.once('exit', () => {
        clearTimeout(hard);
        res();
      });
      p.kill(signal);
    });
  }

  /** Runs client.ts in a namespace and parses its JSON line. */
  client<T = string[]>(nsName: string, ...args: string[]): T {
    return JSON.parse(ns(nsName, nodeBin, ...nodeArgs(join(repo, 'test/lab/support/client.ts'), ...args))) as T;
  }

  /**
   * A client connecting to host:port every `every` ms for `forMs` (0: until `stop`), in the background, each
   * connection on its own; its outcomes when it ends: [[began at (ms since the epoch), backend or "ERR ..."], ...].
   */
  tally(
    nsName: 'client' | 'ext',
    host: string,
    port: number,
    every: number,
    forMs: number,
  ): Promise<[number, string][]> & { stop(): void; started: Promise<void> } {
    const c = spawn(
      'ip',
      [
        'netns',
        'exec',
        nsName,
        nodeBin,
        ...nodeArgs(
          join(repo, 'test/lab/support/client.ts'),
          'tally',
          host,
          String(port),
          String(every),
          String(forMs),
        ),
      ],
      { stdio: [forMs === 0 ? 'pipe' : 'ignore', 'pipe', 'inherit'], env: procEnv },
    );
    this.#children.push(c);
    let out = '';
    let began = () => {};
    const started = new Promise<void>((r) => (began = r));
    c.stdout!.on('data', (d) => {
      out += d;
      if (out.startsWith('started\n')) began();
    });
    const done = new Promise<[number, string][]>((res) =>
      c.once('exit', () => {
        began();
        res(JSON.parse(out.replace(/^started\n/, '') || '[]') as [number, string][]);
      }),
    );
    return Object.assign(done, { stop: () => c.stdin?.end(), started });
  }

  /** A long-lived connection driven line by line. */
  hold(nsName: 'client' | 'ext', host: string, port: number) {
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        nsName,
        nodeBin,
        ...nodeArgs(join(repo, 'test/lab/support/client.ts'), 'hold', host, String(port)),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'], env: procEnv },
    );
    this.#children.push(child);
    const lines: string[] = [];
    const waiters: ((l: string) => void)[] = [];
    let buf = '';
    child.stdout!.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const w = waiters.shift();
        if (w) w(l);
        else lines.push(l);
      }
    });
    const next = () => new Promise<string>((r) => (lines.length ? r(lines.shift()!) : waiters.push(r)));
    return {
      first: next,
      send: (msg: string) => {
        child.stdin!.write(`${msg}\n`);
        return next();
      },
      close: () =>
        new Promise<void>((r) => {
          if (child.exitCode !== null || child.signalCode !== null) return r();
          const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
          child.once('exit', () => (clearTimeout(kill), r()));
          child.stdin!.end();
        }),
    };
  }

  /**
   * Polls the kernel until `check` passes (or throws after `ms`). `check` returns true when the
   * kernel is as wanted, or false or a description of what still differs, which the error
   * repeats with the kernel's state and the proxy's log.
   */
  async waitKernel(check: (k: KernelView) => boolean | string, ms = 15_000): Promise<KernelView> {
    const ipvs = await NetlinkIpvs.open();
    try {
      const until = Date.now() + ms;
      for (;;) {
        const k: KernelView = {};
        for (const s of await ipvs.services()) {
          const dests: Record<string, number> = {};
          for (const d of await ipvs.destinations(s)) dests[`${d.address}:${d.port}`] = d.weight;
          k[serviceId(s)] = { scheduler: s.scheduler, timeout: s.timeout, dests };
        }
        const r = check(k);
        if (r === true) return k;
        if (Date.now() > until)
          throw new Error(
            `kernel did not converge in ${ms} ms${typeof r === 'string' ? `: ${r}` : ''}\nkernel: ${JSON.stringify(k)}\nproxy log:\n${this.proxyLog.slice(-3000)}`,
          );
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      ipvs.close();
    }
  }

  /**
   * `kube-ipvs cleanup` with the proxy's config (and `args`): its output (stdout and stderr) and exit code.
   * Rejects when it does not finish within `timeoutMs` (killed): a product bug.
   */
  cleanup(
    timeoutMs = 60_000,
    args: string[] = [],
    onOutput: (soFar: string) => void = () => {},
  ): Promise<{ code: number | null; output: string }> {
    const started = Date.now();
    const c = spawn(nodeBin, [...CLI, 'cleanup', '--config', join(this.stateDir, '..', 'config.yaml'), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: procEnv,
    });
    let output = '';
    c.stdout!.on('data', (d) => onOutput((output += d)));
    c.stderr!.on('data', (d) => onOutput((output += d)));
    return new Promise((res, rej) => {
      const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
      c.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (signal === 'SIGKILL')
          rej(
            new Error(
              `kube-ipvs cleanup did not finish within ${timeoutMs / 1000} s (killed after ${Date.now() - started} ms): ${output.slice(-500)}`,
            ),
          );
        else res({ code, output });
      });
    });
  }

  /**
   * Stops everything started, removes what kube-ipvs programmed (its own cleanup) and the network, so the next case
   * file starts clean.
   */
  async shutdown(): Promise<void> {
    if (this.#shutDown) return; // a case may shut down in a test and again in its teardown
    this.#shutDown = true;
    await this.killProxy('SIGTERM');
    let cleanupError: Error | null = null;
    try {
      await this.cleanup();
    } catch (e) {
      cleanupError = e as Error;
    }
    for (const c of this.#children) c.kill('SIGKILL');
    // The host ends of the veth pairs before the namespaces: a link deleted goes at once with its peer, a namespace's
    // devices only when the kernel's cleanup gets to them, and a `vbeN` still there fails the next case's build.
    for (const l of [...this.backends.map((_, i) => `vbe${i + 1}`), 'vclient', 'vext']) {
      try {
        sh('ip', 'link', 'del', l);
      } catch {
        /* already gone */
      }
    }
    for (const n of [...this.backends, 'client', 'ext']) {
      try {
        sh('ip', 'netns', 'del', n);
      } catch {
        /* already gone */
      }
    }
    for (const l of ['kbr0', 'kube-ipvs0']) {
      try {
        sh('ip', 'link', 'del', l);
      } catch {
        /* already gone */
      }
    }
    // Nothing of the node is left: a case file still alive 20 s from now says what keeps it alive.
    watchExit(20_000);
    if (cleanupError) throw cleanupError;
  }
}
