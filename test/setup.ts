// The test suite's set-up step, run by `npm test` before tap (and alone by `npm run test:setup`):
// builds or downloads what the tests need, each step under its own time limit and with progress
// on stderr, never inside a test file's timeout. Tests only check that a step's result is there
// (test/support/setup-state.ts); when a step could not finish, its reason is recorded in
// test/.setup/state.json and the tests that need it skip with that reason.
//
//   build  the compiled JavaScript in dist/ (`npm run build`), which the image and the bin run
//   k8s  kube-apiserver, kube-proxy, etcd and helm from Go modules (test/k8s/build.sh)   K8S=0 skips
//   image  the container image (images/build.sh: mmdebstrap, npm, tsc), needs root      IMAGE=0 skips
//   lab  qemu and the tools from Debian, the Debian kernel, the initramfs (test/lab/prepare.sh)
//        needs root                                                                 LAB=0 skips
//
// Limits: SETUP_BUILD_TIMEOUT / SETUP_K8S_TIMEOUT / SETUP_IMAGE_TIMEOUT / SETUP_LAB_TIMEOUT in seconds (defaults 300,
// 2400, 900, 1200). The steps
// run side by side (the Go build is CPU-bound, the lab's downloads are not). The exit status is 0
// whatever the steps did (their tests skip with the reason); 2 only on bad usage.
import { spawn } from 'node:child_process';
import { mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SETUP_STATE_FILE, type StepState } from './support/setup-state.ts';

const repo = resolve(import.meta.dirname, '..');

export interface Step {
  name: string;
  what: string;
  skip: () => string | null;
  cmd: string[];
  limitS: number;
}

const limit = (env: string, dflt: number) => {
  const v = process.env[env];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    process.stderr.write(`setup: ${env}=${JSON.stringify(v)} is not a number of seconds\n`);
    process.exit(2);
  }
  return n;
};

const steps = (): Step[] => [
  {
    name: 'build',
    what: 'the compiled JavaScript in dist/ (tsc -p tsconfig.build.json)',
    skip: () => null,
    cmd: [process.execPath, 'node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'],
    limitS: limit('SETUP_BUILD_TIMEOUT', 300),
  },
  {
    name: 'k8s',
    what: 'kube-apiserver, kube-proxy and etcd from Go modules',
    skip: () => (process.env.K8S === '0' ? 'K8S=0 set' : null),
    cmd: ['bash', 'test/k8s/build.sh'],
    limitS: limit('SETUP_K8S_TIMEOUT', 2400),
  },
  {
    name: 'image',
    what: 'the container image (images/build.sh)',
    skip: () =>
      process.env.IMAGE === '0'
        ? 'IMAGE=0 set'
        : process.getuid?.() !== 0
          ? 'not root: the image build runs mmdebstrap and stores root-owned files'
          : null,
    cmd: ['bash', 'images/build.sh'],
    limitS: limit('SETUP_IMAGE_TIMEOUT', 900),
  },
  {
    name: 'lab',
    what: 'qemu, the Debian kernel and the initramfs of the IPVS lab',
    skip: () =>
      process.env.LAB === '0'
        ? 'LAB=0 set'
        : process.getuid?.() !== 0
          ? 'not root: the lab installs qemu from Debian packages and boots a VM'
          : null,
    cmd: ['bash', 'test/lab/prepare.sh'],
    limitS: limit('SETUP_LAB_TIMEOUT', 1200),
  },
];

const started = Date.now();
const clock = (from: number) => {
  const s = Math.round((Date.now() - from) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
};
export type Say = (step: string, line: string) => void;
const progress: Say = (step, line) => void process.stderr.write(`[setup ${step} +${clock(started)}] ${line}\n`);

/** Runs one step in a process group of its own (a timeout kills the whole build, not just bash). */
export function runStep(step: Step, say: Say = progress): Promise<StepState> {
  const skip = step.skip();
  if (skip) {
    say(step.name, `skipped: ${skip}`);
    return Promise.resolve({ ok: false, why: skip });
  }
  say(step.name, `${step.what} (limit ${Math.round(step.limitS / 60)} min)`);
  const t0 = Date.now();
  return new Promise((done) => {
    const child = spawn(step.cmd[0]!, step.cmd.slice(1), {
      cwd: repo,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tail: string[] = [];
    let lines = 0;
    let partial = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      partial += d;
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const l of parts) {
        if (!l.trim()) continue;
        lines++;
        tail = [...tail.slice(-5), l];
        // Go prints one line per module downloaded: show the first few and then a count.
        if (!/^go: downloading /.test(l) || lines <= 5) say(step.name, l);
      }
    });
    child.stdout.resume();
    const beat = setInterval(
      () => say(step.name, `still working (${clock(t0)} so far, ${lines} lines of output)`),
      60_000,
    );
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      say(step.name, `no result after ${Math.round(step.limitS / 60)} min: stopping it`);
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, step.limitS * 1000);
    // This script's own death (Ctrl-C, a CI kill) takes the step's process group with it.
    const kill = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    };
    process.once('exit', kill);
    child.on('close', (code, signal) => {
      clearInterval(beat);
      clearTimeout(timer);
      process.off('exit', kill);
      const seconds = Math.round((Date.now() - t0) / 1000);
      if (code === 0) {
        say(step.name, `ready in ${clock(t0)}`);
        done({ ok: true, seconds });
        return;
      }
      const why = timedOut
        ? `${step.cmd.join(' ')} did not finish within ${step.limitS} s (SETUP_${step.name.toUpperCase()}_TIMEOUT); last output: ${tail.join(' | ')}`
        : `${step.cmd.join(' ')} failed (${signal ?? `exit ${code}`}): ${tail.join(' | ')}`;
      say(step.name, `NOT READY: ${why}`);
      done({ ok: false, why, seconds });
    });
  });
}

async function main(): Promise<void> {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => process.exit(130));
  const STEPS = steps();
  const results = await Promise.all(STEPS.map((s) => runStep(s)));
  const state = Object.fromEntries(STEPS.map((s, i) => [s.name, results[i]!]));
  mkdirSync(join(repo, 'test/.setup'), { recursive: true });
  writeFileSync(SETUP_STATE_FILE, `${JSON.stringify({ at: new Date().toISOString(), ...state }, null, 2)}\n`);
  const summary = STEPS.map((s, i) => {
    const r = results[i]!;
    return `${s.name} ${r.ok ? 'ready' : `not ready (${r.why}): its tests will skip`}`;
  }).join('; ');
  process.stderr.write(`setup: done in ${clock(started)}: ${summary}\n`);
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
