// A Source the test pushes batches through, with watch counters to read.
import type { Change } from '../../src/model/model.ts';
import type { Source, SourceBatch, SourceCounters } from '../../src/sources/source.ts';

export class PushSource implements Source {
  deliver: ((b: SourceBatch) => void) | null = null;
  readonly counters: SourceCounters = {
    pages: 1,
    reconnects: 2,
    relists: 1,
    errors: 3,
    stalls: 0,
    events: 7,
    lastEventAt: Date.now() - 5000,
  };
  initial: Change[] = [];
  async start(d: (b: SourceBatch) => void) {
    this.deliver = d;
    d({ changes: this.initial, problems: [] });
  }
  async refresh() {}
  stop() {}
  push(...changes: Change[]) {
    this.deliver!({ changes, problems: [] });
  }
}
