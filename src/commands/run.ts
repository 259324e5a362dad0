// `kube-ipvs run`: the daemon. With --dry-run it programs an in-memory kernel and prints what
// it would have done; with --once it does one full sync and exits.
import { hostname, release } from 'node:os';
import { join } from 'node:path';
import { Codes } from '../errors.ts';
import { Daemon, type DaemonDeps } from '../daemon.ts';
import { DUMP_READ_BYTES, NetlinkIpvs, type Ipvs } from '../dataplane/ipvs/client.ts';
import { FakeIpvs } from '../dataplane/ipvs/fake.ts';
import { FakeProber } from '../health/probers.ts';
import { ConntrackCleaner } from '../dataplane/conntrack.ts';
import { FakeExec, SystemExec, TimedExec, type Exec } from '../dataplane/exec.ts';
import { FakeLinks, NetlinkLinks } from '../dataplane/links.ts';
import { kubeProxyRunning, removeKubeProxyNetfilter } from '../dataplane/kube-proxy.ts';
import { detectBackend, NetfilterApplier } from '../dataplane/netfilter.ts';
import type { Family } from '../util/ip.ts';
import { FileOwnership, MemoryOwnership } from '../dataplane/ownership.ts';
import { NetlinkIpset } from '../dataplane/ipset-netlink.ts';
import { checkProcSysRoot, procSysctlAt, type SysctlWriter } from '../dataplane/sysctl.ts';
import { instrumentKernel } from '../observe/instrument.ts';
import { IpvsCollector } from '../observe/ipvs-collector.ts';
import { Logger } from '../observe/log.ts';
import { Metrics } from '../observe/metrics.ts';
import { healthHandler, listen, metricsHandler } from '../observe/server.ts';
import { ServiceHealthServers } from '../observe/service-health.ts';
import { selectNodePortAddresses } from '../plan/plan.ts';
import { formatTable } from '../plan/format.ts';
import { chooseNodeName } from './manifest-plan.ts';
import { ManifestSource } from '../sources/manifest-source.ts';
import type { Source } from '../sources/source.ts';
import { readManifests } from '../sources/manifests.ts';
import { isRoot, loadConfig, report, type IO } from './common.ts';
import { version } from '../version.ts';

export interface RunArgs {
  manifests?: string;
  kubeconfig?: string;
  node?: string;
  config?: string;
  dryRun: boolean;
  once: boolean;
  /** Where /proc/sys is writable (default /proc/sys). */
  procSys?: string;
}

/** Records sysctl writes instead of making them. */
class RecordingSysctl implements SysctlWriter {
  readonly writes: string[] = [];
  read() {
    return null;
  }
  write(path: string, value: string) {
    this.writes.push(`${path.replaceAll('/', '.')} = ${value}`);
  }
}

export async function runCommand(args: RunArgs, io: IO, signals: NodeJS.EventEmitter = process): Promise<number> {
  if (args.manifests && args.kubeconfig) {
    report(io, [
      { code: Codes.USAGE, severity: 'error', message: 'use either --manifests DIR or --kubeconfig FILE, not both' },
    ]);
    return 2;
  }
  const procSysWhy = args.procSys === undefined ? null : checkProcSysRoot(args.procSys);
  if (procSysWhy) {
    report(io, [
      { code: Codes.USAGE, severity: 'error', message: `--proc-sys ${JSON.stringify(args.procSys)}: ${procSysWhy}` },
    ]);
    return 2;
  }
  const inCluster = !args.manifests && !args.kubeconfig;
  if (inCluster && !process.env.KUBERNETES_SERVICE_HOST) {
    report(io, [
      {
        code: Codes.USAGE,
        severity: 'error',
        message: 'not in a cluster (KUBERNETES_SERVICE_HOST is unset): give --kubeconfig FILE or --manifests DIR',
      },
    ]);
    return 2;
  }
  const config = await loadConfig(io, args.config);
  if (!config) return 1;
  const format = args.dryRun
    ? 'text'
    : config.logging.format === 'auto'
      ? process.stderr.isTTY
        ? 'text'
        : 'json'
      : config.logging.format;
  const log = new Logger({
    format,
    level: config.logging.verbosity >= 4 ? 'debug' : 'info',
    sink: (l) => io.stderr(l + '\n'),
  });
  const nodeName = args.manifests
    ? chooseNodeName(await readManifests(args.manifests), config, args.node)
    : (args.node ?? (config.hostnameOverride.trim() || process.env.NODE_NAME || hostname()).toLowerCase());
  let source: Source;
  if (args.manifests) {
    // --once reads the folder once; the daemon follows it.
    source = new ManifestSource(args.manifests, { watch: !args.once });
  } else {
    // Loaded only when used: the client library is large, and the folder source does not need it.
    const { KubernetesSource, loadKubeConfig } = await import('../sources/kubernetes.ts');
    let kc;
    try {
      kc = loadKubeConfig(args.kubeconfig ?? (config.clientConnection.kubeconfig || undefined));
    } catch (e) {
      report(io, [
        {
          code: Codes.CONFIG_UNREADABLE,
          severity: 'error',
          file: args.kubeconfig,
          message: `cannot load the kubeconfig: ${(e as Error).message}`,
        },
      ]);
      return 1;
    }
    source = new KubernetesSource(kc, {
      nodeName,
      proxyName: config.serviceProxyName,
      log,
      qps: config.clientConnection.qps,
      burst: config.clientConnection.burst,
    });
  }

  let deps: DaemonDeps;
  const sysctl = new RecordingSysctl();
  if (args.dryRun) {
    deps = {
      // What it did is printed by --once only: a dry-run daemon keeps no record (it would grow with every sync).
      ipvs: new FakeIpvs({ recordOps: args.once }),
      links: new FakeLinks(),
      owned: new MemoryOwnership(),
      sysctl,
      log,
      kernelRelease: release(),
    };
  } else {
    if (!isRoot()) {
      report(io, [
        {
          code: Codes.NEEDS_PRIVILEGE,
          severity: 'error',
          message:
            'kube-ipvs run programs IPVS, a dummy interface and sysctls: it needs root (CAP_NET_ADMIN and write access to /proc/sys). Use --dry-run to see what it would do.',
        },
      ]);
      return 1;
    }
    let ipvs: Ipvs;
    try {
      ipvs = await NetlinkIpvs.open();
    } catch (e) {
      report(io, [
        {
          code: Codes.KERNEL_UNAVAILABLE,
          severity: 'error',
          message: `${(e as Error).message}. On a node: modprobe ip_vs (and ip_vs_rr, ip_vs_wrr, ip_vs_sh…); --dry-run works without it.`,
        },
      ]);
      return 1;
    }
    deps = {
      ipvs,
      links: new NetlinkLinks(),
      owned: new FileOwnership(join(config.stateDirectory, 'owned.json')),
      sysctl: procSysctlAt(args.procSys),
      log,
      kernelRelease: release(),
    };
  }

  // Kernel operations are counted on their way to the kernel (or the in-memory one).
  const metrics = new Metrics();
  // The iptables stage and conntrack run the system tools (recorded, not run, in a dry run).
  const recorded = args.dryRun ? new FakeExec({ record: args.once }) : null;
  const exec: Exec = new TimedExec(recorded ?? new SystemExec(), (tool, seconds, code, bytes) => {
    metrics.toolDuration.observe({ tool }, seconds);
    log.debug('tool ran', { tool, ms: Math.round(seconds * 1000), code, inputBytes: bytes });
  });
  const backend = args.dryRun ? 'nft' : await detectBackend(exec);
  const families: Family[] = [4];
  if (
    args.dryRun ||
    (await exec.run(`ip6tables-${backend}`, ['-w', '5', '-t', 'nat', '-L', 'POSTROUTING', '-n'])).code === 0
  )
    families.push(6);
  else log.warn('ip6tables does not work here: IPv6 Services get IPVS but no iptables rules', { backend });
  let ipset: NetlinkIpset | undefined;
  if (!args.dryRun) {
    try {
      ipset = new NetlinkIpset();
    } catch (e) {
      log.warn('no nfnetlink socket: ipset changes go through ipset restore', { error: (e as Error).message });
    }
  }
  deps.netfilter = new NetfilterApplier({ exec, log, metrics, backend, families, ...(ipset ? { ipset } : {}) });
  deps.conntrack = new ConntrackCleaner(exec, log, metrics);
  deps = {
    ...deps,
    ipvs: instrumentKernel(deps.ipvs, 'ipvs', metrics),
    links: instrumentKernel(deps.links, 'link', metrics),
    metrics,
  };
  let hcServers: ServiceHealthServers | null = null;
  deps.onHealthCheckTargets = (targets) => {
    hcServers
      ?.update(targets)
      .catch((e: unknown) => log.warn('healthCheckNodePort update failed', { error: (e as Error).message }));
  };
  // Scrapes read IPVS on a socket of their own: a scrape never waits behind the reconciler's dumps
  // (one dump per socket at a time) and reads in 64 KiB chunks (DUMP_READ_BYTES; see NetlinkIpvs readBufferBytes).
  // Health reads its counters there too. Not for --once, which serves no metrics and probes nothing.
  let scrapeIpvs = deps.ipvs;
  if (!args.dryRun && !args.once) {
    try {
      scrapeIpvs = instrumentKernel(await NetlinkIpvs.open({ readBufferBytes: DUMP_READ_BYTES }), 'ipvs', metrics);
    } catch (e) {
      log.warn("metrics: no socket of their own for IPVS scrapes; sharing the reconciler's", {
        error: (e as Error).message,
      });
    }
  }
  deps.healthCounters = scrapeIpvs;
  // Destination writes alongside a running sync (an endpoint change during a full resync, health's
  // weight changes) on a socket of their own too: their dumps do not queue behind the resync's.
  let asideIpvs = deps.ipvs;
  if (!args.dryRun && !args.once) {
    try {
      asideIpvs = instrumentKernel(await NetlinkIpvs.open(), 'ipvs', metrics);
    } catch (e) {
      log.warn("no socket of their own for writes alongside a sync; sharing the reconciler's", {
        error: (e as Error).message,
      });
    }
  }
  deps.asideIpvs = asideIpvs;
  // kube-proxy's leftovers go once it has stopped (config kubeProxyLeftovers; a one-off run never touches them).
  if (!args.dryRun && !args.once)
    deps.kubeProxy = { running: () => kubeProxyRunning(), removeNetfilter: () => removeKubeProxyNetfilter(exec) };
  // A dry run sends no packet: its health probes all answer healthy, in memory.
  if (args.dryRun) deps.prober = new FakeProber();
  const daemon = new Daemon({ source, config, nodeName }, deps);
  new IpvsCollector({
    ipvs: scrapeIpvs,
    labels: deps.owned.labels,
    realServerLimit: config.metrics.realServerSeriesLimit,
    plannedRealServers: () => daemon.planner.realServerCounts(),
    log,
  }).register(metrics);
  if (args.once) {
    const r = await daemon.syncOnce();
    if (args.dryRun) {
      io.stdout(formatTable(daemon.planner.snapshot()));
      io.stdout(`\nDry run: what kube-ipvs would do to an empty node (${r.operations} kernel operations):\n`);
      for (const s of sysctl.writes) io.stdout(`  sysctl ${s}\n`);
      const links = deps.links as FakeLinks;
      for (const [name, l] of links.links)
        io.stdout(
          `  ip link add ${name} type dummy (down, NOARP); ${l.addresses.size} addresses: ${[...l.addresses].join(' ')}\n`,
        );
      // Grouped by virtual service (the operations ran concurrently across services).
      const ops = [...(deps.ipvs as FakeIpvs).ops].sort((a, b) => (a.service ?? '').localeCompare(b.service ?? ''));
      for (const op of ops)
        io.stdout(
          `  ${op.op} ${op.service ?? ''}${op.destination ? ` -> ${op.destination}` : ''}${op.weight !== undefined ? ` weight ${op.weight}` : ''}\n`,
        );
      for (const c of (recorded?.calls ?? []).filter((x) => x.input !== undefined)) {
        const lines = (c.input ?? '').split('\n').filter((l) => l.startsWith('add ') || l.startsWith('-A ')).length;
        io.stdout(
          `  ${c.cmd} ${c.args.join(' ')}${c.input !== undefined ? ` (${lines} ${c.cmd === 'ipset' ? 'entries' : 'rules'})` : ''}\n`,
        );
      }
    }
    // Closed here; cli.ts lets the event loop turn once before exiting so the addon's handles finish closing.
    if (scrapeIpvs !== deps.ipvs) scrapeIpvs.close();
    deps.ipvs.close();
    deps.links.close();
    ipset?.close();
    return r.errors.length === 0 ? 0 : 1;
  }

  // Health first: probes answer (healthy while starting, as kube-proxy) during the initial list.
  const healthServer = await listen(config.healthzBindAddress, 'healthz', healthHandler(daemon), log);
  const metricsServer = await listen(config.metricsBindAddress, 'metrics', metricsHandler(daemon, log), log);
  hcServers = new ServiceHealthServers({
    health: daemon.proxyHealth,
    log,
    metrics,
    // kube-proxy listens on every address unless nodePortAddresses narrows it.
    addresses: () =>
      config.nodePortAddresses.length === 0 ? [] : selectNodePortAddresses(daemon.model.node, config.nodePortAddresses),
  });
  await daemon.start();
  await hcServers.update(daemon.healthCheckTargets());
  log.info('kube-ipvs running', {
    version: version(),
    node: nodeName,
    source: args.manifests
      ? `folder ${args.manifests}`
      : args.kubeconfig
        ? `kubeconfig ${args.kubeconfig}`
        : 'in-cluster',
    dryRun: args.dryRun,
  });
  await new Promise<void>((resolve) => {
    const done = (sig: string) => {
      log.info('stopping; the kernel state stays as it is', { signal: sig });
      resolve();
    };
    signals.once('SIGTERM', () => done('SIGTERM'));
    signals.once('SIGINT', () => done('SIGINT'));
  });
  daemon.stop();
  if (scrapeIpvs !== deps.ipvs) scrapeIpvs.close();
  if (asideIpvs !== deps.ipvs) asideIpvs.close();
  deps.ipvs.close();
  deps.links.close();
  ipset?.close();
  await hcServers.close();
  for (const s of [healthServer, metricsServer]) {
    s?.close();
    s?.closeAllConnections();
  }
  return 0;
}
