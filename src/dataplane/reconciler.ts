// Makes the kernel match the plan with the fewest operations: reads what exists, diffs it
// against the desired virtual servers, and applies the difference. Touches only what is ours
// (see ownership.ts). One failing operation never stops the others: it is reported, and the
// runner retries the sync with backoff.
import type { ServicePlan } from '../plan/types.ts';
import { cidrContains, parseCIDR, type CIDR } from '../util/ip.ts';
import {
  destinationMatches,
  destinationsOf,
  serviceMatches,
  toDesired,
  v4DestinationsOf,
  type DesiredVS,
} from './desired.ts';
import { IpvsError, type Ipvs } from './ipvs/client.ts';
import {
  destinationId,
  serviceId,
  type IpvsDestination,
  type IpvsService,
  type KnownDestinations,
} from './ipvs/types.ts';
import type { Links } from './links.ts';
import type { OwnershipStore } from './ownership.ts';
import { systemClock, type Clock } from './runner.ts';
import { nextTurn, turnEvery } from '../util/turn.ts';

export interface OpError {
  op: string;
  code: string;
  message: string;
  /** The Kubernetes Service the operation was for, when there is one. */
  service?: string;
}

export interface SyncResult {
  full: boolean;
  /** Kubernetes Services looked at. */
  services: number;
  /** Mutating kernel operations issued (successful or not). */
  operations: number;
  errors: OpError[];
  durationMs: number;
  /** UDP flows that now point nowhere: a destination or a whole virtual server removed (for conntrack cleanup). */
  staleUdp: StaleUdp[];
  /**
   * A full sync: how it read the kernel's destinations ('table': /proc/net/ip_vs in one read; 'dumps': a dump per
   * virtual server), and why not the table when it could not (`tableProblem`).
   */
  kernelRead?: 'table' | 'dumps';
  tableProblem?: string;
}

/** Conntrack entries to a UDP virtual server (from one removed endpoint, or all when `endpoint` is absent). */
export interface StaleUdp {
  family: 4 | 6;
  address: string;
  port: number;
  endpoint?: string;
}

export interface SyncRequest {
  full: boolean;
  /** Full: every Service's plan. Incremental: the touched Services; null means "deleted". */
  plans: Map<string, ServicePlan | null>;
  /** Whether any Service still wants this address (so removing one Service's use keeps it). */
  addressInUse: (address: string) => boolean;
  /**
   * A Service's plan as it is now (health may have moved its weights since `plans` was taken): a
   * virtual server's destinations are taken from it when it still has that virtual server, so a
   * long sync never writes back weights health has already changed.
   */
  latest?: (service: string) => ServicePlan | undefined;
}

export interface ReconcilerOptions {
  dummyInterface: string;
  /** ipvs.excludeCIDRs: virtual servers on these addresses are never removed. */
  excludeCIDRs?: string[];
  /** A draining TCP destination is deleted after this long even with connections left. */
  gracefulTerminationSeconds?: number;
  /** How many virtual servers are reconciled at once. */
  concurrency?: number;
  clock?: Clock;
  onError?: (e: OpError) => void;
  /**
   * Whether a virtual server the ownership record calls ours, not on our interface, is one
   * kube-ipvs could have made (a NodePort on a node address, a firewall mark in its range). The
   * record alone is not enough: a corrupt or foreign record must never get a foreign virtual
   * server deleted. Default: believe the record.
   */
  recordedMayBeOurs?: (s: IpvsService) => boolean;
  /** syncDestinations' socket (default: the one every sync uses); see DaemonDeps.asideIpvs. */
  asideIpvs?: Ipvs;
}

const ok = (e: unknown, ...codes: string[]) => e instanceof IpvsError && codes.includes(e.code);

export class Reconciler {
  readonly #ipvs: Ipvs;
  readonly #links: Links;
  readonly #owned: OwnershipStore;
  /** Where syncDestinations reads and writes. */
  readonly #aside: Ipvs;
  readonly #o: Required<Omit<ReconcilerOptions, 'excludeCIDRs' | 'onError' | 'recordedMayBeOurs' | 'asideIpvs'>> & {
    onError: (e: OpError) => void;
    recordedMayBeOurs: (s: IpvsService) => boolean;
  };
  readonly #exclude: CIDR[];
  #index: number | null = null;
  #ifAddrs = new Set<string>();
  /**
   * Kubernetes Service -> the virtual servers and addresses last applied for it. Arrays, not sets: a Service has one
   * or a few of each, and an empty Set alone is 200 bytes (`addresses` is the plan's own array).
   */
  #applied = new Map<string, Applied>();
  /** Virtual server -> its owning Kubernetes Service. */
  #vsOwner = new Map<string, string>();
  /** Virtual server -> the planned service an earlier sync found (or made) in the kernel as it asks. */
  #inKernel = new Map<string, IpvsService>();
  /** Virtual server -> destination -> when it started draining (clock ms). */
  #draining = new Map<string, Map<string, number>>();
  /** The ownership record changed during this sync and must be saved. */
  #ownedChanged = false;

  constructor(ipvs: Ipvs, links: Links, owned: OwnershipStore, opts: ReconcilerOptions) {
    this.#ipvs = ipvs;
    this.#aside = opts.asideIpvs ?? ipvs;
    this.#links = links;
    this.#owned = owned;
    this.#o = {
      dummyInterface: opts.dummyInterface,
      gracefulTerminationSeconds: opts.gracefulTerminationSeconds ?? 900,
      concurrency: opts.concurrency ?? 32,
      clock: opts.clock ?? systemClock,
      onError: opts.onError ?? (() => {}),
      recordedMayBeOurs: opts.recordedMayBeOurs ?? (() => true),
    };
    this.#exclude = (opts.excludeCIDRs ?? []).flatMap((c) => parseCIDR(c) ?? []);
  }

  /** Where the periodic check (probe) goes on in `#inKernel`: the virtual servers still to look at this round. */
  #probeRound: string[] = [];

  /**
   * The periodic check between full resyncs (the daemon's, every syncPeriod): is the dummy interface still the one this
   * reconciler holds, and are the next `n` of the virtual servers it put in the kernel (in turn, so every one is looked
   * at over time) still there as it asked? One lookup each, nothing read in full and nothing written. What is wrong,
   * as `what` (a metric label) and a sentence; null when all is as left (or before the first sync).
   */
  async probe(n: number): Promise<{ what: 'interface' | 'virtual_server'; detail: string } | null> {
    if (this.#index === null) return null;
    const index = await this.#links.find(this.#o.dummyInterface);
    if (index !== this.#index)
      return {
        what: 'interface',
        detail: `the dummy interface ${this.#o.dummyInterface} is ${index === null ? 'gone' : 'another one now'}`,
      };
    for (let k = 0; k < n; k++) {
      if (this.#probeRound.length === 0) {
        if (k > 0 || this.#inKernel.size === 0) break; // one round at most per check
        this.#probeRound = [...this.#inKernel.keys()];
      }
      const id = this.#probeRound.pop()!;
      const asked = this.#inKernel.get(id);
      if (!asked) continue; // deleted or changed by a sync since the round began
      const have = await this.#ipvs.service(asked);
      if (this.#inKernel.get(id) !== asked) continue; // a sync changed it meanwhile
      if (!have) return { what: 'virtual_server', detail: `virtual server ${id} is gone` };
      if (!serviceMatches(asked, have)) return { what: 'virtual_server', detail: `virtual server ${id} was changed` };
    }
    return null;
  }

  /** Kubernetes Services that have destinations draining (a sync of them may finish the job). */
  drainingServices(): string[] {
    const out = new Set<string>();
    for (const [vs, m] of this.#draining) if (m.size > 0) out.add(this.#vsOwner.get(vs) ?? '');
    out.delete('');
    return [...out];
  }

  async sync(req: SyncRequest): Promise<SyncResult> {
    const started = this.#o.clock.now();
    const run = new Run(this.#o.onError);
    this.#ownedChanged = false;
    this.#othersAtFull = null;
    try {
      await this.#ensureInterface(req.full);
    } catch (e) {
      run.fail('ensure dummy interface', e);
    }
    if (this.#index !== null) {
      if (req.full) await this.#full(req, run);
      else await this.#incremental(req, run);
    }
    if (this.#ownedChanged) {
      try {
        this.#owned.save();
      } catch (e) {
        run.fail('save ownership record', e);
      }
    }
    return {
      full: req.full,
      services: req.plans.size,
      operations: run.ops,
      errors: run.errors,
      durationMs: this.#o.clock.now() - started,
      staleUdp: run.staleUdp,
      ...(req.full && this.#index !== null ? { kernelRead: run.kernelRead } : {}),
      ...(run.tableProblem !== undefined ? { tableProblem: run.tableProblem } : {}),
    };
  }

  /** Finds or creates the dummy interface; a full sync re-reads it (someone may have changed it). */
  async #ensureInterface(refresh: boolean): Promise<void> {
    if (this.#index !== null && !refresh) return;
    this.#index = await this.#links.ensureDummy(this.#o.dummyInterface);
    this.#ifAddrs = new Set(await this.#links.addresses(this.#index));
  }

  /** Records (or forgets) that kube-ipvs created `x`; notes a change so the sync saves the record. */
  #own(set: Set<string>, x: string, owned: boolean): void {
    if (set.has(x) === owned) return;
    if (owned) set.add(x);
    else set.delete(x);
    this.#ownedChanged = true;
  }

  #excluded(address: string | undefined): boolean {
    return address !== undefined && this.#exclude.some((c) => cidrContains(c, address));
  }

  /**
   * Ours: on an address of our own interface, or recorded as created by us and of a shape we create (and not excluded).
   */
  #isOurs(s: IpvsService): boolean {
    if (this.#excluded(s.address)) return false;
    if (s.address !== undefined && this.#ifAddrs.has(s.address)) return true;
    return this.#owned.services.has(serviceId(s)) && this.#o.recordedMayBeOurs(s);
  }

  async #full(req: SyncRequest, run: Run): Promise<void> {
    const desired = new Map<string, DesiredVS>();
    const addresses = new Set<string>();
    const applied = new Map<string, Applied>();
    // 10 000 plans' desired virtual servers: the event loop turns now and then (changes go alongside this sync).
    const tick = turnEvery(PLANS_PER_TURN);
    for (const [key, plan] of req.plans) {
      if (!plan) continue;
      const vs = plan.virtualServers.map((v) => {
        const d = toDesired(v);
        desired.set(d.id, d);
        return d.id;
      });
      plan.addresses.forEach((x) => addresses.add(x));
      applied.set(key, { vs, addresses: plan.addresses });
      const turn = tick();
      if (turn) await turn;
    }
    await pool([...addresses], this.#o.concurrency, (a) => this.#addAddress(a, run));

    let kernel: IpvsService[];
    try {
      kernel = await this.#ipvs.services({ stats: false });
    } catch (e) {
      run.fail('list services', e);
      return; // without the kernel's view, a full sync would guess; retry instead
    }
    const byId = new Map(kernel.map((s) => [serviceId(s), s]));
    // Every destination in one read (/proc/net/ip_vs) instead of a dump per virtual server; what the table does not
    // show, or a table that cannot be read, is dumped per virtual server as before.
    let table: Map<string, KnownDestinations> | null = null;
    try {
      table = await this.#ipvs.destinationTable(kernel);
      run.kernelRead = 'table';
    } catch (e) {
      run.tableProblem = (e as Error).message;
    }
    await pool([...desired.values()], this.#o.concurrency, async (d) => {
      await this.#reconcileVS(this.#fresh(d, req), byId.get(d.id) ?? null, run, table?.get(d.id));
    });
    const others: IpvsService[] = [];
    for (const [id, s] of byId) {
      if (desired.has(id)) continue;
      if (this.#isOurs(s)) await this.#deleteVS(id, s, run);
      else others.push(s);
    }
    for (const a of [...this.#owned.addresses]) {
      if (!addresses.has(a)) await this.#deleteAddress(a, run);
    }
    this.#applied = applied;
    this.#vsOwner = new Map([...desired.values()].map((d) => [d.id, d.owner]));
    for (const id of this.#draining.keys()) if (!desired.has(id)) this.#draining.delete(id);
    this.#othersAtFull = others;
  }

  /**
   * What the last sync, when it was a full one, found in IPVS that is neither wanted nor ours (another program's, or
   * kube-proxy's leftovers). The takeover right after it looks at these, and at the interface's addresses as that
   * sync left them (`#ifAddrs`), instead of reading the kernel again (three dumps at 10 000 Services: the first
   * changes after the first full sync waited about 9 s behind them under emulation). Null once any other sync ran.
   */
  #othersAtFull: IpvsService[] | null = null;

  /**
   * Takes over what kube-proxy (ipvs mode) left in IPVS and on the dummy interface, once it no longer runs here and
   * a full sync is in (call it from the sync loop, never beside a sync): an address on the interface that a Service
   * wants is ours from now on (so it goes when the Service goes), every other address there is removed; a virtual
   * server kube-proxy made off the interface (a NodePort: no firewall mark, on one of this node's addresses, a port
   * `nodePort` accepts) that no Service wants is deleted. Excluded CIDRs and every other virtual server (another
   * program's) are left alone. Returns what it removed (and adopted). `fresh`: the sync just before was a full one and
   * nothing (kube-proxy included) can have added to IPVS or the interface since it read them: what it read is used.
   */
  async takeOver(
    nodePort: (port: number) => boolean,
    fresh = false,
  ): Promise<{ services: string[]; addresses: string[]; adopted: string[]; errors: OpError[]; staleUdp: StaleUdp[] }> {
    const run = new Run(this.#o.onError);
    const out = {
      services: [] as string[],
      addresses: [] as string[],
      adopted: [] as string[],
      errors: run.errors,
      staleUdp: run.staleUdp,
    };
    this.#ownedChanged = false;
    const cached = fresh && this.#index !== null ? this.#othersAtFull : null;
    this.#othersAtFull = null;
    try {
      await this.#ensureInterface(cached === null);
      // The node's other addresses, read only when a virtual server could be a NodePort of kube-proxy's.
      let nodeAddrs: Set<string> | null = null;
      const onNode = async (address: string): Promise<boolean> => {
        if (nodeAddrs === null) {
          const all = await this.#links.allAddresses();
          nodeAddrs = new Set([...all].filter(([i]) => i !== this.#index).flatMap(([, a]) => a));
        }
        return nodeAddrs.has(address);
      };
      const wanted = new Set<string>();
      for (const a of this.#applied.values()) for (const x of a.addresses) wanted.add(x);
      for (const s of cached ?? (await this.#ipvs.services())) {
        const id = serviceId(s);
        if (this.#vsOwner.has(id) || this.#excluded(s.address)) continue;
        if (s.fwmark !== undefined || s.address === undefined) continue;
        const onInterface = this.#ifAddrs.has(s.address) && !wanted.has(s.address);
        if (!onInterface && !(nodePort(s.port) && (await onNode(s.address)))) continue;
        run.ops++;
        try {
          await this.#ipvs.deleteService(s);
          out.services.push(id);
          if (s.protocol === 'UDP') run.staleUdp.push({ family: s.family, address: s.address, port: s.port });
        } catch (e) {
          if (!ok(e, 'ESRCH', 'ENOENT')) run.fail(`delete service ${id} (kube-proxy's)`, e);
        }
      }
      for (const a of [...this.#ifAddrs]) {
        if (this.#owned.addresses.has(a)) continue;
        if (wanted.has(a)) {
          this.#own(this.#owned.addresses, a, true);
          out.adopted.push(a);
          continue;
        }
        run.ops++;
        try {
          await this.#links.deleteAddress(this.#index!, a);
          this.#ifAddrs.delete(a);
          out.addresses.push(a);
        } catch (e) {
          run.fail(`delete address ${a} (kube-proxy's)`, e);
        }
      }
    } catch (e) {
      run.fail("take over kube-proxy's IPVS state", e);
    }
    if (this.#ownedChanged) {
      try {
        this.#owned.save();
      } catch (e) {
        run.fail('save ownership record', e);
      }
    }
    return out;
  }

  /** `d` with its destinations from the Service's latest plan (see SyncRequest.latest). */
  #fresh(d: DesiredVS, req: SyncRequest): DesiredVS {
    const plan = req.latest?.(d.owner);
    if (!plan || plan === req.plans.get(d.owner)) return d;
    for (const vs of plan.virtualServers) {
      const n = toDesired(vs);
      if (n.id === d.id) return { ...d, vs: n.vs, evicted: n.evicted, service: n.service };
    }
    return d;
  }

  /**
   * Brings only the destinations of these Services' virtual servers in line, now, alongside a
   * sync that may be running: what health needs when a backend fails, and an endpoint change
   * during a long full resync. New and changed destinations are written, evicted ones deleted,
   * and one the plan no longer has gets weight 0 (no new connections; the next sync drains and
   * deletes it). A virtual server whose attributes changed is updated first: a slow-start ramp
   * turns rr into wrr, and weights 1:10 under rr would give the recovering backend its full share.
   * Never creates or deletes a virtual server, an address or an ownership record: `incomplete`
   * names the Services with a virtual server not in the kernel yet, whose change waits for the
   * next sync.
   */
  async syncDestinations(
    plans: ReadonlyMap<string, ServicePlan>,
  ): Promise<{ operations: number; errors: OpError[]; incomplete: Set<string> }> {
    const run = new Run(this.#o.onError);
    const incomplete = new Set<string>();
    const all = [...plans.values()].flatMap((p) => p.virtualServers.map(toDesired));
    await pool(all, this.#o.concurrency, async (d) => {
      let kernel: IpvsDestination[];
      try {
        kernel = await this.#aside.destinations(d.service, { stats: false });
      } catch (e) {
        if (!ok(e, 'ESRCH', 'ENOENT')) run.fail(`list destinations of ${d.id}`, e, d.owner);
        incomplete.add(d.owner);
        return; // not in the kernel yet: the sync that creates it brings its destinations
      }
      await this.#asideAttributes(d, run);
      const have = new Map(kernel.map((x) => [destinationId(x), x]));
      const puts: Promise<void>[] = [];
      const wanted = destinationsOf(d);
      for (const [did, want] of wanted) puts.push(this.#putDestination(d, did, want, have.get(did), run, this.#aside));
      await Promise.all(puts);
      const removals: Promise<unknown>[] = [];
      for (const [did, k] of have) {
        if (wanted.has(did)) continue;
        if (d.evicted.has(did)) removals.push(this.#deleteDest(d, k, run, this.#aside));
        else removals.push(this.#stopDest(d, did, k, run, this.#aside));
      }
      await Promise.all(removals);
    });
    return { operations: run.ops, errors: run.errors, incomplete };
  }

  /**
   * The virtual server's attributes as `d` wants them, before its destinations are written aside: what an earlier
   * sync left is known (#inKernel), else the kernel is asked. A failed update is reported and the destinations are
   * written anyway (an ejection must not wait for it); the next sync tries again.
   */
  async #asideAttributes(d: DesiredVS, run: Run): Promise<void> {
    let have: IpvsService | null | undefined = this.#inKernel.get(d.id);
    if (have && sameAttributes(have, d.service)) return;
    if (!have)
      try {
        have = await this.#aside.service(d.service);
      } catch (e) {
        run.fail(`get service ${d.id}`, e, d.owner);
        return;
      }
    if (!have || serviceMatches(d.service, have)) return;
    run.ops++;
    try {
      await this.#aside.updateService(d.service);
      this.#inKernel.set(d.id, d.service);
    } catch (e) {
      this.#inKernel.delete(d.id);
      run.fail(`update service ${d.id}`, e, d.owner);
    }
  }

  /**
   * One destination as wanted, given what the kernel had (`k`). EEXIST is no failure: health's
   * syncDestinations and a running sync may both add the same destination.
   */
  async #putDestination(
    d: DesiredVS,
    did: string,
    want: IpvsDestination,
    k: IpvsDestination | undefined,
    run: Run,
    ipvs: Ipvs = this.#ipvs,
  ): Promise<void> {
    if (k && destinationMatches(want, k)) return;
    run.ops++;
    try {
      if (k) await ipvs.updateDestination(d.service, want);
      else await ipvs.addDestination(d.service, want);
    } catch (e) {
      if (!ok(e, 'EEXIST')) run.fail(`${k ? 'update' : 'add'} destination ${did} of ${d.id}`, e, d.owner);
    }
  }

  async #incremental(req: SyncRequest, run: Run): Promise<void> {
    // Owners first: a virtual server that moves from one Service to another in this sync (a
    // conflict's holder changed) is handed over, never deleted by the one that lost it.
    const desiredOf = new Map<string, DesiredVS[]>();
    for (const [key, plan] of req.plans) {
      const desired = (plan?.virtualServers ?? []).map(toDesired);
      desiredOf.set(key, desired);
      for (const d of desired) this.#vsOwner.set(d.id, key);
    }
    for (const [key, plan] of req.plans) {
      const before = this.#applied.get(key) ?? NOTHING_APPLIED;
      const now = { vs: new Set<string>(), addresses: new Set(plan?.addresses ?? []) };
      const desired = desiredOf.get(key)!;
      for (const a of now.addresses) await this.#addAddress(a, run);
      await pool(desired, this.#o.concurrency, async (planned) => {
        // Its destinations as the Service's latest plan has them: a change written alongside this sync since it began
        // (the daemon does that while a long one runs) is not turned back by the plan this sync started with.
        const d = this.#fresh(planned, req);
        now.vs.add(d.id);
        this.#vsOwner.set(d.id, key);
        // A virtual server an earlier sync left with exactly these attributes is not asked for again: its
        // destinations are read anyway, and one deleted behind our back shows there (it is then looked up and made
        // again). Attributes changed behind our back are the full resync's to find.
        const seen = this.#inKernel.get(d.id);
        if (seen && sameAttributes(seen, d.service) && !(await this.#reconcileVS(d, seen, run, undefined, true)))
          return;
        this.#inKernel.delete(d.id);
        let have: IpvsService | null;
        try {
          have = await this.#ipvs.service(d.service);
        } catch (e) {
          run.fail(`get service ${d.id}`, e, key);
          return;
        }
        await this.#reconcileVS(d, have, run);
      });
      for (const id of before.vs) {
        if (now.vs.has(id) || (this.#vsOwner.get(id) ?? key) !== key) continue; // moved to another Service
        await this.#deleteVS(id, null, run, key);
      }
      for (const a of before.addresses) {
        if (!now.addresses.has(a) && !req.addressInUse(a)) await this.#deleteAddress(a, run);
      }
      if (plan) this.#applied.set(key, { vs: [...now.vs], addresses: plan.addresses });
      else this.#applied.delete(key);
    }
  }

  async #addAddress(a: string, run: Run): Promise<void> {
    if (this.#ifAddrs.has(a)) return;
    run.ops++;
    try {
      await this.#links.addAddress(this.#index!, a);
      this.#ifAddrs.add(a);
      this.#own(this.#owned.addresses, a, true);
    } catch (e) {
      run.fail(`add address ${a}`, e);
    }
  }

  /** Removes an address only when we added it. */
  async #deleteAddress(a: string, run: Run): Promise<void> {
    if (!this.#owned.addresses.has(a)) return;
    run.ops++;
    try {
      await this.#links.deleteAddress(this.#index!, a);
      this.#ifAddrs.delete(a);
      this.#own(this.#owned.addresses, a, false);
    } catch (e) {
      run.fail(`delete address ${a}`, e);
    }
  }

  async #deleteVS(id: string, s: IpvsService | null, run: Run, owner?: string): Promise<void> {
    if (s && !this.#isOurs(s)) return;
    if (!s && !this.#owned.services.has(id)) return;
    run.ops++;
    try {
      await this.#ipvs.deleteService(s ?? parseServiceId(id));
    } catch (e) {
      if (!ok(e, 'ESRCH', 'ENOENT')) {
        run.fail(`delete service ${id}`, e, owner);
        return;
      }
    }
    this.#own(this.#owned.services, id, false);
    if (this.#owned.labels.delete(id)) this.#ownedChanged = true;
    const gone = s ?? parseServiceId(id);
    if (gone.protocol === 'UDP' && gone.address !== undefined)
      run.staleUdp.push({ family: gone.family, address: gone.address, port: gone.port });
    this.#draining.delete(id);
    this.#vsOwner.delete(id);
    this.#inKernel.delete(id);
  }

  /**
   * `known`: the virtual server's destinations as a whole-table read found them (else they are dumped). `assumed`:
   * `have` is what an earlier sync confirmed, not read now; returns true when the kernel says it is not there after all
   * (nothing was changed: the caller looks it up and comes back).
   */
  async #reconcileVS(
    d: DesiredVS,
    have: IpvsService | null,
    run: Run,
    known?: KnownDestinations,
    assumed = false,
  ): Promise<boolean> {
    let kernelDests: IpvsDestination[] = [];
    let asWanted = false;
    if (!have) {
      this.#own(this.#owned.services, d.id, true);
      run.ops++;
      try {
        await this.#ipvs.addService(d.service);
        this.#inKernel.set(d.id, d.service);
      } catch (e) {
        if (!ok(e, 'EEXIST')) {
          this.#own(this.#owned.services, d.id, false);
          run.fail(`add service ${d.id}`, e, d.owner);
          return false;
        }
        have = await this.#ipvs.service(d.service).catch(() => null);
      }
    }
    if (have) {
      // A service with our exact identity is ours from now on (adopting e.g. kube-proxy's leftover).
      this.#own(this.#owned.services, d.id, true);
      let serviceOk = true;
      if (!serviceMatches(d.service, have)) {
        run.ops++;
        try {
          await this.#ipvs.updateService(d.service);
        } catch (e) {
          serviceOk = false;
          run.fail(`update service ${d.id}`, e, d.owner);
        }
      }
      // The common case of a resync, told without building an object: the table shows exactly what is wanted.
      const v4 = known ? v4DestinationsOf(d) : null;
      if (v4 && known?.same(v4)) asWanted = true;
      else
        try {
          kernelDests = known ? known.list() : await this.#ipvs.destinations(d.service, { stats: false });
        } catch (e) {
          if (assumed && ok(e, 'ESRCH', 'ENOENT')) return true;
          run.fail(`list destinations of ${d.id}`, e, d.owner);
          return false;
        }
      if (serviceOk) this.#inKernel.set(d.id, d.service);
      else this.#inKernel.delete(d.id);
    }
    const l = this.#owned.labels.get(d.id);
    if (!l || l.service !== d.label.service || l.portName !== d.label.portName || l.kind !== d.label.kind) {
      this.#owned.labels.set(d.id, d.label);
      this.#ownedChanged = true;
    }
    if (asWanted) {
      this.#draining.delete(d.id); // every destination wanted is in: none of them drains
      return false;
    }
    const kernel = new Map(kernelDests.map((x) => [destinationId(x), x]));
    const draining = this.#draining.get(d.id) ?? new Map<string, number>();
    // New and changed destinations first, so capacity is added before any is taken away: every write is issued in
    // this order in one turn, so the socket sends them in one batch, which the kernel applies in order (one round
    // trip for both steps). Each settles on its own; a removal does not depend on a put's outcome.
    const writes: Promise<unknown>[] = [];
    const wanted = destinationsOf(d);
    for (const [did, want] of wanted) {
      draining.delete(did);
      const k = kernel.get(did);
      if (!k || !destinationMatches(want, k)) writes.push(this.#putDestination(d, did, want, k, run));
    }
    const now = this.#o.clock.now();
    for (const [did, k] of kernel) {
      if (wanted.has(did)) continue;
      if (d.protocol !== 'TCP' || d.evicted.has(did)) {
        // UDP and SCTP have no connection to finish; an evicted (dead) TCP backend's connections
        // are dead already: deleting it lets IPVS end them (expire_nodest_conn).
        writes.push(this.#deleteDest(d, k, run));
        continue;
      }
      // TCP: stop new connections (weight 0), delete when the last one is gone or the bound passes.
      if (!draining.has(did)) draining.set(did, now);
      const idle = (k.activeConns ?? 0) + (k.inactiveConns ?? 0) === 0;
      const expired = now - draining.get(did)! >= this.#o.gracefulTerminationSeconds * 1000;
      if (idle || expired) writes.push(this.#deleteDest(d, k, run).then((gone) => gone && draining.delete(did)));
      else writes.push(this.#stopDest(d, did, k, run));
    }
    if (writes.length) await Promise.all(writes);
    if (draining.size > 0) this.#draining.set(d.id, draining);
    else this.#draining.delete(d.id);
    return false;
  }

  /** Weight 0: no new connections to `k` (a drain's first step). Gone already is no failure. */
  async #stopDest(d: DesiredVS, did: string, k: IpvsDestination, run: Run, ipvs: Ipvs = this.#ipvs): Promise<void> {
    if (k.weight === 0) return;
    run.ops++;
    try {
      await ipvs.updateDestination(d.service, { ...k, weight: 0 });
    } catch (e) {
      if (!ok(e, 'ENOENT', 'ESRCH')) run.fail(`drain destination ${did} of ${d.id}`, e, d.owner);
    }
  }

  async #deleteDest(d: DesiredVS, k: IpvsDestination, run: Run, ipvs: Ipvs = this.#ipvs): Promise<boolean> {
    run.ops++;
    try {
      await ipvs.deleteDestination(d.service, k);
      if (d.protocol === 'UDP')
        run.staleUdp.push({ family: d.service.family, address: d.address, port: d.port, endpoint: k.address });
      return true;
    } catch (e) {
      if (ok(e, 'ENOENT', 'ESRCH')) return true;
      run.fail(`delete destination ${destinationId(k)} of ${d.id}`, e, d.owner);
      return false;
    }
  }
}

/** Whether two services (of one key) ask the kernel for the same: scheduler, flags, persistence, engine. */
function sameAttributes(a: IpvsService, b: IpvsService): boolean {
  return (
    a.scheduler === b.scheduler &&
    a.flags === b.flags &&
    a.timeout === b.timeout &&
    a.netmask === b.netmask &&
    (a.peName ?? '') === (b.peName ?? '')
  );
}

/** One sync's counters and errors. */
class Run {
  ops = 0;
  /** How a full sync read the destinations: one whole-table read, or a dump per virtual server. */
  kernelRead: 'table' | 'dumps' = 'dumps';
  /** Why the whole-table read was not used. */
  tableProblem?: string;
  readonly errors: OpError[] = [];
  readonly staleUdp: StaleUdp[] = [];
  readonly #report: (e: OpError) => void;
  constructor(report: (e: OpError) => void) {
    this.#report = report;
  }
  fail(op: string, e: unknown, service?: string): void {
    const err: OpError = {
      op,
      code: (e as { code?: string }).code ?? 'EIO',
      message: (e as Error).message ?? String(e),
      ...(service ? { service } : {}),
    };
    this.errors.push(err);
    this.#report(err);
  }
}

/** Items `pool` runs before it lets the event loop turn (see below). */
const POOL_SLICE = 256;
/** Plans made into desired virtual servers between two turns of the event loop in a full sync. */
const PLANS_PER_TURN = 500;

/** What was last applied for one Kubernetes Service (never changed in place). */
interface Applied {
  vs: readonly string[];
  addresses: readonly string[];
}
const NOTHING_APPLIED: Applied = { vs: [], addresses: [] };

/**
 * Runs `fn` over `items` with at most `n` in flight. Every POOL_SLICE items it waits for the event loop to turn:
 * when `fn` has nothing to wait for (a resync that finds a virtual server as wanted), the pool would otherwise run
 * through 10 000 of them without letting an endpoint change, a health transition or a scrape in.
 */
async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  // One item (an endpoint change's virtual server, most often): no workers, no gate.
  if (items.length <= 1) return items.length === 1 ? fn(items[0]!) : undefined;
  let i = 0;
  let yieldAt = POOL_SLICE;
  // While the loop turns, every worker waits at this gate before taking another item.
  let gate: Promise<void> | null = null;
  const worker = async () => {
    for (;;) {
      if (gate) await gate;
      if (i >= items.length) return;
      if (i >= yieldAt) {
        yieldAt = i + POOL_SLICE;
        gate = nextTurn().then(() => {
          gate = null;
        });
        continue;
      }
      await fn(items[i++]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

/** The inverse of serviceId (what we record). */
export function parseServiceId(id: string): IpvsService {
  const fw = /^FWM\/(\d+)(\/v6)?$/.exec(id);
  if (fw) return { family: fw[2] ? 6 : 4, fwmark: Number(fw[1]), scheduler: '', flags: 0, timeout: 0, netmask: 0 };
  const m = /^(TCP|UDP|SCTP)\/(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(id);
  if (!m) throw new Error(`not a service id: ${id}`);
  const address = m[2] ?? m[3]!;
  return {
    family: address.includes(':') ? 6 : 4,
    protocol: m[1] as IpvsService['protocol'] & string,
    address,
    port: Number(m[4]),
    scheduler: '',
    flags: 0,
    timeout: 0,
    netmask: 0,
  };
}
