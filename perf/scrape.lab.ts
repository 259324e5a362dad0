// Scrape benchmark, run inside the lab VM (npm run bench:lab:scrape): SERVICES x ENDPOINTS virtual
// servers restored with `ipvsadm -R` (faster than a cold start, same kernel state), labelled as the
// ownership record would, then the /metrics scrape timed over HTTP and split into its parts:
// the kernel's service dump decoded, the collector's
// snapshot, its rendering, the rest of the registry. Medians of RUNS.
// Under TCG every number is inflated by emulation: read the parts against each other.
import { execFile, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import { defaultConfig } from '../src/config/config.ts';
import { FlagsGet, genl } from 'netlink';
import { openGenericNetlink } from '../src/dataplane/netlink.ts';
import { NetlinkIpvs } from '../src/dataplane/ipvs/client.ts';
import { encodeRequest } from '../src/dataplane/ipvs/codec.ts';
import { Cmd, IPVS_GENL_NAME } from '../src/dataplane/ipvs/constants.ts';
import { serviceId } from '../src/dataplane/ipvs/types.ts';
import { IpvsCollector } from '../src/observe/ipvs-collector.ts';
import { Logger } from '../src/observe/log.ts';
import { Metrics } from '../src/observe/metrics.ts';
import { metricsHandler } from '../src/observe/server.ts';
import { describe, syntheticScrape } from './synthetic-scrape.ts';
import type { Daemon } from '../src/daemon.ts';

const SERVICES = Number(process.env.SERVICES ?? 10_000);
const ENDPOINTS = Number(process.env.ENDPOINTS ?? 10);
const RUNS = Number(process.env.RUNS ?? 5);
const execFileP = promisify(execFile);
const ip = (base: number, i: number) => `10.${base + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function time(f: () => Promise<unknown>): Promise<number> {
  const ts: number[] = [];
  for (let k = 0; k < RUNS; k++) {
    const t0 = performance.now();
    await f();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

const ipvs = await NetlinkIpvs.open({ timeoutMs: 60_000 });
await ipvs.flush();
const rules: string[] = [];
const labels = new Map<string, { service: string; portName: string; kind: string }>();
const planned = new Map<string, number>();
for (let i = 0; i < SERVICES; i++) {
  const vip = ip(96, i);
  rules.push(`-A -t ${vip}:80 -s rr`);
  for (let k = 0; k < ENDPOINTS; k++) rules.push(`-a -t ${vip}:80 -r ${ip(128, i * ENDPOINTS + k)}:8080 -m -w 1`);
  const id = serviceId({ family: 4, protocol: 'TCP', address: vip, port: 80 });
  labels.set(id, { service: `bench/svc-${i}`, portName: 'http', kind: 'ClusterIP' });
  planned.set(id, ENDPOINTS);
}
const t0 = performance.now();
execFileSync('ipvsadm', ['-R'], { input: rules.join('\n') + '\n', maxBuffer: 1 << 26 });
const restoreMs = performance.now() - t0;

const log = new Logger({ sink: () => {} });
const rows: [string, number][] = [];
// The floor: the same dump through the netlink package with nothing decoded, peeking at each
// chunk's size (the package's default) and with 64 KiB reads (bigger chunks from the kernel).
for (const read of [0, 65536]) {
  const sock = openGenericNetlink(read ? { readBufferBytes: read } : {});
  sock.socket.setRecvBufferSize(8 << 20);
  const fam = (await sock.ctrlRequest(genl.Commands.GET_FAMILY, { familyName: IPVS_GENL_NAME }))[0]!.familyId!;
  let msgs = 0;
  const ms = await time(async () => {
    msgs = (
      await sock.socket.request(fam, encodeRequest(Cmd.GET_SERVICE, []), { flags: FlagsGet.DUMP, timeout: 60_000 })
    )[0].length;
  });
  rows.push([
    `kernel service dump, undecoded, ${read ? `${read / 1024} KiB reads` : 'peeked reads'} (${msgs} messages)`,
    ms,
  ]);
  sock.socket.close();
}
rows.push(['kernel service dump, decoded, peeked reads', await time(() => ipvs.services())]);
const bigReads = await NetlinkIpvs.open({ timeoutMs: 60_000, readBufferBytes: 65536 });
rows.push(['kernel service dump, decoded, 64 KiB reads', await time(() => bigReads.services())]);
rows.push(['kernel service dump, keys and counters only, 64 KiB reads', await time(() => bigReads.serviceCounters())]);
let http = '';
for (const limit of [defaultConfig().metrics.realServerSeriesLimit, 0]) {
  const collector = new IpvsCollector({
    ipvs: bigReads,
    labels,
    realServerLimit: limit,
    plannedRealServers: () => planned,
    log,
  });
  const snap = await collector.snapshot();
  rows.push([`collector snapshot (limit ${limit})`, await time(() => collector.snapshot())]);
  rows.push([`collector render (limit ${limit})`, await time(() => collector.render(snap))]);
  const metrics = new Metrics();
  collector.register(metrics);
  rows.push([`registry without IPVS series`, await time(() => metrics.registry.metrics())]);
  rows.push([`metrics.exposition() (limit ${limit})`, await time(() => metrics.exposition())]);
  const server = createServer((req, res) => {
    // As the daemon serves it (src/observe/server.ts).
    metricsHandler({ metrics } as unknown as Daemon, log)(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  // The scrape as Prometheus sees it: curl in another process, from request to the last byte.
  let bytes = 0;
  const curlMs: number[] = [];
  for (let k = 0; k < RUNS; k++) {
    const { stdout } = await execFileP('curl', [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{time_total} %{size_download}',
      `http://127.0.0.1:${port}/metrics`,
    ]);
    const [secs, size] = stdout.trim().split(' ');
    curlMs.push(Number(secs) * 1000);
    bytes = Number(size);
  }
  const ms = median(curlMs);
  server.close();
  http += `  GET /metrics by curl, real-server limit ${String(limit).padEnd(5)} ${ms.toFixed(0)} ms   (${(bytes / 1e6).toFixed(1)} MB)   target within 1000 ms\n`;
}
await ipvs.flush();
ipvs.close();
bigReads.close();
// The same JavaScript without a kernel, as `npm run bench:scrape` runs it on a host: the ratio of
// the two is what emulation costs this workload.
for (const limit of [1000, 0])
  http += `  ${describe(await syntheticScrape(SERVICES, ENDPOINTS, limit, RUNS), SERVICES, ENDPOINTS, limit)}\n`;

console.log(
  `Scrape benchmark: ${SERVICES} virtual servers x ${ENDPOINTS} destinations (ipvsadm -R ${(restoreMs / 1000).toFixed(1)} s; kernel ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}, medians of ${RUNS})`,
);
for (const [what, ms] of rows) console.log(`  ${what.padEnd(80)} ${ms.toFixed(0)} ms`);
process.stdout.write(http);
setTimeout(() => process.exit(0), 20);
