// Golden folders: test/golden/<case>/ holds manifests (or case.json pointing at them), and the
// expected plan and problem lines. Regenerate with UPDATE_GOLDEN=1 npm test; never edit by hand.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { main } from '../src/cli.ts';

const root = 'test/golden';
const update = process.env.UPDATE_GOLDEN === '1';

interface CaseFile {
  manifests?: string;
  config?: string;
  node?: string;
}

for (const name of readdirSync(root).sort()) {
  const dir = join(root, name);
  t.test(name, async (t) => {
    const c: CaseFile = existsSync(join(dir, 'case.json'))
      ? JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8'))
      : {};
    const argv = ['plan', '--manifests', c.manifests ?? join(dir, 'manifests'), '--output', 'json'];
    if (c.config) argv.push('--config', c.config);
    if (c.node) argv.push('--node', c.node);
    let stdout = '';
    let stderr = '';
    const code = await main(argv, {
      stdout: (s) => (stdout += s),
      stderr: (s) => (stderr += s),
    });
    t.equal(code, 0, 'plan succeeds without --strict');
    const files = { 'expected.json': stdout, 'expected.problems.txt': stderr };
    for (const [file, got] of Object.entries(files)) {
      const path = join(dir, file);
      if (update) writeFileSync(path, got);
      t.ok(existsSync(path), `${path} exists (UPDATE_GOLDEN=1 creates it)`);
      if (existsSync(path)) t.equal(got, readFileSync(path, 'utf8'), `${file} matches`);
    }
  });
}
