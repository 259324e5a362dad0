// images/bundle.ts' path rule (the whole bundle is checked on the built image in test/image.test.ts).
import t from 'tap';
import { LICENCE_FILE, packageDir } from '../images/bundle.ts';

t.test('packageDir: the innermost package folder of a path', async (t) => {
  t.equal(packageDir('node_modules/yaml/dist/index.js'), 'node_modules/yaml');
  t.equal(packageDir('node_modules/@kubernetes/client-node/dist/config.js'), 'node_modules/@kubernetes/client-node');
  t.equal(
    packageDir('node_modules/@kubernetes/client-node/node_modules/undici/lib/api.js'),
    'node_modules/@kubernetes/client-node/node_modules/undici',
  );
  t.equal(packageDir('node_modules/a/node_modules/@s/b/x.js'), 'node_modules/a/node_modules/@s/b');
  t.equal(packageDir('node_modules/yaml'), 'node_modules/yaml', 'the folder itself');
  t.equal(packageDir('src/cli.ts'), null, 'our own sources lie in no package');
});

t.test('LICENCE_FILE: the licence files a pruned package keeps', async (t) => {
  for (const f of ['LICENSE', 'license.md', 'LICENCE-MIT', 'NOTICE', 'COPYING.txt']) t.ok(LICENCE_FILE.test(f), f);
  for (const f of ['index.js', 'README.md', 'package.json', 'lib']) t.notOk(LICENCE_FILE.test(f), f);
});
