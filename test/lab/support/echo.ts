// A backend "pod": answers TCP and UDP on one port with its own name.
//   node echo.ts NAME PORT
// TCP: sends "NAME\n" at once, then answers every line with "NAME <line>\n".
// UDP: answers every datagram with "NAME".
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

const [name = 'backend', portText = '8080'] = process.argv.slice(2);
const port = Number(portText);

createServer((sock) => {
  sock.setNoDelay(true);
  sock.write(`${name}\n`);
  let buf = '';
  sock.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      sock.write(`${name} ${buf.slice(0, i)}\n`);
      buf = buf.slice(i + 1);
    }
  });
  sock.on('error', () => {});
}).listen(port, '0.0.0.0');

const udp = createSocket('udp4');
udp.on('message', (_msg, rinfo) => udp.send(name, rinfo.port, rinfo.address));
udp.bind(port, '0.0.0.0', () => process.stdout.write(`ready ${name} ${port}\n`));
