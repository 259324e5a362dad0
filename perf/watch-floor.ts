// The floor under any service proxy written for Node (not part of kube-ipvs): one HTTPS watch of every
// EndpointSlice, each event line parsed with JSON.parse and dropped. `npm run bench:race` runs it as the proxy
// `node-watch-floor` (PROXIES=...,node-watch-floor), with the node binary and V8 flags kube-ipvs runs with, and
// measures its CPU under the same churn: what receiving the changes costs before anything is done with them.
//   node watch-floor.ts KUBECONFIG EXPECTED
// Prints `synced N` once it has had EXPECTED objects (the watch's initial events), then nothing more.
// The kubeconfig is the race's own (a server and a bearer token; the API server's certificate is the test's own,
// not verified).
import https from 'node:https';
import { readFileSync } from 'node:fs';

const [kubeconfig, expectedText] = process.argv.slice(2);
const expected = Number(expectedText);
if (!kubeconfig || !Number.isInteger(expected) || expected < 1) {
  process.stderr.write('usage: watch-floor.ts KUBECONFIG EXPECTED\n');
  process.exit(2);
}
const text = readFileSync(kubeconfig, 'utf8');
const server = /server:\s*"?(https:\/\/[0-9a-z.:-]+)"?/i.exec(text)?.[1];
const token = /token:\s*"?([0-9a-z]+)"?/i.exec(text)?.[1];
if (!server || !token) {
  process.stderr.write(`watch-floor: no server or token in ${kubeconfig}\n`);
  process.exit(2);
}
let added = 0;
// No resourceVersion: the API server sends every existing object first (ADDED), then the changes.
const req = https.request(
  `${server}/apis/discovery.k8s.io/v1/endpointslices?watch=true&allowWatchBookmarks=true`,
  { headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, rejectUnauthorized: false },
  (res) => {
    if (res.statusCode !== 200) {
      process.stderr.write(`watch-floor: HTTP ${res.statusCode}\n`);
      process.exit(1);
    }
    let rest = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      rest += chunk;
      for (let nl = rest.indexOf('\n'); nl !== -1; nl = rest.indexOf('\n')) {
        const event = JSON.parse(rest.slice(0, nl)) as { type?: string };
        rest = rest.slice(nl + 1);
        if (event.type === 'ADDED' && ++added === expected) process.stdout.write(`synced ${added}\n`);
      }
    });
    res.on('end', () => {
      process.stderr.write('watch-floor: the watch ended\n');
      process.exit(1);
    });
  },
);
req.on('error', (e) => {
  process.stderr.write(`watch-floor: ${e.message}\n`);
  process.exit(1);
});
req.end();
