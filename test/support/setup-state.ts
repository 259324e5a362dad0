// What the set-up step (test/setup.ts) left for the tests: each test checks that its step's result
// is in place (fast, never building anything) and otherwise skips with the step's recorded reason.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const repo = resolve(import.meta.dirname, '../..');
export const SETUP_STATE_FILE = join(repo, 'test/.setup/state.json');

export type StepState = { ok: true; seconds: number } | { ok: false; why: string; seconds?: number };

/** Why the set-up step did not get `step` ready, as it recorded it (or that it has not run). */
function recordedWhy(step: string): string {
  if (!existsSync(SETUP_STATE_FILE))
    return 'the test set-up has not run here: run `npm run test:setup` (npm test runs it first)';
  try {
    const s = (JSON.parse(readFileSync(SETUP_STATE_FILE, 'utf8')) as Record<string, StepState | undefined>)[step];
    if (s && !s.ok) return s.why;
  } catch {
    /* unreadable: fall through */
  }
  return `the set-up's ${step} result is missing or out of date: run \`npm run test:setup\``;
}

/** Runs a step's `--check`: its stdout when ready, or null. */
function check(script: string): string | null {
  try {
    return execFileSync('bash', [join(repo, script), '--check'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 30_000,
    });
  } catch {
    return null;
  }
}

/** The built kube-apiserver/kube-proxy/etcd folder, or why not. */
export function k8sBinaries(): { bin: string } | { why: string } {
  if (process.env.K8S === '0') return { why: 'K8S=0 set' };
  const out = check('test/k8s/build.sh');
  return out ? { bin: out.trim().split('\n').at(-1)! } : { why: recordedWhy('k8s') };
}

/** KEY=VALUE lines (what prepare.sh and images/build.sh print) as an object. */
export function keyValueLines(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

/** A root-only step whose `--check` prints KEY=VALUE lines: those, or why not. */
function rootStep(
  step: string,
  script: string,
  off: string,
  notRoot: string,
): { env: Record<string, string> } | { why: string } {
  if (process.env[off] === '0') return { why: `${off}=0 set` };
  if (process.getuid?.() !== 0) return { why: `not root: ${notRoot}` };
  const out = check(script);
  return out ? { env: keyValueLines(out) } : { why: recordedWhy(step) };
}

/** The IPVS lab's prepared kernel and initramfs (prepare.sh's KEY=VALUE lines), or why not. */
export const labPrepared = () =>
  rootStep('lab', 'test/lab/prepare.sh', 'LAB', 'the lab installs qemu from Debian packages and boots a VM');

/**
 * The container image of these sources (images/build.sh's KEY=VALUE lines: IMAGE_ROOTFS, IMAGE_OCI, sizes), or why not.
 */
export const imageBuilt = () =>
  rootStep('image', 'images/build.sh', 'IMAGE', 'the image build runs mmdebstrap and stores root-owned files');
/** dist/ compiled from the sources as they are now (no source file newer than dist/cli.js), or why not. */
export function distBuilt(): { cli: string } | { why: string } {
  const cli = join(repo, 'dist/cli.js');
  if (!existsSync(cli)) return { why: recordedWhy('build') };
  const builtAt = statSync(cli).mtimeMs;
  const newer = readdirSync(join(repo, 'src'), { recursive: true, encoding: 'utf8' }).find(
    (f) => f.endsWith('.ts') && statSync(join(repo, 'src', f)).mtimeMs > builtAt,
  );
  return newer ? { why: `src/${newer} is newer than dist/: run \`npm run build\` (npm test's set-up does)` } : { cli };
}
