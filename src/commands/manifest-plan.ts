// A folder's manifests planned in memory: what `kube-ipvs plan`, `run --manifests` (for the node
// name) and the golden tests run. It wires the file source to the model and the planner, so it
// lives with the commands: the plan stage itself knows nothing of where objects come from.
// Problems come back with the file and line of the object that caused them.
import { hostname } from 'node:os';
import { Codes, type Problem } from '../errors.ts';
import type { Config } from '../config/config.ts';
import { APPLY_ORDER, Model } from '../model/model.ts';
import { refOf } from '../model/validate.ts';
import { planConfigFrom } from '../plan/config.ts';
import { conflictProblem, Planner } from '../plan/plan.ts';
import type { NodePlan } from '../plan/types.ts';
import type { ManifestObject, ManifestSet } from '../sources/manifests.ts';

/** --node, else the config's hostnameOverride, else the only Node in the set, else the hostname. */
export function chooseNodeName(set: ManifestSet, cfg: Config, nodeFlag?: string): string {
  if (nodeFlag) return nodeFlag;
  if (cfg.hostnameOverride) return cfg.hostnameOverride.trim().toLowerCase();
  const nodes = set.objects.filter((o) => o.kind === 'Node');
  const name = (nodes[0]?.object.metadata as { name?: unknown } | undefined)?.name;
  if (nodes.length === 1 && typeof name === 'string') return name;
  return hostname().toLowerCase();
}

export interface ManifestPlan {
  plan: NodePlan;
  model: Model;
  planner: Planner;
  problems: Problem[];
}

export function planManifests(set: ManifestSet, cfg: Config, nodeFlag?: string): ManifestPlan {
  const problems = [...set.problems];
  const model = new Model({ nodeName: chooseNodeName(set, cfg, nodeFlag), proxyName: cfg.serviceProxyName });
  const objects = [...set.objects].sort((a, b) => APPLY_ORDER[a.kind] - APPLY_ORDER[b.kind]);
  const seen = new Map<string, ManifestObject>();
  for (const o of objects) {
    const ref = refOf(o.kind, o.object);
    const id = `${ref.kind} ${ref.name}`;
    const first = seen.get(id);
    if (first) {
      problems.push({
        code: Codes.OBJECT_DUPLICATE,
        severity: 'warning',
        file: o.file,
        line: o.line,
        kind: ref.kind,
        name: ref.name,
        message: `also defined at ${first.file}:${first.line}; this later definition replaces it`,
      });
    }
    seen.set(id, o);
    const r = model.apply({ kind: o.kind, previous: null, current: o.object });
    for (const p of r.problems) problems.push({ ...p, file: o.file, line: o.line });
  }
  // Report in file order, whatever order the objects were applied in.
  problems.sort((a, b) => (a.file ?? '\uffff').localeCompare(b.file ?? '\uffff') || (a.line ?? 0) - (b.line ?? 0));
  if (!model.node) {
    problems.push({
      code: Codes.NODE_NOT_FOUND,
      severity: 'warning',
      kind: 'Node',
      name: model.nodeName,
      message:
        'no such Node in the manifests: no node addresses (NodePorts get no virtual servers) and no zone (topology hints are ignored)',
    });
  }
  const planner = new Planner(model, planConfigFrom(cfg));
  planner.planAll();
  for (const c of planner.conflicts()) {
    const o = seen.get(`Service ${c.service}`);
    problems.push({ ...conflictProblem(c), ...(o ? { file: o.file, line: o.line } : {}) });
  }
  return { plan: planner.snapshot(), model, planner, problems };
}
