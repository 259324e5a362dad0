// What the daemon needs from a source of Kubernetes objects: change events in the shape the
// model takes, and a promise that says the first complete view has arrived.
import type { Problem } from '../errors.ts';
import type { Change } from '../model/model.ts';

export interface SourceBatch {
  changes: Change[];
  /** Problems of the source itself (unparsable files...), not of objects. */
  problems: Problem[];
  /** Where a change came from (file and line), for error lines. */
  origins?: Map<Change, { file: string; line: number }>;
  /** Service key -> when the endpoints changed (EndpointSlice last-change-trigger-time), ms. */
  triggerTimes?: Map<string, number>;
}

/** What a watching source has been through (read by the metrics at scrape time). */
export interface SourceCounters {
  /** List pages fetched (a paginated list is several). */
  pages: number;
  reconnects: number;
  relists: number;
  errors: number;
  stalls: number;
  events: number;
  /** When the last object event arrived (epoch ms; 0: none yet). */
  lastEventAt: number;
}

export interface Source {
  /** Present on sources that watch an API server. */
  readonly counters?: SourceCounters;
  /**
   * Starts delivering batches; resolves once the first complete view has been delivered. A batch's objects are
   * valid during `deliver` only: the Kubernetes source then keeps just their name, namespace and resourceVersion.
   */
  start(deliver: (batch: SourceBatch) => void): Promise<void>;
  /** Asks for a fresh look now, where the source can (the folder source re-reads). */
  refresh(): Promise<void>;
  stop(): void;
}
