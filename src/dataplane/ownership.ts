// What kube-ipvs created: virtual services and dummy-interface addresses. Only these (and
// services on addresses of our own interface) are ever changed or removed, so a foreign IPVS
// service or address on the same node is left exactly as it is. Kept under /run: it survives a
// restart of the daemon, and is gone after a reboot, exactly like the kernel state it describes.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** Which Kubernetes Service port a virtual server is for (read by metrics and `kube-ipvs status`). */
export interface VsLabel {
  /** "namespace/name" */
  service: string;
  portName: string;
  kind: string;
}

export interface OwnershipStore {
  readonly services: Set<string>;
  readonly addresses: Set<string>;
  /** Virtual server id -> its Service port, for the virtual servers in `services`. */
  readonly labels: Map<string, VsLabel>;
  /** Persists the sets (atomically); called after each sync that changed them. */
  save(): void;
}

export class MemoryOwnership implements OwnershipStore {
  readonly services = new Set<string>();
  readonly addresses = new Set<string>();
  readonly labels = new Map<string, VsLabel>();
  saves = 0;
  save(): void {
    this.saves++;
  }
}

export class FileOwnership implements OwnershipStore {
  readonly services: Set<string>;
  readonly addresses: Set<string>;
  readonly labels: Map<string, VsLabel>;
  readonly path: string;

  constructor(path: string) {
    this.path = path;
    let data: { services?: unknown; addresses?: unknown; labels?: unknown } = {};
    try {
      data = JSON.parse(readFileSync(path, 'utf8'));
    } catch {
      /* first start on this boot: nothing owned yet */
    }
    const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
    this.services = new Set(strings(data.services));
    this.addresses = new Set(strings(data.addresses));
    this.labels = parseLabels(data.labels);
  }

  save(): void {
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, JSON.stringify({ version: 1, services: [...this.services].sort(), addresses: [...this.addresses].sort(), labels: Object.fromEntries([...this.labels].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, l]) => [id, [l.service, l.portName, l.kind]])) }) + '\n');
    renameSync(tmp, this.path);
  }
}

/** `labels` as saved: id -> [service, portName, kind]; anything malformed is skipped. */
function parseLabels(v: unknown): Map<string, VsLabel> {
  const out = new Map<string, VsLabel>();
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return out;
  for (const [id, l] of Object.entries(v)) {
    if (!Array.isArray(l) || l.length !== 3) continue;
    const [service, portName, kind] = l as unknown[];
    if (typeof service === 'string' && typeof portName === 'string' && typeof kind === 'string') out.set(id, { service, portName, kind });
  }
  return out;
}

/** Reads the record another process (the daemon) wrote, without creating anything. */
export function readOwnership(path: string): FileOwnership {
  return new FileOwnership(path);
}
