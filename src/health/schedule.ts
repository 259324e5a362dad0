// When each probe target is probed next, pure over an injected time and random source: one
// entry per target in a min-heap by due time (100 000 targets need one timer, not 100 000), each
// interval jittered by ±10% so probes spread out, and the node's budget (probes per second):
// when the targets together would need more, every interval stretches by the same factor.

export interface ScheduleOptions {
  probesPerSecond: number;
  /** A number in [0, 1): the jitter source (Math.random; tests pass their own). */
  random?: () => number;
}

interface Entry {
  key: string;
  intervalMs: number;
  due: number;
  /** Set anew (unique across the schedule) when the entry is moved: heap items of another version are stale. */
  version: number;
}

export const JITTER = 0.1;

export class ProbeSchedule {
  readonly #o: Required<ScheduleOptions>;
  readonly #entries = new Map<string, Entry>();
  /** [due, version, key] */
  #heap: [number, number, string][] = [];
  /** Σ 1000 / interval over the targets: the probes per second they ask for. */
  #demand = 0;
  /** Versions never repeat, so a target removed and added again cannot take its old heap items for its own. */
  #version = 0;

  constructor(opts: ScheduleOptions) {
    this.#o = { random: Math.random, ...opts };
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Probes per second the targets ask for (before stretching). */
  get demand(): number {
    return this.#demand;
  }

  /** How much intervals are stretched to stay within the budget (1: not at all). */
  get stretch(): number {
    return Math.max(1, this.#demand / this.#o.probesPerSecond);
  }

  /** The interval a target really gets: its own, stretched, without jitter. */
  effectiveInterval(key: string): number {
    const e = this.#entries.get(key);
    return e ? e.intervalMs * this.stretch : 0;
  }

  #jittered(ms: number): number {
    return ms * (1 - JITTER + 2 * JITTER * this.#o.random());
  }

  /** Adds a target (first probe within one interval, jittered) or changes its interval. */
  set(key: string, intervalMs: number, now: number): void {
    const e = this.#entries.get(key);
    if (e) {
      if (e.intervalMs === intervalMs) return;
      this.#demand += 1000 / intervalMs - 1000 / e.intervalMs;
      e.intervalMs = intervalMs;
      // A shorter interval takes effect now; a longer one at the next probe.
      const due = Math.min(e.due, now + this.#jittered(intervalMs * this.stretch));
      if (due !== e.due) this.#move(e, due);
      return;
    }
    const entry: Entry = { key, intervalMs, due: 0, version: 0 };
    this.#entries.set(key, entry);
    this.#demand += 1000 / intervalMs;
    // Spread first probes over one interval, so a thousand new targets do not all go at once.
    this.#move(entry, now + this.#o.random() * intervalMs * this.stretch);
  }

  remove(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key);
    this.#demand -= 1000 / e.intervalMs;
    if (this.#entries.size === 0) this.#demand = 0;
  }

  /** Probes a target again at once (to confirm a change of state), then back to its interval. */
  dueNow(key: string, now: number): void {
    const e = this.#entries.get(key);
    if (e && e.due > now) this.#move(e, now);
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** When the next probe is due (Infinity: none). */
  nextAt(): number {
    this.#dropStale();
    return this.#heap.length ? this.#heap[0]![0] : Infinity;
  }

  /** Targets due at `now`; each is rescheduled one (stretched, jittered) interval later. */
  takeDue(now: number, max = Infinity): string[] {
    const out: string[] = [];
    const stretch = this.stretch;
    while (out.length < max) {
      this.#dropStale();
      const top = this.#heap[0];
      if (!top || top[0] > now) break;
      const e = this.#entries.get(top[2])!;
      out.push(e.key);
      // From the due time, not from now, so a slightly late tick does not shift the schedule;
      // from now when it is a whole interval late (never due again in this same call).
      const step = this.#jittered(e.intervalMs * stretch);
      this.#move(e, e.due + step > now ? e.due + step : now + step);
    }
    return out;
  }

  #move(e: Entry, due: number): void {
    e.due = due;
    e.version = ++this.#version;
    this.#push([due, e.version, e.key]);
  }

  #dropStale(): void {
    while (this.#heap.length) {
      const [, v, k] = this.#heap[0]!;
      const e = this.#entries.get(k);
      if (e && e.version === v) return;
      this.#pop();
    }
    // Stale items pile up when intervals change often: rebuild once they outnumber live ones.
    if (this.#heap.length > 2 * this.#entries.size + 1024) this.#rebuild();
  }

  #rebuild(): void {
    this.#heap = [...this.#entries.values()].map((e) => [e.due, e.version, e.key] as [number, number, string]).sort((a, b) => a[0] - b[0]);
  }

  #push(item: [number, number, string]): void {
    const h = this.#heap;
    h.push(item);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]![0] <= h[i]![0]) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  #pop(): void {
    const h = this.#heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]![0] < h[m]![0]) m = l;
      if (r < h.length && h[r]![0] < h[m]![0]) m = r;
      if (m === i) break;
      [h[m], h[i]] = [h[i]!, h[m]!];
      i = m;
    }
  }
}
