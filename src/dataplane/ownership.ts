// What kube-ipvs created: virtual services and dummy-interface addresses. Only these (and
// services on addresses of our own interface) are ever changed or removed, so a foreign IPVS
// service or address on the same node is left exactly as it is. Kept under /run: it survives a
// restart of the daemon, and is gone after a reboot, exactly like the kernel state it describes.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface OwnershipStore {
  readonly services: Set<string>;
  readonly addresses: Set<string>;
  /** Persists the sets (atomically); called after each sync that changed them. */
  save(): void;
}

export class MemoryOwnership implements OwnershipStore {
  readonly services = new Set<string>();
  readonly addresses = new Set<string>();
  saves = 0;
  save(): void {
    this.saves++;
  }
}

export class FileOwnership implements OwnershipStore {
  readonly services: Set<string>;
  readonly addresses: Set<string>;
  readonly path: string;

  constructor(path: string) {
    this.path = path;
    let data: { services?: unknown; addresses?: unknown } = {};
    try {
      data = JSON.parse(readFileSync(path, 'utf8'));
    } catch {
      /* first start on this boot: nothing owned yet */
    }
    const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
    this.services = new Set(strings(data.services));
    this.addresses = new Set(strings(data.addresses));
  }

  save(): void {
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, JSON.stringify({ version: 1, services: [...this.services].sort(), addresses: [...this.addresses].sort() }) + '\n');
    renameSync(tmp, this.path);
  }
}
