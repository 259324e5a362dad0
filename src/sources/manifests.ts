// The file source: a folder of YAML (or JSON) manifests, the embedded default used by `plan`,
// demos and tests. Multi-document files and `kind: List` are read; every object keeps the file
// and line it came from, so a problem can point at it.
//
// The folder is outside input and is read as such: only regular files (a FIFO named x.yaml is
// skipped, never opened for a blocking read), symlinks to regular files followed (a ConfigMap
// volume is made of them), names starting with "." skipped (its ..data link included), a YAML
// file over 8 MiB or a JSON file over 64 MiB refused, YAML aliases capped (a "billion laughs"
// file is one problem, not a crash). What could not be read is said, and listed in
// `incomplete` / `unreadableDirs` so a follower keeps what those files held before.
import { readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { Codes, type Problem } from '../errors.ts';
import type { ObjectKind } from '../model/model.ts';
import { readRegularFile } from '../util/files.ts';

export interface ManifestObject {
  kind: ObjectKind;
  object: Record<string, unknown>;
  file: string;
  line: number;
}

export interface ManifestSet {
  objects: ManifestObject[];
  problems: Problem[];
  /** Objects of kinds the proxy does not read (Deployments, Pods…), counted, not reported. */
  skipped: number;
  /** Files (display names) read only in part, or not at all: a broken document, an I/O error. */
  incomplete?: Set<string>;
  /** Folders (display names) that could not be listed: what was under them is unknown. */
  unreadableDirs?: string[];
  /** The folder itself could not be read: nothing is known. */
  unreadable?: boolean;
}

export const MAX_YAML_BYTES = 8 * 1024 * 1024;
export const MAX_JSON_BYTES = 64 * 1024 * 1024;
/** Aliases one YAML document may expand (the yaml package's own default, said out loud). */
export const MAX_ALIASES = 100;

const KINDS: Record<string, ObjectKind> = {
  'v1/Service': 'Service',
  'discovery.k8s.io/v1/EndpointSlice': 'EndpointSlice',
  'v1/Node': 'Node',
};

/** A file's identity and version: unchanged files are not parsed again (see ManifestCache). */
type Parsed = { version: string; objects: ManifestObject[]; problems: Problem[]; skipped: number; incomplete: boolean };

/** Parse results kept between reads of the same folder, by path. */
export type ManifestCache = Map<string, Parsed>;

export interface ReadOptions {
  /** The base for file names in problems (default: the working directory). */
  display?: string;
  /** Keeps parse results between reads: a file whose size, times and inode are the same is not parsed again. */
  cache?: ManifestCache;
}

/** Reads every manifest under `dir` (recursively, in name order). */
export async function readManifests(dir: string, opts: ReadOptions | string = {}): Promise<ManifestSet> {
  const o = typeof opts === 'string' ? { display: opts } : opts;
  const display = o.display ?? process.cwd();
  const name = (p: string) => relative(display, p) || p;
  const set: ManifestSet = { objects: [], problems: [], skipped: 0, incomplete: new Set(), unreadableDirs: [] };
  const st = await stat(dir).catch((e: NodeJS.ErrnoException) => e);
  if (st instanceof Error || !st.isDirectory()) {
    set.unreadable = true;
    set.problems.push({
      code: Codes.MANIFEST_UNREADABLE,
      severity: 'error',
      file: dir,
      message: st instanceof Error ? `cannot be read (${st.code ?? st.message})` : 'is not a directory',
    });
    return set;
  }
  const seen = new Set<string>();
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    } catch (e) {
      set.unreadableDirs!.push(name(d));
      set.problems.push({
        code: Codes.MANIFEST_UNREADABLE,
        severity: 'error',
        file: name(d),
        message: `cannot be listed (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); what it held stays as it was`,
      });
      return;
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const p = join(d, entry.name);
      if (entry.isDirectory()) await walk(p);
      else if (/\.(ya?ml|json)$/.test(entry.name)) {
        if (seen.has(p)) continue;
        seen.add(p);
        const r = await readOne(p, name(p), o.cache);
        set.objects.push(...r.objects);
        set.problems.push(...r.problems);
        set.skipped += r.skipped;
        if (r.incomplete) set.incomplete!.add(name(p));
      }
    }
  };
  await walk(dir);
  if (o.cache) for (const k of o.cache.keys()) if (!seen.has(k)) o.cache.delete(k);
  return set;
}

/** One file, parsed (or its cached parse when it has not changed). */
async function readOne(path: string, file: string, cache?: ManifestCache): Promise<Parsed> {
  const json = file.endsWith('.json');
  const max = json ? MAX_JSON_BYTES : MAX_YAML_BYTES;
  const cached = cache?.get(path);
  const r = await readRegularFile(path, max, (v) => cached?.version === v);
  if ('error' in r) {
    const why = /more than/.test(r.error)
      ? `${r.error}: split it (file ignored)`
      : r.missing
        ? 'cannot be opened (a dangling symlink, or removed while read)'
        : r.error;
    return {
      version: '',
      objects: [],
      skipped: 0,
      incomplete: true,
      problems: [{ code: Codes.MANIFEST_UNREADABLE, severity: 'error', file, message: why }],
    };
  }
  if (cached && cached.version === r.version) return cached;
  const set: ManifestSet = { objects: [], problems: [], skipped: 0 };
  const incomplete = (json ? readManifestJSON : readManifestText)(r.text, file, set);
  const parsed: Parsed = {
    version: r.version,
    objects: set.objects,
    problems: set.problems,
    skipped: set.skipped,
    incomplete,
  };
  cache?.set(path, parsed);
  return parsed;
}

/** Parses one file's text into `set`; true when some document was ignored. Exported for tests. */
export function readManifestText(text: string, file: string, set: ManifestSet): boolean {
  const lc = new LineCounter();
  let broken = false;
  const unparsable = (line: number, message: string) => {
    broken = true;
    set.problems.push({ code: Codes.MANIFEST_UNPARSABLE, severity: 'error', file, line, message });
  };
  for (const doc of parseAllDocuments(text, { lineCounter: lc, uniqueKeys: false })) {
    const line = lc.linePos(doc.range[0]).line;
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      unparsable(e.linePos?.[0]?.line ?? line, `unparsable YAML: ${e.message.split('\n')[0]} (document ignored)`);
      continue;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIASES });
    } catch (e) {
      // The yaml package refuses excessive alias expansion ("billion laughs") with a ReferenceError.
      unparsable(
        line,
        `${/alias/i.test((e as Error).message) ? `more than ${MAX_ALIASES} YAML aliases expanded` : (e as Error).message.split('\n')[0]} (document ignored)`,
      );
      continue;
    }
    if (value === null || value === undefined) continue;
    if (!addObject(value, file, line, set)) broken = true;
  }
  return broken;
}

function readManifestJSON(text: string, file: string, set: ManifestSet): boolean {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    set.problems.push({
      code: Codes.MANIFEST_UNPARSABLE,
      severity: 'error',
      file,
      line: 1,
      message: `unparsable JSON: ${(e as Error).message.split('\n')[0]} (file ignored)`,
    });
    return true;
  }
  return !addObject(value, file, 1, set);
}

/** False when the document is not a manifest (reported). */
function addObject(value: unknown, file: string, line: number, set: ManifestSet): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    set.problems.push({
      code: Codes.MANIFEST_UNPARSABLE,
      severity: 'error',
      file,
      line,
      message: 'a manifest must be a mapping with apiVersion and kind (document ignored)',
    });
    return false;
  }
  const obj = value as Record<string, unknown>;
  if (typeof obj.kind === 'string' && obj.kind.endsWith('List') && Array.isArray(obj.items)) {
    let ok = true;
    for (const item of obj.items) ok = addObject(item, file, line, set) && ok;
    return ok;
  }
  const kind = KINDS[`${String(obj.apiVersion)}/${String(obj.kind)}`];
  if (kind) set.objects.push({ kind, object: obj, file, line });
  else if (typeof obj.kind === 'string' && typeof obj.apiVersion === 'string') set.skipped++;
  else {
    set.problems.push({
      code: Codes.MANIFEST_UNPARSABLE,
      severity: 'error',
      file,
      line,
      message: 'a manifest must have apiVersion and kind (document ignored)',
    });
    return false;
  }
  return true;
}
