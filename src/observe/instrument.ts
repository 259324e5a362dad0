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
  // One wrapper per method, made on first use, counting through a child bound to its label: a cold start calls
  // these 100 000 times, and a closure and a label lookup per call showed in its profile.
  const wrappers = new Map<string, { of: unknown; wrapper: unknown }>();
  return new Proxy(target, {
    get(t, prop, receiver) {
      const v = Reflect.get(t, prop, receiver);
      if (typeof v !== 'function' || typeof prop !== 'string' || prop === 'constructor') return v;
      // Bound to the target: its private fields are not reachable through the proxy.
      if (prop === 'close') return (v as () => void).bind(t);
      const made = wrappers.get(prop);
      if (made?.of === v) return made.wrapper; // (a method replaced since, as tests do, gets a wrapper of its own)
      const operation = `${prefix}.${prop}`;
      const calls = metrics.kernelOperations.labels({ operation });
      const wrapper = function (this: unknown, ...args: unknown[]) {
        calls.inc();
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
      wrappers.set(prop, { of: v, wrapper });
      return wrapper;
    },
  });
}
