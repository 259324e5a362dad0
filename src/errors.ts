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

/** One line per problem: `error KIPVS_OBJECT_INVALID file:line: Service ns/name: spec.x: message`. */
export function formatProblem(p: Problem): string {
  const where = p.file ? `${p.file}${p.line ? `:${p.line}` : ''}: ` : '';
  const what = p.kind ? `${p.kind}${p.name ? ` ${p.name}` : ''}: ` : '';
  const field = p.field ? `${p.field}: ` : '';
  return `${p.severity} ${p.code} ${where}${what}${field}${p.message}`;
}
