// Structured logs: one JSON object per line (or readable text when asked), written to an
// injected sink. Repeated lines with the same key are rate limited, so one broken object or
// one failing kernel operation cannot flood the log; the count of suppressed lines is reported.
import { escapeText } from '../errors.ts';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  level?: Level;
  format?: 'json' | 'text';
  sink?: (line: string) => void;
  now?: () => number;
  /** Lines with the same key are written at most once per this many ms (default 60 s). */
  rateLimitMs?: number;
}

export class Logger {
  readonly #o: Required<LoggerOptions>;
  readonly #seen = new Map<string, { at: number; suppressed: number }>();

  constructor(opts: LoggerOptions = {}) {
    this.#o = {
      level: opts.level ?? 'info',
      format: opts.format ?? 'json',
      sink: opts.sink ?? ((l) => process.stderr.write(l + '\n')),
      now: opts.now ?? Date.now,
      rateLimitMs: opts.rateLimitMs ?? 60_000,
    };
  }

  debug(msg: string, fields: Record<string, unknown> = {}, key?: string) {
    this.#log('debug', msg, fields, key);
  }
  info(msg: string, fields: Record<string, unknown> = {}, key?: string) {
    this.#log('info', msg, fields, key);
  }
  warn(msg: string, fields: Record<string, unknown> = {}, key?: string) {
    this.#log('warn', msg, fields, key);
  }
  error(msg: string, fields: Record<string, unknown> = {}, key?: string) {
    this.#log('error', msg, fields, key);
  }

  #log(level: Level, msg: string, fields: Record<string, unknown>, key?: string) {
    if (ORDER[level] < ORDER[this.#o.level]) return;
    const now = this.#o.now();
    let suppressed = 0;
    if (key !== undefined) {
      const s = this.#seen.get(key);
      if (s && now - s.at < this.#o.rateLimitMs) {
        s.suppressed++;
        return;
      }
      suppressed = s?.suppressed ?? 0;
      this.#seen.set(key, { at: now, suppressed: 0 });
      if (this.#seen.size > 10_000) this.#seen.delete(this.#seen.keys().next().value!);
    }
    const rec: Record<string, unknown> = { time: new Date(now).toISOString(), level, msg, ...fields };
    if (suppressed > 0) rec.suppressed = suppressed;
    // Messages and fields may carry outside text (names, kernel and tool answers): cut long
    // strings; JSON escapes the rest, and the text format escapes control characters itself.
    const json = JSON.stringify(rec, (_k, v: unknown) =>
      typeof v === 'bigint'
        ? v.toString()
        : typeof v === 'string' && v.length > MAX_FIELD
          ? `${v.slice(0, MAX_FIELD)}...(${v.length} characters)`
          : v,
    );
    this.#o.sink(this.#o.format === 'json' ? json : text(JSON.parse(json) as Record<string, unknown>));
  }
}

/** The longest string a log line carries whole. */
const MAX_FIELD = 4000;
/** Values printed bare in the text format; anything else is quoted. */
const BARE = /^[\w.:/@%+=,\-[\]]*$/;

function text(rec: Record<string, unknown>): string {
  const { time, level, msg, ...rest } = rec;
  const kv = Object.entries(rest)
    .map(
      ([k, v]) =>
        `${escapeText(k, 100)}=${typeof v === 'string' && BARE.test(v) ? v : escapeText(JSON.stringify(v) ?? String(v), MAX_FIELD + 40)}`,
    )
    .join(' ');
  return `${String(time)} ${String(level).toUpperCase().padEnd(5)} ${escapeText(String(msg), MAX_FIELD + 40)}${kv ? ` ${kv}` : ''}`;
}
