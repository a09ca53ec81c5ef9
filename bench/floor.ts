// The floor of a Node.js HTTP/1.1 reverse proxy on this machine: the least a proxy written on Node's public
// socket API can spend per request: `net` streams with one `data` event per client read, the upstream
// sockets read through `onread` into one static buffer (as Rempart's lean pool does; 0.91x the CPU of
// the same floor with `data` events there), one `write` per message.
// Not a gateway and not safe: it forwards bodiless requests only, trusts the origin's Content-Length, checks
// nothing and has no timeouts. bench/proxy.ts --floor measures it beside nginx and Rempart, so that Rempart's
// CPU per request splits into what Node's socket layer costs anyway and what Rempart's own code adds.
// usage: node bench/floor.ts <port> <origin port>
import net from 'node:net';

const port = Number(process.argv[2]);
const originPort = Number(process.argv[3]);
const CRLF2 = Buffer.from('\r\n\r\n');
const idle: Upstream[] = [];
// Every upstream read lands here; an answer is copied out before the next read can overwrite it.
const READ = Buffer.allocUnsafe(65536);

class Upstream {
  readonly socket: net.Socket;
  client: Client | null = null;
  buf: Buffer | null = null;
  need = -1; // bytes of the whole answer (head + body) once its head is read

  constructor() {
    this.socket = net.connect({
      port: originPort,
      host: '127.0.0.1',
      onread: {
        buffer: READ,
        callback: (n: number, buf: Uint8Array) => {
          this.onData(Buffer.from(buf.subarray(0, n)));
          return true;
        },
      },
    });
    this.socket.setNoDelay(true);
    this.socket.on('error', () => this.client?.socket.destroy());
    this.socket.on('close', () => {
      const i = idle.indexOf(this);
      if (i >= 0) idle.splice(i, 1);
    });
  }

  onData(chunk: Buffer): void {
    const buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.need < 0) {
      const end = buf.indexOf(CRLF2);
      if (end < 0) {
        this.buf = buf;
        return;
      }
      // The one field a keep-alive answer needs: its length.
      const head = buf.toString('latin1', 0, end);
      const at = head.search(/\r\ncontent-length:/i);
      const length = at < 0 ? 0 : Number.parseInt(head.slice(head.indexOf(':', at) + 1), 10);
      this.need = end + 4 + length;
    }
    if (buf.length < this.need) {
      this.buf = buf;
      return;
    }
    const client = this.client;
    this.buf = null;
    this.need = -1;
    this.client = null;
    idle.push(this);
    client?.socket.write(buf);
  }
}

class Client {
  readonly socket: net.Socket;
  buf: Buffer | null = null;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {});
  }

  onData(chunk: Buffer): void {
    const buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
    const end = buf.indexOf(CRLF2);
    if (end < 0) {
      this.buf = buf;
      return;
    }
    this.buf = null;
    const upstream = idle.pop() ?? new Upstream();
    upstream.client = this;
    upstream.socket.write(end + 4 === buf.length ? buf : buf.subarray(0, end + 4));
  }
}

net.createServer((socket) => new Client(socket)).listen(port, '127.0.0.1', () => console.log(`floor on ${port}`));
// Exit through process.exit so that `node --cpu-prof bench/floor.ts …` writes its profile on Ctrl-C.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(0));
