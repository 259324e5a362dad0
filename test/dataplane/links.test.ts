// The address dump of the dummy interface's rtnetlink client, decoded by kube-ipvs (not the netlink package): the
// message layout, what the kernel may answer, and that tens of thousands of addresses do not hold the event loop.
// Against a real kernel: test/lab/cases/ipvs-client.lab.ts.
import t from 'tap';
import { FlagsGet, type RtNetlinkSocket } from 'netlink';
import { decodeAddressMessage, LinkError, NetlinkLinks } from '../../src/dataplane/links.ts';
import { attr } from '../../src/dataplane/nlattr.ts';
import { countTurns } from '../support/turns.ts';

const RTM_NEWADDR = 20;
const RTM_GETADDR = 22;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_LABEL = 3;

/** An RTM_NEWADDR payload: ifaddrmsg, then the attributes. */
function addrMsg(family: number, index: number, attrs: Buffer[]): Buffer {
  const h = Buffer.alloc(8);
  h[0] = family;
  h[1] = family === 2 ? 32 : 128;
  h.writeUInt32LE(index, 4);
  return Buffer.concat([h, ...attrs]);
}
const v4 = (s: string) => Buffer.from(s.split('.').map(Number));

t.test('an address message: the interface index and the address, IFA_LOCAL first', async (t) => {
  t.same(decodeAddressMessage(addrMsg(2, 3, [attr(IFA_ADDRESS, v4('10.0.0.9')), attr(IFA_LOCAL, v4('10.0.0.1'))])), {
    index: 3,
    address: '10.0.0.1',
  });
  const v6 = Buffer.alloc(16);
  v6[0] = 0xfd;
  v6[15] = 1;
  t.same(
    decodeAddressMessage(addrMsg(10, 0x80000001, [attr(IFA_ADDRESS, v6), attr(IFA_LABEL, Buffer.from('x\0'))])),
    { index: 0x80000001, address: 'fd00::1' },
    'IPv6, canonical, an index above 2^31 read unsigned',
  );
  t.equal(decodeAddressMessage(addrMsg(2, 3, [attr(IFA_LABEL, Buffer.from('lo\0'))])), null, 'no address: null');
  t.equal(decodeAddressMessage(addrMsg(2, 3, [attr(IFA_LOCAL, Buffer.from([10, 0, 0]))])), null, '3 bytes: null');
  t.throws(() => decodeAddressMessage(Buffer.alloc(7)), /of 7 bytes/, 'shorter than ifaddrmsg');
  const bad = addrMsg(2, 3, [attr(IFA_LOCAL, v4('10.0.0.1'))]);
  bad.writeUInt16LE(40, 8);
  t.throws(() => decodeAddressMessage(bad), /invalid attribute length 40/, 'an attribute past the end');
});

/** A stand-in for the rtnetlink socket: answers an address dump with `msgs` (or fails with `error`). */
function rtAnswering(msgs: { type: number; data: Buffer }[], error?: Error) {
  const asked: { type: number; data: Buffer; flags: number }[] = [];
  const rt = {
    socket: {
      request: async (type: number, data: Uint8Array[], options: { flags?: number }) => {
        asked.push({ type, data: Buffer.concat(data), flags: options.flags ?? 0 });
        if (error) throw error;
        return [msgs.map((m, i) => ({ ...m, flags: 2, seq: 1, port: i })), {}];
      },
    },
  } as unknown as RtNetlinkSocket;
  return { rt, asked };
}

t.test('every address by interface, decoded in pieces (the loop turns), the dump asked for as one', async (t) => {
  const n = 10_000;
  const msgs = [
    { type: RTM_NEWADDR, data: addrMsg(2, 1, [attr(IFA_LOCAL, v4('127.0.0.1'))]) },
    { type: 24 /* RTM_NEWROUTE: not an address */, data: Buffer.alloc(12) },
    ...Array.from({ length: n }, (_, i) => ({
      type: RTM_NEWADDR,
      data: addrMsg(2, 7, [attr(IFA_ADDRESS, v4(`10.96.${i >> 8}.${i & 255}`))]),
    })),
  ];
  const { rt, asked } = rtAnswering(msgs);
  const links = new NetlinkLinks({ rt });
  const loop = countTurns();
  const all = await links.allAddresses();
  loop.stop();
  t.same(asked, [{ type: RTM_GETADDR, data: Buffer.alloc(8), flags: FlagsGet.DUMP }], 'one dump of every family');
  t.same(all.get(1), ['127.0.0.1']);
  t.equal(all.get(7)?.length, n);
  t.equal(all.get(7)?.at(-1), '10.96.39.15');
  t.same([...all.keys()], [1, 7], 'nothing from the message that is not an address');
  t.ok(loop.turns >= 4, `the loop turned while they were decoded (${loop.turns} times)`);
  t.same(await links.addresses(7).then((a) => a.length), n, 'addresses(index) reads the same dump');
});

t.test('a reply that does not parse, or a refused dump, is a LinkError', async (t) => {
  const bad = new NetlinkLinks({ rt: rtAnswering([{ type: RTM_NEWADDR, data: Buffer.alloc(3) }]).rt });
  await t.rejects(bad.allAddresses(), { name: 'LinkError', code: 'EBADMSG', message: /list addresses.*3 bytes/ });
  const refused = new NetlinkLinks({ rt: rtAnswering([], new Error('Request rejected: EPERM')).rt });
  const e = await refused.allAddresses().catch((x: unknown) => x);
  t.ok(e instanceof LinkError && e.code === 'EPERM', `EPERM (${String(e)})`);
});
