// ipset change benchmark, run inside the lab VM (npm run bench:lab:ipset): the incremental ipset
// work of one endpoint change (its hairpin LOOP-BACK entry out, a new one in), as NetfilterApplier
// does it between full syncs, over nfnetlink against through an `ipset restore` process, on the
// same kernel and sets, alternating, CHANGES times each. Medians, p99 and the ratio of this run;
// under TCG the absolute times are inflated by emulation.
import { performance } from 'node:perf_hooks';
import { SystemExec } from '../src/dataplane/exec.ts';
import { NetlinkIpset } from '../src/dataplane/ipset-netlink.ts';
import { NetfilterApplier } from '../src/dataplane/netfilter.ts';
import { Logger } from '../src/observe/log.ts';

const CHANGES = Number(process.env.CHANGES ?? 30);
const ENTRIES = Number(process.env.ENTRIES ?? 10_000);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const ip = (i: number) => `10.${128 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const loop = (i: number) => `KIPVS-LOOP-BACK ${ip(i)},tcp:8080,${ip(i)}`;

const log = new Logger({ sink: () => {} });
const exec = new SystemExec();
const ipset = new NetlinkIpset();
const appliers = {
  netlink: new NetfilterApplier({ exec, log, backend: 'nft', families: [4], ipset }),
  restore: new NetfilterApplier({ exec, log, backend: 'nft', families: [4] }),
};
const wanted = new Set(Array.from({ length: ENTRIES }, (_, i) => loop(i)));
const times: Record<keyof typeof appliers, number[]> = { netlink: [], restore: [] };
let next = ENTRIES;
for (const a of Object.values(appliers)) {
  const errors = await a.syncSets((e) => wanted.has(e), wanted, [], true);
  if (errors.length) throw new Error(JSON.stringify(errors));
}
for (let i = 0; i < CHANGES * 2; i++) {
  const which = i % 2 ? 'restore' : 'netlink';
  // One endpoint replaced: its entry out, the new one's in.
  const out = [...wanted][i]!;
  const inn = loop(next++);
  wanted.delete(out);
  wanted.add(inn);
  const t0 = performance.now();
  const errors = await appliers[which].syncSets((e) => wanted.has(e), wanted, [out, inn], false);
  times[which].push(performance.now() - t0);
  if (errors.length) throw new Error(`${which}: ${JSON.stringify(errors)}`);
  // The other applier's view follows (the kernel is shared): no work for it beyond this change.
  await appliers[which === 'netlink' ? 'restore' : 'netlink'].syncSets((e) => wanted.has(e), wanted, [out, inn], false);
}
ipset.close();
const line = (k: keyof typeof times) =>
  `${k.padEnd(8)} median ${median(times[k]).toFixed(1)} ms, p99 ${pct(times[k], 0.99).toFixed(1)} ms`;
process.stdout.write(
  `ipset: one endpoint change (1 del + 1 add) with ${ENTRIES} entries, ${CHANGES} changes each\n  ${line('netlink')}\n  ${line('restore')}\n  restore / netlink: ${(median(times.restore) / median(times.netlink)).toFixed(1)}x\n`,
);
