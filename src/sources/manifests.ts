// The file source: a folder of YAML (or JSON) manifests, the embedded default used by `plan`,
// demos and tests. Multi-document files and `kind: List` are read; every object keeps the file
// and line it came from, so a problem can point at it.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { Codes, type Problem } from '../errors.ts';
import type { ObjectKind } from '../model/model.ts';

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
}

const KINDS: Record<string, ObjectKind> = {
  'v1/Service': 'Service',
  'discovery.k8s.io/v1/EndpointSlice': 'EndpointSlice',
  'v1/Node': 'Node',
};

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(p)));
    else if (/\.(ya?ml|json)$/.test(entry.name)) out.push(p);
  }
  return out;
}

/** Reads every manifest under `dir` (recursively, in name order). `display` is the base for file names in problems. */
export async function readManifests(dir: string, display = process.cwd()): Promise<ManifestSet> {
  const set: ManifestSet = { objects: [], problems: [], skipped: 0 };
  const st = await stat(dir).catch(() => null);
  if (!st?.isDirectory()) {
    set.problems.push({ code: Codes.MANIFEST_UNPARSABLE, severity: 'error', file: dir, message: 'is not a readable directory' });
    return set;
  }
  for (const path of await listFiles(dir)) {
    const file = relative(display, path) || path;
    readManifestText(await readFile(path, 'utf8'), file, set);
  }
  return set;
}

/** Parses one file's text into `set`. Exported for tests and for reading a single file. */
export function readManifestText(text: string, file: string, set: ManifestSet): void {
  const lc = new LineCounter();
  for (const doc of parseAllDocuments(text, { lineCounter: lc, uniqueKeys: false })) {
    const line = lc.linePos(doc.range[0]).line;
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      set.problems.push({
        code: Codes.MANIFEST_UNPARSABLE,
        severity: 'error',
        file,
        line: e.linePos?.[0]?.line ?? line,
        message: `unparsable YAML: ${e.message.split('\n')[0]} (document ignored)`,
      });
      continue;
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    addObject(value, file, line, set);
  }
}

function addObject(value: unknown, file: string, line: number, set: ManifestSet): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    set.problems.push({ code: Codes.MANIFEST_UNPARSABLE, severity: 'error', file, line, message: 'a manifest must be a mapping with apiVersion and kind (document ignored)' });
    return;
  }
  const obj = value as Record<string, unknown>;
  if (typeof obj.kind === 'string' && obj.kind.endsWith('List') && Array.isArray(obj.items)) {
    for (const item of obj.items) addObject(item, file, line, set);
    return;
  }
  const kind = KINDS[`${String(obj.apiVersion)}/${String(obj.kind)}`];
  if (kind) set.objects.push({ kind, object: obj, file, line });
  else if (typeof obj.kind === 'string' && typeof obj.apiVersion === 'string') set.skipped++;
  else set.problems.push({ code: Codes.MANIFEST_UNPARSABLE, severity: 'error', file, line, message: 'a manifest must have apiVersion and kind (document ignored)' });
}
