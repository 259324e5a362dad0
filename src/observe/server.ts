// The daemon's HTTP listeners: /metrics and /status on metricsBindAddress, and /healthz and /livez on
// healthzBindAddress (kube-proxy's defaults 127.0.0.1:10249 and 0.0.0.0:10256). A port of 0
// disables a listener.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Daemon } from '../daemon.ts';
import type { HealthView } from '../health/stage.ts';
import type { Logger } from './log.ts';
import { parseBindAddress } from '../util/ip.ts';
import { sendJSON, serveProxyHealth } from './health.ts';

export { parseBindAddress };

const BIND_RETRY_MS = 2000;

/**
 * Listens on `bind`; null (with a log line) when disabled or when it cannot listen. A port in use is retried
 * until it is free (the server is returned at once, listening later).
 */
export async function listen(
  bind: string,
  what: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  log: Logger,
): Promise<Server | null> {
  const b = parseBindAddress(bind);
  if (!b) {
    log.error(`cannot serve ${what}: ${JSON.stringify(bind)} is not host:port`);
    return null;
  }
  if (b.port === 0) {
    log.info(`${what} disabled (port 0)`);
    return null;
  }
  const server = createServer((req, res) => {
    try {
      handler(req, res);
    } catch (e) {
      log.warn(`${what} request failed`, { url: req.url, error: (e as Error).message }, `http:${what}`);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    }
  });
  const bindOnce = () =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: b.host, port: b.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  try {
    await bindOnce();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
      log.error(`cannot serve ${what} on ${bind}: ${(e as Error).message}`);
      return null;
    }
    // kube-proxy holds the same default ports: beside it (a migration), kube-ipvs proxies anyway and takes the
    // port once kube-proxy has stopped. The retry ends when the server is closed.
    log.warn(
      `cannot serve ${what} on ${bind} yet: the port is in use (kube-proxy?); retrying every ${BIND_RETRY_MS / 1000} s`,
    );
    let closed = false;
    const close = server.close.bind(server);
    server.close = (cb?: (err?: Error) => void) => {
      closed = true;
      clearTimeout(timer);
      return server.listening ? close(cb) : (cb?.(), server);
    };
    let timer: NodeJS.Timeout;
    const retry = () => {
      timer = setTimeout(() => {
        if (closed) return;
        bindOnce().then(
          () => log.info(`serving ${what}`, { address: bind }),
          (err: NodeJS.ErrnoException) => {
            if (err.code === 'EADDRINUSE') retry();
            else log.error(`cannot serve ${what} on ${bind}: ${err.message}`);
          },
        );
      }, BIND_RETRY_MS);
      timer.unref();
    };
    retry();
    return server;
  }
  log.info(`serving ${what}`, { address: bind });
  return server;
}

export function metricsHandler(daemon: Daemon, log: Logger): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    // /status names Services, backends and kernel errors: it is served here (loopback by
    // default), never on the health port, which load balancers' health checkers reach.
    if (path === '/status') {
      sendJSON(res, 200, JSON.stringify(daemonStatus(daemon), null, 2) + '\n');
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: try /metrics or /status\n');
      return;
    }
    daemon.metrics.exposition().then(
      (parts) => {
        res.writeHead(200, {
          'Content-Type': daemon.metrics.registry.contentType,
          'Content-Length': parts.reduce((n, p) => n + p.length, 0),
        });
        for (const p of parts) res.write(p);
        res.end();
      },
      (e: unknown) => {
        log.warn('metrics scrape failed', { error: (e as Error).message }, 'metrics:scrape');
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`scrape failed: ${(e as Error).message}\n`);
      },
    );
  };
}

export function healthHandler(daemon: Daemon): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (serveProxyHealth(req, res, daemon.proxyHealth, daemon.metrics)) return;
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: try /healthz or /livez\n');
  };
}

/** The daemon's own view, served on /status and shown by `kube-ipvs status`. A contract: fields may be added. */
export interface DaemonStatus {
  node: string;
  healthy: boolean;
  nodeEligible: boolean;
  /** ISO times; null when it never happened. */
  lastSyncAt: string | null;
  lastSuccessfulSyncAt: string | null;
  oldestPendingChangeAt: string | null;
  lastSync: { full: boolean; services: number; operations: number; errors: number; durationMs: number } | null;
  pending: { services: number; endpoints: number; dirty: number };
  services: number;
  virtualServers: number;
  source: Record<string, number | string | null> | null;
  healthCheckNodePorts: { port: number; service: string; localEndpoints: number }[];
  /** What Services asked for and did not get because another Service holds it. */
  conflicts: { service: string; what: string; heldBy: string }[];
  /** Why the ownership record read at start was not usable; null when it was fine (or absent). */
  ownershipProblem?: string | null;
  /** Backend health: every endpoint looked after (at most 10 000 listed), fail-open, the probe budget. */
  health?: {
    failingOpen: boolean;
    probeDemand: number;
    probeStretch: number;
    endpoints: HealthView[];
    endpointsNotListed: number;
  };
  recentErrors: { at: string; op: string; code: string; message: string; service?: string }[];
}

const iso = (ms: number) => (ms === 0 ? null : new Date(ms).toISOString());

export function daemonStatus(d: Daemon): DaemonStatus {
  const ls = d.lastSync;
  let virtualServers = 0;
  for (const p of d.planner.plans().values()) virtualServers += p.virtualServers.length;
  const c = d.source.counters;
  return {
    node: d.model.nodeName,
    healthy: d.proxyHealth.healthy,
    nodeEligible: d.proxyHealth.nodeEligible,
    lastSyncAt: iso(d.lastSyncAt),
    lastSuccessfulSyncAt: iso(d.lastSuccessAt),
    oldestPendingChangeAt: iso(d.proxyHealth.oldestPendingQueued),
    lastSync: ls
      ? {
          full: ls.full,
          services: ls.services,
          operations: ls.operations,
          errors: ls.errors.length,
          durationMs: Math.round(ls.durationMs),
        }
      : null,
    pending: d.pendingChanges(),
    services: d.planner.plans().size,
    virtualServers,
    source: c ? { ...c, lastEventAt: iso(c.lastEventAt) } : null,
    healthCheckNodePorts: [...d.healthCheckTargets()]
      .map(([port, t]) => ({ port, service: t.service, localEndpoints: t.localEndpoints }))
      .sort((a, b) => a.port - b.port),
    conflicts: d.planner.conflicts(),
    ownershipProblem: d.ownershipProblem,
    health: (() => {
      const all = d.health.view();
      const b = d.health.budget;
      return {
        failingOpen: d.health.failingOpen,
        probeDemand: b.demand,
        probeStretch: b.stretch,
        endpoints: all.slice(0, 10_000),
        endpointsNotListed: Math.max(0, all.length - 10_000),
      };
    })(),
    recentErrors: d.recentErrors.slice(-10).map((e) => ({ ...e, at: new Date(e.at).toISOString() })),
  };
}
