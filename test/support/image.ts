// Reading the OCI image layout images/build.sh writes: index -> manifest -> config, by digest.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export type Descriptor = { mediaType: string; digest: string; size: number; annotations?: Record<string, string> };
export interface ImageConfig {
  architecture: string;
  os: string;
  config: { Entrypoint: string[]; Cmd: string[]; Env: string[] };
  rootfs: { diff_ids: string[] };
}

export function readLayout(oci: string) {
  const blob = (digest: string) => readFileSync(join(oci, 'blobs/sha256', digest.replace(/^sha256:/, '')));
  const index = JSON.parse(readFileSync(join(oci, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const manifestBlob = blob(index.manifests[0]!.digest);
  const manifest = JSON.parse(manifestBlob.toString()) as { config: Descriptor; layers: Descriptor[] };
  const configBlob = blob(manifest.config.digest);
  const config = JSON.parse(configBlob.toString()) as ImageConfig;
  return { blob, index, manifestBlob, manifest, configBlob, config };
}
