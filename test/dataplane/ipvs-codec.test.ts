// Byte-level tests of the IPVS codec: the exact bytes ipvsadm's libipvs would put on the wire,
// and replies as the kernel builds them (16-byte addresses, no NLA_F_NESTED, 64-bit stats).
import t from 'tap';
import {
  decodeDestination,
  decodeDestinationCounters,
  decodeGenl,
  decodeInfo,
  decodeService,
  decodeServiceReply,
  decodeServiceCounters,
  decodeTimeouts,
  destinationAttr,
  encodeRequest,
  serviceAttr,
  serviceKeyAttr,
  timeoutAttrs,
} from '../../src/dataplane/ipvs/codec.ts';
import { Cmd, CmdAttr, FwdMethod, SvcFlag } from '../../src/dataplane/ipvs/constants.ts';
import { destinationCountersOf, serviceCountersOf, type IpvsService } from '../../src/dataplane/ipvs/types.ts';
import { parseIP } from '../../src/util/ip.ts';

// A tiny TLV writer for building expected bytes by hand, independent of the codec.
const tlv = (type: number, payload: Buffer) => {
  const len = 4 + payload.length;
  const h = Buffer.alloc(4);
  h.writeUInt16LE(len, 0);
  h.writeUInt16LE(type, 2);
  const pad = Buffer.alloc((4 - (len % 4)) % 4);
  return Buffer.concat([h, payload, pad]);
};
const le16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const be16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};
const le32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};
const le64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
const addr = (bytes: number[]) => {
  const b = Buffer.alloc(16);
  b.set(bytes);
  return b;
};

const svc: IpvsService = {
  family: 4,
  protocol: 'TCP',
  address: '10.96.0.10',
  port: 53,
  scheduler: 'rr',
  flags: SvcFlag.PERSISTENT,
  timeout: 10800,
  netmask: 0xffffffff,
};

t.test('NEW_SERVICE for an IPv4 TCP service, byte for byte', async (t) => {
  const got = encodeRequest(Cmd.NEW_SERVICE, [serviceAttr(svc)]);
  const inner = Buffer.concat([
    tlv(1, le16(2)), // AF_INET
    tlv(2, le16(6)), // TCP
    tlv(3, addr([10, 96, 0, 10])),
    tlv(4, be16(53)), // port in network order
    tlv(6, Buffer.from('rr\0')),
    tlv(7, Buffer.concat([le32(1), le32(0xffffffff)])), // flags, mask
    tlv(8, le32(10800)),
    tlv(9, le32(0xffffffff)),
  ]);
  const want = Buffer.concat([Buffer.from([Cmd.NEW_SERVICE, 1, 0, 0]), tlv(CmdAttr.SERVICE, inner)]);
  t.same(got.toString('hex'), want.toString('hex'));
});

t.test('destination commands carry the service key and the destination', async (t) => {
  const got = encodeRequest(Cmd.NEW_DEST, [
    serviceKeyAttr({ family: 6, protocol: 'UDP', address: 'fd00::a', port: 53 }),
    destinationAttr({
      family: 6,
      address: 'fd00:244::5',
      port: 5353,
      fwdMethod: FwdMethod.MASQ,
      weight: 3,
      upperThreshold: 0,
      lowerThreshold: 0,
    }),
  ]);
  const key = Buffer.concat([
    tlv(1, le16(10)),
    tlv(2, le16(17)),
    tlv(3, addr([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a])),
    tlv(4, be16(53)),
  ]);
  const dest = Buffer.concat([
    tlv(1, addr([0xfd, 0, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5])),
    tlv(2, be16(5353)),
    tlv(3, le32(0)),
    tlv(4, le32(3)),
    tlv(5, le32(0)),
    tlv(6, le32(0)),
    tlv(11, le16(10)),
  ]);
  const want = Buffer.concat([Buffer.from([Cmd.NEW_DEST, 1, 0, 0]), tlv(1, key), tlv(2, dest)]);
  t.same(got.toString('hex'), want.toString('hex'));
});

t.test('fwmark services and config timeouts', async (t) => {
  const fw = encodeRequest(Cmd.DEL_SERVICE, [serviceKeyAttr({ family: 4, fwmark: 0x4000 })]);
  t.same(
    fw.toString('hex'),
    Buffer.concat([
      Buffer.from([Cmd.DEL_SERVICE, 1, 0, 0]),
      tlv(1, Buffer.concat([tlv(1, le16(2)), tlv(5, le32(0x4000))])),
    ]).toString('hex'),
  );
  const to = encodeRequest(Cmd.SET_CONFIG, timeoutAttrs({ tcp: 900, tcpFin: 120, udp: 300 }));
  t.same(
    to.toString('hex'),
    Buffer.concat([
      Buffer.from([Cmd.SET_CONFIG, 1, 0, 0]),
      tlv(4, le32(900)),
      tlv(5, le32(120)),
      tlv(6, le32(300)),
    ]).toString('hex'),
  );
  t.throws(
    () => serviceKeyAttr({ family: 4, protocol: 'TCP', address: 'fd00::1', port: 1 }),
    { name: 'CodecError' },
    'family mismatch refused',
  );
});

t.test('decode a kernel service reply with 64-bit stats and mh flags', async (t) => {
  const stats64 = Buffer.concat([
    tlv(1, le64(7n)),
    tlv(2, le64(100n)),
    tlv(3, le64(90n)),
    tlv(4, le64(2n ** 40n)),
    tlv(5, le64(5000n)),
    tlv(6, le64(1n)),
  ]);
  const inner = Buffer.concat([
    tlv(1, le16(10)),
    tlv(2, le16(132)),
    tlv(3, addr([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])),
    tlv(4, be16(3868)),
    tlv(6, Buffer.from('mh\0')),
    tlv(7, Buffer.concat([le32(SvcFlag.HASHED | SvcFlag.SCHED1 | SvcFlag.SCHED2), le32(0xffffffff)])),
    tlv(8, le32(0)),
    tlv(9, le32(128)),
    tlv(10, Buffer.concat([tlv(1, le32(7))])),
    tlv(12, stats64),
  ]);
  const msg = decodeGenl(Buffer.concat([Buffer.from([Cmd.NEW_SERVICE, 1, 0, 0]), tlv(CmdAttr.SERVICE, inner)]));
  t.equal(msg.cmd, Cmd.NEW_SERVICE);
  const s = decodeService(msg.attrs.get(CmdAttr.SERVICE)!);
  t.same(
    { ...s, stats: undefined },
    {
      family: 6,
      protocol: 'SCTP',
      address: '2001:db8::1',
      port: 3868,
      scheduler: 'mh',
      flags: 0x1a,
      timeout: 0,
      netmask: 128,
      peName: '',
      stats: undefined,
    },
  );
  t.equal(s.stats?.conns, 7n);
  t.equal(s.stats?.inBytes, 2n ** 40n, '64-bit byte counters survive');
  t.equal(s.stats?.cps, 1n);
});

t.test('decode a destination with connection counts; family from the service when absent', async (t) => {
  const inner = Buffer.concat([
    tlv(1, addr([10, 244, 1, 5])),
    tlv(2, be16(8080)),
    tlv(3, le32(FwdMethod.MASQ)),
    tlv(4, le32(0)),
    tlv(5, le32(0)),
    tlv(6, le32(0)),
    tlv(7, le32(4)),
    tlv(8, le32(9)),
    tlv(9, le32(2)),
    tlv(10, Buffer.concat([tlv(1, le32(13)), tlv(4, le64(1234n))])),
  ]);
  const d = decodeDestination(inner, 4);
  t.same(
    { ...d, stats: undefined },
    {
      family: 4,
      address: '10.244.1.5',
      port: 8080,
      fwdMethod: 0,
      weight: 0,
      upperThreshold: 0,
      lowerThreshold: 0,
      activeConns: 4,
      inactiveConns: 9,
      persistConns: 2,
      stats: undefined,
    },
  );
  t.equal(d.stats?.conns, 13n, '32-bit stats read when 64-bit ones are absent');
  t.equal(d.stats?.inBytes, 1234n);
  // What a sync reads: the same without the counters (the connection counts stay: a drain decides on them).
  const bare = decodeDestination(inner, 4, false);
  t.notOk('stats' in bare, 'no counters decoded');
  const { stats: _stats, ...rest } = d;
  t.same(bare, rest, 'everything else as the full decode');
  t.equal(bare.activeConns, 4);
  // u32 values with the top bit set read unsigned (the kernel's thresholds and counts are u32).
  const high = Buffer.concat([tlv(1, addr([10, 244, 1, 5])), tlv(2, be16(8080)), tlv(6, le32(0xfffffffe))]);
  t.equal(decodeDestination(high, 4, false).lowerThreshold, 0xfffffffe, 'a u32 above 2^31 stays positive');
});

t.test('info and config replies', async (t) => {
  const info = decodeGenl(
    Buffer.concat([Buffer.from([Cmd.SET_INFO, 1, 0, 0]), tlv(1, le32(0x010201)), tlv(2, le32(4096))]),
  );
  t.same(decodeInfo(info), { version: '1.2.1', connTableSize: 4096 });
  const cfg = decodeGenl(
    Buffer.concat([Buffer.from([Cmd.SET_CONFIG, 1, 0, 0]), tlv(4, le32(900)), tlv(5, le32(120)), tlv(6, le32(300))]),
  );
  t.same(decodeTimeouts(cfg), { tcp: 900, tcpFin: 120, udp: 300 });
  t.throws(() => decodeGenl(Buffer.from([1, 1])), { name: 'CodecError' });
  t.throws(() => decodeService(tlv(1, le16(99))), { name: 'CodecError' }, 'unknown family refused');
});

// The scrape's reads: keys and counters straight from the reply, as numbers.
const reply = (cmd: number, attrType: number, inner: Buffer) =>
  Buffer.concat([Buffer.from([cmd, 1, 0, 0]), tlv(attrType, inner)]);

t.test('service counters: the same key and counters as the full decode, ids as serviceId', async (t) => {
  const stats64 = Buffer.concat([
    tlv(1, le64(7n)),
    tlv(2, le64(100n)),
    tlv(3, le64(90n)),
    tlv(4, le64(2n ** 40n + 3n)),
    tlv(5, le64(5000n)),
    tlv(6, le64(1n)),
  ]);
  const stats32 = Buffer.concat([
    tlv(1, le32(8)),
    tlv(2, le32(11)),
    tlv(3, le32(12)),
    tlv(4, le64(13n)),
    tlv(5, le64(14n)),
  ]);
  const cases: [string, Buffer, string][] = [
    [
      'IPv4 TCP, 64-bit stats',
      Buffer.concat([
        tlv(1, le16(2)),
        tlv(2, le16(6)),
        tlv(3, addr([10, 96, 0, 1])),
        tlv(4, be16(80)),
        tlv(6, Buffer.from('rr\0')),
        tlv(10, stats32),
        tlv(12, stats64),
      ]),
      'TCP/10.96.0.1:80',
    ],
    [
      'IPv6 UDP, 32-bit stats only',
      Buffer.concat([
        tlv(1, le16(10)),
        tlv(2, le16(17)),
        tlv(3, addr([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a])),
        tlv(4, be16(53)),
        tlv(10, stats32),
      ]),
      'UDP/[fd00::a]:53',
    ],
    [
      'firewall mark, no stats',
      Buffer.concat([tlv(1, le16(2)), tlv(5, le32(0x100042)), tlv(6, Buffer.from('rr\0'))]),
      'FWM/1048642',
    ],
    ['IPv6 firewall mark', Buffer.concat([tlv(1, le16(10)), tlv(5, le32(7)), tlv(12, stats64)]), 'FWM/7/v6'],
  ];
  for (const [name, inner, id] of cases) {
    const p = reply(Cmd.NEW_SERVICE, CmdAttr.SERVICE, inner);
    const c = decodeServiceCounters(p);
    t.equal(c?.id, id, `${name}: id`);
    t.same(
      c,
      serviceCountersOf(decodeService(decodeGenl(p).attrs.get(CmdAttr.SERVICE)!)),
      `${name}: as the full decode`,
    );
    t.same(
      decodeServiceReply(p),
      decodeService(decodeGenl(p).attrs.get(CmdAttr.SERVICE)!),
      `${name}: the reply decoded in place, as through the attribute map`,
    );
    const bare = decodeServiceReply(p, false)!;
    t.notOk('stats' in bare, `${name}: without counters when not asked for`);
    t.same({ ...bare, stats: undefined }, { ...decodeServiceReply(p)!, stats: undefined });
  }
  t.equal(decodeServiceReply(Buffer.from([Cmd.NEW_SERVICE, 1, 0, 0])), null, 'a reply without a service');
  t.throws(() => decodeServiceReply(Buffer.from([1])), { name: 'CodecError' });
  const big = decodeServiceCounters(reply(Cmd.NEW_SERVICE, CmdAttr.SERVICE, cases[0]![1]))!;
  t.equal(big.inBytes, 2 ** 40 + 3, 'counters above 32 bits read whole');
  t.same(
    [big.conns, big.inPkts, big.outPkts, big.outBytes],
    [7, 100, 90, 5000],
    '64-bit stats preferred over 32-bit ones',
  );
  t.same(
    decodeServiceCounters(reply(Cmd.NEW_SERVICE, CmdAttr.SERVICE, cases[2]![1])),
    { family: 4, fwmark: 0x100042, id: 'FWM/1048642', conns: 0, inPkts: 0, outPkts: 0, inBytes: 0, outBytes: 0 },
    'no stats: zeros',
  );
  t.equal(decodeServiceCounters(Buffer.from([Cmd.NEW_SERVICE, 1, 0, 0])), null, 'a reply without a service');
  const broken = reply(Cmd.NEW_SERVICE, CmdAttr.SERVICE, cases[0]![1]);
  broken.writeUInt16LE(200, 8); // the first nested attribute claims more bytes than there are
  t.throws(
    () => decodeServiceCounters(broken),
    { name: 'CodecError' },
    'a malformed attribute is an error, not a misread',
  );
});

t.test('destination counters: id, state and counters; family from the service when absent', async (t) => {
  const inner = Buffer.concat([
    tlv(1, addr([10, 244, 1, 5])),
    tlv(2, be16(8080)),
    tlv(3, le32(FwdMethod.MASQ)),
    tlv(4, le32(0)),
    tlv(7, le32(4)),
    tlv(8, le32(9)),
    tlv(10, Buffer.concat([tlv(1, le32(13)), tlv(4, le64(1234n))])),
  ]);
  const p = reply(Cmd.NEW_DEST, CmdAttr.DEST, inner);
  const c = decodeDestinationCounters(p, 4);
  t.same(c, {
    id: '10.244.1.5:8080',
    address: '10.244.1.5',
    port: 8080,
    weight: 0,
    activeConns: 4,
    inactiveConns: 9,
    conns: 13,
    inPkts: 0,
    outPkts: 0,
    inBytes: 1234,
    outBytes: 0,
  });
  t.same(c, destinationCountersOf(decodeDestination(decodeGenl(p).attrs.get(CmdAttr.DEST)!, 4)), 'as the full decode');
  const v6 = reply(
    Cmd.NEW_DEST,
    CmdAttr.DEST,
    Buffer.concat([
      tlv(1, addr([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11])),
      tlv(2, be16(80)),
      tlv(11, le16(10)),
    ]),
  );
  t.equal(
    decodeDestinationCounters(v6, 4)?.id,
    '[fd00::11]:80',
    'the destination family attribute wins over the service family',
  );
  t.equal(decodeDestinationCounters(Buffer.from([Cmd.NEW_DEST, 1, 0, 0]), 4), null);
});

t.test('destinationAttr writes the same bytes as nesting each attribute, for any values', async (t) => {
  const { attr, nest } = await import('../../src/dataplane/nlattr.ts');
  const reference = (d: Parameters<typeof destinationAttr>[0]) =>
    nest(CmdAttr.DEST, [
      attr(1, Buffer.from([...parseIP(d.address)!.bytes, ...new Array<number>(16).fill(0)].slice(0, 16))),
      attr(2, be16(d.port)),
      attr(3, le32(d.fwdMethod)),
      attr(4, le32(d.weight)),
      attr(5, le32(d.upperThreshold)),
      attr(6, le32(d.lowerThreshold)),
      attr(11, le16(d.family === 4 ? 2 : 10)),
    ]);
  let seed = 11;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  let differ = 0;
  for (let i = 0; i < 300; i++) {
    const v6 = rnd(3) === 0;
    const d: Parameters<typeof destinationAttr>[0] = {
      family: v6 ? 6 : 4,
      address: v6
        ? `fd00:${rnd(65536).toString(16)}::${rnd(65536).toString(16)}`
        : `10.${rnd(256)}.${rnd(256)}.${rnd(256)}`,
      port: rnd(65536),
      fwdMethod: rnd(5),
      weight: rnd(2 ** 31),
      upperThreshold: rnd(2 ** 31),
      lowerThreshold: rnd(2 ** 31),
    };
    if (destinationAttr(d).toString('hex') !== reference(d).toString('hex')) differ++;
  }
  t.equal(differ, 0, '300 random destinations, byte for byte');
});

t.test("a service key's cached encoding holds only its own bytes, not a slice of Node's buffer pool", async (t) => {
  const k = { family: 4 as const, protocol: 'TCP' as const, address: '10.96.0.10', port: 53 };
  const a = serviceKeyAttr(k);
  t.equal(serviceKeyAttr(k), a, 'encoded once per key object');
  // A pool slice would keep Node's whole 8 KiB pool alive for as long as the key lives (10 000 keys: 20 MB).
  t.equal(a.buffer.byteLength, a.length, 'its memory is its own');
  t.equal(a.byteOffset, 0);
});
