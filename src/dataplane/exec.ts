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

/** Records calls and answers from a table of handlers (first match wins); default: success. */
export class FakeExec implements Exec {
  readonly calls: { cmd: string; args: string[]; input?: string }[] = [];
  readonly handlers: ((cmd: string, args: string[], input?: string) => ExecResult | undefined)[] = [];
  async run(cmd: string, args: string[], input?: string): Promise<ExecResult> {
    this.calls.push({ cmd, args, ...(input !== undefined ? { input } : {}) });
    for (const h of this.handlers) {
      const r = h(cmd, args, input);
      if (r) return r;
    }
    return { code: 0, stdout: '', stderr: '' };
  }
}
