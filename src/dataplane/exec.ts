// Running the system tools kube-proxy also runs (iptables-restore, ipset, conntrack), behind an
// interface so tests can record the calls, or point them into a network namespace.
import { spawn } from 'node:child_process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Exec {
  /** Runs `cmd args`, feeding `input` on stdin; never rejects for a non-zero exit (see `code`). */
  run(cmd: string, args: string[], input?: string): Promise<ExecResult>;
}

/** Real processes; `prefix` (e.g. ['ip', 'netns', 'exec', 'lab']) runs them elsewhere. */
export class SystemExec implements Exec {
  readonly #prefix: string[];
  readonly #timeoutMs: number;
  constructor(opts: { prefix?: string[]; timeoutMs?: number } = {}) {
    this.#prefix = opts.prefix ?? [];
    this.#timeoutMs = opts.timeoutMs ?? 60_000;
  }
  run(cmd: string, args: string[], input?: string): Promise<ExecResult> {
    const argv = [...this.#prefix, cmd, ...args];
    return new Promise((resolve) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], timeout: this.#timeoutMs });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', (e) => resolve({ code: 127, stdout, stderr: stderr + String(e.message) }));
      child.on('close', (code, signal) =>
        resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr: signal ? `${stderr}killed by ${signal}` : stderr }),
      );
      child.stdin.on('error', () => {}); // a tool that exits early closes its stdin
      child.stdin.end(input ?? '');
    });
  }
}

/**
 * Times each run: `kubeipvs_tool_duration_seconds{tool}` ("ipset restore", "iptables-nft-save"...: the
 * command's name and its subcommand when it has one, never an argument from outside) and a debug line.
 */
export class TimedExec implements Exec {
  readonly #inner: Exec;
  readonly #observe: (tool: string, seconds: number, code: number, inputBytes: number) => void;
  constructor(inner: Exec, observe: (tool: string, seconds: number, code: number, inputBytes: number) => void) {
    this.#inner = inner;
    this.#observe = observe;
  }
  async run(cmd: string, args: string[], input?: string): Promise<ExecResult> {
    const started = performance.now();
    const r = await this.#inner.run(cmd, args, input);
    this.#observe(toolName(cmd, args), (performance.now() - started) / 1000, r.code, input?.length ?? 0);
    return r;
  }
}

/** ipset and conntrack take a subcommand first; the iptables tools are named by the command alone. */
export function toolName(cmd: string, args: string[]): string {
  const base = cmd.slice(cmd.lastIndexOf('/') + 1);
  const sub = args[0] ?? '';
  if (base === 'ipset' && /^[a-z]+$/.test(sub)) return `ipset ${sub}`;
  if (base === 'conntrack' && /^-[A-Z]$/.test(sub)) return `conntrack ${sub}`;
  return /^[a-z0-9-]+$/.test(base) ? base : 'other';
}

/** Records calls and answers from a table of handlers (first match wins); default: success. */
export class FakeExec implements Exec {
  /** Every call so far, unless made with `record: false` (a dry-run daemon's: restore inputs, kept forever). */
  readonly calls: { cmd: string; args: string[]; input?: string }[] = [];
  readonly handlers: ((cmd: string, args: string[], input?: string) => ExecResult | undefined)[] = [];
  readonly #record: boolean;
  constructor(opts: { record?: boolean } = {}) {
    this.#record = opts.record ?? true;
  }
  async run(cmd: string, args: string[], input?: string): Promise<ExecResult> {
    if (this.#record) this.calls.push({ cmd, args, ...(input !== undefined ? { input } : {}) });
    for (const h of this.handlers) {
      const r = h(cmd, args, input);
      if (r) return r;
    }
    return { code: 0, stdout: '', stderr: '' };
  }
}
