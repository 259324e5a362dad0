// The one registry of problem codes. Codes are stable: logs, metrics and tests key on them,
// so a code is never renamed or reused; add new ones at the end of a group.

export const Codes = {
  // Input objects (manifests or the API server).
  MANIFEST_UNPARSABLE: 'KIPVS_MANIFEST_UNPARSABLE',
  OBJECT_INVALID: 'KIPVS_OBJECT_INVALID',
  OBJECT_UNSUPPORTED: 'KIPVS_OBJECT_UNSUPPORTED',
  ANNOTATION_INVALID: 'KIPVS_ANNOTATION_INVALID',
  NODE_NOT_FOUND: 'KIPVS_NODE_NOT_FOUND',
  OBJECT_DUPLICATE: 'KIPVS_OBJECT_DUPLICATE',
  /** A Service asks for a virtual server, address or node port another Service holds. */
  SERVICE_CONFLICT: 'KIPVS_SERVICE_CONFLICT',
  /** A manifest file or folder that could not be read: not a regular file, too large, an I/O error. */
  MANIFEST_UNREADABLE: 'KIPVS_MANIFEST_UNREADABLE',
  // Configuration.
  CONFIG_UNREADABLE: 'KIPVS_CONFIG_UNREADABLE',
  CONFIG_UNKNOWN_FIELD: 'KIPVS_CONFIG_UNKNOWN_FIELD',
  CONFIG_UNSUPPORTED_FIELD: 'KIPVS_CONFIG_UNSUPPORTED_FIELD',
  CONFIG_INVALID_VALUE: 'KIPVS_CONFIG_INVALID_VALUE',
  CONFIG_UNSUPPORTED_MODE: 'KIPVS_CONFIG_UNSUPPORTED_MODE',
  // Command line.
  USAGE: 'KIPVS_USAGE',
  NOT_BUILT: 'KIPVS_NOT_BUILT',
  // The node.
  NEEDS_PRIVILEGE: 'KIPVS_NEEDS_PRIVILEGE',
  KERNEL_UNAVAILABLE: 'KIPVS_KERNEL_UNAVAILABLE',
  /** The ownership record (stateDirectory/owned.json) is corrupt, of the wrong shape, or not a file. */
  OWNERSHIP_RECORD_INVALID: 'KIPVS_OWNERSHIP_RECORD_INVALID',
} as const;

export type Code = (typeof Codes)[keyof typeof Codes];

export type Severity = 'error' | 'warning';

/** Something wrong with one input, reported once, never thrown past the stage that found it. */
export interface Problem {
  code: Code;
  severity: Severity;
  message: string;
  /** Where the object came from (a manifest file), when known. */
  file?: string;
  /** 1-based line in `file`, when known. */
  line?: number;
  kind?: string;
  /** "namespace/name" for namespaced objects, "name" otherwise. */
  name?: string;
  /** The offending field as a path, e.g. `spec.ports[0].port`. */
  field?: string;
}

/**
 * One line per problem: `error KIPVS_OBJECT_INVALID file:line: Service ns/name: spec.x: message`.
 * Every part may hold text from outside (a hostile name, a file name): control characters,
 * escapes and line breaks are escaped and long parts cut, so one problem is one honest line.
 */
export function formatProblem(p: Problem): string {
  const where = p.file ? `${escapeText(p.file, 300)}${p.line ? `:${p.line}` : ''}: ` : '';
  const what = p.kind ? `${escapeText(p.kind, 63)}${p.name ? ` ${escapeText(p.name, 300)}` : ''}: ` : '';
  const field = p.field ? `${escapeText(p.field, 300)}: ` : '';
  return `${p.severity} ${p.code} ${where}${what}${field}${escapeText(p.message, 2000)}`;
}

/** Characters that must never reach a terminal or a log line raw: C0/C1 controls, DEL, line and bidi controls. */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `s` cut at `max` characters, with unsafe characters written out as \uXXXX (text, never the character itself). */
export function escapeText(s: string, max = 300): string {
  const cut = s.length > max ? `${s.slice(0, max)}...(${s.length} characters)` : s;
  return cut.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A value from outside as a message quotes it: JSON, unsafe characters escaped, at most `max` characters. */
export function quote(v: unknown, max = 100): string {
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    text = String(v); // a BigInt, a cycle
  }
  return escapeText(text, max);
}
