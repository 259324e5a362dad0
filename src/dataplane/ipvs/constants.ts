// Numbers from the kernel's include/uapi/linux/ip_vs.h (generic netlink family "IPVS", version 1).

export const IPVS_GENL_NAME = 'IPVS';
export const IPVS_GENL_VERSION = 1;

export const Cmd = {
  NEW_SERVICE: 1,
  SET_SERVICE: 2,
  DEL_SERVICE: 3,
  GET_SERVICE: 4,
  NEW_DEST: 5,
  SET_DEST: 6,
  DEL_DEST: 7,
  GET_DEST: 8,
  NEW_DAEMON: 9,
  DEL_DAEMON: 10,
  GET_DAEMON: 11,
  SET_CONFIG: 12,
  GET_CONFIG: 13,
  SET_INFO: 14,
  GET_INFO: 15,
  ZERO: 16,
  FLUSH: 17,
} as const;

export const CmdAttr = {
  SERVICE: 1,
  DEST: 2,
  DAEMON: 3,
  TIMEOUT_TCP: 4,
  TIMEOUT_TCP_FIN: 5,
  TIMEOUT_UDP: 6,
} as const;

export const SvcAttr = {
  AF: 1, // u16
  PROTOCOL: 2, // u16
  ADDR: 3, // union nf_inet_addr (16 bytes)
  PORT: 4, // be16
  FWMARK: 5, // u32
  SCHED_NAME: 6, // nul-terminated string
  FLAGS: 7, // struct ip_vs_flags { u32 flags; u32 mask; }
  TIMEOUT: 8, // u32 seconds
  NETMASK: 9, // u32 (IPv4 mask, or IPv6 prefix length)
  STATS: 10, // nested, 32-bit counters
  PE_NAME: 11, // string
  STATS64: 12, // nested, 64-bit counters
} as const;

export const DestAttr = {
  ADDR: 1,
  PORT: 2, // be16
  FWD_METHOD: 3, // u32
  WEIGHT: 4, // u32 (signed in the kernel, >= 0)
  U_THRESH: 5, // u32
  L_THRESH: 6, // u32
  ACTIVE_CONNS: 7, // u32
  INACT_CONNS: 8, // u32
  PERSIST_CONNS: 9, // u32
  STATS: 10,
  ADDR_FAMILY: 11, // u16
  STATS64: 12,
  TUN_TYPE: 13, // u8
  TUN_PORT: 14, // be16
  TUN_FLAGS: 15, // u16
} as const;

export const StatsAttr = {
  CONNS: 1,
  INPKTS: 2,
  OUTPKTS: 3,
  INBYTES: 4,
  OUTBYTES: 5,
  CPS: 6,
  INPPS: 7,
  OUTPPS: 8,
  INBPS: 9,
  OUTBPS: 10,
  PAD: 11,
} as const;

export const InfoAttr = {
  VERSION: 1,
  CONN_TAB_SIZE: 2,
} as const;

/** Service flags (IP_VS_SVC_F_*). SCHED1/2/3 mean different things per scheduler. */
export const SvcFlag = {
  PERSISTENT: 0x0001,
  HASHED: 0x0002,
  ONEPACKET: 0x0004,
  SCHED1: 0x0008,
  SCHED2: 0x0010,
  SCHED3: 0x0020,
} as const;
/** sh and mh: fall back to another destination when the chosen one is unavailable (SCHED1). */
export const SCHED_FLAG_FALLBACK = SvcFlag.SCHED1;
/** sh and mh: hash the source port as well as the address (SCHED2). */
export const SCHED_FLAG_PORT = SvcFlag.SCHED2;

/** Destination forwarding methods (IP_VS_CONN_F_FWD_MASK values). */
export const FwdMethod = {
  MASQ: 0,
  LOCALNODE: 1,
  TUNNEL: 2,
  DROUTE: 3,
  BYPASS: 4,
} as const;

export const AF_INET = 2;
export const AF_INET6 = 10;

export const IPPROTO = { TCP: 6, UDP: 17, SCTP: 132 } as const;
