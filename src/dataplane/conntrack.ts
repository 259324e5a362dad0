// Stale UDP conntrack entries: when a UDP endpoint goes away or a UDP service address stops being
// one, the kernel would keep sending a client's datagrams along the old flow until it times out
// (a DNS client never recovers: kubernetes#105192). Deleted with the `conntrack` tool, as
// kube-proxy did before its netlink reconciler. Counted with kube-proxy's conntrack reconciler
// metrics.
import type { Logger } from '../observe/log.ts';
import type { Metrics } from '../observe/metrics.ts';
import { ipFamilyLabel } from '../observe/metrics.ts';
import type { Exec } from './exec.ts';
import type { StaleUdp } from './reconciler.ts';

export interface ConntrackResult {
  deleted: number;
  errors: string[];
}

/** "3 flow entries have been deleted." -> 3 */
const deletedCount = (stderr: string) =>
  Number(/(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted/.exec(stderr)?.[1] ?? 0);

export class ConntrackCleaner {
  readonly #exec: Exec;
  readonly #log: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #now: () => number;

  constructor(exec: Exec, log: Logger, metrics?: Metrics, now: () => number = () => performance.now()) {
    this.#exec = exec;
    this.#log = log;
    this.#metrics = metrics;
    this.#now = now;
  }

  /** Deletes the flows; one failure is logged and does not stop the others. */
  async clean(stale: readonly StaleUdp[]): Promise<ConntrackResult> {
    const out: ConntrackResult = { deleted: 0, errors: [] };
    const seen = new Set<string>();
    for (const family of [4, 6] as const) {
      const mine = stale.filter((s) => s.family === family);
      if (mine.length === 0) continue;
      const started = this.#now();
      let deleted = 0;
      for (const s of mine) {
        const key = `${s.address}|${s.port}|${s.endpoint ?? ''}`;
        if (seen.has(key)) continue;
        seen.add(key);
        const args = [
          '-D',
          '-f',
          family === 6 ? 'ipv6' : 'ipv4',
          '-p',
          'udp',
          '--orig-dst',
          s.address,
          '--orig-port-dst',
          String(s.port),
        ];
        if (s.endpoint) args.push('--reply-src', s.endpoint);
        const r = await this.#exec.run('conntrack', args);
        const n = deletedCount(r.stderr + r.stdout);
        // conntrack exits 1 when nothing matched: that is not an error.
        if (r.code !== 0 && n === 0 && !/0 flow entries have been deleted/.test(r.stderr)) {
          const msg = `conntrack ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim().split('\n').pop() ?? ''}`;
          out.errors.push(msg);
          this.#log.warn('cannot delete stale UDP conntrack entries', { error: msg }, `conntrack:${r.code}`);
        }
        deleted += n;
      }
      out.deleted += deleted;
      const ip_family = ipFamilyLabel(family);
      this.#metrics?.conntrackDuration.observe({ ip_family }, (this.#now() - started) / 1000);
      if (deleted > 0) this.#metrics?.conntrackDeleted.inc({ ip_family }, deleted);
    }
    if (out.deleted > 0) this.#log.info('stale UDP conntrack entries deleted', { entries: out.deleted });
    return out;
  }
}
