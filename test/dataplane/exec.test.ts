// The system-tool runner's timing wrapper: what it names a run (never an argument from outside) and what it reports.
import t from 'tap';
import { FakeExec, SystemExec, TimedExec, toolName } from '../../src/dataplane/exec.ts';
import { Metrics } from '../../src/observe/metrics.ts';

t.test('a run is named by its tool and subcommand, nothing else', async (t) => {
  t.equal(toolName('ipset', ['restore']), 'ipset restore');
  t.equal(toolName('/usr/sbin/ipset', ['list', '-t']), 'ipset list');
  t.equal(toolName('iptables-nft-restore', ['--noflush', '-w', '5']), 'iptables-nft-restore');
  t.equal(toolName('conntrack', ['-D', '-p', 'udp', '--orig-dst', '10.96.0.10']), 'conntrack -D');
  t.equal(toolName('ipset', ['add', 'KIPVS-CLUSTER-IP']), 'ipset add');
  t.equal(toolName('ipset', ['10.0.0.1"}\n']), 'ipset', 'an odd first argument is left out');
  t.equal(toolName('weird tool"', []), 'other');
});

t.test('each run is observed with its duration, exit code and input size; the answer is passed on', async (t) => {
  const fake = new FakeExec();
  fake.handlers.push((cmd) => (cmd === 'ipset' ? { code: 1, stdout: '', stderr: 'no' } : undefined));
  const seen: [string, number, number, number][] = [];
  const exec = new TimedExec(fake, (tool, s, code, bytes) => void seen.push([tool, s, code, bytes]));
  t.same(await exec.run('ipset', ['restore'], 'add X 1\n'), { code: 1, stdout: '', stderr: 'no' });
  await exec.run('iptables-nft-save', []);
  t.same(
    seen.map(([tool, , code, bytes]) => [tool, code, bytes]),
    [
      ['ipset restore', 1, 8],
      ['iptables-nft-save', 0, 0],
    ],
  );
  t.ok(seen.every(([, s]) => s >= 0 && s < 5));
  // A real process: the duration covers it.
  const metrics = new Metrics({ defaultMetrics: false });
  const real = new TimedExec(new SystemExec(), (tool, s) => metrics.toolDuration.observe({ tool }, s));
  t.equal((await real.run('sleep', ['0.2'])).code, 0);
  t.match(await metrics.text(), /kubeipvs_tool_duration_seconds_bucket\{le="0.1",tool="sleep"\} 0/);
  t.match(await metrics.text(), /kubeipvs_tool_duration_seconds_bucket\{le="0.25",tool="sleep"\} 1/);
});

t.test(
  "the recording runner keeps its calls, unless asked not to (a dry-run daemon's would grow forever)",
  async (t) => {
    const kept = new FakeExec();
    const unkept = new FakeExec({ record: false });
    unkept.handlers.push((cmd) => (cmd === 'ipset' ? { code: 1, stdout: '', stderr: 'no' } : undefined));
    for (const x of [kept, unkept]) await x.run('iptables-restore', ['--noflush'], '*nat\nCOMMIT\n');
    t.same(kept.calls, [{ cmd: 'iptables-restore', args: ['--noflush'], input: '*nat\nCOMMIT\n' }]);
    t.same(unkept.calls, []);
    t.equal((await unkept.run('ipset', ['list'])).code, 1, 'its handlers still answer');
  },
);
