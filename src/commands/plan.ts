// `kube-ipvs plan`: the desired state for a folder of manifests. No root, no kernel.
import { formatJSON, formatTable } from '../plan/format.ts';
import { planManifests } from './manifest-plan.ts';
import { readManifests } from '../sources/manifests.ts';
import { loadConfig, report, type IO } from './common.ts';

export interface PlanArgs {
  manifests: string;
  node?: string;
  config?: string;
  output: 'table' | 'json';
  strict: boolean;
}

export async function planCommand(args: PlanArgs, io: IO): Promise<number> {
  const config = await loadConfig(io, args.config);
  if (!config) return 1;
  const set = await readManifests(args.manifests);
  const { plan, problems } = planManifests(set, config, args.node);
  report(io, problems);
  io.stdout(args.output === 'json' ? formatJSON(plan) : formatTable(plan));
  return args.strict && problems.some((p) => p.severity === 'error') ? 1 : 0;
}
