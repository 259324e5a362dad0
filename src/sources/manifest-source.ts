// The file source as a stream of changes: each poll re-reads the folder and reports what was
// added, changed or removed since the last poll, as {kind, previous, current} events — the same
// shape the Kubernetes source produces, so the model cannot tell them apart.
import { watch, type FSWatcher } from 'node:fs';
import { APPLY_ORDER, type Change } from '../model/model.ts';
import { refOf } from '../model/validate.ts';
import { readManifests, type ManifestCache } from './manifests.ts';
import type { Source, SourceBatch } from './source.ts';

export interface Poll extends SourceBatch {
  origins: Map<Change, { file: string; line: number }>;
}

type Entry = { kind: Change['kind']; object: Record<string, unknown>; json: string; file: string; line: number };

export class ManifestSource implements Source {
  readonly dir: string;
  #objects = new Map<string, Entry>();
  /** Files parsed at the last read: an unchanged file is not parsed again at every poll. */
  readonly #cache: ManifestCache = new Map();
  readonly #watch: boolean;
  readonly #pollMs: number;
  #deliver: ((b: SourceBatch) => void) | null = null;
  #busy: Promise<void> = Promise.resolve();
  #watcher: FSWatcher | null = null;
  #timer: NodeJS.Timeout | null = null;

  /** `watch`: follow the folder (file events, and a re-read every `pollMs` as a safety net). */
  constructor(dir: string, opts: { watch?: boolean; pollMs?: number } = {}) {
    this.dir = dir;
    this.#watch = opts.watch ?? false;
    this.#pollMs = opts.pollMs ?? 5000;
  }

  async start(deliver: (b: SourceBatch) => void): Promise<void> {
    this.#deliver = deliver;
    await this.refresh();
    if (!this.#watch || !this.#deliver) return;
    let debounce: NodeJS.Timeout | null = null;
    const again = () => void this.refresh().catch(() => {});
    try {
      this.#watcher = watch(this.dir, { recursive: true, persistent: false }, () => {
        if (debounce) clearTimeout(debounce);
        debounce = setTimeout(again, 100);
      });
      this.#watcher.on('error', () => {});
    } catch {
      /* no file events here: the periodic re-read still follows the folder */
    }
    const tick = () => {
      again();
      this.#timer = setTimeout(tick, this.#pollMs);
    };
    this.#timer = setTimeout(tick, this.#pollMs);
  }

  /** Re-reads the folder (one read at a time) and delivers what changed. */
  refresh(): Promise<void> {
    const run = this.#busy.then(async () => {
      const p = await this.poll();
      this.#deliver?.(p);
    });
    this.#busy = run.catch(() => {});
    return run;
  }

  stop(): void {
    this.#deliver = null;
    this.#watcher?.close();
    if (this.#timer) clearTimeout(this.#timer);
  }

  async poll(): Promise<Poll> {
    const set = await readManifests(this.dir, { cache: this.#cache });
    // The folder itself is gone or unreadable (a remount, a ConfigMap being swapped): nothing is
    // known, so nothing changes; the last good state keeps serving and the problem is said.
    if (set.unreadable) return { changes: [], problems: set.problems, origins: new Map() };
    const next = new Map<string, Entry>();
    for (const o of set.objects) {
      const ref = refOf(o.kind, o.object);
      // The later definition of a duplicate wins, as in `kube-ipvs plan`.
      next.set(`${ref.kind} ${ref.name}`, {
        kind: o.kind,
        object: o.object,
        json: JSON.stringify(o.object),
        file: o.file,
        line: o.line,
      });
    }
    // Every document that reads is taken, as `plan` takes it. An object missing now from a file
    // read only in part (a broken or half-written document) or from a folder that could not be
    // listed may still be there: it keeps its last version until the file reads whole again.
    const incomplete = set.incomplete ?? new Set<string>();
    const dirs = set.unreadableDirs ?? [];
    const unsure = (file: string) => incomplete.has(file) || dirs.some((d) => file.startsWith(`${d}/`));
    for (const [id, old] of this.#objects) if (!next.has(id) && unsure(old.file)) next.set(id, old);
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
    changes.sort((a, b) => APPLY_ORDER[a.kind] - APPLY_ORDER[b.kind]);
    this.#objects = next;
    return { changes, problems: set.problems, origins };
  }
}
