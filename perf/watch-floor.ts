// The floor under any service proxy written for Node (not part of kube-ipvs): one watch of every EndpointSlice read
// by kube-ipvs' own watch reader (openWatch, src/sources/watch-stream.ts: node:https, lines cut from the response's
// Buffers, JSON.parse), each event counted and dropped. `npm run bench:race` runs it as the proxy `node-watch-floor`
// (PROXIES=...,node-watch-floor), with the node binary and V8 flags kube-ipvs runs with, and measures its CPU under the
// same churn: what receiving the changes costs before anything is done with them.
//   node watch-floor.ts KUBECONFIG EXPECTED
// Prints `synced N` once it has had EXPECTED objects (the watch's initial events), then nothing more.
// The kubeconfig is the race's own (its first cluster's server and first user's bearer token; the API server's
// certificate is the test set-up's own, not verified).
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { openWatch } from '../src/sources/watch-stream.ts';

const [kubeconfig, expectedText] = process.argv.slice(2);
const expected = Number(expectedText);
if (!kubeconfig || !Number.isInteger(expected) || expected < 1) {
  process.stderr.write('usage: watch-floor.ts KUBECONFIG EXPECTED\n');
  process.exit(2);
}
const kc = parse(readFileSync(kubeconfig, 'utf8')) as {
  clusters?: { cluster?: { server?: unknown } }[];
  users?: { user?: { token?: unknown } }[];
} | null;
const server = kc?.clusters?.[0]?.cluster?.server;
const token = kc?.users?.[0]?.user?.token;
if (typeof server !== 'string' || typeof token !== 'string') {
  process.stderr.write(`watch-floor: no server or token in ${JSON.stringify(kubeconfig)}\n`);
  process.exit(2);
}
const fail = (why: string) => {
  process.stderr.write(`watch-floor: ${why}\n`);
  process.exit(1);
};
let added = 0;
// No resourceVersion: the API server sends every existing object first (ADDED), then the changes.
await openWatch(
  {
    getCurrentCluster: () => ({ server }),
    applyToHTTPSOptions: async (o) => {
      o.headers = { ...o.headers, authorization: `Bearer ${token}` };
      o.rejectUnauthorized = false;
    },
  },
  '/apis/discovery.k8s.io/v1/endpointslices',
  { allowWatchBookmarks: true },
  (type) => {
    if (type === 'ADDED' && ++added === expected) process.stdout.write(`synced ${added}\n`);
  },
  (err) => fail(err === null ? 'the watch ended' : (err as Error).message),
  { idleTimeoutMs: 90_000, problem: (what, detail) => fail(`${what}: ${detail}`) },
);
