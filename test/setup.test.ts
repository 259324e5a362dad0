// The test set-up's steps (test/setup.ts) and the processes tests start (test/support/owned.ts):
// a step over its limit is stopped with its whole process group and recorded with a reason; a
// failing step's reason carries its last output; a child started through owned() dies with the
// process that started it, even when that process is SIGKILLed (as tap does at a file's timeout).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { runStep, type Step } from './setup.ts';
import { childrenDieWithUs } from './support/owned.ts';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return false;
  }
};
const until = async (f: () => boolean, ms: number) => {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (f()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return f();
};
const step = (cmd: string, limitS: number): Step => ({
  name: 'test',
  what: 'a test step',
  skip: () => null,
  cmd: ['bash', '-c', cmd],
  limitS,
});

t.test('a step over its limit is stopped, children included, and the reason recorded', async (t) => {
  const lines: string[] = [];
  // The step starts a grandchild (as go build starts compilers) and prints its pid.
  const r = await runStep(
    step('sleep 600 & echo "child $!" >&2; echo compiling >&2; wait', 1),
    (_, l) => void lines.push(l),
  );
  t.equal(r.ok, false);
  t.match(!r.ok && r.why, /did not finish within 1 s \(SETUP_TEST_TIMEOUT\); last output: .*compiling/);
  const pid = Number(/child (\d+)/.exec(lines.join('\n'))?.[1]);
  t.ok(pid > 0, 'the grandchild was started');
  t.ok(await until(() => !alive(pid), 2000), 'and is gone with the step');
  t.ok(
    lines.some((l) => /no result after/.test(l)),
    'the stop is said as it happens',
  );
});

t.test("a failing step's reason names its exit and last output; a good one is ready", async (t) => {
  const bad = await runStep(step('echo "go: module example.com/x: not found" >&2; exit 3', 60), () => {});
  t.match(!bad.ok && bad.why, /failed \(exit 3\): go: module example\.com\/x: not found/);
  const good = await runStep(step('echo building >&2', 60), () => {});
  t.same(good.ok, true);
  const skipped = await runStep({ ...step('exit 1', 60), skip: () => 'K8S=0 set' }, () => {});
  t.same(skipped, { ok: false, why: 'K8S=0 set' });
});

t.test(
  'a child started through owned() dies when its starter is SIGKILLed',
  { skip: childrenDieWithUs ? false : 'no setpriv on this machine' },
  async (t) => {
    // A Node process that starts `sleep` the way tests start servers, prints its pid, and waits.
    const script = `import { spawnOwned } from './test/support/owned.ts'; const c = spawnOwned('sleep', ['600'], { stdio: 'ignore' }); console.log(c.pid); setInterval(() => {}, 1000);`;
    const starter = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pid = await new Promise<number>((res) => starter.stdout.once('data', (d) => res(Number(String(d).trim()))));
    t.ok(await until(() => alive(pid), 2000), `the server (${pid}) runs`);
    starter.kill('SIGKILL');
    t.ok(await until(() => !alive(pid), 3000), 'and dies with its starter, with no teardown run');
  },
);
