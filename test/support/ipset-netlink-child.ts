// Applies ipset ops (JSON on stdin) over nfnetlink from the network namespace it runs in, and
// prints the failures as JSON: a netlink socket belongs to its creator's namespace, so the tests
// run this with `ip netns exec`. Input {bulk: [{set, type, entries}]}: each through addMany, and
// the answers (null or why not) printed in order.
import { NetlinkIpset, type IpsetType } from '../../src/dataplane/ipset-netlink.ts';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const w = new NetlinkIpset();
const parsed = JSON.parse(input) as unknown;
if (parsed && typeof parsed === 'object' && 'bulk' in parsed) {
  const out: (string | null)[] = [];
  for (const b of (parsed as { bulk: { set: string; type: IpsetType; entries: string[] }[] }).bulk)
    out.push(await w.addMany(b.set, b.type, b.entries));
  process.stdout.write(JSON.stringify(out));
} else {
  process.stdout.write(JSON.stringify(await w.apply(parsed as Parameters<NetlinkIpset['apply']>[0])));
}
w.close();
