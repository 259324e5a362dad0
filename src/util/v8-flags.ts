// V8 heap tuning applied by the kube-ipvs process itself, so that every launcher (the bin, npm
// scripts, a container's command, a Helm chart) gets it without having to pass node flags.
//
// `--optimize-for-size` trades some speed for a smaller resident set: with 10 000 Services x 10
// endpoints, RSS is about 150 MB instead of 200-300 MB and a full plan takes roughly twice as long
// (about 250 ms instead of 130 ms, still well inside the sync budget). perf/plan.bench.ts measures
// both settings in one run. Set KUBE_IPVS_V8_DEFAULTS=1 to keep V8's defaults.
import { setFlagsFromString } from 'node:v8';

export const DAEMON_V8_FLAGS: readonly string[] = ['--optimize-for-size'];

/** Applies DAEMON_V8_FLAGS unless the environment asks for V8's defaults; returns what was applied. */
export function applyDaemonV8Flags(env: NodeJS.ProcessEnv = process.env): readonly string[] {
  if (env.KUBE_IPVS_V8_DEFAULTS === '1') return [];
  for (const flag of DAEMON_V8_FLAGS) setFlagsFromString(flag);
  return DAEMON_V8_FLAGS;
}
