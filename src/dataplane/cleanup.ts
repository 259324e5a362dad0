// `kube-ipvs cleanup`: removes what kube-ipvs owns — its virtual services, the addresses it
// added, its dummy interface once empty, its ownership record — and nothing else.
import { cidrContains, parseCIDR } from '../util/ip.ts';
import type { Ipvs } from './ipvs/client.ts';
import { serviceId, type IpvsService } from './ipvs/types.ts';
import type { Links } from './links.ts';
import type { OwnershipStore } from './ownership.ts';
import { inFwmarkRange } from '../plan/plan.ts';

export interface CleanupResult {
  services: string[];
  addresses: string[];
  interfaceRemoved: boolean;
  errors: string[];
  /** Recorded as ours but of no shape kube-ipvs makes off its interface: not touched. */
  leftAlone: string[];
  /** With `drain`: how long it waited, and the connections still there when it stopped waiting. */
  drained: { waitedMs: number; connections: number } | null;
}

export interface DrainOptions {
  ms: number;
  /** Told once, when there are connections to wait for. */
  onWait?: (connections: number) => void;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

export async function cleanup(
  ipvs: Ipvs,
  links: Links,
  owned: OwnershipStore,
  opts: {
    dummyInterface: string;
    excludeCIDRs?: string[];
    /**
     * kube-proxy in ipvs mode runs here (the way back): the virtual servers and dummy-interface addresses are its
     * too now, so only our firewall-mark virtual servers (it makes none) go, with the ownership record.
     */
    leaveToKubeProxy?: boolean;
    /**
     * Before deleting, wait (up to `ms`) until the virtual servers to delete carry no established connection:
     * deleting one drops the connections still made through it (the kernel stops forwarding to a deleted
     * service's destinations), while new ones already go elsewhere (kube-proxy's rules, on the way back to it).
     */
    drain?: DrainOptions;
  },
): Promise<CleanupResult> {
  const res: CleanupResult = {
    services: [],
    addresses: [],
    interfaceRemoved: false,
    errors: [],
    leftAlone: [],
    drained: null,
  };
  const exclude = (opts.excludeCIDRs ?? []).flatMap((c) => parseCIDR(c) ?? []);
  const index = await links.find(opts.dummyInterface);
  const lo = await links.find('lo');
  const all = await links.allAddresses();
  const ifAddrs = new Set(index === null ? [] : (all.get(index) ?? []));
  // The node's own addresses (not loopback, not ours): where kube-ipvs puts NodePorts.
  const nodeAddrs = new Set([...all].filter(([i]) => i !== index && i !== lo).flatMap(([, a]) => a));
  const doomed: IpvsService[] = [];
  for (const s of await ipvs.services()) {
    const id = serviceId(s);
    if (s.address !== undefined && exclude.some((c) => cidrContains(c, s.address))) continue;
    const onOurInterface = s.address !== undefined && ifAddrs.has(s.address);
    // The record alone is not enough (it may be corrupt or another's): a recorded virtual server
    // off our interface must also be of a shape kube-ipvs makes there.
    const plausible =
      s.fwmark !== undefined ? inFwmarkRange(s.fwmark) : s.address !== undefined && nodeAddrs.has(s.address);
    if (opts.leaveToKubeProxy && s.fwmark === undefined) continue;
    if (!onOurInterface && !(owned.services.has(id) && plausible)) {
      if (owned.services.has(id)) res.leftAlone.push(id);
      continue;
    }
    doomed.push(s);
  }
  if (opts.drain && doomed.length > 0) res.drained = await drain(ipvs, doomed, opts.drain);
  for (const s of doomed) {
    const id = serviceId(s);
    try {
      await ipvs.deleteService(s);
      res.services.push(id);
      owned.services.delete(id);
      owned.labels.delete(id);
    } catch (e) {
      res.errors.push((e as Error).message);
    }
  }
  owned.services.clear(); // records of services already gone
  owned.labels.clear();
  if (index !== null && !opts.leaveToKubeProxy) {
    for (const a of ifAddrs) {
      if (!owned.addresses.has(a)) continue;
      try {
        await links.deleteAddress(index, a);
        res.addresses.push(a);
        ifAddrs.delete(a);
      } catch (e) {
        res.errors.push((e as Error).message);
      }
    }
    if (ifAddrs.size === 0) {
      await links.deleteLink(index);
      res.interfaceRemoved = true;
    }
  }
  owned.addresses.clear();
  owned.save();
  return res;
}

/**
 * Waits until `services` carry no established connection or `ms` have passed; a listing that fails ends it.
 * Closing ones (the kernel's inactive count: FIN_WAIT, TIME_WAIT...) are not waited for.
 */
async function drain(
  ipvs: Ipvs,
  services: IpvsService[],
  o: DrainOptions,
): Promise<{ waitedMs: number; connections: number }> {
  const now = o.now ?? Date.now;
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const start = now();
  let told = false;
  for (;;) {
    let connections = 0;
    try {
      for (const s of services) for (const d of await ipvs.destinations(s)) connections += d.activeConns ?? 0;
    } catch {
      return { waitedMs: now() - start, connections: -1 };
    }
    if (connections === 0 || now() - start >= o.ms) return { waitedMs: now() - start, connections };
    if (!told) o.onWait?.(connections);
    told = true;
    await sleep(1000);
  }
}
