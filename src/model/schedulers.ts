// The IPVS schedulers a virtual server may use (ip_vs_<name> kernel modules).
export const SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'dh', 'sh', 'sed', 'nq', 'mh'] as const;
export type Scheduler = (typeof SCHEDULERS)[number];

export function isValidScheduler(s: unknown): s is Scheduler {
  return typeof s === 'string' && (SCHEDULERS as readonly string[]).includes(s);
}
