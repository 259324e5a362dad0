// kube-ipvs' version: package.json's, read next to the code that runs (src/ in development, dist/ when
// built, /opt/kube-ipvs/dist in the image: package.json is one folder up from each).
import { readFileSync } from 'node:fs';

const SEMVER = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$/;

/** The version in a package.json's text, or "unknown" when it has none that is a plain version. */
export function versionOf(packageJson: string): string {
  try {
    const v = (JSON.parse(packageJson) as { version?: unknown } | null)?.version;
    return typeof v === 'string' && SEMVER.test(v) ? v : 'unknown';
  } catch {
    return 'unknown';
  }
}

let cached: string | undefined;

/** kube-ipvs' own version (package.json one folder up from this file). */
export function version(): string {
  if (cached === undefined) {
    try {
      cached = versionOf(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    } catch {
      cached = 'unknown';
    }
  }
  return cached;
}

/** The line `kube-ipvs --version` prints. */
export function versionLine(): string {
  return `kube-ipvs ${version()} (node ${process.version}, ${process.platform}/${process.arch})\n`;
}
