// The file source as a stream of changes: each poll re-reads the folder and reports what was
// added, changed or removed since the last poll, as {kind, previous, current} events — the same
// shape the Kubernetes source produces, so the model cannot tell them apart.
import { Codes, type Problem } from '../errors.ts';
import type { Change } from '../model/model.ts';
import { refOf } from '../model/validate.ts';
import { readManifests } from './manifests.ts';

export interface Poll {
  changes: Change[];
  /** Problems of the folder as it is now (unparsable files, documents without a kind). */
  problems: Problem[];
  /** Where each changed object came from, for error lines. */
  origins: Map<Change, { file: string; line: number }>;
}

type Entry = { kind: Change['kind']; object: Record<string, unknown>; json: string; file: string; line: number };

export class ManifestSource {
  readonly dir: string;
  #objects = new Map<string, Entry>();

  constructor(dir: string) {
    this.dir = dir;
  }

  async poll(): Promise<Poll> {
    const set = await readManifests(this.dir);
    const next = new Map<string, Entry>();
    // A file that does not parse (half-written, or broken by an edit) keeps what it last had:
    // dropping its objects would delete Services that were working a moment ago.
    const unreadable = new Set(set.problems.filter((p) => p.code === Codes.MANIFEST_UNPARSABLE && p.file).map((p) => p.file!));
    for (const [id, old] of this.#objects) if (unreadable.has(old.file)) next.set(id, old);
    for (const o of set.objects) {
      if (unreadable.has(o.file)) continue;
      const ref = refOf(o.kind, o.object);
      // The later definition of a duplicate wins, as in `kube-ipvs plan`.
      next.set(`${ref.kind} ${ref.name}`, { kind: o.kind, object: o.object, json: JSON.stringify(o.object), file: o.file, line: o.line });
    }
    const changes: Change[] = [];
    const origins = new Map<Change, { file: string; line: number }>();
    for (const [id, old] of this.#objects) {
      if (!next.has(id)) changes.push({ kind: old.kind, previous: old.object, current: null });
    }
    for (const [id, cur] of next) {
      const old = this.#objects.get(id);
      if (old && old.json === cur.json) continue;
      const c: Change = { kind: cur.kind, previous: old?.object ?? null, current: cur.object };
      changes.push(c);
      origins.set(c, { file: cur.file, line: cur.line });
    }
    // Nodes before Services before slices, as in a fresh plan.
    const order = { Node: 0, Service: 1, EndpointSlice: 2 } as const;
    changes.sort((a, b) => order[a.kind] - order[b.kind]);
    this.#objects = next;
    return { changes, problems: set.problems, origins };
  }
}
