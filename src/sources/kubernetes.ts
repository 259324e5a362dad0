// The Kubernetes source: informers for Services, EndpointSlices and this Node, under supervision.
// - Server-side label selectors as kube-proxy's: no headless-marked objects, and either no
//   service-proxy-name or ours (two watches per kind: a selector cannot say "absent or X").
// - Lists are paginated, read as plain JSON (the shape watch events have; no typed models).
// - Any error or closed stream reconnects with capped, jittered backoff; a 410 relists (the
//   client library's ListWatch resets its resourceVersion); a watch that has delivered nothing,
//   not even a bookmark, for `stallMs` is restarted. Each is logged and counted.
// - start() resolves only when every informer has listed once: nothing is programmed from a
//   partial view. After that, an API server outage leaves the last state serving.
import { KubeConfig, ListWatch, Watch, type KubernetesObject } from '@kubernetes/client-node';
// Not re-exported by the package index: the request and transport its generated clients use (its
// kubeconfig's authentication and TLS applied to a plain GET).
import { HttpMethod, RequestContext } from '@kubernetes/client-node/dist/gen/http/http.js';
import { IsomorphicFetchHttpLibrary } from '@kubernetes/client-node/dist/gen/http/isomorphic-fetch.js';
import type { Change, ObjectKind } from '../model/model.ts';
import {
  ANNOTATION_TRIGGER_TIME,
  LABEL_HEADLESS,
  LABEL_SERVICE_NAME,
  LABEL_SERVICE_PROXY_NAME,
} from '../model/validate.ts';
import type { Logger } from '../observe/log.ts';
import { nextTurn } from '../util/turn.ts';
import { TokenBucket } from './rate-limit.ts';
import type { Source, SourceBatch } from './source.ts';
import { openWatch } from './watch-stream.ts';

export interface KubernetesSourceOptions {
  nodeName: string;
  /** The service-proxy-name kube-ipvs answers to. */
  proxyName: string;
  log: Logger;
  /** Page size for lists (default 500). */
  pageSize?: number;
  /** Restart a watch that delivered nothing, not even a bookmark, for this long (default 5 min). */
  stallMs?: number;
  /** Reconnect backoff: first delay and cap (defaults 500 ms, 30 s), with jitter. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** clientConnection.qps / burst: list requests (pages, relists) are rate limited like client-go's. */
  qps?: number;
  burst?: number;
}

import type { SourceCounters } from './source.ts';
export type { SourceCounters } from './source.ts';

type Obj = KubernetesObject & Record<string, unknown>;

/** What the informers' caches and the source keep of an object: its key and resourceVersion, all they compare. */
export interface Held {
  metadata: { name?: string; namespace?: string; resourceVersion?: string };
}

/**
 * An object on its way through the client library's ListWatch, which caches whatever it is handed: it is handed this
 * (the object's key and resourceVersion, which is all its cache compares: a relist's deletions by name, an update by
 * resourceVersion), and the object itself rides along in `full` until the source's event handler takes it for the
 * model. So nothing of a delivered object outlives its batch (the model keeps its own parsed copy of what it uses),
 * and no cached object is made smaller by deleting its fields, which turns it into a dictionary (at 10 000 Services
 * x 10 endpoints that held 12 MB of the heap: about 600 bytes a Service or slice, against about 150 now).
 */
interface InTransit extends KubernetesObject, Held {
  metadata: Held['metadata'];
  full: Obj | undefined;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** The held part of `o`, with `o` riding along (see InTransit). Anything but a string name or version is left out. */
function inTransit(o: unknown): InTransit {
  const obj = o !== null && typeof o === 'object' ? (o as Obj) : null;
  const md = (obj?.metadata ?? null) as Record<string, unknown> | null;
  const m = md !== null && typeof md === 'object' ? md : {};
  return {
    metadata: { name: str(m.name), namespace: str(m.namespace), resourceVersion: str(m.resourceVersion) },
    full: obj ?? undefined,
  };
}

/** A watch request without a response for this long is given up (ListWatch reconnects at once): an API server gone. */
const WATCH_CONNECT_TIMEOUT_MS = 30_000;
/**
 * No byte for this long ends a watch (ListWatch reconnects at once). The API server's watch
 * cache sends a watch that asked for bookmarks one about every minute and 2 s before its timeoutSeconds: 1.5x that
 * minute never cuts a quiet, healthy watch. (It was the client library's 30 s: every quiet watch, the Node's and the
 * Services' on most clusters, was torn down and made again twice a minute, each time a new TLS connection.) A peer
 * that went away silently is found sooner by TCP keepalive, which the HTTP agent turns on for the watch's socket
 * (about 30 s without traffic, then probes).
 */
export const WATCH_IDLE_TIMEOUT_MS = 90_000;
/** How often the API server's watch cache sends a bookmark to a watch that asked for them (its bookmarkFrequency). */
export const API_BOOKMARK_PERIOD_MS = 60_000;

/**
 * The watch ListWatch calls: bookmarks and a server-side timeout asked for, every event reported
 * as activity, and the stream read by openWatch (src/sources/watch-stream.ts) instead of the
 * library's fetch and web-stream pipeline. A line that cannot be used is logged and counted.
 */
class ActiveWatch extends Watch {
  readonly #kc: KubeConfig;
  readonly #onActivity: () => void;
  readonly #timeoutSeconds: () => number;
  readonly #problem: (what: string, detail: string) => void;
  constructor(
    kc: KubeConfig,
    onActivity: () => void,
    timeoutSeconds: () => number,
    problem: (what: string, detail: string) => void,
  ) {
    super(kc);
    this.#kc = kc;
    this.#onActivity = onActivity;
    this.#timeoutSeconds = timeoutSeconds;
    this.#problem = problem;
  }
  override watch(
    path: string,
    query: Record<string, unknown>,
    cb: (phase: string, obj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ) {
    // ListWatch's own parameters: resourceVersion and the selectors, strings.
    const params: Record<string, string | number | boolean | undefined> = {};
    for (const [k, v] of Object.entries(query)) if (typeof v === 'string') params[k] = v;
    return openWatch(
      this.#kc,
      path,
      { ...params, allowWatchBookmarks: true, timeoutSeconds: this.#timeoutSeconds() },
      (phase, obj, w) => {
        this.#onActivity();
        // BOOKMARK and ERROR events are read by ListWatch as they are (a resourceVersion, a code).
        cb(phase, phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' ? inTransit(obj) : obj, w);
      },
      done,
      { idleTimeoutMs: WATCH_IDLE_TIMEOUT_MS, connectTimeoutMs: WATCH_CONNECT_TIMEOUT_MS, problem: this.#problem },
    ) as unknown as ReturnType<Watch['watch']>;
  }
}

interface InformerSpec {
  name: string;
  kind: ObjectKind;
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
}

interface ListPage {
  items: Obj[];
  metadata: { continue?: string; resourceVersion?: string };
}

/** A list request not answered in this long fails and is retried with the informer's backoff. */
const LIST_TIMEOUT_MS = 60_000;
const transport = new IsomorphicFetchHttpLibrary();

/**
 * One page of a list, as the API server's JSON: the objects keep the shape watch events have,
 * with no typed model built and serialised back (measured on a development host for 10 000
 * EndpointSlices x 10 endpoints, 17 MB: JSON.parse 103 ms, the typed round trip 607 ms more).
 * Anything else than a list answer is an error (retried).
 */
async function listPage(kc: KubeConfig, path: string, query: Record<string, string | number | undefined>) {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const url = new URL(cluster.server + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  const ctx = new RequestContext(url.toString(), HttpMethod.GET);
  ctx.setHeaderParam('Accept', 'application/json');
  ctx.setSignal(AbortSignal.timeout(LIST_TIMEOUT_MS));
  await kc.applySecurityAuthentication(ctx);
  const resp = await transport.send(ctx).toPromise();
  const text = await resp.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  const body = (json ?? {}) as { items?: unknown; metadata?: unknown; message?: unknown };
  if (resp.httpStatusCode !== 200) {
    const why = typeof body.message === 'string' ? `: ${body.message.slice(0, 300)}` : '';
    throw Object.assign(new Error(`list ${path}: HTTP ${resp.httpStatusCode}${why}`), { code: resp.httpStatusCode });
  }
  if (!Array.isArray(body.items) || (body.metadata !== undefined && typeof body.metadata !== 'object'))
    throw new Error(`list ${path}: the answer is not a list`);
  return { items: body.items as Obj[], metadata: (body.metadata ?? {}) as ListPage['metadata'] };
}

class SupervisedInformer {
  readonly spec: InformerSpec;
  readonly lw: ListWatch<InTransit>;
  synced = false;
  #onSynced: () => void = () => {};
  readonly syncedOnce: Promise<void>;
  #failures = 0;
  #restartTimer: NodeJS.Timeout | null = null;
  #stallTimer: NodeJS.Timeout | null = null;
  lastActivity = Date.now();
  #stopped = false;

  readonly src: KubernetesSource;

  constructor(kc: KubeConfig, spec: InformerSpec, src: KubernetesSource) {
    this.spec = spec;
    this.src = src;
    this.syncedOnce = new Promise((r) => (this.#onSynced = r));
    const stallMs = src.stallMs;
    const watch = new ActiveWatch(
      kc,
      () => this.#delivered(),
      () => Math.max(30, Math.round((stallMs / 1000 / 2) * (0.5 + Math.random() / 2))),
      (what, detail) => {
        src.counters.errors++;
        src.log.warn(
          `watch: ${what}`,
          { informer: spec.name, detail: detail.slice(0, 500) },
          `watch-line:${spec.name}`,
        );
      },
    );
    const listFn = async () => {
      const items: InTransit[] = [];
      let cont: string | undefined;
      let rv = '';
      do {
        await src.limiter.take();
        src.counters.pages++;
        const page = await listPage(kc, spec.path, {
          labelSelector: spec.labelSelector,
          fieldSelector: spec.fieldSelector,
          limit: src.pageSize,
          continue: cont,
        });
        for (const it of page.items) items.push(inTransit(it));
        cont = page.metadata.continue || undefined;
        rv = page.metadata.resourceVersion ?? rv;
      } while (cont);
      this.#activity();
      // The ListWatch applies the items right after this resolves; mark synced after that.
      setImmediate(() => this.#listed());
      return { metadata: { resourceVersion: rv }, items };
    };
    this.lw = new ListWatch<InTransit>(spec.path, watch, listFn, false, spec.labelSelector, spec.fieldSelector);
    this.lw.on('add', (o) => src.onEvent(spec, null, o));
    this.lw.on('update', (o) => src.onEvent(spec, 'update', o));
    this.lw.on('delete', (o) => src.onEvent(spec, 'delete', o));
    this.lw.on('connect', () => {
      this.#activity();
      if (this.lw.latestResourceVersion() === '' && this.synced) {
        src.counters.relists++;
        src.log.info('relisting', { informer: spec.name });
      }
    });
    this.lw.on('error', (err) => this.#failed(err));
  }

  start(): void {
    this.#stopped = false;
    void this.lw.start().catch((e) => this.#failed(e));
    this.#armStallCheck();
  }

  stop(): void {
    this.#stopped = true;
    this.lw
      .stop()
      .catch((e: unknown) =>
        this.src.log.warn('stopping a watch failed', { informer: this.spec.name, error: describe(e) }),
      );
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    if (this.#stallTimer) clearTimeout(this.#stallTimer);
  }

  #activity(): void {
    this.lastActivity = Date.now();
  }

  /** A watch event (or bookmark) arrived: the connection works, so the next outage backs off from the start. */
  #delivered(): void {
    this.#activity();
    this.#failures = 0;
  }

  #listed(): void {
    this.#failures = 0;
    if (!this.synced) {
      this.synced = true;
      this.#onSynced();
    }
  }

  #failed(err: unknown): void {
    if (this.#stopped || this.#restartTimer) return;
    const src = this.src;
    src.counters.errors++;
    this.#failures++;
    const base = Math.min(src.backoffMaxMs, src.backoffBaseMs * 2 ** Math.min(this.#failures - 1, 16));
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    src.log.warn(
      'watch failed; reconnecting',
      { informer: this.spec.name, error: describe(err), retryInMs: delay, failures: this.#failures },
      `watch-error:${this.spec.name}`,
    );
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = null;
      if (this.#stopped) return;
      src.counters.reconnects++;
      void this.lw.start().catch((e) => this.#failed(e));
    }, delay);
  }

  #armStallCheck(): void {
    const every = Math.max(1000, Math.min(30_000, this.src.stallMs / 4));
    this.#stallTimer = setTimeout(() => {
      if (this.#stopped) return;
      if (!this.#restartTimer && Date.now() - this.lastActivity > this.src.stallMs) {
        this.src.counters.stalls++;
        this.src.log.warn('watch delivered nothing for too long; restarting it', {
          informer: this.spec.name,
          silentMs: Date.now() - this.lastActivity,
        });
        this.lastActivity = Date.now();
        void this.lw
          .stop()
          .then(() => {
            if (!this.#stopped) {
              this.src.counters.reconnects++;
              return this.lw.start();
            }
          })
          .catch((e) => this.#failed(e));
      }
      this.#armStallCheck();
    }, every);
    this.#stallTimer.unref();
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  const e = err as { code?: number; statusCode?: number; message?: string };
  return e?.message ?? `HTTP ${e?.statusCode ?? e?.code ?? '?'}`;
}

/** kind/namespace/name: one flat string (join), not a chain of concatenated pieces (it is kept per object). */
const idOf = (kind: ObjectKind, namespace: string | undefined, name: string | undefined) =>
  [kind, namespace ?? '', name ?? ''].join('/');

export class KubernetesSource implements Source {
  readonly log: Logger;
  readonly pageSize: number;
  readonly stallMs: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly limiter: TokenBucket;
  readonly counters: SourceCounters = {
    pages: 0,
    reconnects: 0,
    relists: 0,
    errors: 0,
    stalls: 0,
    events: 0,
    lastEventAt: 0,
  };
  readonly #informers: SupervisedInformer[];
  /** kind/namespace/name -> what is held of the last version delivered (the `previous` of the next change). */
  readonly #last = new Map<string, Held>();
  #deliver: ((b: SourceBatch) => void) | null = null;
  #pending: SourceBatch = { changes: [], problems: [], triggerTimes: new Map() };
  #flushQueued = false;

  constructor(kc: KubeConfig, opts: KubernetesSourceOptions) {
    this.log = opts.log;
    this.pageSize = opts.pageSize ?? 500;
    this.stallMs = opts.stallMs ?? 5 * 60_000;
    this.backoffBaseMs = opts.backoffBaseMs ?? 500;
    this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
    this.limiter = new TokenBucket(opts.qps ?? 5, opts.burst ?? 10);
    const notHeadless = `!${LABEL_HEADLESS}`;
    const selectors = [
      `!${LABEL_SERVICE_PROXY_NAME},${notHeadless}`,
      `${LABEL_SERVICE_PROXY_NAME}=${opts.proxyName},${notHeadless}`,
    ];
    const specs: InformerSpec[] = [];
    selectors.forEach((labelSelector, i) => {
      const which = i === 0 ? 'unnamed' : 'ours';
      specs.push({
        name: `services(${which})`,
        kind: 'Service',
        path: '/api/v1/services',
        labelSelector,
      });
      specs.push({
        name: `endpointslices(${which})`,
        kind: 'EndpointSlice',
        path: '/apis/discovery.k8s.io/v1/endpointslices',
        labelSelector,
      });
    });
    specs.push({
      name: 'node',
      kind: 'Node',
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${opts.nodeName}`,
    });
    this.#informers = specs.map((s) => new SupervisedInformer(kc, s, this));
  }

  /**
   * Called by the informers for every object event, with what their cache now holds (`full`: the object itself, taken
   * here for the model; a deletion's is not needed).
   */
  onEvent(spec: InformerSpec, verb: 'update' | 'delete' | null, o: InTransit): void {
    const full = o.full;
    o.full = undefined;
    this.counters.events++;
    this.counters.lastEventAt = Date.now();
    const id = idOf(spec.kind, o.metadata.namespace, o.metadata.name);
    const previous = this.#last.get(id) ?? null;
    let change: Change;
    if (verb === 'delete') {
      this.#last.delete(id);
      change = { kind: spec.kind, previous: previous ?? o, current: null };
    } else {
      // Every add and update ListWatch makes is of an object handed to it just now (a watch event or a list's item),
      // which carries its `full`: without one there is nothing to tell the model.
      if (full === undefined) return;
      this.#last.set(id, o);
      change = { kind: spec.kind, previous, current: full };
    }
    this.#pending.changes.push(change);
    if (spec.kind === 'EndpointSlice' && verb !== 'delete') {
      const md = (full?.metadata ?? {}) as {
        annotations?: Record<string, string>;
        labels?: Record<string, string>;
        namespace?: string;
      };
      const trigger = md.annotations?.[ANNOTATION_TRIGGER_TIME];
      const svc = md.labels?.[LABEL_SERVICE_NAME];
      const at = typeof trigger === 'string' ? Date.parse(trigger) : NaN;
      if (typeof svc === 'string' && svc && !Number.isNaN(at))
        this.#pending.triggerTimes!.set(`${md.namespace ?? 'default'}/${svc}`, at);
    }
    this.#queueFlush();
  }

  /** Events are delivered in batches, one per turn of the event loop. */
  #queueFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    setImmediate(() => {
      this.#flushQueued = false;
      const batch = this.#pending;
      this.#pending = { changes: [], problems: [], triggerTimes: new Map() };
      // Delivered, the batch's objects are garbage: the model has parsed what it needs, the caches hold `Held`.
      if (batch.changes.length > 0) this.#deliver?.(batch);
    });
  }

  /** Every copy held of an object between its changes: the source's, and the cache's of each informer of its kind. */
  held(kind: ObjectKind, namespace: string, name: string): object[] {
    const out: object[] = [];
    const mine = this.#last.get(idOf(kind, namespace, name));
    if (mine) out.push(mine);
    for (const i of this.#informers) {
      const cached = i.spec.kind === kind ? i.lw.get(name, namespace) : undefined;
      if (cached) out.push(cached);
    }
    return out;
  }

  get synced(): boolean {
    return this.#informers.every((i) => i.synced);
  }

  async start(deliver: (b: SourceBatch) => void): Promise<void> {
    this.#deliver = deliver;
    for (const i of this.#informers) i.start();
    await Promise.all(this.#informers.map((i) => i.syncedOnce));
    // Deliver what the lists produced before saying "synced".
    await nextTurn();
    await nextTurn();
  }

  async refresh(): Promise<void> {
    /* informers push; nothing to pull */
  }

  stop(): void {
    this.#deliver = null;
    for (const i of this.#informers) i.stop();
  }
}

/** --kubeconfig FILE, or the in-cluster service account when no file is given. */
export function loadKubeConfig(file: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromCluster();
  return kc;
}
