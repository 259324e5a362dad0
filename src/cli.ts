#!/usr/bin/env -S node --optimize-for-size --heap-growing-percent=100 --no-opt --no-maglev --no-sparkplug --no-concurrent-sparkplug --no-maglev-build-code-on-background --no-maglev-deopt-data-on-background
// kube-ipvs command line: parses arguments and hands over to src/commands/.
// main() takes its output destinations as arguments so tests can run it in-process.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cleanupCommand } from './commands/cleanup.ts';
import { report, type IO } from './commands/common.ts';
import { planCommand } from './commands/plan.ts';
import { runCommand } from './commands/run.ts';
import { statusCommand } from './commands/status.ts';
import { Codes } from './errors.ts';
import { versionLine } from './version.ts';

export type { IO } from './commands/common.ts';

const USAGE = `Usage: kube-ipvs <command> [options]
       kube-ipvs --version

Commands:
  plan      print the desired IPVS state for a folder of manifests (no root needed)
              --manifests DIR        folder of Service, EndpointSlice and Node manifests (required)
              --node NAME            the node to plan for (default: the only Node in DIR, else the hostname)
              --config FILE          KubeIPVSConfiguration or KubeProxyConfiguration
              --output table|json    (default table)
              --strict               exit 1 when any object was rejected
  run       keep this node's kernel in step with the cluster (needs root and the ip_vs module)
              --kubeconfig FILE      watch this API server (default: in-cluster service account)
              --manifests DIR        or follow a folder of manifests instead
              --node NAME  --config FILE
              --dry-run              program an in-memory kernel instead and print what would be done
              --proc-sys DIR         where /proc/sys is writable (default /proc/sys; the chart: /host/proc/sys)
              --once                 one full sync, then exit
  cleanup   remove every virtual service, address and interface kube-ipvs created (needs root)
              --config FILE
              --drain DURATION       first wait (up to DURATION, e.g. 5m) for the connections made through
                                     them to end: the way back to kube-proxy keeps them
  status    every IPVS virtual server with its Service, kind and backends, read from the kernel
            (works with the daemon down), plus the daemon's own view when it answers (needs root)
              --namespace NS  --service NAME|NS/NAME   only these Services
              --config FILE          for stateDirectory and healthzBindAddress
              --output table|json    (default table)
  version   print the version (also --version)
`;

const OPTIONS = {
  manifests: { type: 'string' },
  kubeconfig: { type: 'string' },
  node: { type: 'string' },
  config: { type: 'string' },
  output: { type: 'string', short: 'o', default: 'table' },
  strict: { type: 'boolean', default: false },
  'dry-run': { type: 'boolean', default: false },
  once: { type: 'boolean', default: false },
  drain: { type: 'string' },
  'proc-sys': { type: 'string' },
  namespace: { type: 'string', short: 'n' },
  service: { type: 'string' },
} as const;

/** Exit codes: 0 ok, 1 failure (or problems with --strict), 2 usage. */
export async function main(argv: string[], io: IO): Promise<number> {
  const [command, ...rest] = argv;
  const usage = (message: string) => {
    report(io, [{ code: Codes.USAGE, severity: 'error', message }]);
    io.stderr(USAGE);
    return 2;
  };
  if (command === undefined || command === 'help' || command === '-h' || command === '--help') {
    io.stdout(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === 'version' || command === '--version' || command === '-V') {
    if (rest.length > 0) return usage(`${command} takes no arguments`);
    io.stdout(versionLine());
    return 0;
  }
  if (!['plan', 'run', 'cleanup', 'status'].includes(command))
    return usage(`unknown command ${JSON.stringify(command)}`);

  let args;
  try {
    args = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    return usage((e as Error).message);
  }
  switch (command) {
    case 'plan':
      if (!args.manifests) return usage('plan needs --manifests DIR');
      if (args.output !== 'table' && args.output !== 'json')
        return usage(`--output must be table or json, not ${JSON.stringify(args.output)}`);
      return planCommand(
        { manifests: args.manifests, node: args.node, config: args.config, output: args.output, strict: args.strict },
        io,
      );
    case 'status':
      if (args.output !== 'table' && args.output !== 'json')
        return usage(`--output must be table or json, not ${JSON.stringify(args.output)}`);
      return statusCommand(
        { config: args.config, namespace: args.namespace, service: args.service, output: args.output },
        io,
      );
    case 'run':
      return runCommand(
        {
          manifests: args.manifests,
          kubeconfig: args.kubeconfig,
          node: args.node,
          config: args.config,
          dryRun: args['dry-run'],
          once: args.once,
          ...(args['proc-sys'] !== undefined ? { procSys: args['proc-sys'] } : {}),
        },
        io,
      );
    default:
      return cleanupCommand({ config: args.config, ...(args.drain !== undefined ? { drain: args.drain } : {}) }, io);
  }
}

function isEntry(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

/**
 * Resolves once everything written to `s` so far has been handed to the kernel. Writes to a pipe
 * are asynchronous: a slow reader (`plan | (sleep 5; wc -c)`) holds them in Node's queue, and
 * exiting before it is empty loses the rest. A reader that went away (EPIPE) ends the wait.
 */
export function drained(s: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed || !s.writable) return resolve();
    s.once('error', () => resolve());
    s.write('', () => resolve());
  });
}

if (isEntry()) {
  for (const s of [process.stdout, process.stderr]) s.on('error', () => {}); // EPIPE: the reader left; nothing to report to
  const exit = async (code: number) => {
    await Promise.all([drained(process.stdout), drained(process.stderr)]);
    // Then one more turn of the event loop: closed netlink sockets finish closing their libuv
    // handles (exiting in the middle of that has crashed the addon).
    setTimeout(() => process.exit(code), 20);
  };
  main(process.argv.slice(2), {
    stdout: (t) => void process.stdout.write(t),
    stderr: (t) => void process.stderr.write(t),
  })
    .catch((e: unknown) => {
      process.stderr.write(`kube-ipvs: internal error: ${(e as Error).stack ?? String(e)}\n`);
      return 70;
    })
    .then(exit)
    .catch(() => process.exit(70));
}
