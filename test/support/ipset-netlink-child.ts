// Applies ipset ops (JSON on stdin) over nfnetlink from the network namespace it runs in, and
// prints the failures as JSON: a netlink socket belongs to its creator's namespace, so the tests
// run this with `ip netns exec`.
import { NetlinkIpset } from '../../src/dataplane/ipset-netlink.ts';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const w = new NetlinkIpset();
const failed = await w.apply(JSON.parse(input));
w.close();
process.stdout.write(JSON.stringify(failed));
