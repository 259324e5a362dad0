// Go's time.Duration text ("1h2m3.5s", "500ms", "0s"), as KubeProxyConfiguration writes durations.
const UNIT_SECONDS: Record<string, number> = { ns: 1e-9, us: 1e-6, '\u00b5s': 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };

/** Seconds, or null when the text is not a Go duration. */
export function parseDuration(text: string): number | null {
  if (typeof text !== 'string') return null;
  let s = text.trim();
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') return null;
  const re = /([0-9]*\.?[0-9]+)(ns|us|\u00b5s|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) return null;
    total += Number(m[1]) * UNIT_SECONDS[m[2]!]!;
    pos = re.lastIndex;
  }
  return sign * total;
}

/** Seconds back to Go's text, for printing the effective config. */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return '0s';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = +(seconds % 60).toFixed(9);
  return `${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${s}s`;
}
