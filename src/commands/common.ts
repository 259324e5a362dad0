// What the commands share: output destinations, problem lines, config loading.
import { defaultConfig, parseConfig, type Config } from '../config/config.ts';
import { Codes, formatProblem, type Problem } from '../errors.ts';
import { readRegularFile } from '../util/files.ts';

/** A config is a ConfigMap's worth at most (the API server caps objects at about 1.5 MiB). */
const MAX_CONFIG_BYTES = 1024 * 1024;

export interface IO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export function report(io: IO, ps: Problem[]): void {
  for (const p of ps) io.stderr(formatProblem(p) + '\n');
}

/** The config from --config, or the defaults; null (after reporting why) when it is rejected. */
export async function loadConfig(io: IO, file: string | undefined): Promise<Config | null> {
  if (!file) return defaultConfig();
  const f = await readRegularFile(file, MAX_CONFIG_BYTES);
  if ('error' in f) {
    report(io, [{ code: Codes.CONFIG_UNREADABLE, severity: 'error', file, message: f.error }]);
    return null;
  }
  const r = parseConfig(f.text, file);
  report(io, r.problems);
  return r.config;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}
