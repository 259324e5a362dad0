// The linter's configuration catches what it is there for: each fixture under test/fixtures/lint/ marks
// the lines that must be reported (`expect: RULE`); exactly those are, and the handled forms next to
// them are not. So a rule switched off, or an option that lets `void p` through again, fails here.
// (`npm run lint` itself runs before the tests in `npm test`, over the whole tree.)
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ESLint } from 'eslint';

const repo = join(import.meta.dirname, '..');
const dir = join(repo, 'test/fixtures/lint');

t.test('each fixture reports exactly the lines it marks', async (t) => {
  // ignore: false: the project's config skips the fixtures; everything else is that config.
  const eslint = new ESLint({ cwd: repo, ignore: false, flags: ['unstable_native_nodejs_ts_config'] });
  const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
  t.ok(files.length >= 2, 'fixtures found');
  const results = await eslint.lintFiles(files.map((f) => join(dir, f)));
  for (const r of results) {
    const name = r.filePath.slice(dir.length + 1);
    const want = readFileSync(r.filePath, 'utf8')
      .split('\n')
      .flatMap((l, i) => {
        const m = /expect: (\S+)$/.exec(l);
        return m ? [`${i + 1} ${m[1]}`] : [];
      });
    t.ok(want.length > 0, `${name} marks some lines`);
    const got = r.messages.map((m) => `${m.line} ${m.ruleId ?? `(fatal) ${m.message}`}`);
    t.same(got.sort(), want.sort(), `${name}: reported lines and rules`);
  }
});
