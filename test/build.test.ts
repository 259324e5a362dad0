// The production build (`npm run build`, run by the test set-up): the compiled JavaScript in dist/
// is what the image and the published bin run, so it must behave as the sources do.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import t from 'tap';
import { distBuilt } from './support/setup-state.ts';
import { DAEMON_V8_FLAGS } from '../src/util/v8-flags.ts';

const repo = resolve(import.meta.dirname, '..');
const built = distBuilt();
const run = (entry: string, args: string[]) =>
  spawnSync(process.execPath, [...DAEMON_V8_FLAGS, entry, ...args], { cwd: repo, encoding: 'utf8', timeout: 60_000 });

t.test('the package publishes the compiled bin, with the V8 flags of the sources', async (t) => {
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as {
    bin: Record<string, string>;
    files: string[];
  };
  t.equal(pkg.bin['kube-ipvs'], 'dist/cli.js');
  t.ok(pkg.files.includes('dist/'), 'dist/ is in the published files');
  if ('why' in built) {
    t.comment(`dist/ not built: ${built.why}`);
    return;
  }
  const shebang = readFileSync(built.cli, 'utf8').split('\n')[0];
  t.equal(shebang, readFileSync(join(repo, 'src/cli.ts'), 'utf8').split('\n')[0]);
  t.match(shebang, DAEMON_V8_FLAGS.join(' '));
});

t.test(
  'the package npm would publish: the compiled code and the examples, no sources or tests',
  { skip: 'why' in built ? `dist/ not built: ${built.why}` : false },
  async (t) => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: repo,
      encoding: 'utf8',
      timeout: 60_000,
    });
    t.equal(r.status, 0, r.stderr);
    const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
    t.ok(files.includes('dist/cli.js'), 'dist/cli.js');
    t.ok(files.includes('config/examples/web.yaml'), 'the examples');
    t.ok(files.includes('LICENSE'), 'the licence');
    t.same(
      files.filter((f) => /^(src|test|perf|images|charts)\//.test(f) || f.endsWith('.ts')),
      [],
      'no sources, tests or build files',
    );
    const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    t.equal(pkg.scripts.prepack, 'npm run build', 'packing compiles first');
  },
);

t.test(
  'compiled and sources plan the example manifests identically',
  { skip: 'why' in built ? `dist/ not built: ${built.why}` : false },
  async (t) => {
    const args = ['plan', '--manifests', 'config/examples', '--output', 'json'];
    const src = run('src/cli.ts', args);
    const js = run((built as { cli: string }).cli, args);
    t.equal(js.status, 0, js.stderr);
    t.equal(src.status, 0, src.stderr);
    const plan = JSON.parse(js.stdout) as { virtualServers: unknown[] };
    t.ok(plan.virtualServers.length > 0, 'the plan has virtual servers');
    t.same(plan, JSON.parse(src.stdout));
    const dry = run((built as { cli: string }).cli, ['run', '--manifests', 'config/examples', '--dry-run', '--once']);
    t.equal(dry.status, 0, dry.stderr);
    t.match(dry.stdout, /ipvs/i, 'the dry run printed what it would program');
    const v = run((built as { cli: string }).cli, ['--version']);
    t.equal(v.status, 0, v.stderr);
    t.equal(v.stdout, run('src/cli.ts', ['--version']).stdout, 'the same version (package.json next to dist/)');
    t.match(v.stdout, /^kube-ipvs \d+\.\d+\.\d+ /);
  },
);

t.test(
  'no TypeScript import is left in the compiled code',
  { skip: 'why' in built ? `dist/ not built: ${built.why}` : false },
  async (t) => {
    const dist = join(repo, 'dist');
    const files = readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js'));
    t.ok(files.length > 30, `${files.length} compiled modules`);
    const stale = files.filter((f) =>
      /from ['"]\.[^'"]*\.ts['"]|import\(['"]\.[^'"]*\.ts['"]\)/.test(readFileSync(join(dist, f), 'utf8')),
    );
    t.same(stale, [], 'relative imports were rewritten to .js');
    t.match(readFileSync(join(dist, 'cli.js'), 'utf8'), /from ['"]\.\/commands\/run\.js['"]/);
  },
);
