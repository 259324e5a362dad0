// Applies the iptables stage (src/plan/netfilter.ts): ipsets with `ipset restore`, our chains with
// `iptables-restore --noflush` (atomic per table, touching only our chains), and the jumps from
// the built-in chains. iptables-nft or iptables-legacy is chosen as kube-proxy's images do: the
// backend that already holds more rules wins, nft when neither does.
import type { Logger } from '../observe/log.ts';
import type { Metrics } from '../observe/metrics.ts';
import {
  allSets,
  CHAINS,
  countSetEntry,
  HOOKS,
  netfilterRules,
  type NetfilterConfig,
  type Table,
} from '../plan/netfilter.ts';
import type { Family } from '../util/ip.ts';
import { turnEvery } from '../util/turn.ts';
import type { Exec } from './exec.ts';
import type { IpsetOp, IpsetType, IpsetWriter } from './ipset-netlink.ts';

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
      if (r.code === 0)
        n += r.stdout.split('\n').filter((l) => l.startsWith('-A ') || /^:(KUBE|KIPVS)-/.test(l)).length;
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
  /**
   * Entry adds and deletes between full syncs over nfnetlink instead of an `ipset restore`
   * process (src/dataplane/ipset-netlink.ts); when it fails, the same lines go to `ipset restore`.
   */
  ipset?: IpsetWriter;
  /** Lines per `ipset restore` process (default RESTORE_CHUNK_LINES). */
  restoreChunkLines?: number;
}

/** The restore text of a family's rules, rendered once per NetfilterConfig (every sync asks; they rarely change). */
const renderedRules = new WeakMap<NetfilterConfig, Map<Family, string>>();
function rulesText(nc: NetfilterConfig, family: Family): string {
  let byFamily = renderedRules.get(nc);
  if (!byFamily) renderedRules.set(nc, (byFamily = new Map<Family, string>()));
  let text = byFamily.get(family);
  if (text === undefined) {
    const { nat, filter, mangle } = netfilterRules(nc, family);
    byFamily.set(family, (text = nat + filter + mangle));
  }
  return text;
}

/**
 * An `ipset restore` longer than this is split into several processes, run one after the other
 * (the lines keep their order: creates first, swaps last). One process per set rebuild went past the
 * tool timeout (60 s) in the lab: 10 000 hairpin entries under emulation took longer, the restore was
 * killed, and every full sync after it failed the same way. Each line is applied on its own anyway,
 * so the split changes nothing of what the kernel ends with.
 */
export const RESTORE_CHUNK_LINES = 2000;
/** Set entries gone through between two turns of the event loop in a full sync (a few milliseconds natively). */
const SET_ENTRIES_PER_TURN = 5000;

export class NetfilterApplier {
  readonly #o: NetfilterApplierOptions;
  /**
   * Per family, the restore text last applied and our chains as the following save printed them
   * (null when that save failed): a full sync restores only when the kernel's differ.
   */
  readonly #appliedRules = new Map<Family, { text: string; printed: string | null }>();
  /** Entries ("SET entry") believed to be in the kernel. */
  readonly #entries = new Set<string>();
  /** How many of `#entries` each set has (kept with them: a full sync compares counts without a pass over them). */
  #entryCounts = new Map<string, number>();
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
   * entries are added or deleted. `sizes`: how many of `all` each set has, when the caller keeps
   * that count (the planner does); without it they are counted here.
   */
  async syncSets(
    wanted: (entry: string) => boolean,
    all: Iterable<string>,
    changed: readonly string[],
    full: boolean,
    sizes?: ReadonlyMap<string, number>,
  ): Promise<NetfilterError[]> {
    if (full || !this.#setsReady) {
      // What the sets should hold at this moment, the moment `changed` was taken (the daemon takes it just before):
      // the daemon may plan more changes between the turns below, and they come with the next sync.
      const everything = [...all];
      let sizesNow = sizes ? new Map(sizes) : null;
      // The changes since the last sync first, as an incremental sync applies them: a change that swaps one entry
      // for another leaves its set's count as it was, and the counts below would not see it.
      if (this.#setsReady && changed.length > 0) {
        const r = await this.#applyChanges(wanted, changed);
        if (r) return [r];
      }
      // 120 000 entries at 10 000 Services: the loops over them let the event loop turn now and then (an endpoint
      // change is written alongside a full resync). Nothing else changes `#entries` meanwhile: syncs run one at a time.
      // A full sync that finds every set as expected goes over none of them in JavaScript: under the lab's emulation
      // the three passes it made (the entries by set, the in-memory count, `#entries` again) took seconds at 10 000.
      const tick = turnEvery(SET_ENTRIES_PER_TURN);
      if (!sizesNow) {
        sizesNow = new Map<string, number>();
        for (const e of everything) {
          countSetEntry(sizesNow, e, 1);
          const turn = tick();
          if (turn) await turn;
        }
      }
      const counts = await this.#kernelCounts();
      // Sets to rebuild are filled off to the side and swapped in: readers never see a half-filled
      // set. With the netlink writer, one `ipset restore` creates and empties the side sets, their
      // entries go over netlink many per request, and a second restore swaps them in (`ipset
      // restore` sends one request per entry and waits for each: 11 000 entries took 1.6x as long
      // on a development host, and every round trip costs far more under emulation). A set the
      // writer could not fill is filled by that second restore.
      const head: string[] = [];
      const rebuilds: { name: string; tmp: string; type: IpsetType; want: string[]; swap: string[] }[] = [];
      for (const s of allSets()) {
        const create = (name: string) =>
          s.type === 'bitmap:port'
            ? `create ${name} bitmap:port range 0-65535 -exist`
            : `create ${name} ${s.type} family ${s.family} hashsize 1024 maxelem 1048576${s.options ? ` ${s.options}` : ''} -exist`;
        head.push(create(s.name));
        const size = sizesNow.get(s.name) ?? 0;
        if (this.#setsReady && counts.get(s.name) === size && (this.#entryCounts.get(s.name) ?? 0) === size) continue;
        const tmp = `${s.name}-T`;
        head.push(create(tmp), `flush ${tmp}`);
        const swap = [`swap ${tmp} ${s.name}`, `destroy ${tmp}`];
        rebuilds.push({ name: s.name, tmp, type: s.type as IpsetType, want: [], swap });
      }
      if (rebuilds.length === 0) {
        // Every set there with the entries it should have: no `ipset restore` (a process) at all, and `#entries`
        // (changed only by syncs that succeeded) stays as it is.
        const r = allSets().some((s) => !counts.has(s.name)) ? await this.#ipset(head) : null;
        return r ? [r] : [];
      }
      const byName = new Map(rebuilds.map((x) => [x.name, x.want]));
      for (const e of everything) {
        const space = e.indexOf(' ');
        byName.get(e.slice(0, space))?.push(e.slice(space + 1));
        const turn = tick();
        if (turn) await turn;
      }
      const writer = this.#o.ipset?.addMany ? this.#o.ipset : null;
      if (!writer || rebuilds.every((x) => x.want.length === 0)) {
        const r = await this.#ipset([
          ...head,
          ...rebuilds.flatMap((x) => [...x.want.map((e) => `add ${x.tmp} ${e}`), ...x.swap]),
        ]);
        if (r) return [r];
      } else {
        const r = await this.#ipset(head);
        if (r) return [r];
        const tail: string[] = [];
        for (const x of rebuilds) {
          const why = x.want.length > 0 ? await writer.addMany!(x.tmp, x.type, x.want) : null;
          if (why) {
            this.#o.metrics?.ipsetNetlinkFailures.inc();
            this.#o.log.warn(
              'ipset over netlink failed; the set is filled by ipset restore',
              { set: x.tmp, entries: x.want.length, error: why },
              'ipset-netlink-bulk',
            );
            tail.push(`flush ${x.tmp}`, ...x.want.map((e) => `add ${x.tmp} ${e}`));
          }
          tail.push(...x.swap);
        }
        const r2 = await this.#ipset(tail);
        if (r2) return [r2];
      }
      this.#entries.clear();
      for (const e of everything) {
        this.#entries.add(e);
        const turn = tick();
        if (turn) await turn;
      }
      this.#entryCounts = sizesNow;
      this.#setsReady = true;
      return [];
    }
    const r = await this.#applyChanges(wanted, changed);
    return r ? [r] : [];
  }

  /**
   * Adds and deletes what `changed` names as `wanted` says now (deletions first: an entry whose extension changed, a
   * firewall mark, is one del and one add of the same element, and `del` names the element without its extensions).
   * What it did is what `#entries` records: `wanted` is asked once, before anything is sent.
   */
  async #applyChanges(wanted: (entry: string) => boolean, changed: readonly string[]): Promise<NetfilterError | null> {
    const dels: IpsetOp[] = [];
    const adds: IpsetOp[] = [];
    const gone: string[] = [];
    const added: string[] = [];
    const types = setTypes();
    for (const e of changed) {
      const space = e.indexOf(' ');
      const [set, entry] = [e.slice(0, space), e.slice(space + 1)];
      const type = types.get(set)!;
      const want = wanted(e);
      const have = this.#entries.has(e);
      if (want && !have) {
        adds.push({ op: 'add', set, type, entry });
        added.push(e);
      } else if (!want && have) {
        dels.push({ op: 'del', set, type, entry: entry.split(' ')[0]! });
        gone.push(e);
      }
    }
    const ops = [...dels, ...adds];
    if (ops.length === 0) return null;
    const r = (await this.#overNetlink(ops))
      ? null
      : await this.#ipset(ops.map((o) => `${o.op} ${o.set} ${o.entry} -exist`));
    if (r) {
      this.#setsReady = false; // unsure of the kernel's state: rebuild next time
      return r;
    }
    for (const e of gone) this.#deleteEntry(e);
    for (const e of added) this.#addEntry(e);
    return null;
  }

  #addEntry(e: string): void {
    if (this.#entries.has(e)) return;
    this.#entries.add(e);
    countSetEntry(this.#entryCounts, e, 1);
  }

  #deleteEntry(e: string): void {
    if (this.#entries.delete(e)) countSetEntry(this.#entryCounts, e, -1);
  }

  /** The ops over nfnetlink; true when every one was acknowledged. */
  async #overNetlink(ops: IpsetOp[]): Promise<boolean> {
    const w = this.#o.ipset;
    if (!w) return false;
    const failed = await w.apply(ops);
    if (failed.length === 0) return true;
    const f = failed[0]!;
    this.#o.metrics?.ipsetNetlinkFailures.inc();
    this.#o.log.warn(
      'ipset over netlink failed; the same changes go to ipset restore',
      { failed: failed.length, of: ops.length, op: f.op.op, set: f.op.set, entry: f.op.entry, error: f.message },
      'ipset-netlink',
    );
    return false;
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
    const chunk = Math.max(1, this.#o.restoreChunkLines ?? RESTORE_CHUNK_LINES);
    for (let i = 0; i === 0 || i < lines.length; i += chunk) {
      const part = lines.slice(i, i + chunk);
      const r = await this.#o.exec.run('ipset', ['restore'], part.join('\n') + '\n');
      if (r.code === 0) continue;
      this.#o.metrics?.ipsetFailures.inc();
      const where = lines.length > chunk ? ` (lines ${i + 1}-${i + part.length} of ${lines.length})` : '';
      const message = `ipset restore: exit ${r.code}${where}: ${r.stderr.trim()}`;
      this.#o.log.warn('ipset restore failed', { error: message }, 'ipset-restore');
      return { op: 'ipset restore', message };
    }
    return null;
  }

  /**
   * Brings our chains and the jumps into them in line: one save to see what is there and, only
   * when something differs, one restore of our chains with the missing jumps in it, then one save
   * to record how the kernel prints what we restored. With `force` (every full sync) the chains
   * are compared with that record, which repairs chains someone flushed or changed; without it,
   * unchanged rules cost nothing. Each process costs seconds under emulation in the lab: a full
   * sync with nothing to do runs one save per family.
   */
  async syncRules(nc: NetfilterConfig, force: boolean): Promise<NetfilterError[]> {
    const errors: NetfilterError[] = [];
    for (const family of this.#o.families) {
      const text = rulesText(nc, family);
      const applied = this.#appliedRules.get(family);
      if (!force && applied?.text === text) continue;
      const save = await this.#o.exec.run(this.#cmd(family, 'save'), []);
      if (save.code !== 0) {
        errors.push(...(await this.#restoreThenHook(family, text)));
        continue;
      }
      const now = ourRules(save.stdout);
      const missing = HOOKS.filter((h) => !now.jumps.has(`${h.table} ${h.chain} ${h.target}`));
      if (applied?.text === text && applied.printed === now.chains && missing.length === 0) continue;
      const r = await this.#o.exec.run(
        this.#cmd(family, 'restore'),
        ['--noflush', '-w', '5'],
        withJumps(text, missing),
      );
      if (r.code !== 0) {
        errors.push(this.#restoreFailed(family, r.code, r.stderr));
        continue;
      }
      const after = await this.#o.exec.run(this.#cmd(family, 'save'), []);
      // Without a record the next full sync restores again: correct, only slower.
      if (after.code === 0) this.#appliedRules.set(family, { text, printed: ourRules(after.stdout).chains });
      else this.#appliedRules.set(family, { text, printed: null });
    }
    return errors;
  }

  /** When this backend's save fails: the restore alone, then a check and insert per jump. */
  async #restoreThenHook(family: Family, text: string): Promise<NetfilterError[]> {
    const r = await this.#o.exec.run(this.#cmd(family, 'restore'), ['--noflush', '-w', '5'], text);
    if (r.code !== 0) return [this.#restoreFailed(family, r.code, r.stderr)];
    this.#appliedRules.set(family, { text, printed: null });
    const errors: NetfilterError[] = [];
    for (const h of HOOKS) {
      const spec = ['-t', h.table, '-m', 'comment', '--comment', h.comment, '-j', h.target];
      if ((await this.#o.exec.run(this.#cmd(family, ''), ['-w', '5', '-C', h.chain, ...spec])).code === 0) continue;
      const ins = await this.#o.exec.run(this.#cmd(family, ''), ['-w', '5', '-I', h.chain, '1', ...spec]);
      if (ins.code !== 0) errors.push({ op: `insert ${h.table}/${h.chain} jump`, message: ins.stderr.trim() });
    }
    return errors;
  }

  #restoreFailed(family: Family, code: number, stderr: string): NetfilterError {
    this.#o.metrics?.iptablesRestoreFailures.inc({ ip_family: family === 6 ? 'IPv6' : 'IPv4' });
    const message = `${this.#cmd(family, 'restore')}: exit ${code}: ${stderr.trim()}`;
    this.#o.log.warn('iptables-restore failed', { error: message }, `iptables-restore:${family}`);
    this.#appliedRules.delete(family);
    return { op: 'iptables-restore', message };
  }

  /**
   * Removes the jumps, our chains and our sets (for `kube-ipvs cleanup`). Missing pieces are fine.
   * A few processes, not one per rule: one save and one restore per family (atomic per table),
   * one `ipset restore` for the sets (under emulation in the lab, one command per chain and jump
   * made a cleanup take 30 s).
   */
  async cleanup(): Promise<NetfilterError[]> {
    const errors: NetfilterError[] = [];
    for (const family of [4, 6] as const) {
      const save = await this.#o.exec.run(this.#cmd(family, 'save'), []);
      if (save.code !== 0) continue; // this backend or family does not work here: nothing of ours is in it
      const input = cleanupRestoreInput(save.stdout);
      if (!input) continue;
      const r = await this.#o.exec.run(this.#cmd(family, 'restore'), ['--noflush', '-w', '5'], input);
      if (r.code !== 0)
        errors.push({ op: `${this.#cmd(family, 'restore')} (cleanup)`, message: `exit ${r.code}: ${r.stderr.trim()}` });
    }
    const list = await this.#o.exec.run('ipset', ['list', '-n']);
    const ours =
      list.code === 0
        ? list.stdout
            .split('\n')
            .map((l) => l.trim())
            .filter((n) => OUR_SET.test(n))
        : [];
    if (
      ours.length > 0 &&
      (await this.#o.exec.run('ipset', ['restore'], ours.map((n) => `destroy ${n}`).join('\n') + '\n')).code !== 0
    ) {
      // ipset restore stops at the first failure: one by one, to name each set that stays.
      for (const n of ours) {
        const r = await this.#o.exec.run('ipset', ['destroy', n]);
        if (r.code !== 0 && !/does not exist/.test(r.stderr))
          errors.push({ op: `ipset destroy ${n}`, message: r.stderr.trim() });
      }
    }
    this.#appliedRules.clear();
    this.#entries.clear();
    this.#setsReady = false;
    return errors;
  }
}

/**
 * Our chains in a save's output (their declarations and rules, table by table, as the kernel
 * prints them) and which of our jumps exist ("table CHAIN TARGET").
 */
export function ourRules(save: string): { chains: string; jumps: Set<string> } {
  const jumps = new Set<string>();
  const chains: string[] = [];
  let table = '';
  let ours: readonly string[] = [];
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) {
      table = line.slice(1).trim();
      ours = CHAINS[table as Table] ?? [];
      chains.push(line);
    } else if (line.startsWith(':')) {
      const name = line.slice(1, line.indexOf(' ') > 0 ? line.indexOf(' ') : undefined);
      if (ours.includes(name)) chains.push(`:${name}`);
    } else if (line.startsWith('-A ')) {
      const chain = line.slice(3, line.indexOf(' ', 3) > 0 ? line.indexOf(' ', 3) : undefined);
      if (ours.includes(chain)) chains.push(line);
      for (const h of HOOKS) {
        if (
          h.table === table &&
          chain === h.chain &&
          line.includes(`--comment "${h.comment}"`) &&
          line.endsWith(`-j ${h.target}`)
        )
          jumps.add(`${table} ${h.chain} ${h.target}`);
      }
    }
  }
  return { chains: chains.join('\n'), jumps };
}

/** The restore text with an insert of each missing jump before its table's COMMIT. */
export function withJumps(text: string, missing: readonly (typeof HOOKS)[number][]): string {
  if (missing.length === 0) return text;
  const out: string[] = [];
  let table = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1).trim();
    if (line === 'COMMIT')
      for (const h of missing.filter((m) => m.table === table))
        out.push(`-I ${h.chain} 1 -m comment --comment "${h.comment}" -j ${h.target}`);
    out.push(line);
  }
  return out.join('\n');
}

/** Our chains and sets, of this version or an earlier one (and a set being rebuilt, "-T"). */
const OUR_CHAIN = /^KIPVS-[A-Za-z0-9-]+$/;
const OUR_SET = /^KIPVS6?-[A-Za-z0-9-]+$/;

/**
 * The `iptables-restore --noflush` input that removes our chains (or those `isChain` names: kube-proxy's, see
 * kube-proxy.ts) and every jump into them from an `iptables-save` text, touching nothing else; "" when there is
 * none. Per table: the chains declared (which flushes them), the jumps from other chains deleted, the chains deleted.
 */
export function cleanupRestoreInput(
  save: string,
  isChain: (table: string, chain: string) => boolean = (_t, c) => OUR_CHAIN.test(c),
): string {
  const out: string[] = [];
  let table = '';
  let chains: string[] = [];
  let jumps: string[] = [];
  const flush = () => {
    if (table && (chains.length || jumps.length))
      out.push(`*${table}`, ...chains.map((c) => `:${c} - [0:0]`), ...jumps, ...chains.map((c) => `-X ${c}`), 'COMMIT');
    chains = [];
    jumps = [];
  };
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) {
      flush();
      table = line.slice(1).trim();
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0]!;
      if (isChain(table, name)) chains.push(name);
    } else if (line.startsWith('-A ')) {
      const chain = line.slice(3).split(' ')[0]!;
      const target = / -[jg] (\S+)/.exec(line)?.[1];
      if (!isChain(table, chain) && target && isChain(table, target)) jumps.push(`-D ${line.slice(3)}`);
    } else if (line.startsWith('COMMIT')) {
      flush();
      table = '';
    }
  }
  flush();
  return out.length ? `${out.join('\n')}\n` : '';
}

let typesBySet: Map<string, IpsetType> | null = null;
/** Set name -> type, for every set kube-ipvs makes. */
function setTypes(): Map<string, IpsetType> {
  typesBySet ??= new Map(allSets().map((s) => [s.name, s.type as IpsetType]));
  return typesBySet;
}
