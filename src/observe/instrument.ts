// Counts kernel operations and their failures by operation and errno, by wrapping the kernel
// interfaces (Ipvs, Links) the daemon is given. Every async method is counted; close() is not.
import type { Metrics } from './metrics.ts';

/** "EEXIST", "ENODEV"… from our error classes (IpvsError, LinkError) or Node's system errors. */
export function errnoOf(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code !== '' ? code : 'unknown';
}

/**
 * A proxy of `target` that counts each method call as `${prefix}.${method}` in
 * kubeipvs_kernel_operations_total, and each rejection in kubeipvs_kernel_operation_failures_total.
 */
export function instrumentKernel<T extends object>(target: T, prefix: string, metrics: Metrics): T {
  return new Proxy(target, {
    get(t, prop, receiver) {
      const v = Reflect.get(t, prop, receiver);
      if (typeof v !== 'function' || typeof prop !== 'string' || prop === 'constructor') return v;
      // Bound to the target: its private fields are not reachable through the proxy.
      if (prop === 'close') return (v as () => void).bind(t);
      const operation = `${prefix}.${prop}`;
      return function (this: unknown, ...args: unknown[]) {
        metrics.kernelOperations.inc({ operation });
        let r: unknown;
        try {
          r = (v as (...a: unknown[]) => unknown).apply(t, args);
        } catch (e) {
          metrics.kernelFailures.inc({ operation, errno: errnoOf(e) });
          throw e;
        }
        if (r instanceof Promise) {
          return r.catch((e: unknown) => {
            metrics.kernelFailures.inc({ operation, errno: errnoOf(e) });
            throw e;
          });
        }
        return r;
      };
    },
  });
}
