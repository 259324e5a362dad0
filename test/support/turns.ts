// Counts the event loop's turns while something runs: what another task waiting on the loop (an endpoint change, a
// health transition) would get. For tests of long pieces of work that must let the loop turn.

export interface TurnCounter {
  /** Turns counted since the start or the last reset. */
  readonly turns: number;
  /** Counts from zero again (e.g. when the last datagram of a dump arrived: what follows is decoding alone). */
  reset(): void;
  /** Stops counting (the count stays readable); call it before the test ends. */
  stop(): void;
}

/** Starts counting turns: a callback that schedules itself for the next turn (setImmediate) until stopped. */
export function countTurns(): TurnCounter {
  let turns = 0;
  let counting = true;
  const tick = () => {
    turns++;
    if (counting) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    get turns() {
      return turns;
    },
    reset: () => void (turns = 0),
    stop: () => void (counting = false),
  };
}
