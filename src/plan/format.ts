// The human view of a plan: like `ipvsadm -Ln`, with the Service and kind each virtual server serves.
import { hostPort } from '../util/ip.ts';
import type { NodePlan } from './types.ts';

export function formatTable(plan: NodePlan): string {
  const lines: string[] = [];
  lines.push(
    `IP Virtual Server plan for node ${plan.node}: ${plan.virtualServers.length} virtual servers, ${plan.addresses.length} addresses on the dummy interface`,
  );
  lines.push('Prot LocalAddress:Port Scheduler Flags                      Service [port] kind');
  lines.push('  -> RemoteAddress:Port           Forward Weight');
  const w1 = Math.max(22, ...plan.virtualServers.map((v) => hostPort(v.address, v.port).length + 1));
  for (const vs of plan.virtualServers) {
    const flags = vs.persistenceTimeoutSeconds > 0 ? `persistent ${vs.persistenceTimeoutSeconds}` : '';
    const where = vs.fwmark !== undefined ? `0x${vs.fwmark.toString(16)}` : hostPort(vs.address, vs.port);
    const head = `${(vs.fwmark !== undefined ? 'FWM' : vs.protocol).padEnd(4)} ${where.padEnd(w1)} ${vs.scheduler.padEnd(5)} ${flags.padEnd(16)}`;
    lines.push(
      `${head} ${vs.service}${vs.portName ? ` [${vs.portName}]` : ''} ${vs.kind}${vs.fwmark !== undefined ? ` (in-cluster traffic to ${vs.protocol} ${hostPort(vs.address, vs.port)})` : ''}`,
    );
    if (vs.realServers.length === 0) lines.push('  -> (no endpoints: traffic is dropped)');
    for (const rs of vs.realServers)
      lines.push(`  -> ${hostPort(rs.address, rs.port).padEnd(29)} Masq    ${rs.weight}`);
  }
  return lines.join('\n') + '\n';
}

/** The contract form (DESIGN.md, "Contracts"): one JSON object. */
export function formatJSON(plan: NodePlan): string {
  return JSON.stringify(plan, null, 2) + '\n';
}
