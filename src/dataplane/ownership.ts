// What kube-ipvs created: virtual services and dummy-interface addresses. Only these (and
// services on addresses of our own interface) are ever changed or removed, so a foreign IPVS
// service or address on the same node is left exactly as it is. Kept under /run: it survives a
// restart of the daemon, and is gone after a reboot, exactly like the kernel state it describes.
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { readRegularFileSync } from '../util/files.ts';
import { canonicalIP } from '../util/ip.ts';

/** Far more than 100 000 virtual servers' worth. */
const MAX_RECORD_BYTES = 64 * 1024 * 1024;
/** What a virtual server id looks like ("TCP/10.0.0.1:80", "UDP/[fd00::1]:53", "FWM/1048577", "FWM/5/v6"). */
const SERVICE_ID = /^(?:(?:TCP|UDP|SCTP)\/(?:\[[0-9a-f:]+\]|[0-9.]+):\d{1,5}|FWM\/\d{1,10}(?:\/v6)?)$/;

/** Which Kubernetes Service port a virtual server is for (read by metrics and `kube-ipvs status`). */
export interface VsLabel {
  /** "namespace/name" */
  service: string;
  portName: string;
  kind: string;
}

export interface OwnershipStore {
  /** Why the record on disk could not be used (corrupt, wrong shape, not a file); null when fine or absent. */
  readonly problem?: string | null;
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

  readonly problem: string | null;

  constructor(path: string) {
    this.path = path;
    this.services = new Set();
    this.addresses = new Set();
    this.labels = new Map();
    this.problem = null;
    const f = readRegularFileSync(path, MAX_RECORD_BYTES);
    if ('error' in f) {
      // Absent: first start on this boot, nothing owned yet. Anything else is said.
      if (!f.missing)
        this.problem = `the ownership record ${path} ${f.error}; kube-ipvs owns only what is on its interface`;
      return;
    }
    const why = this.#load(f.text);
    if (why) {
      this.services.clear();
      this.addresses.clear();
      this.labels.clear();
      this.problem = `the ownership record ${path} is not usable (${why}); kube-ipvs owns only what is on its interface until the next sync rewrites it`;
    }
  }

  /** Fills the sets from the record's text; why it is not a record, or null. */
  #load(text: string): string | null {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      return `not JSON: ${(e as Error).message.split('\n')[0]}`;
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data)) return 'not a JSON object';
    const d = data as { version?: unknown; services?: unknown; addresses?: unknown; labels?: unknown };
    if (d.version !== undefined && d.version !== 1) return `version ${JSON.stringify(d.version)}, not 1`;
    if (!Array.isArray(d.services) || !d.services.every((x) => typeof x === 'string' && SERVICE_ID.test(x)))
      return 'services is not a list of virtual server ids';
    if (!Array.isArray(d.addresses) || !d.addresses.every((x) => typeof x === 'string' && canonicalIP(x) === x))
      return 'addresses is not a list of canonical IP addresses';
    for (const x of d.services as string[]) this.services.add(x);
    for (const x of d.addresses as string[]) this.addresses.add(x);
    for (const [id, l] of parseLabels(d.labels)) if (this.services.has(id)) this.labels.set(id, l);
    return null;
  }

  save(): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.tmp`;
    // A new file, never through whatever is at tmp already (a planted symlink would redirect a root write).
    rmSync(tmp, { force: true });
    writeFileSync(
      tmp,
      JSON.stringify({
        version: 1,
        services: [...this.services].sort(),
        addresses: [...this.addresses].sort(),
        labels: Object.fromEntries(
          [...this.labels]
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
            .map(([id, l]) => [id, [l.service, l.portName, l.kind]]),
        ),
      }) + '\n',
      { flag: 'wx', mode: 0o600 },
    );
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
    if (typeof service === 'string' && typeof portName === 'string' && typeof kind === 'string')
      out.set(id, { service, portName, kind });
  }
  return out;
}

/** Reads the record another process (the daemon) wrote, without creating anything. */
export function readOwnership(path: string): FileOwnership {
  return new FileOwnership(path);
}
