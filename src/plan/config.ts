// The planner's settings from the proxy's config: what plan/ needs of config/, nothing more.
import type { Config } from '../config/config.ts';
import type { PlanConfig } from './types.ts';

export function planConfigFrom(cfg: Config): PlanConfig {
  return {
    scheduler: cfg.ipvs.scheduler,
    nodePortAddresses: cfg.nodePortAddresses,
    nodeHints: cfg.featureGates.PreferSameTrafficDistribution ?? true,
    netfilter: {
      iptables: cfg.iptables,
      clusterCIDRs: cfg.clusterCIDRs,
      detectLocalMode: cfg.detectLocalMode,
      detectLocal: cfg.detectLocal,
    },
  };
}
