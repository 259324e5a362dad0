// The current Services, EndpointSlices and local Node. Pure and synchronous: a change event
// goes in, "which services changed" comes out, so the planner re-plans only those.
import type { Problem } from '../errors.ts';
import type { EndpointSlice, NodeInfo, Service } from './types.ts';
import { parseEndpointSlice, parseNode, parseService, refOf, type Parsed } from './validate.ts';

export type ObjectKind = 'Service' | 'EndpointSlice' | 'Node';

/** The order a fresh view is applied in (Nodes, then Services, then slices), as informers usually deliver it. */
export const APPLY_ORDER: Record<ObjectKind, number> = { Node: 0, Service: 1, EndpointSlice: 2 };

/** A change as a source reports it: an add has no previous, a delete no current. */
export interface Change {
  kind: ObjectKind;
  previous: unknown;
  current: unknown;
}

export interface ApplyResult {
  /** Keys ("namespace/name") of Services whose plan may have changed. */
  changedServices: string[];
  /** The local Node changed: every Service must be re-planned. */
  nodeChanged: boolean;
  problems: Problem[];
}

export interface ModelOptions {
  /** This node's name (hostnameOverride, --node, or the hostname). */
  nodeName: string;
  /** The service-proxy-name kube-ipvs answers to. */
  proxyName: string;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

const sameNames = (a: readonly string[] | null, b: readonly string[] | null) =>
  a === b || (a !== null && b !== null && a.length === b.length && a.every((x, i) => x === b[i]));

/**
 * Whether two parsed EndpointSlices say the same, field by field: what `same` tells for the other kinds, without
 * printing both to JSON on every update (a rollout's update differs in its first endpoints, found at once).
 * test/model/model.test.ts changes each field of a parsed slice in turn, so a field added to the type and not
 * compared here fails there.
 */
export function sameSlice(a: EndpointSlice | undefined, b: EndpointSlice | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.key !== b.key || a.serviceKey !== b.serviceKey || a.family !== b.family) return false;
  if (a.ports.length !== b.ports.length || a.endpoints.length !== b.endpoints.length) return false;
  for (let i = 0; i < a.ports.length; i++) {
    const x = a.ports[i]!;
    const y = b.ports[i]!;
    if (x.name !== y.name || x.protocol !== y.protocol || x.port !== y.port) return false;
  }
  for (let i = 0; i < a.endpoints.length; i++) {
    const x = a.endpoints[i]!;
    const y = b.endpoints[i]!;
    if (
      x.address !== y.address ||
      x.sortKey !== y.sortKey ||
      x.ready !== y.ready ||
      x.serving !== y.serving ||
      x.terminating !== y.terminating ||
      x.nodeName !== y.nodeName ||
      x.zone !== y.zone ||
      !sameNames(x.zoneHints, y.zoneHints) ||
      !sameNames(x.nodeHints, y.nodeHints)
    )
      return false;
  }
  return true;
}

export class Model {
  readonly nodeName: string;
  readonly proxyName: string;
  #services = new Map<string, Service>();
  #slices = new Map<string, EndpointSlice>();
  /** serviceKey -> slices of that Service, sorted by slice key (rebuilt lazily). */
  #slicesByService = new Map<string, Map<string, EndpointSlice>>();
  #sortedSlices = new Map<string, EndpointSlice[]>();
  #node: NodeInfo | null = null;

  constructor(opts: ModelOptions) {
    this.nodeName = opts.nodeName;
    this.proxyName = opts.proxyName;
  }

  get node(): NodeInfo | null {
    return this.#node;
  }

  service(key: string): Service | undefined {
    return this.#services.get(key);
  }

  serviceKeys(): string[] {
    return [...this.#services.keys()].sort();
  }

  get serviceCount(): number {
    return this.#services.size;
  }

  /** The Service's EndpointSlices, sorted by slice name (the order duplicates are resolved in). */
  slicesFor(serviceKey: string): readonly EndpointSlice[] {
    let sorted = this.#sortedSlices.get(serviceKey);
    if (!sorted) {
      const m = this.#slicesByService.get(serviceKey);
      sorted = m ? [...m.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)) : [];
      this.#sortedSlices.set(serviceKey, sorted);
    }
    return sorted;
  }

  apply(change: Change): ApplyResult {
    const result: ApplyResult = { changedServices: [], nodeChanged: false, problems: [] };
    switch (change.kind) {
      case 'Service':
        this.#applyService(change, result);
        break;
      case 'EndpointSlice':
        this.#applySlice(change, result);
        break;
      case 'Node':
        this.#applyNode(change, result);
        break;
    }
    return result;
  }

  /**
   * Shared shape of every kind: a delete removes, an ignored object removes, an invalid object
   * is reported and the last valid version stays in force (traffic keeps flowing to it).
   */
  #parse<T>(
    change: Change,
    parse: (raw: unknown, key: string) => Parsed<T>,
    result: ApplyResult,
  ): { key: string; value: T | null } | 'keep' {
    const raw = change.current ?? change.previous;
    const key = refOf(change.kind, raw).name;
    if (change.current === null || change.current === undefined) return { key, value: null };
    const parsed = parse(change.current, key);
    if (parsed.status === 'invalid') {
      result.problems.push(parsed.problem);
      return 'keep';
    }
    result.problems.push(...parsed.warnings);
    return { key, value: parsed.status === 'ok' ? parsed.value : null };
  }

  #applyService(change: Change, result: ApplyResult): void {
    const p = this.#parse(change, (r) => parseService(r, this), result);
    if (p === 'keep') return;
    const old = this.#services.get(p.key);
    if (same(old, p.value ?? undefined)) return;
    if (p.value) this.#services.set(p.key, p.value);
    else this.#services.delete(p.key);
    result.changedServices.push(p.key);
  }

  #applySlice(change: Change, result: ApplyResult): void {
    // The version in force lends the new one the addresses it read already (see parseEndpointSlice).
    const p = this.#parse(change, (r, key) => parseEndpointSlice(r, this, this.#slices.get(key)), result);
    if (p === 'keep') return;
    const old = this.#slices.get(p.key);
    if (sameSlice(old, p.value ?? undefined)) return;
    if (old) {
      this.#slicesByService.get(old.serviceKey)?.delete(p.key);
      this.#sortedSlices.delete(old.serviceKey);
      result.changedServices.push(old.serviceKey);
    }
    if (p.value) {
      this.#slices.set(p.key, p.value);
      let m = this.#slicesByService.get(p.value.serviceKey);
      if (!m) this.#slicesByService.set(p.value.serviceKey, (m = new Map<string, EndpointSlice>()));
      m.set(p.key, p.value);
      this.#sortedSlices.delete(p.value.serviceKey);
      if (p.value.serviceKey !== old?.serviceKey) result.changedServices.push(p.value.serviceKey);
    } else {
      this.#slices.delete(p.key);
    }
  }

  #applyNode(change: Change, result: ApplyResult): void {
    const raw = change.current ?? change.previous;
    if (refOf('Node', raw).name !== this.nodeName) return; // only the local Node matters
    const p = this.#parse(change, parseNode, result);
    if (p === 'keep' || same(this.#node, p.value)) return;
    this.#node = p.value;
    result.nodeChanged = true;
  }
}
