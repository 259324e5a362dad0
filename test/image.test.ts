// The container image (images/build.sh, built by the test set-up when root): an OCI layout whose
// blobs match their digests, holding what kube-ipvs runs with and nothing else, and running
// `kube-ipvs plan` on the example manifests from its own root. The lab's image case
// (test/lab/cases/image.lab.ts) runs the same root against the IPVS kernel with real traffic.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import t from 'tap';
import { readLayout } from './support/image.ts';
import { imageBuilt } from './support/setup-state.ts';

const repo = resolve(import.meta.dirname, '..');
const built = imageBuilt();

if ('why' in built) {
  t.plan(0, `image tests skipped: ${built.why}`);
} else {
  const { IMAGE_OCI: oci, IMAGE_ROOTFS: root } = built.env;
  const { blob, index, manifestBlob, manifest, configBlob, config } = readLayout(oci!);
  const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

  t.test('an OCI layout whose every blob matches its digest and size', async (t) => {
    t.same(JSON.parse(readFileSync(join(oci!, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
    t.equal(index.manifests.length, 1);
    t.equal(
      index.manifests[0]!.annotations?.['org.opencontainers.image.ref.name'],
      JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).version,
    );
    t.equal(sha(manifestBlob), index.manifests[0]!.digest);
    t.equal(manifestBlob.length, index.manifests[0]!.size);
    t.equal(built.env.IMAGE_DIGEST, index.manifests[0]!.digest);
    t.equal(sha(configBlob), manifest.config.digest);
    t.equal([config.os, config.architecture].join('/'), 'linux/amd64');
    t.equal(manifest.layers.length, 2, 'a base layer and an app layer');
    manifest.layers.forEach((l, i) => {
      const b = blob(l.digest);
      t.equal(sha(b), l.digest, `layer ${i} digest`);
      t.equal(b.length, l.size, `layer ${i} size`);
      t.equal(sha(gunzipSync(b)), config.rootfs.diff_ids[i], `layer ${i} diff_id`);
    });
    const compressed = manifest.layers.reduce((a, l) => a + l.size, 0);
    t.equal(String(compressed), built.env.IMAGE_COMPRESSED_BYTES);
    t.comment(
      `image: ${(compressed / 2 ** 20).toFixed(1)} MB compressed, ${(Number(built.env.IMAGE_UNCOMPRESSED_BYTES) / 2 ** 20).toFixed(1)} MB uncompressed`,
    );
  });

  t.test(
    'the entry point is the node of the npm package running the compiled CLI with the shipped V8 flags',
    async (t) => {
      // "#!/usr/bin/env -S node --flag ...": the flags after `node`.
      const [env, dashS, node, ...flags] = readFileSync(join(repo, 'src/cli.ts'), 'utf8').split('\n')[0]!.split(' ');
      t.same([env, dashS, node], ['#!/usr/bin/env', '-S', 'node']);
      t.ok(flags.length > 0 && flags.every((f) => f.startsWith('--')), 'V8 flags');
      t.same(config.config.Entrypoint, ['/usr/bin/node', ...flags, '/opt/kube-ipvs/dist/cli.js']);
      t.same(config.config.Cmd, ['run']);
      // As a registry client reads it (the build installed skopeo and read it back too).
      const sk = spawnSync(
        'skopeo',
        ['inspect', '--config', `oci:${oci}:${index.manifests[0]!.annotations?.['org.opencontainers.image.ref.name']}`],
        { encoding: 'utf8', timeout: 60_000 },
      );
      t.equal(sk.status, 0, sk.stderr);
      t.same(
        (JSON.parse(sk.stdout) as { config: { Entrypoint: string[] } }).config.Entrypoint,
        config.config.Entrypoint,
        'skopeo reads the same entry point',
      );
    },
  );

  t.test(
    'what the root holds: node 24, the kernel tools, production dependencies; no shell, no package manager',
    async (t) => {
      for (const f of [
        'usr/bin/node',
        'usr/sbin/iptables-nft-restore',
        'usr/sbin/iptables-legacy-restore',
        'usr/sbin/ip6tables-nft-save',
        'usr/sbin/ipset',
        'usr/sbin/nft',
        'usr/sbin/conntrack',
        'bin/kmod',
        'sbin/modprobe',
        'opt/kube-ipvs/dist/cli.js',
        'opt/kube-ipvs/examples/web.yaml',
      ])
        t.ok(existsSync(join(root!, f)), f);
      for (const f of [
        'etc/resolv.conf',
        'etc/hostname',
        'etc/init.d',
        'bin/sh',
        'bin/bash',
        'bin/dash',
        'usr/bin/apt',
        'usr/bin/dpkg',
        'usr/bin/perl',
        'usr/bin/env',
        'usr/share/man',
      ])
        t.notOk(existsSync(join(root!, f)) || isLink(join(root!, f)), `no ${f}`);
      const deps = readdirSync(join(root!, 'opt/kube-ipvs/node_modules'));
      for (const dev of ['typescript', 'tap', '@tapjs', 'node', 'esbuild', '@types'])
        t.notOk(deps.includes(dev), `no dev dependency ${dev}`);
      // The native addon is loaded from its package folder: it and its loader stay whole.
      t.ok(existsSync(join(root!, 'opt/kube-ipvs/node_modules/netlink/prebuilds/linux-x64')), 'netlink addon');
      t.ok(existsSync(join(root!, 'opt/kube-ipvs/node_modules/node-gyp-build/package.json')), 'node-gyp-build');
    },
  );

  t.test('kube-ipvs is one bundled module: node_modules holds code only for the native netlink', async (t) => {
    const app = join(root!, 'opt/kube-ipvs');
    t.same(readdirSync(join(app, 'dist')).sort(), ['bundled-packages.json', 'cli.js', 'cli.js.LEGAL.txt']);
    const cli = readFileSync(join(app, 'dist/cli.js'), 'utf8');
    // One non-ASCII character anywhere and V8 holds the whole source (MBs) at two bytes a character.
    const wide = [...cli.matchAll(/[^\x00-\x7f]/g)].map((m) => cli.slice(Math.max(0, m.index - 30), m.index + 5));
    t.same(wide, [], 'the bundle is ASCII only');
    t.match(readFileSync(join(app, 'dist/cli.js.LEGAL.txt'), 'utf8'), /License/, 'legal comments kept beside it');
    // (The bundle is minified: `from"x"` has no space.)
    t.notMatch(cli, /\bfrom\s*['"]\.{1,2}\//, 'no relative import left in the bundle');
    t.match(
      cli,
      /\bfrom\s*['"]netlink['"]|require\(['"]netlink['"]\)|import\(['"]netlink['"]\)/,
      'netlink imported by name',
    );
    const bundled = JSON.parse(readFileSync(join(app, 'dist/bundled-packages.json'), 'utf8')) as string[];
    for (const prod of ['@kubernetes/client-node', 'prom-client', 'yaml'])
      t.ok(bundled.includes(`node_modules/${prod}`), `${prod} is bundled`);
    t.notOk(bundled.includes('node_modules/netlink'), 'netlink is not');
    // Each bundled package leaves its package.json (name, version, licence) where npm put it.
    const without = bundled.filter((d) => !existsSync(join(app, d, 'package.json')));
    t.same(without, [], 'every bundled package keeps its package.json');
    const code: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        const rel = p.slice(app.length + 1);
        if (rel === 'node_modules/netlink' || rel === 'node_modules/node-gyp-build') continue;
        if (e.isDirectory()) walk(p);
        else if (/\.(c|m)?js$|\.node$/.test(e.name)) code.push(rel);
      }
    };
    walk(join(app, 'node_modules'));
    t.same(code, [], 'no other code in node_modules');
  });

  t.test('licences travel with what they cover, and the docs are only those', async (t) => {
    t.equal(
      readFileSync(join(root!, 'opt/kube-ipvs/LICENSE'), 'utf8'),
      readFileSync(join(repo, 'LICENSE'), 'utf8'),
      "kube-ipvs' own",
    );
    t.match(
      readFileSync(join(root!, 'usr/share/doc/node/LICENSE'), 'utf8'),
      /^Node\.js is licensed for use as follows:/,
      "Node's, with its bundled libraries'",
    );
    // Debian: each package of the base keeps its copyright file (the named ones and what they pulled in).
    const doc = join(root!, 'usr/share/doc');
    for (const p of [
      'iptables',
      'ipset',
      'conntrack',
      'kmod',
      'nftables',
      'libc6',
      'libstdc++6',
      'libgcc-s1',
      'libnftnl11',
    ])
      t.ok(existsSync(join(doc, p, 'copyright')), `Debian ${p}: copyright`);
    const stray: string[] = [];
    for (const d of readdirSync(doc)) {
      if (isLink(join(doc, d)) || d === 'node') continue;
      const files = readdirSync(join(doc, d));
      if (files.join() !== 'copyright') stray.push(`${d}: ${files.join(', ')}`);
    }
    t.same(stray, [], 'every other doc folder holds its copyright file and nothing else');
    // npm: what each production package ships as its licence (LICENSE, LICENSE.md, NOTICE, ...) is there.
    const licenceFile = /^(licen[cs]e|notice|copying)/i;
    const lost: string[] = [];
    let packages = 0;
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        if (name.startsWith('@')) {
          walk(join(dir, name));
          continue;
        }
        const pkg = join(dir, name);
        if (!existsSync(join(pkg, 'package.json'))) continue;
        packages++;
        const rel = pkg.slice(root!.length + 'opt/kube-ipvs/'.length + 1);
        const source = join(repo, rel);
        if (existsSync(source))
          for (const f of readdirSync(source).filter((f) => licenceFile.test(f)))
            if (!existsSync(join(pkg, f))) lost.push(`${rel}/${f}`);
        if (existsSync(join(pkg, 'node_modules'))) walk(join(pkg, 'node_modules'));
      }
    };
    walk(join(root!, 'opt/kube-ipvs/node_modules'));
    t.ok(packages > 20, `${packages} production packages looked at`);
    t.same(lost, [], 'no licence file left behind');
  });

  // `env -i`: nothing of the test runner's environment (tap puts its loader in NODE_OPTIONS) reaches the image's node.
  const inRoot = (...cmd: string[]) =>
    spawnSync(
      'env',
      [
        '-i',
        'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
        'unshare',
        '--net',
        '--mount',
        '--pid',
        '--fork',
        'chroot',
        root!,
        ...cmd,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );

  t.test('--version from the image root names the version of these sources', async (t) => {
    const r = inRoot(...config.config.Entrypoint, '--version');
    t.equal(r.status, 0, r.stderr);
    const want = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
    t.match(r.stdout, new RegExp(`^kube-ipvs ${want.replace(/\./g, '\\.')} \\(node v24\\.`));
  });

  t.test("kube-ipvs plan on the example manifests, inside the image root, equals the sources' plan", async (t) => {
    const r = inRoot(...config.config.Entrypoint, 'plan', '--manifests', '/opt/kube-ipvs/examples', '--output', 'json');
    t.equal(r.status, 0, r.stderr);
    const src = spawnSync(
      process.execPath,
      ['src/cli.ts', 'plan', '--manifests', 'config/examples', '--output', 'json'],
      { cwd: repo, encoding: 'utf8' },
    );
    t.same(JSON.parse(r.stdout), JSON.parse(src.stdout));
    const v = inRoot('/usr/bin/node', '-p', 'process.versions.node');
    t.match(v.stdout, /^24\./, 'Node 24');
  });

  t.test("the image's iptables (nft and legacy) and ipset work from its root", async (t) => {
    for (const cmd of [
      ['iptables-nft-save', '-t', 'nat'],
      ['iptables-legacy-save'],
      ['ipset', 'version'],
      ['conntrack', '--version'],
      ['iptables', '--version'],
      ['nft', '--version'],
    ]) {
      const r = inRoot(...cmd);
      t.equal(r.status, 0, `${cmd.join(' ')}: ${r.stderr}`);
    }
    t.match(inRoot('iptables', '--version').stdout, /nf_tables/, "the generic name is nft, as Debian's default");
  });
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
