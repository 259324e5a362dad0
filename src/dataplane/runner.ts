// A bounded-frequency runner, as kube-proxy's: a requested sync runs as soon as minInterval
// since the last one allows; a sync runs at least every maxInterval (the full resync); a failed
// sync is retried with exponential backoff. Time comes from an injected clock, so tests step it.
// The periodic full resync is spaced by its own cost too: it starts again only after
// FULL_SYNC_SPACING times as long as the last one took (at most a tenth of the time spent on it),
// and never later than FULL_SYNC_SPACING x maxInterval after the last one.

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** A timer due now, as systemClock arms it. */
interface Now {
  immediate: NodeJS.Immediate;
}

/**
 * Real time. Its timers keep the process alive: the periodic resync is what a daemon waits on. A timer due now (every
 * endpoint change's sync asks for one) is an immediate, run after the event loop's next poll: Node's timer list, its
 * objects and its 1 ms floor are for later times.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms): NodeJS.Timeout | Now => (ms <= 0 ? { immediate: setImmediate(fn) } : setTimeout(fn, ms)),
  clearTimeout: (h) => {
    if (h !== null && typeof h === 'object' && 'immediate' in h) clearImmediate((h as Now).immediate);
    else clearTimeout(h as NodeJS.Timeout);
  },
};

/**
 * A full sync taking d is followed by the next no sooner than FULL_SYNC_SPACING x d after its start (at most 1% of the
 * time reading the whole kernel state back), and no later than FULL_SYNC_MAX_MS (kube-proxy's own full-sync period in
 * its iptables mode). In between, a cheap check every maxInterval (see SyncFn) asks for one at once when something of
 * ours has gone.
 */
export const FULL_SYNC_SPACING = 100;
export const FULL_SYNC_MAX_MS = 3_600_000;

export interface RunnerOptions {
  /** Minimum time between two syncs (minSyncPeriod). */
  minIntervalMs: number;
  /** A sync runs at least this often even when nothing asks (syncPeriod). */
  maxIntervalMs: number;
  /** First retry delay after a failure; doubles up to retryMaxMs. */
  retryBaseMs: number;
  retryMaxMs: number;
  clock?: Clock;
  /**
   * A fault in the runner's own bookkeeping (never the sync's: its errors are failures, retried).
   * The runner carries on: it is not left marked running, which would stop every later sync.
   */
  onError?: (e: unknown) => void;
}

/**
 * What the runner asks for: `full` when the periodic resync is due (or asked for with requestFull); `check` when,
 * short of that, maxInterval has passed since the last full sync or check: the sync then also looks, cheaply, whether
 * anything of ours was removed behind its back (and calls requestFull if so). Resolves to success.
 */
export type SyncFn = (reason: { full: boolean; check: boolean }) => Promise<boolean>;

export class BoundedFrequencyRunner {
  readonly #fn: SyncFn;
  readonly #o: Required<RunnerOptions>;
  /** The timer of requests and retries, and when it fires. */
  #timer: unknown = null;
  #timerAt = Infinity;
  /** The periodic full resync's timer, and when it fires. */
  #periodic: unknown = null;
  #periodicAt = Infinity;
  #running = false;
  #pending = false;
  /** A request that must not wait for minInterval (a health transition). */
  #urgent = false;
  #lastRun = -Infinity;
  #lastFull: number;
  /** How long the last successful full sync took. */
  #lastFullTook = 0;
  /** When the last successful check began, or the last successful full sync ended. */
  #lastCheck: number;
  /** The next sync is a full one, whenever the last was (requestFull). */
  #fullAsked = false;
  #failures = 0;
  #stopped = true;
  #idle: (() => void)[] = [];

  constructor(fn: SyncFn, opts: RunnerOptions) {
    this.#fn = fn;
    this.#o = { clock: systemClock, onError: () => {}, ...opts };
    this.#lastFull = this.#o.clock.now();
    this.#lastCheck = this.#lastFull;
  }

  get failures(): number {
    return this.#failures;
  }

  /**
   * The time between two periodic full syncs' starts: maxInterval, stretched to FULL_SYNC_SPACING times the last
   * one's duration when that is longer (a resync of 10 000 Services takes about 0.8 s natively and 8-11 s under the
   * lab's emulation), at most FULL_SYNC_MAX_MS (and never below maxInterval).
   */
  get fullIntervalMs(): number {
    const max = this.#o.maxIntervalMs;
    return Math.max(max, Math.min(FULL_SYNC_SPACING * this.#lastFullTook, FULL_SYNC_MAX_MS));
  }

  /** Starts with one immediate full sync. */
  start(): void {
    this.#stopped = false;
    this.#lastFull = -Infinity;
    this.#pending = true;
    this.#schedule(0);
  }

  stop(): void {
    this.#stopped = true;
    this.#clear();
  }

  /** Asks for a sync as soon as the minimum interval allows. */
  request(): void {
    if (this.#stopped) return;
    this.#pending = true;
    if (this.#running) return; // picked up when the current sync ends
    const now = this.#o.clock.now();
    this.#schedule(Math.max(0, this.#lastRun + this.#o.minIntervalMs - now));
  }

  /** Asks for a full sync as soon as the minimum interval allows (a check found something of ours gone). */
  requestFull(): void {
    if (this.#stopped) return;
    this.#fullAsked = true;
    this.request();
  }

  /**
   * Asks for a sync now, not after minInterval: a health transition must reach the kernel at
   * once. Still one sync at a time: one running is followed by this one as soon as it ends.
   */
  requestNow(): void {
    if (this.#stopped) return;
    this.#pending = true;
    this.#urgent = true;
    if (this.#running) return;
    this.#schedule(0);
  }

  /** Resolves when no sync is running or scheduled sooner than the periodic one (for tests). */
  whenIdle(): Promise<void> {
    if (!this.#running && !this.#pending) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  #clear(): void {
    if (this.#timer !== null) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
    if (this.#periodic !== null) this.#o.clock.clearTimeout(this.#periodic);
    this.#periodic = null;
    this.#periodicAt = Infinity;
  }

  /** A timer's callback: a sync, and a fault in the runner's own bookkeeping reported and retried. */
  #fire(): void {
    this.#run().catch((e: unknown) => {
      this.#running = false;
      this.#o.onError(e);
      if (!this.#stopped) {
        this.#pending = true;
        this.#schedule(this.#o.retryMaxMs);
      }
    });
  }

  /** Arms the timer of requests and retries for `delay` from now unless it is already armed sooner. */
  #schedule(delay: number): void {
    const at = this.#o.clock.now() + delay;
    if (at >= this.#timerAt) return;
    if (this.#timer !== null) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timer = null;
      this.#timerAt = Infinity;
      // Nothing asked since (the periodic resync ran what was): no sync.
      if (this.#pending) this.#fire();
    }, delay);
    this.#timerAt = at; // only once armed: a clock that failed leaves none to wait for
  }

  /**
   * Arms the periodic full resync's own timer for `at`. A timer of its own, left alone while its time stays the same:
   * an endpoint change's sync arms one timer (the request's), not three (the request's, and the resync's cleared
   * and armed again around it).
   */
  #armPeriodic(at: number): void {
    if (at === this.#periodicAt) return;
    if (this.#periodic !== null) this.#o.clock.clearTimeout(this.#periodic);
    this.#periodic = null;
    this.#periodicAt = Infinity;
    this.#periodic = this.#o.clock.setTimeout(
      () => {
        this.#periodic = null;
        this.#periodicAt = Infinity;
        // During a sync: nothing now. The sync ends by arming this timer again for the same time, now past, so
        // the full resync follows at once (unless that sync was the full one: then it is armed 30 s on).
        if (!this.#running) this.#fire();
      },
      Math.max(0, at - this.#o.clock.now()),
    );
    this.#periodicAt = at;
  }

  async #run(): Promise<void> {
    if (this.#stopped || this.#running) return;
    const now = this.#o.clock.now();
    const full = this.#fullAsked || now - this.#lastFull >= this.fullIntervalMs;
    const check = !full && now - this.#lastCheck >= this.#o.maxIntervalMs;
    this.#running = true;
    this.#pending = false;
    this.#urgent = false;
    this.#fullAsked = false;
    this.#lastRun = now;
    let ok: boolean;
    try {
      ok = await this.#fn({ full, check });
    } catch {
      ok = false;
    }
    this.#running = false;
    if (this.#stopped) return;
    const after = this.#o.clock.now();
    if (ok) {
      this.#failures = 0;
      if (full) {
        this.#lastFull = now;
        this.#lastFullTook = after - now;
      }
      // The next check maxInterval after this one began, or after a full sync ended (it looked at everything).
      if (full || check) this.#lastCheck = full ? after : now;
    } else {
      this.#failures++;
      this.#pending = true;
      if (full) this.#fullAsked = true; // a failed full sync is retried full, whatever asked for it
    }
    if (!ok) {
      const backoff = Math.min(this.#o.retryMaxMs, this.#o.retryBaseMs * 2 ** (this.#failures - 1));
      this.#schedule(Math.max(backoff, this.#lastRun + this.#o.minIntervalMs - after));
    } else if (this.#pending) {
      this.#schedule(this.#urgent ? 0 : Math.max(0, this.#lastRun + this.#o.minIntervalMs - after));
    }
    // The periodic full resync or check, whichever is due first (after a failed one, the retry above comes first:
    // this timer is then armed a whole interval on).
    const checkFrom = (full || check) && !ok ? now : this.#lastCheck;
    this.#armPeriodic(Math.min((full ? now : this.#lastFull) + this.fullIntervalMs, checkFrom + this.#o.maxIntervalMs));
    if (!this.#pending) this.#idle.splice(0).forEach((r) => r());
  }
}
