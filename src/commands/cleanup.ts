// `kube-ipvs cleanup`: removes everything kube-ipvs owns from this node, and nothing else.
import { join } from 'node:path';
import { Codes } from '../errors.ts';
import { cleanup } from '../dataplane/cleanup.ts';
import { NetlinkIpvs } from '../dataplane/ipvs/client.ts';
import { kubeProxyRunning } from '../dataplane/kube-proxy.ts';
import { SystemExec } from '../dataplane/exec.ts';
import { NetlinkLinks } from '../dataplane/links.ts';
import { NetfilterApplier } from '../dataplane/netfilter.ts';
import { Logger } from '../observe/log.ts';
import { FileOwnership } from '../dataplane/ownership.ts';
import { parseDuration } from '../config/duration.ts';
import { isRoot, loadConfig, report, type IO } from './common.ts';

export async function cleanupCommand(args: { config?: string; drain?: string }, io: IO): Promise<number> {
  let drainSeconds = 0;
  if (args.drain !== undefined) {
    const d = parseDuration(args.drain);
    if (d === null || d < 0 || d > 24 * 3600) {
      io.stderr(
        `error --drain ${JSON.stringify(args.drain.slice(0, 40))} is not a duration from 0s to 24h (e.g. 5m)\n`,
      );
      return 2;
    }
    drainSeconds = d;
  }
  const config = await loadConfig(io, args.config);
  if (!config) return 1;
  if (!isRoot()) {
    report(io, [
      {
        code: Codes.NEEDS_PRIVILEGE,
        severity: 'error',
        message: 'kube-ipvs cleanup changes IPVS and network interfaces: it needs root',
      },
    ]);
    return 1;
  }
  let ipvs;
  try {
    ipvs = await NetlinkIpvs.open();
  } catch (e) {
    report(io, [{ code: Codes.KERNEL_UNAVAILABLE, severity: 'error', message: (e as Error).message }]);
    return 1;
  }
  const links = new NetlinkLinks();
  const owned = new FileOwnership(join(config.stateDirectory, 'owned.json'));
  if (owned.problem) report(io, [{ code: Codes.OWNERSHIP_RECORD_INVALID, severity: 'error', message: owned.problem }]);
  const exec = new SystemExec();
  // The way back to kube-proxy: in its ipvs mode it already serves from the same virtual servers and addresses.
  const kubeProxy = kubeProxyRunning();
  const sets = kubeProxy ? await exec.run('ipset', ['list', '-n']) : null;
  const leaveToKubeProxy = sets !== null && sets.code === 0 && sets.stdout.split('\n').includes('KUBE-CLUSTER-IP');
  if (leaveToKubeProxy)
    io.stdout(
      `kube-proxy runs here in ipvs mode (${kubeProxy}): its virtual servers and ${config.dummyInterface} addresses are left to it\n`,
    );
  const r = await cleanup(ipvs, links, owned, {
    dummyInterface: config.dummyInterface,
    excludeCIDRs: config.ipvs.excludeCIDRs,
    leaveToKubeProxy,
    ...(drainSeconds > 0
      ? {
          drain: {
            ms: drainSeconds * 1000,
            onWait: (n: number) =>
              io.stdout(`waiting up to ${args.drain} for ${n} connections through kube-ipvs' virtual servers to end\n`),
          },
        }
      : {}),
  });
  if (r.drained)
    io.stdout(
      r.drained.connections === 0
        ? `waited ${(r.drained.waitedMs / 1000).toFixed(1)} s for the connections through them to end\n`
        : r.drained.connections > 0
          ? `stopped waiting after ${(r.drained.waitedMs / 1000).toFixed(1)} s: ${r.drained.connections} connections are cut\n`
          : `could not count the connections through them: not waited\n`,
    );
  // Closed here; cli.ts lets the event loop turn once before exiting so the addon's handles finish closing.
  ipvs.close();
  links.close();
  io.stdout(
    `removed ${r.services.length} virtual services, ${r.addresses.length} addresses${r.interfaceRemoved ? `, interface ${config.dummyInterface}` : ''}\n`,
  );
  for (const e of r.errors) io.stderr(`error ${e}\n`);
  for (const id of r.leftAlone)
    io.stderr(
      `warning the ownership record lists ${id}, which is not on ${config.dummyInterface}, not a node address and not one of kube-ipvs' firewall marks: left alone\n`,
    );
  // Our iptables chains and jumps (both backends: whichever was used) and our ipsets.
  const nfErrors: string[] = [];
  for (const backend of ['nft', 'legacy'] as const) {
    const applier = new NetfilterApplier({ exec, log: new Logger({ sink: () => {} }), backend, families: [4, 6] });
    // A backend that does not work here holds nothing of ours and reports nothing.
    for (const e of await applier.cleanup()) nfErrors.push(`${e.op}: ${e.message}`);
  }
  io.stdout(`removed kube-ipvs iptables chains and ipsets\n`);
  for (const e of nfErrors) io.stderr(`error ${e}\n`);
  return r.errors.length === 0 && nfErrors.length === 0 ? 0 : 1;
}
