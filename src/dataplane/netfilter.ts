// Applies the iptables stage (src/plan/netfilter.ts): ipsets with `ipset restore`, our chains with
// `iptables-restore --noflush` (atomic per table, touching only our chains), and the jumps from
// the built-in chains. iptables-nft or iptables-legacy is chosen as kube-proxy's images do: the
// backend that already holds more rules wins, nft when neither does.
import type { Logger } from '../observe/log.ts';
import type { Metrics } from '../observe/metrics.ts';
import { allSets, CHAINS, HOOKS, netfilterRules, type NetfilterConfig } from '../plan/netfilter.ts';
import type { Family } from '../util/ip.ts';
import type { Exec } from './exec.ts';

export type IptablesBackend = 'nft' | 'legacy';

export interface NetfilterError {
  op: string;
  message: string;
}

/** Which iptables backend this node uses (kube-proxy's iptables-wrapper rule). */
export async function detectBackend(exec: Exec): Promise<IptablesBackend> {
  const count = async (b: IptablesBackend) => {
    let n = 0;
    for (const save of [`iptables-${b}-save`, `ip6tables-${b}-save`]) {
      const r = await exec.run(save, []);
      if (r.code === 0) n += r.stdout.split('\n').filter((l) => l.startsWith('-A ') || /^:(KUBE|KIPVS)-/.test(l)).length;
    }
    return n;
  };
  const [legacy, nft] = [await count('legacy'), await count('nft')];
  return legacy > nft ? 'legacy' : 'nft';
}

export interface NetfilterApplierOptions {
  exec: Exec;
  log: Logger;
  metrics?: Metrics;
  backend: IptablesBackend;
  /** Families to program (IPv6 only where ip6tables works). */
  families: Family[];
}

export class NetfilterApplier {
  readonly #o: NetfilterApplierOptions;
  /** What was last applied per family ("nat\nfilter" text), to skip identical restores. */
  readonly #appliedRules = new Map<Family, string>();
  /** Entries ("SET entry") believed to be in the kernel. */
  readonly #entries = new Set<string>();
  #setsReady = false;

  constructor(opts: NetfilterApplierOptions) {
    this.#o = opts;
  }

  get backend(): IptablesBackend {
    return this.#o.backend;
  }

  #cmd(family: Family, tool: 'restore' | 'save' | ''): string {
    const base = family === 6 ? 'ip6tables' : 'iptables';
    return tool === '' ? `${base}-${this.#o.backend}` : `${base}-${this.#o.backend}-${tool}`;
  }

  /**
   * Brings the ipsets in line. `full`: every set checked against the kernel's entry counts and
   * rebuilt by create-and-swap where they differ (or on the first run); otherwise only `changed`
   * entries are added or deleted.
   */
  async syncSets(wanted: (entry: string) => boolean, all: Iterable<string>, changed: readonly string[], full: boolean): Promise<NetfilterError[]> {
    const lines: string[] = [];
    if (full || !this.#setsReady) {
      const everything = [...all];
      const desired = new Map<string, string[]>(allSets().map((s) => [s.name, []]));
      for (const e of everything) desired.get(e.slice(0, e.indexOf(' ')))?.push(e.slice(e.indexOf(' ') + 1));
      const counts = await this.#kernelCounts();
      const inMemory = new Map<string, number>();
      for (const e of this.#entries) {
        const name = e.slice(0, e.indexOf(' '));
        inMemory.set(name, (inMemory.get(name) ?? 0) + 1);
      }
      for (const s of allSets()) {
        const create = (name: string) => (s.type === 'bitmap:port' ? `create ${name} bitmap:port range 0-65535 -exist` : `create ${name} ${s.type} family ${s.family} hashsize 1024 maxelem 1048576${s.options ? ` ${s.options}` : ''} -exist`);
        lines.push(create(s.name));
        const want = desired.get(s.name)!;
        if (this.#setsReady && counts.get(s.name) === want.length && (inMemory.get(s.name) ?? 0) === want.length) continue;
        // Rebuild off to the side and swap in: readers never see a half-filled set.
        const tmp = `${s.name}-T`;
        lines.push(create(tmp), `flush ${tmp}`, ...want.map((e) => `add ${tmp} ${e}`), `swap ${tmp} ${s.name}`, `destroy ${tmp}`);
      }
      const r = await this.#ipset(lines);
      if (r) return [r];
      this.#entries.clear();
      for (const e of everything) this.#entries.add(e);
      this.#setsReady = true;
      return [];
    }
    // Deletions first: an entry whose extension changed (a firewall mark) is one del and one add
    // of the same element, and `del` names the element without its extensions.
    const adds: string[] = [];
    for (const e of changed) {
      const [set, entry] = [e.slice(0, e.indexOf(' ')), e.slice(e.indexOf(' ') + 1)];
      if (wanted(e) && !this.#entries.has(e)) adds.push(`add ${set} ${entry} -exist`);
      else if (!wanted(e) && this.#entries.has(e)) lines.push(`del ${set} ${entry.split(' ')[0]} -exist`);
    }
    lines.push(...adds);
    if (lines.length === 0) return [];
    const r = await this.#ipset(lines);
    if (r) {
      this.#setsReady = false; // unsure of the kernel's state: rebuild next time
      return [r];
    }
    for (const e of changed) {
      if (wanted(e)) this.#entries.add(e);
      else this.#entries.delete(e);
    }
    return [];
  }

  async #kernelCounts(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const r = await this.#o.exec.run('ipset', ['list', '-t']);
    if (r.code !== 0) return out;
    let name = '';
    for (const line of r.stdout.split('\n')) {
      if (line.startsWith('Name: ')) name = line.slice(6).trim();
      else if (line.startsWith('Number of entries: ')) out.set(name, Number(line.slice(19)));
    }
    return out;
  }

  async #ipset(lines: string[]): Promise<NetfilterError | null> {
    const r = await this.#o.exec.run('ipset', ['restore'], lines.join('\n') + '\n');
    if (r.code === 0) return null;
    this.#o.metrics?.ipsetFailures.inc();
    const message = `ipset restore: exit ${r.code}: ${r.stderr.trim()}`;
    this.#o.log.warn('ipset restore failed', { error: message }, 'ipset-restore');
    return { op: 'ipset restore', message };
  }

  /**
   * Restores our chains where the text changed (or always with `force`: every full sync, which
   * also repairs chains someone flushed), then makes sure the jumps exist.
   */
  async syncRules(nc: NetfilterConfig, force: boolean): Promise<NetfilterError[]> {
    const errors: NetfilterError[] = [];
    for (const family of this.#o.families) {
      const { nat, filter, mangle } = netfilterRules(nc, family);
      const text = nat + filter + mangle;
      // Unchanged rules between full syncs: nothing to run (an incremental sync stays cheap).
      if (!force && this.#appliedRules.get(family) === text) continue;
      const r = await this.#o.exec.run(this.#cmd(family, 'restore'), ['--noflush', '-w', '5'], text);
      if (r.code !== 0) {
        this.#o.metrics?.iptablesRestoreFailures.inc({ ip_family: family === 6 ? 'IPv6' : 'IPv4' });
        const message = `${this.#cmd(family, 'restore')}: exit ${r.code}: ${r.stderr.trim()}`;
        this.#o.log.warn('iptables-restore failed', { error: message }, `iptables-restore:${family}`);
        this.#appliedRules.delete(family);
        errors.push({ op: 'iptables-restore', message });
        continue;
      }
      this.#appliedRules.set(family, text);
      for (const h of HOOKS) {
        const spec = ['-t', h.table, '-m', 'comment', '--comment', h.comment, '-j', h.target];
        const check = await this.#o.exec.run(this.#cmd(family, ''), ['-w', '5', '-C', h.chain, ...spec]);
        if (check.code === 0) continue;
        const ins = await this.#o.exec.run(this.#cmd(family, ''), ['-w', '5', '-I', h.chain, '1', ...spec]);
        if (ins.code !== 0) errors.push({ op: `insert ${h.table}/${h.chain} jump`, message: ins.stderr.trim() });
      }
    }
    return errors;
  }

  /** Removes the jumps, our chains and our sets (for `kube-ipvs cleanup`). Missing pieces are fine. */
  async cleanup(): Promise<NetfilterError[]> {
    const errors: NetfilterError[] = [];
    for (const family of [4, 6] as const) {
      const ipt = this.#cmd(family, '');
      for (const h of HOOKS) {
        const spec = ['-t', h.table, '-m', 'comment', '--comment', h.comment, '-j', h.target];
        // Delete every copy.
        for (let i = 0; i < 10; i++) if ((await this.#o.exec.run(ipt, ['-w', '5', '-D', h.chain, ...spec])).code !== 0) break;
      }
      for (const [table, chains] of Object.entries(CHAINS)) {
        for (const c of chains) await this.#o.exec.run(ipt, ['-w', '5', '-t', table, '-F', c]);
        for (const c of chains) await this.#o.exec.run(ipt, ['-w', '5', '-t', table, '-X', c]);
      }
    }
    for (const s of allSets()) {
      const r = await this.#o.exec.run('ipset', ['destroy', s.name]);
      if (r.code !== 0 && !/does not exist/.test(r.stderr)) errors.push({ op: `ipset destroy ${s.name}`, message: r.stderr.trim() });
    }
    this.#appliedRules.clear();
    this.#entries.clear();
    this.#setsReady = false;
    return errors;
  }
}
