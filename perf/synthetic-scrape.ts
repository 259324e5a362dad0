// The JavaScript part of a /metrics scrape, without a kernel: SERVICES x ENDPOINTS IPVS replies
// built as the kernel builds them (genl payloads with 32- and 64-bit stats), decoded by the codec,
// through the collector and the registry as the daemon serves them. "idle": the same counters at
// every scrape (the lines kept from the last scrape are reused); "busy": every virtual server's
// and real server's counters changed since the last scrape (every line rendered again).
// Run alone on a host (npm run bench:scrape) and inside the lab VM by perf/scrape.lab.ts: the
// ratio of the two is what emulation costs this workload.
import { performance } from 'node:perf_hooks';
import type { Ipvs } from '../src/dataplane/ipvs/client.ts';
import { decodeDestinationCounters, decodeServiceCounters } from '../src/dataplane/ipvs/codec.ts';
import { attr } from '../src/dataplane/nlattr.ts';
import { serviceId } from '../src/dataplane/ipvs/types.ts';
import { IpvsCollector } from '../src/observe/ipvs-collector.ts';
import { Logger } from '../src/observe/log.ts';
import { Metrics } from '../src/observe/metrics.ts';

const tlv = attr;
const le16 = (n: number) => Buffer.from([n & 255, n >> 8]);
const be16 = (n: number) => Buffer.from([n >> 8, n & 255]);
const le32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const le64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};
const addr = (a: number[]) => {
  const b = Buffer.alloc(16);
  b.set(a);
  return b;
};
const stats = (k: number, w: (n: number) => Buffer) =>
  Buffer.concat(Array.from({ length: 10 }, (_, i) => tlv(i + 1, w(k * (i + 1)))));
const reply = (attr: number, inner: Buffer) => Buffer.concat([Buffer.from([1, 1, 0, 0]), tlv(attr, inner)]);
/** The byte offset of the first 64-bit counter (conns) in a reply whose last attribute is STATS64. */
const connsAt = (r: Buffer) => r.length - 10 * 12 + 4;

export interface SyntheticScrape {
  idleMs: number;
  busyMs: number;
  bytes: number;
}

export async function syntheticScrape(
  services = 10_000,
  endpoints = 10,
  limit = 1000,
  runs = 5,
): Promise<SyntheticScrape> {
  const svc: Buffer[] = [];
  const labels = new Map<string, { service: string; portName: string; kind: string }>();
  for (let i = 0; i < services; i++) {
    const a = [10, 96, (i >> 8) & 255, i & 255];
    svc.push(
      reply(
        1,
        Buffer.concat([
          tlv(1, le16(2)),
          tlv(2, le16(6)),
          tlv(3, addr(a)),
          tlv(4, be16(80)),
          tlv(6, Buffer.from('rr\0')),
          tlv(7, Buffer.concat([le32(2), le32(0xffffffff)])),
          tlv(8, le32(0)),
          tlv(9, le32(0xffffffff)),
          tlv(10, stats(i, le32)),
          tlv(12, stats(i, le64)),
        ]),
      ),
    );
    labels.set(serviceId({ family: 4, protocol: 'TCP', address: a.join('.'), port: 80 }), {
      service: `bench/svc-${i}`,
      portName: 'http',
      kind: 'ClusterIP',
    });
  }
  const dst = new Map<string, Buffer[]>();
  const destsOf = (address: string) => {
    let d = dst.get(address);
    if (!d) {
      const [, , x, y] = address.split('.').map(Number);
      d = Array.from({ length: endpoints }, (_, k) =>
        reply(
          2,
          Buffer.concat([
            tlv(1, addr([10, 128 + k, x!, y!])),
            tlv(2, be16(8080)),
            tlv(3, le32(0)),
            tlv(4, le32(1)),
            tlv(7, le32(3)),
            tlv(8, le32(2)),
            tlv(10, stats(k, le32)),
            tlv(11, le16(2)),
            tlv(12, stats(k, le64)),
          ]),
        ),
      );
      dst.set(address, d);
    }
    return d;
  };
  let busy = false;
  const bump = (r: Buffer) => {
    if (busy) r.writeUInt32LE(r.readUInt32LE(connsAt(r)) + 1, connsAt(r));
  };
  const kernel = {
    serviceCounters: async () =>
      svc.map((r) => {
        bump(r);
        return decodeServiceCounters(r)!;
      }),
    destinationCounters: async (k: { address?: string }) =>
      destsOf(k.address!).map((r) => {
        bump(r);
        return decodeDestinationCounters(r, 4)!;
      }),
  } as unknown as Ipvs;
  const metrics = new Metrics();
  new IpvsCollector({
    ipvs: kernel,
    labels,
    realServerLimit: limit,
    plannedRealServers: () => new Map(),
    log: new Logger({ sink: () => {} }),
  }).register(metrics);
  let bytes = 0;
  const time = async () => {
    const ts: number[] = [];
    for (let k = 0; k < runs; k++) {
      const t0 = performance.now();
      bytes = (await metrics.exposition()).reduce((n, p) => n + p.length, 0);
      ts.push(performance.now() - t0);
    }
    return ts.sort((a, b) => a - b)[Math.floor(runs / 2)]!;
  };
  await metrics.exposition(); // first scrape: every line rendered, label strings built
  const idleMs = await time();
  busy = true;
  const busyMs = await time();
  return { idleMs, busyMs, bytes };
}

export const describe = (s: SyntheticScrape, services: number, endpoints: number, limit: number) =>
  `synthetic scrape (no kernel) of ${services} virtual servers x ${endpoints}, real-server limit ${limit}: idle ${s.idleMs.toFixed(0)} ms, busy ${s.busyMs.toFixed(0)} ms (${(s.bytes / 1e6).toFixed(1)} MB)`;

if (process.argv[1] === import.meta.filename) {
  const services = Number(process.env.SERVICES ?? 10_000);
  const endpoints = Number(process.env.ENDPOINTS ?? 10);
  for (const limit of [1000, 0])
    console.log(describe(await syntheticScrape(services, endpoints, limit), services, endpoints, limit));
}
