// Plan raw objects in memory, the way `kube-ipvs plan` does for a folder.
import { defaultConfig, type Config } from '../../src/config/config.ts';
import { planManifests, type ManifestPlan } from '../../src/commands/manifest-plan.ts';
import type { ManifestObject } from '../../src/sources/manifests.ts';

export function planObjects(
  objects: Record<string, unknown>[],
  opts: { node?: string; config?: Partial<Config> } = {},
): ManifestPlan {
  const set = {
    objects: objects.map((object, i): ManifestObject => ({
      kind: object.kind as ManifestObject['kind'],
      object,
      file: 'test.yaml',
      line: i + 1,
    })),
    problems: [],
    skipped: 0,
  };
  return planManifests(set, { ...defaultConfig(), ...opts.config }, opts.node ?? 'node-a');
}
