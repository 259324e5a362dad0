// The real kube-apiserver on the host, as the guest reaches it (qemu's guestfwd at 10.0.2.100:6443): the
// kubeconfig test/lab.test.ts shares under /lab-results, and a small JSON client for the cases.
import { existsSync, readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { parse } from 'yaml';

export const KUBECONFIG = '/lab-results/kubeconfig';
/** The folder of the upstream binaries test/k8s/build.sh built (kube-proxy...), when it did. */
export const K8S_BIN_FILE = '/lab-results/k8s-bin';

export type Api = (
  method: string,
  path: string,
  body?: unknown,
  contentType?: string,
) => Promise<{ status: number; json: Record<string, unknown>; text: string }>;

/**
 * A client for the shared API server, or null when there is none (test/k8s not built, or K8S=0). `keepAlive`
 * reuses connections (each new one is a process on the host's side of guestfwd): for many requests; its idle
 * sockets keep the process alive until `destroy()`.
 */
export function labApi(opts: { keepAlive?: boolean } = {}): (Api & { destroy(): void }) | null {
  if (!existsSync(KUBECONFIG)) return null;
  const kc = parse(readFileSync(KUBECONFIG, 'utf8')) as {
    clusters: { cluster: { server: string } }[];
    users: { user: { token: string } }[];
  };
  const server = new URL(kc.clusters[0]!.cluster.server);
  const token = kc.users[0]!.user.token;
  const agent = new Agent({ rejectUnauthorized: false, keepAlive: opts.keepAlive ?? false });
  const once = (
    method: string,
    path: string,
    body: unknown,
    contentType: string,
  ): Promise<Awaited<ReturnType<Api>> | 'stale'> =>
    new Promise((res, rej) => {
      const req = request(
        {
          host: server.hostname,
          port: server.port,
          path,
          method,
          agent,
          headers: { authorization: `Bearer ${token}`, 'content-type': contentType },
        },
        (r) => {
          let d = '';
          r.on('data', (c) => (d += c));
          r.on('end', () => {
            let json: Record<string, unknown> = {};
            try {
              json = d ? (JSON.parse(d) as Record<string, unknown>) : {};
            } catch {
              // not JSON (a proxy's error page): the text says what
            }
            res({ status: r.statusCode ?? 0, json, text: d });
          });
        },
      );
      // A kept-alive connection the other end closed while idle (an idle timeout on the API server's or guestfwd's
      // side: once in the race, after a 37 s cold start) fails the next request sent on it with ECONNRESET. Node's
      // advice: send it again on a new connection. Every write the cases and the race make sets a state (a PATCH of
      // the same body, a PUT, a DELETE, a POST answered 409 when the first did get through), so a second try is safe.
      req.on('error', (e: NodeJS.ErrnoException) =>
        req.reusedSocket && e.code === 'ECONNRESET' ? res('stale') : rej(e),
      );
      if (body !== undefined) req.write(JSON.stringify(body));
      req.end();
    });
  const api: Api = async (method, path, body, contentType = 'application/json') => {
    // Several idle connections may have been closed at once: each stale one costs a try.
    for (let attempt = 0; attempt < 4; attempt++) {
      const r = await once(method, path, body, contentType);
      if (r !== 'stale') return r;
    }
    throw new Error(`${method} ${path}: kept-alive connections closed under 4 tries in a row`);
  };
  return Object.assign(api, { destroy: () => agent.destroy() });
}
