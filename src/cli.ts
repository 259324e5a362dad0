#!/usr/bin/env node
// kube-ipvs command line. Commands: plan (built), run / status / cleanup (not built yet).
// main() takes its output destinations as arguments so tests can run it in-process.
import { realpathSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { defaultConfig, parseConfig, type Config } from './config/config.ts';
import { Codes, formatProblem, type Problem } from './errors.ts';
import { formatJSON, formatTable } from './plan/format.ts';
import { planManifests } from './plan/from-manifests.ts';
import { readManifests } from './sources/manifests.ts';

export interface IO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const USAGE = `Usage: kube-ipvs <command> [options]

Commands:
  plan     print the desired IPVS state for a folder of manifests (no root needed)
             --manifests DIR        folder of Service, EndpointSlice and Node manifests (required)
             --node NAME            the node to plan for (default: the only Node in DIR, else the hostname)
             --config FILE          KubeIPVSConfiguration or KubeProxyConfiguration
             --output table|json    (default table)
             --strict               exit 1 when any object or config field was rejected
  run      the daemon (not built yet)
  status   show programmed virtual servers (not built yet)
  cleanup  remove everything kube-ipvs owns (not built yet)
`;

/** Exit codes: 0 ok, 1 problems (with --strict) or bad config, 2 usage. */
export async function main(argv: string[], io: IO): Promise<number> {
  const [command, ...rest] = argv;
  const report = (ps: Problem[]) => ps.forEach((p) => io.stderr(formatProblem(p) + '\n'));
  const usage = (message: string) => {
    report([{ code: Codes.USAGE, severity: 'error', message }]);
    io.stderr(USAGE);
    return 2;
  };
  switch (command) {
    case 'plan':
      break;
    case 'run':
    case 'status':
    case 'cleanup':
      report([{ code: Codes.NOT_BUILT, severity: 'error', message: `'${command}' is not built yet; only 'plan' is` }]);
      return 2;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      io.stdout(USAGE);
      return command === undefined ? 2 : 0;
    default:
      return usage(`unknown command ${JSON.stringify(command)}`);
  }

  let args;
  try {
    args = parseArgs({
      args: rest,
      options: {
        manifests: { type: 'string' },
        node: { type: 'string' },
        config: { type: 'string' },
        output: { type: 'string', short: 'o', default: 'table' },
        strict: { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    return usage((e as Error).message);
  }
  if (!args.manifests) return usage('plan needs --manifests DIR');
  if (args.output !== 'table' && args.output !== 'json') return usage(`--output must be table or json, not ${JSON.stringify(args.output)}`);

  let config: Config = defaultConfig();
  if (args.config) {
    let text: string;
    try {
      text = await readFile(args.config, 'utf8');
    } catch (e) {
      report([{ code: Codes.CONFIG_UNREADABLE, severity: 'error', file: args.config, message: (e as Error).message }]);
      return 1;
    }
    const r = parseConfig(text, args.config);
    report(r.problems);
    if (!r.config) return 1;
    config = r.config;
  }

  const set = await readManifests(args.manifests);
  const { plan, problems } = planManifests(set, config, args.node);
  report(problems);
  io.stdout(args.output === 'json' ? formatJSON(plan) : formatTable(plan));
  return args.strict && problems.some((p) => p.severity === 'error') ? 1 : 0;
}

function isEntry(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isEntry()) {
  main(process.argv.slice(2), { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) }).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      process.stderr.write(`kube-ipvs: internal error: ${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 70;
    },
  );
}
