// Passive outlier detection, pure: TCP backends whose new connections never establish, told from
// what the kernel already counts per destination. A black-holed backend takes new connections
// (the `conns` counter moves) and sends nothing back (`outPkts` stays: not even a SYN-ACK). Two
// such windows in a row are evidence. (IPVS counts those half-open connections as *active*, seen
// in the lab: the active/inactive split says nothing here.) Not evidence:
// a slow but healthy backend (its SYN-ACKs are reply packets), long-lived idle connections (no
// new connections), and UDP (one-way flows are normal there: never looked at).
// The kernel folds these counters every 2 s: windows shorter than that see nothing move.

export interface DestinationSample {
  /** Connections scheduled to it, ever. */
  conns: number;
  /** Packets from it back to clients, ever. */
  outPkts: number;
  /** Read, not judged on (see above). */
  activeConns: number;
}

/** New connections in a window before silence counts. */
export const MIN_NEW_CONNECTIONS = 3;
/** Consecutive silent windows before it is evidence. */
export const WINDOWS = 2;

interface Track {
  last: DestinationSample;
  strikes: number;
  newConns: number;
}

export class PassiveDetector {
  readonly #tracks = new Map<string, Track>();

  /**
   * One window's sample for an endpoint ("address:port", summed over the virtual servers that
   * use it). Returns the evidence when this window makes it a suspect, else null.
   */
  observe(endpoint: string, s: DestinationSample): string | null {
    const t = this.#tracks.get(endpoint);
    if (!t) {
      this.#tracks.set(endpoint, { last: s, strikes: 0, newConns: 0 });
      return null;
    }
    const newConns = s.conns - t.last.conns;
    const replies = s.outPkts - t.last.outPkts;
    t.last = s;
    // Counters that went back (a destination deleted and added again): start over.
    if (newConns < 0 || replies < 0) {
      t.strikes = 0;
      t.newConns = 0;
      return null;
    }
    if (newConns >= MIN_NEW_CONNECTIONS && replies === 0) {
      t.strikes++;
      t.newConns += newConns;
      if (t.strikes === WINDOWS) return `passive: ${t.newConns} new connections, not one packet back`;
      return null;
    }
    if (replies > 0) {
      t.strikes = 0;
      t.newConns = 0;
    }
    return null;
  }

  /** Forget endpoints no longer looked at. */
  keep(endpoints: ReadonlySet<string>): void {
    for (const k of this.#tracks.keys()) if (!endpoints.has(k)) this.#tracks.delete(k);
  }

  /** After an ejection confirmed over, the endpoint starts with a clean slate. */
  reset(endpoint: string): void {
    this.#tracks.delete(endpoint);
  }
}
