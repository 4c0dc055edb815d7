// Moleculer 0.14 peer on the TCP transporter (direct peer to peer, no broker daemon).
// argv[2]: JSON { nodeID, port, peers: ["127.0.0.1:PORT/nodeID", ...] }; the first peer is the
// one `latency` and `tp-send` talk to. Commands: ready, count, tp-send, latency.
//
// Every peer runs a `bench` service: action `echo` (the responder) and event `bench.tp` (the
// counting subscriber). Moleculer events have no end-to-end flow control either (the TCP writer
// ignores socket.write's back-pressure and buffers without bound), so the subscriber emits
// `bench.ack` every ACK_EVERY messages and the sender keeps at most `window` unacknowledged,
// the scheme of nats-peer.mjs.
import { createRequire } from 'node:module';
import net from 'node:net';
import { dirname, join } from 'node:path';
import moleculer from 'moleculer';
import { ACK_EVERY, ackWindow, emit, now, serve, sleep, timeRoundTrips } from './common.mjs';
import { ackWindowMulti, objectPayload, publishAtRate, recorder, SIZE, TOPIC } from './pubsub-common.mjs';

const { ServiceBroker, Transporters } = moleculer;
const LOOPBACK = '127.0.0.1';
const { nodeID, port, peers = [] } = JSON.parse(process.argv[2]);
const peerIDs = peers.map((url) => url.slice(url.lastIndexOf('/') + 1));
const peerID = peerIDs[0];

// Network safety: the TCP transporter has no option for the listen address (its reader calls
// server.listen({ port, exclusive }) with no host, i.e. all interfaces), and it dials peers at the
// hostname or interface IPs they gossip. Neither may leave loopback, so this process replaces the
// reader's listen with one bound to 127.0.0.1 (the package's `exports` hides the module, hence the
// path) and pins every peer address to 127.0.0.1. UDP discovery (multicast) is switched off below.
const require = createRequire(import.meta.url);
const TcpReader = require(join(dirname(require.resolve('moleculer')), 'src/transporters/tcp/tcp-reader.js'));
TcpReader.prototype.listen = function listenOnLoopback() {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => this.onTcpClientConnected(socket));
    server.on('error', (err) => {
      this.logger.error('Server error.', err);
      reject(err);
    });
    server.listen({ host: LOOPBACK, port: this.opts.port, exclusive: true }, () => {
      this.opts.port = server.address().port;
      this.connected = true;
      resolve(this.opts.port);
    });
    this.server = server;
  });
};
class LoopbackTcp extends Transporters.TCP {
  getNodeAddress() {
    return LOOPBACK;
  }
}

const count = { msgs: 0, bytes: 0 };
let acks;
const psRec = recorder();
let psMeasuring = false;
let psAcks;

const broker = new ServiceBroker({
  nodeID,
  transporter: new LoopbackTcp({ udpDiscovery: false, port, urls: peers }),
  logger: { type: 'Console', options: { level: 'warn' } },
  metrics: false,
  tracing: false,
});

// Each event handler is in a group named after its node, so `emit(..., { groups: [peer] })` goes
// to the other process: with the default group (the service name) the balancer would prefer this
// node's own `bench` service and the events would never touch the network.
broker.createService({
  name: 'bench',
  actions: { echo: (ctx) => ctx.params.p },
  events: {
    'bench.tp': {
      group: nodeID,
      handler(ctx) {
        count.msgs++;
        count.bytes += ctx.params.p.length;
        if (count.msgs % ACK_EVERY === 0) broker.emit('bench.ack', { n: count.msgs }, { groups: [ctx.nodeID] });
      },
    },
    'bench.ack': { group: nodeID, handler: (ctx) => acks?.ack(ctx.params.n) },
    // bench/pubsub.mjs: the workload's subscriber and the publisher's acknowledgements.
    [TOPIC]: {
      group: nodeID,
      handler(ctx) {
        psRec.got(psMeasuring ? ctx.params.t : undefined);
        if (psRec.msgs % ACK_EVERY === 0) broker.emit(`${TOPIC}.ack`, { id: nodeID, n: psRec.msgs }, { groups: [ctx.nodeID] });
      },
    },
    [`${TOPIC}.ack`]: { group: nodeID, handler: (ctx) => psAcks?.ack(ctx.params.id, ctx.params.n) },
  },
});
await broker.start();

/**
 * A payload of `size` ASCII letters. A string, not a Buffer: the JSON serializer would turn a
 * Buffer into an array of numbers (several bytes per byte), which is not how users send data over
 * Moleculer. Letters need no JSON escaping, so the payload is `size` bytes on the wire too.
 */
function text(size) {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = 0x61 + ((i * 31 + 7) % 26);
  return b.toString('latin1');
}

serve({
  /** Resolves once every peer node is connected and its `bench` service is in our registry. */
  ready: async () => {
    const deadline = now() + 15_000;
    const known = (id) => broker.registry.nodes.get(id)?.available && broker.registry.getActionEndpointByNodeId('bench.echo', id);
    while (!peerIDs.every(known)) {
      if (now() > deadline) throw new Error(`moleculer ${nodeID}: peers ${peerIDs.filter((id) => !known(id)).join(', ')} not discovered in 15 s`);
      await sleep(20);
    }
    return { nodeID, port: broker.transit.tx.opts.port, peers: peerIDs };
  },

  count: () => ({ msgs: count.msgs, bytes: count.bytes, t: now() }),

  'tp-send': async ({ size, ms, window = 131072 }) => {
    const str = text(size);
    acks = ackWindow(window);
    const end = now() + ms;
    let sent = 0;
    let maxRss = 0;
    while (now() < end) {
      for (let i = 0; i < 1024; i++) {
        broker.emit('bench.tp', { p: str }, { groups: [peerID] });
        sent++;
      }
      // emit() writes to the socket a few promise hops later; a macrotask turn lets those writes
      // (and the peer's acks) through even while the window is open.
      await new Promise(setImmediate);
      await acks.wait(sent, end);
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    return { sent, waits: acks.waits, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },

  latency: ({ size, warmup, n, raw = false }) => {
    const str = text(size);
    // nodeID pins the call to the other process: the local `bench.echo` would otherwise win.
    const once = async () => {
      const r = await broker.call('bench.echo', { p: str }, { nodeID: peerID, timeout: 5000 });
      if (r.length !== size) throw new Error(`echo returned ${r.length} characters`);
    };
    return timeRoundTrips(once, { warmup, n, raw });
  },

  // ---- bench/pubsub.mjs: one publisher (this node) emitting to every other peer's group ----
  // `bytes`: { t, p } with p a 100-character string (JSON would turn a Buffer into an array of
  // numbers); `object`: { i, t, pad }. Every subscriber has its own group, so one emit with
  // all groups reaches each subscriber node once (what a broadcast to other nodes is).
  'ps-sub': () => true,
  'ps-mode': () => true,
  'ps-count': () => psRec.count(),
  'ps-lat-start': () => {
    psMeasuring = true;
    psRec.latStart();
    return true;
  },
  'ps-lat-stop': () => {
    psMeasuring = false;
    return psRec.latStop();
  },
  'ps-tp': async ({ kind, ms, window = 131072 }) => {
    const str = text(SIZE);
    psAcks = ackWindowMulti(window, peerIDs.length);
    const end = now() + ms;
    let sent = 0;
    let maxRss = 0;
    while (now() < end) {
      for (let i = 0; i < 1024; i++) {
        broker.emit(TOPIC, kind === 'bytes' ? { t: 0, p: str } : objectPayload(sent, 0), { groups: peerIDs });
        sent++;
      }
      await new Promise(setImmediate);
      await psAcks.wait(sent, end);
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    return { sent, waits: psAcks.waits, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },
  'ps-rate': ({ kind, rate, ms }) => {
    const str = text(SIZE);
    return publishAtRate(rate, ms, (i, t) => broker.emit(TOPIC, kind === 'bytes' ? { t, p: str } : objectPayload(i, t), { groups: peerIDs }));
  },
});

emit('started');
