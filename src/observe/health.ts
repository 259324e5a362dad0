// Proxy health with kube-proxy's semantics (pkg/proxy/healthcheck): healthy while no queued update
// is older than the timeout (2 x syncPeriod); /healthz also needs the Node to be eligible (not being
// deleted, no ToBeDeletedByClusterAutoscaler taint); /livez ignores the Node. Same JSON bodies and
// headers as kube-proxy, so load balancers and probes configured for it keep working.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Clock } from '../dataplane/runner.ts';
import type { NodeInfo } from '../model/types.ts';
import type { Metrics } from './metrics.ts';

/** Go's time.Time String() layout, which kube-proxy's bodies carry: "2026-11-25 13:04:05.123 +0000 UTC". */
export function goTime(ms: number): string {
  if (ms === 0) return '0001-01-01 00:00:00 +0000 UTC';
  const d = new Date(ms).toISOString(); // 2026-11-25T13:04:05.123Z
  return `${d.slice(0, 10)} ${d.slice(11, 23)} +0000 UTC`;
}

export class ProxyHealth {
  readonly #timeoutMs: number;
  readonly #clock: Pick<Clock, 'now'>;
  #lastUpdated = 0;
  #oldestPendingQueued = 0;
  /** When the running sync started (0: none), and the first change queued since. */
  #syncStarted = 0;
  #queuedSinceSyncStart = 0;
  #nodeEligible = true;

  constructor(timeoutMs: number, clock: Pick<Clock, 'now'>) {
    this.#timeoutMs = timeoutMs;
    this.#clock = clock;
  }

  /** A change reached us that the kernel does not reflect yet. Only the oldest one counts. */
  queued(): void {
    const now = this.#clock.now();
    if (this.#oldestPendingQueued === 0) this.#oldestPendingQueued = now;
    if (this.#syncStarted !== 0 && this.#queuedSinceSyncStart === 0) this.#queuedSinceSyncStart = now;
  }

  /**
   * A sync starts: it covers what was queued until now. A change queued while it runs is not in it, and stays
   * pending after it (from when it came).
   */
  syncStarted(): void {
    this.#syncStarted = this.#clock.now();
    this.#queuedSinceSyncStart = 0;
  }

  /** The kernel reflects everything queued before the sync started (everything, outside a sync). */
  updated(): void {
    this.#oldestPendingQueued = this.#syncStarted !== 0 ? this.#queuedSinceSyncStart : 0;
    this.#syncStarted = 0;
    this.#lastUpdated = this.#clock.now();
  }

  /**
   * The sync failed in a way that is not one Service's (the dummy interface, the ownership record): what it was
   * to write is still pending, even when nothing was queued (a periodic resync found the kernel wrong and could not
   * mend it), so that syncs failing for 2 x syncPeriod make the node unhealthy.
   */
  syncFailed(): void {
    this.#syncStarted = 0;
    if (this.#oldestPendingQueued === 0) this.#oldestPendingQueued = this.#clock.now();
  }

  /** kube-proxy's SyncNode: eligible unless being deleted or tainted for deletion by the autoscaler. */
  syncNode(node: NodeInfo | null): void {
    this.#nodeEligible = !node || !(node.deleting || node.toBeDeleted);
  }

  get nodeEligible(): boolean {
    return this.#nodeEligible;
  }

  get lastUpdated(): number {
    return this.#lastUpdated;
  }

  /** When the oldest change not yet in the kernel arrived (0: none pending). */
  get oldestPendingQueued(): number {
    return this.#oldestPendingQueued;
  }

  check(): { healthy: boolean; lastUpdated: number; now: number } {
    const now = this.#clock.now();
    const healthy = this.#oldestPendingQueued === 0 || now - this.#oldestPendingQueued < this.#timeoutMs;
    return { healthy, lastUpdated: this.#lastUpdated, now };
  }

  get healthy(): boolean {
    return this.check().healthy;
  }
}

function send(res: ServerResponse, code: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff', ...headers });
  res.end(body);
}

/** /healthz and /livez. Returns false when the path is not one of them. */
export function serveProxyHealth(
  req: IncomingMessage,
  res: ServerResponse,
  health: ProxyHealth,
  metrics: Metrics,
): boolean {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/healthz' && path !== '/livez') return false;
  let { healthy, lastUpdated, now } = health.check();
  const eligible = health.nodeEligible;
  if (path === '/healthz') healthy &&= eligible;
  const code = healthy ? 200 : 503;
  (path === '/healthz' ? metrics.healthzTotal : metrics.livezTotal).inc({ code: String(code) });
  // As kube-proxy: a healthy answer reports lastUpdated as now (older releases' meaning).
  if (healthy) lastUpdated = now;
  const body =
    path === '/healthz'
      ? `{"lastUpdated": ${JSON.stringify(goTime(lastUpdated))},"currentTime": ${JSON.stringify(goTime(now))}, "nodeEligible": ${eligible}}`
      : `{"lastUpdated": ${JSON.stringify(goTime(lastUpdated))},"currentTime": ${JSON.stringify(goTime(now))}}`;
  send(res, code, body);
  return true;
}

/** kube-proxy's healthCheckNodePort answer for one Service. */
export function serviceHealthBody(
  service: string,
  localEndpoints: number,
  proxyHealthy: boolean,
): { code: number; body: string; headers: Record<string, string> } {
  const [namespace = '', name = ''] = service.split('/');
  const body = [
    '{',
    '\t"service": {',
    `\t\t"namespace": ${JSON.stringify(namespace)},`,
    `\t\t"name": ${JSON.stringify(name)}`,
    '\t},',
    `\t"localEndpoints": ${localEndpoints},`,
    `\t"serviceProxyHealthy": ${proxyHealthy}`,
    '}',
  ].join('\n');
  return {
    code: localEndpoints > 0 && proxyHealthy ? 200 : 503,
    body,
    headers: { 'X-Load-Balancing-Endpoint-Weight': String(localEndpoints) },
  };
}

export { send as sendJSON };
