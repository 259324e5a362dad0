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
  /** Where it sits in the heap (-1: not in it). */
  pos: number;
}

export const JITTER = 0.1;

export class ProbeSchedule {
  readonly #o: Required<ScheduleOptions>;
  readonly #entries = new Map<string, Entry>();
  /**
   * The entries themselves, a min-heap by due time, each knowing its place: a move sifts it in
   * place. No item per move (at 300 probes a second those piled up in the old generation, and
   * the garbage collector marked them), no stale items to skip.
   */
  readonly #heap: Entry[] = [];
  /** Σ 1000 / interval over the targets: the probes per second they ask for. */
  #demand = 0;

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
    const entry: Entry = { key, intervalMs, due: 0, pos: -1 };
    this.#entries.set(key, entry);
    this.#demand += 1000 / intervalMs;
    // Spread first probes over one interval, so a thousand new targets do not all go at once.
    this.#move(entry, now + this.#o.random() * intervalMs * this.stretch);
  }

  remove(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key);
    this.#takeOut(e);
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
    return this.#heap.length ? this.#heap[0]!.due : Infinity;
  }

  /** Targets due at `now`; each is rescheduled one (stretched, jittered) interval later. */
  takeDue(now: number, max = Infinity): string[] {
    const out: string[] = [];
    const stretch = this.stretch;
    while (out.length < max) {
      const e = this.#heap[0];
      if (!e || e.due > now) break;
      out.push(e.key);
      // From the due time, not from now, so a slightly late tick does not shift the schedule;
      // from now when it is a whole interval late (never due again in this same call).
      const step = this.#jittered(e.intervalMs * stretch);
      this.#move(e, e.due + step > now ? e.due + step : now + step);
    }
    return out;
  }

  #move(e: Entry, due: number): void {
    const earlier = due < e.due;
    e.due = due;
    if (e.pos < 0) {
      e.pos = this.#heap.length;
      this.#heap.push(e);
      this.#up(e.pos);
    } else if (earlier) this.#up(e.pos);
    else this.#down(e.pos);
  }

  #takeOut(e: Entry): void {
    const h = this.#heap;
    const at = e.pos;
    if (at < 0) return;
    e.pos = -1;
    const last = h.pop()!;
    if (last === e) return;
    h[at] = last;
    last.pos = at;
    this.#up(at);
    this.#down(last.pos);
  }

  #swap(i: number, j: number): void {
    const h = this.#heap;
    const a = h[i]!;
    const b = h[j]!;
    h[i] = b;
    h[j] = a;
    a.pos = j;
    b.pos = i;
  }

  #up(i: number): void {
    const h = this.#heap;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.due <= h[i]!.due) break;
      this.#swap(p, i);
      i = p;
    }
  }

  #down(i: number): void {
    const h = this.#heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]!.due < h[m]!.due) m = l;
      if (r < h.length && h[r]!.due < h[m]!.due) m = r;
      if (m === i) return;
      this.#swap(m, i);
      i = m;
    }
  }
}
