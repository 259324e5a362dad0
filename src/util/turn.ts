// Long pieces of synchronous work (a full resync at 10 000 Services reads and compares 100 000 destinations and
// 120 000 set entries) let the event loop turn every so often, so that an endpoint change, a health transition or a
// scrape is not held behind them: seconds natively, tens of seconds under emulation, in one piece.

/** A promise for the next turn of the event loop (after pending I/O callbacks). */
export const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * Counts calls: every `every`-th returns a promise for the next turn of the event loop, the others null (nothing to
 * wait for: `const p = tick(); if (p) await p;` costs a loop iteration no promise).
 */
export function turnEvery(every: number): () => Promise<void> | null {
  let n = 0;
  return () => (++n % every === 0 ? nextTurn() : null);
}
