// A client "pod". Modes (all print one JSON line unless noted):
//   tcp HOST PORT COUNT            COUNT sequential connections; the backend name each one reached
//   udp HOST PORT COUNT [same]     COUNT datagrams, each from a new socket (or one socket: "same")
//   loop HOST PORT EVERY_MS FOR_MS a connection every EVERY_MS for FOR_MS: {ok, failed, errors}
//   who HOST PORT                  one connection: [backend, the client address the backend saw]
//   udpwatch HOST PORT EVERY_MS FOR_MS  one socket sending every EVERY_MS; a line [ms since start, reply]
//                                  per datagram as it happens (not one JSON line)
//   tally HOST PORT EVERY_MS FOR_MS  a new connection every EVERY_MS, each on its own (none waits for the
//                                  one before): a line "started" once the first is on its way, then every
//                                  outcome, [[when it began (ms since the epoch), backend or ERR...], ...];
//                                  FOR_MS 0: until stdin closes
//   hold HOST PORT                 one connection kept open: prints the backend, then for each stdin
//                                  line prints the reply ("ERR ..." once it breaks); exits on stdin EOF
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

const [mode, host = '', portText = '0', a = '1', b = ''] = process.argv.slice(2);
const port = Number(portText);
const TIMEOUT = 2000;

function tcpOnce(): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve('ERR timeout');
    }, TIMEOUT);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) {
        clearTimeout(timer);
        // Closed at once, not ended: a half-closed socket waits for the peer's FIN, which never comes when the
        // path went away meanwhile (kube-proxy's nftables mode flushes IPVS at start), and kept this process
        // alive for minutes after its work was done.
        s.destroy();
        resolve(buf.slice(0, i));
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(`ERR ${e.code ?? e.message}`);
    });
  });
}

const udpType = host.includes(':') ? 'udp6' : 'udp4';

function udpOnce(sock?: ReturnType<typeof createSocket>): Promise<string> {
  return new Promise((resolve) => {
    const s = sock ?? createSocket(udpType);
    const timer = setTimeout(() => {
      s.off('message', onMsg);
      if (!sock) s.close();
      resolve('ERR timeout');
    }, TIMEOUT);
    const onMsg = (m: Buffer) => {
      clearTimeout(timer);
      s.off('message', onMsg);
      if (!sock) s.close();
      resolve(m.toString());
    };
    s.on('message', onMsg);
    s.send('hi', port, host);
  });
}

async function main() {
  if (mode === 'tcp') {
    const out: string[] = [];
    for (let i = 0; i < Number(a); i++) out.push(await tcpOnce());
    console.log(JSON.stringify(out));
  } else if (mode === 'who') {
    const out = await new Promise<string[]>((resolve) => {
      const s = connect({ host, port });
      const timer = setTimeout(() => (s.destroy(), resolve(['ERR timeout'])), TIMEOUT);
      let buf = '';
      s.on('connect', () => s.write('whoami\n'));
      s.on('data', (d) => {
        buf += d.toString();
        const lines = buf.split('\n');
        if (lines.length >= 3) {
          clearTimeout(timer);
          s.end();
          resolve(lines[1]!.split(' '));
        }
      });
      s.on('error', (e: NodeJS.ErrnoException) => (clearTimeout(timer), resolve([`ERR ${e.code ?? e.message}`])));
    });
    console.log(JSON.stringify(out));
  } else if (mode === 'udpwatch') {
    const sock = createSocket(udpType);
    const started = Date.now();
    while (Date.now() - started < Number(b)) {
      const t0 = Date.now();
      const reply = await udpOnce(sock);
      process.stdout.write(`${JSON.stringify([t0 - started, reply])}\n`);
      await new Promise((res) => setTimeout(res, Math.max(0, Number(a) - (Date.now() - t0))));
    }
    sock.close();
  } else if (mode === 'udp') {
    const shared = b === 'same' ? createSocket(udpType) : undefined;
    const out: string[] = [];
    for (let i = 0; i < Number(a); i++) out.push(await udpOnce(shared));
    shared?.close();
    console.log(JSON.stringify(out));
  } else if (mode === 'loop') {
    const every = Number(a);
    const until = Date.now() + Number(b);
    let ok = 0;
    let failed = 0;
    const errors: string[] = [];
    while (Date.now() < until) {
      const started = Date.now();
      const r = await tcpOnce();
      if (r.startsWith('ERR')) {
        failed++;
        if (errors.length < 10) errors.push(r);
      } else ok++;
      await new Promise((res) => setTimeout(res, Math.max(0, every - (Date.now() - started))));
    }
    console.log(JSON.stringify({ ok, failed, errors }));
  } else if (mode === 'tally') {
    const every = Number(a);
    const t0 = Date.now();
    const out: Promise<[number, string]>[] = [];
    let open = Number(b) === 0;
    if (open) {
      process.stdin.on('end', () => (open = false)).resume();
    }
    for (let next = 0; open || Date.now() - t0 < Number(b); next += every) {
      await new Promise((res) => setTimeout(res, Math.max(0, t0 + next - Date.now())));
      const at = Date.now();
      out.push(tcpOnce().then((r) => [at, r]));
      if (next === 0) console.log('started'); // the first connection is on its way (a slow start is seen)
    }
    // Written, then gone: nothing left of the loop (a socket, a timer) may keep the caller waiting for the exit.
    const line = JSON.stringify(await Promise.all(out));
    process.stdout.write(`${line}\n`, () => process.exit(0));
  } else if (mode === 'hold') {
    const s = connect({ host, port });
    s.setNoDelay(true);
    let broken = '';
    const lines: ((l: string) => void)[] = [];
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const w = lines.shift();
        if (w) w(line);
        else console.log(line);
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => (broken = `ERR ${e.code ?? e.message}`));
    s.on('close', () => (broken ||= 'ERR closed'));
    // The greeting (the backend's name) comes first.
    await new Promise<void>((r) => lines.push((l) => (console.log(l), r())));
    for await (const line of createInterface({ input: process.stdin })) {
      if (broken) {
        console.log(broken);
        continue;
      }
      const reply = Promise.race([
        new Promise<string>((r) => lines.push(r)),
        new Promise<string>((r) => setTimeout(() => r('ERR timeout'), TIMEOUT)),
      ]);
      s.write(`${line}\n`);
      console.log(await reply);
    }
    // A connection cut by the network (packets dropped, no RST) would keep this process alive for minutes.
    if (broken) s.destroy();
    else {
      s.end();
      setTimeout(() => s.destroy(), 1000).unref();
    }
  } else {
    console.error(`unknown mode ${mode}`);
    process.exit(2);
  }
}
main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
