// A backend "pod": answers TCP and UDP on one port with its own name.
//   node echo.ts NAME PORT [DELAY_MS] [udp-sink]
// DELAY_MS: the TCP greeting waits this long (a slow but healthy backend; its kernel still
// completes the handshake at once). udp-sink: UDP datagrams are taken and never answered.
// TCP: sends "NAME\n" at once, then answers every line with "NAME <line>\n", except "whoami",
//      answered with "NAME <the peer address as this backend sees it>\n".
// UDP: answers every datagram with "NAME". IPv4 and IPv6 (dual-stack sockets).
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

const [name = 'backend', portText = '8080', delayText = '0', udpMode = ''] = process.argv.slice(2);
const port = Number(portText);
const delay = Number(delayText);

createServer((sock) => {
  sock.setNoDelay(true);
  if (delay > 0) setTimeout(() => sock.writable && sock.write(`${name}\n`), delay);
  else sock.write(`${name}\n`);
  let buf = '';
  sock.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      sock.write(
        line === 'whoami' ? `${name} ${(sock.remoteAddress ?? '').replace(/^::ffff:/, '')}\n` : `${name} ${line}\n`,
      );
      buf = buf.slice(i + 1);
    }
  });
  sock.on('error', () => {});
}).listen({ port, host: '::', ipv6Only: false });

const udp = createSocket({ type: 'udp6', ipv6Only: false });
udp.on('message', (_msg, rinfo) => {
  if (udpMode !== 'udp-sink') udp.send(name, rinfo.port, rinfo.address);
});
udp.bind(port, '::', () => process.stdout.write(`ready ${name} ${port}\n`));
