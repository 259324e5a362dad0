// What the commands share: output destinations, problem lines, config loading.
import { readFile } from 'node:fs/promises';
import { defaultConfig, parseConfig, type Config } from '../config/config.ts';
import { Codes, formatProblem, type Problem } from '../errors.ts';

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
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    report(io, [{ code: Codes.CONFIG_UNREADABLE, severity: 'error', file, message: (e as Error).message }]);
    return null;
  }
  const r = parseConfig(text, file);
  report(io, r.problems);
  return r.config;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}
