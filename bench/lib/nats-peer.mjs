// NATS peer (@nats-io/transport-node) against a local nats-server. argv[2]: server "host:port".
// Commands: sub (counting subscriber + echo responder), count, tp-send, latency.
//
// Core NATS has no end-to-end flow control: a publisher faster than its subscriber fills the
// server's per-client buffer until the server cuts the subscriber off as a slow consumer. So
// the subscriber acknowledges every ACK_EVERY messages and the publisher keeps at most
// `window` messages unacknowledged: bounded memory everywhere, like Foundation's back-pressure.
import { connect } from '@nats-io/transport-node';
import { ACK_EVERY, ackWindow, emit, now, payload, serve, timeRoundTrips } from './common.mjs';

const nc = await connect({ servers: process.argv[2], noEcho: true });
const count = { msgs: 0, bytes: 0 };

serve({
  sub: async () => {
    const ack = new Uint8Array(8);
    const ackView = new DataView(ack.buffer);
    nc.subscribe('bench.tp', {
      callback: (_err, msg) => {
        count.msgs++;
        count.bytes += msg.data.length;
        if (count.msgs % ACK_EVERY === 0) {
          ackView.setFloat64(0, count.msgs);
          nc.publish('bench.ack', ack);
        }
      },
    });
    nc.subscribe('bench.echo', { callback: (_err, msg) => msg.respond(msg.data) });
    await nc.flush();
    return true;
  },

  count: () => ({ msgs: count.msgs, bytes: count.bytes, t: now() }),

  'tp-send': async ({ size, ms, window = 131072 }) => {
    const buf = payload(size);
    const acks = ackWindow(window);
    nc.subscribe('bench.ack', { callback: (_err, msg) => acks.ack(new DataView(msg.data.buffer, msg.data.byteOffset, 8).getFloat64(0)) });
    await nc.flush();
    const end = now() + ms;
    let sent = 0;
    let maxRss = 0;
    while (now() < end) {
      for (let i = 0; i < 1024; i++) {
        nc.publish('bench.tp', buf);
        sent++;
      }
      await acks.wait(sent, end);
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    await nc.flush();
    return { sent, waits: acks.waits, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },

  latency: ({ size, warmup, n, raw = false }) => {
    const buf = payload(size);
    const once = async () => {
      const r = await nc.request('bench.echo', buf, { timeout: 5000 });
      if (r.data.length !== size) throw new Error(`echo returned ${r.data.length} bytes`);
    };
    return timeRoundTrips(once, { warmup, n, raw });
  },
});

emit('started');
