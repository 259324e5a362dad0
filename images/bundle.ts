// The image's kube-ipvs: the CLI as one ES module, and of node_modules only what that module cannot hold.
//   node images/bundle.ts APP_DIR     (APP_DIR: the image's /opt/kube-ipvs, after `npm ci --omit=dev` there)
// - APP_DIR/dist/cli.js: esbuild bundles src/cli.ts with every dependency but `netlink` (a native addon that
//   node-gyp-build loads from its package folder). Why: Node resolves, reads and compiles some thousand module
//   files of @kubernetes/client-node at start otherwise; measured on a development host, `run` against an API
//   server to its first list request: 1.09 s and 113 MB peak RSS for tsc's output, 0.40 s and 85 MB bundled
//   (medians of 3).
// - APP_DIR/dist/bundled-packages.json: the package folders (relative to APP_DIR) whose code the bundle holds.
// - APP_DIR/node_modules keeps `netlink` and `node-gyp-build` whole; of each bundled package, its package.json and
//   licence files (LICENSE, NOTICE, COPYING...: the licence travels with the code it covers); nothing else.
import { build } from 'esbuild';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

/** Loaded from their own package folder at run time, so not bundled and kept whole. */
export const EXTERNAL = ['netlink'];
const KEEP_WHOLE = new Set(['node_modules/netlink', 'node_modules/node-gyp-build']);
export const LICENCE_FILE = /^(licen[cs]e|notice|copying)/i;

/** The package folder (…/node_modules/[@scope/]name) a path lies in, innermost, or null. */
export function packageDir(path: string): string | null {
  const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)(?:\/|$)/.exec(path);
  return m ? m[1]! : null;
}

async function main(appDir: string): Promise<void> {
  const repo = resolve(import.meta.dirname, '..');
  const app = resolve(appDir);
  if (!existsSync(join(app, 'node_modules'))) throw new Error(`${app}/node_modules is missing: npm ci there first`);
  mkdirSync(join(app, 'dist'), { recursive: true });
  // The sources are bundled from a copy inside APP_DIR, so that every import resolves in the production
  // install, as at run time: from the repository, an optional require (debug's of supports-color) found a
  // development package there and bundled it.
  const from = join(app, '.bundle-sources');
  rmSync(from, { recursive: true, force: true });
  cpSync(join(repo, 'src'), join(from, 'src'), { recursive: true });
  let result;
  try {
    result = await build({
      absWorkingDir: app,
      entryPoints: [join(from, 'src/cli.ts')],
      outfile: join(app, 'dist/cli.js'),
      bundle: true,
      platform: 'node',
      target: 'node24',
      format: 'esm',
      external: EXTERNAL,
      metafile: true,
      logLevel: 'error',
      // V8 keeps a script's whole source on the heap, as one byte a character only when every character is ASCII:
      // the unminified bundle (4 MB) had a few non-ASCII characters in comments and was held as 7.6 MB. Without
      // comments and indentation, ASCII only (a legal comment's "ä" included: those go to cli.js.LEGAL.txt), it is
      // 2.7 MB. Names are kept: a stack trace still names every function.
      minifyWhitespace: true,
      charset: 'ascii',
      legalComments: 'external',
      // CommonJS dependencies call require() for Node's modules; an ES module has none of its own.
      banner: {
        js: "import { createRequire as kipvsCreateRequire } from 'node:module';\nconst require = kipvsCreateRequire(import.meta.url);",
      },
    });
  } finally {
    rmSync(from, { recursive: true, force: true });
  }
  const bundled = new Set<string>();
  for (const input of Object.keys(result.metafile.inputs)) {
    const dir = packageDir(input);
    if (dir) bundled.add(dir);
  }
  // A package bundled from the repository's node_modules that the production install lacks would leave its
  // licence behind (a development dependency imported by src/): refuse.
  const missing = [...bundled].filter((d) => !existsSync(join(app, d, 'package.json')));
  if (missing.length > 0) throw new Error(`bundled but not production dependencies: ${missing.join(', ')}`);
  writeFileSync(join(app, 'dist/bundled-packages.json'), JSON.stringify([...bundled].sort(), null, 1) + '\n');

  let kept = 0;
  let removed = 0;
  const prune = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      const rel = relative(app, p);
      if (e.isDirectory()) {
        if (KEEP_WHOLE.has(rel)) continue;
        prune(p);
        if (readdirSync(p).length === 0) rmdirSync(p);
        continue;
      }
      const pkg = packageDir(rel);
      const keep =
        pkg !== null &&
        bundled.has(pkg) &&
        relative(pkg, rel) === e.name &&
        (e.name === 'package.json' || LICENCE_FILE.test(e.name));
      if (keep) kept++;
      else {
        rmSync(p, { force: true });
        removed++;
      }
    }
  };
  prune(join(app, 'node_modules'));
  process.stderr.write(
    `images: bundled dist/cli.js (${bundled.size} packages; ${EXTERNAL.join(', ')} external); node_modules: ${kept} package and licence files kept, ${removed} files removed\n`,
  );
}

if (import.meta.main) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: node images/bundle.ts APP_DIR\n');
    process.exit(2);
  }
  main(dir).catch((e: unknown) => {
    process.stderr.write(`images: bundling failed: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
