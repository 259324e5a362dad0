// healthCheckNodePort servers: one HTTP listener per `externalTrafficPolicy: Local` Service that
// has a healthCheckNodePort, answering 200 only while this node has a ready local endpoint and the
// proxy is healthy (kube-proxy's body and headers). Cloud load balancers probe it to send traffic
// only to nodes with endpoints. Listeners open and close as Services come and go; the answer is
// read at request time, so endpoint changes need no reopen.
import { createServer, type Server } from 'node:http';
import type { Logger } from './log.ts';
import type { Metrics } from './metrics.ts';
import { serviceHealthBody, type ProxyHealth } from './health.ts';

export interface HealthCheckTarget {
  /** "namespace/name" */
  service: string;
  localEndpoints: number;
}

export interface ServiceHealthOptions {
  health: ProxyHealth;
  log: Logger;
  metrics: Metrics;
  /** Addresses to listen on; empty means every address (kube-proxy with no nodePortAddresses). */
  addresses: () => string[];
}

export class ServiceHealthServers {
  readonly #o: ServiceHealthOptions;
  /** port -> what it answers for. */
  readonly #targets = new Map<number, HealthCheckTarget>();
  /** port -> its listeners (one per address, or one for all). */
  readonly #servers = new Map<number, Server[]>();
  #closed = false;

  constructor(opts: ServiceHealthOptions) {
    this.#o = opts;
  }

  /** Ports with a listener open. */
  ports(): number[] {
    return [...this.#servers.keys()].sort((a, b) => a - b);
  }

  /** Brings the listeners in line with `targets` (port -> Service); failed listens are retried next time. */
  async update(targets: ReadonlyMap<number, HealthCheckTarget>): Promise<void> {
    if (this.#closed) return;
    this.#targets.clear();
    for (const [port, t] of targets) this.#targets.set(port, t);
    for (const [port, servers] of [...this.#servers]) {
      if (targets.has(port)) continue;
      this.#servers.delete(port);
      await Promise.all(servers.map(closeServer));
      this.#o.log.info('healthCheckNodePort closed', { port });
    }
    const opening: Promise<void>[] = [];
    for (const [port, t] of targets) if (!this.#servers.has(port)) opening.push(this.#open(port, t.service));
    await Promise.all(opening);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#servers.values()].flat();
    this.#servers.clear();
    await Promise.all(all.map(closeServer));
  }

  async #open(port: number, service: string): Promise<void> {
    const addresses = this.#o.addresses();
    const hosts: (string | undefined)[] = addresses.length > 0 ? addresses : [undefined];
    const servers: Server[] = [];
    this.#servers.set(port, servers);
    for (const host of hosts) {
      const server = createServer((req, res) => {
        const t = this.#targets.get(port);
        if (!t) {
          res.writeHead(404).end();
          return;
        }
        const { code, body, headers } = serviceHealthBody(t.service, t.localEndpoints, this.#o.health.healthy);
        res.writeHead(code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff', ...headers });
        res.end(body);
        req.resume();
      });
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ port, host }, () => {
            server.off('error', reject);
            resolve();
          });
        });
        servers.push(server);
      } catch (e) {
        this.#o.metrics.healthCheckNodePortErrors.inc();
        this.#o.log.warn(
          'cannot serve healthCheckNodePort',
          { service, port, address: host ?? '*', error: (e as Error).message },
          `hcnp:${port}:${host}`,
        );
      }
    }
    if (servers.length === 0)
      this.#servers.delete(port); // retried at the next update
    else this.#o.log.info('healthCheckNodePort serving', { service, port, addresses: hosts.map((h) => h ?? '*') });
  }
}

function closeServer(s: Server): Promise<void> {
  return new Promise((resolve) => {
    s.close(() => resolve());
    s.closeAllConnections();
  });
}
