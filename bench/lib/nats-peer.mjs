// NATS peer (@nats-io/transport-node) against a local nats-server. argv[2]: server "host:port".
// Commands: sub (counting subscriber + echo responder), count, tp-send, latency.
//
// Core NATS has no end-to-end flow control: a publisher faster than its subscriber fills the
// server's per-client buffer until the server cuts the subscriber off as a slow consumer. So
// the subscriber acknowledges every ACK_EVERY messages and the publisher keeps at most
// `window` messages unacknowledged: bounded memory everywhere, like Foundation's back-pressure.
import { connect } from '@nats-io/transport-node';
import { emit, now, payload, serve, summarizeUs } from './common.mjs';

const ACK_EVERY = 4096;
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
    let acked = 0;
    let wake;
    nc.subscribe('bench.ack', {
      callback: (_err, msg) => {
        acked = new DataView(msg.data.buffer, msg.data.byteOffset, 8).getFloat64(0);
        if (wake) {
          const w = wake;
          wake = undefined;
          w();
        }
      },
    });
    await nc.flush();
    const end = now() + ms;
    let sent = 0;
    let waits = 0;
    let maxRss = 0;
    while (now() < end) {
      for (let i = 0; i < 1024; i++) {
        nc.publish('bench.tp', buf);
        sent++;
      }
      while (sent - acked > window) {
        waits++;
        // The timeout only matters if messages were lost (the subscriber would never ack them).
        const timer = setTimeout(() => wake?.(), 1000);
        await new Promise((r) => {
          wake = r;
        });
        clearTimeout(timer);
        if (now() >= end) break;
      }
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    await nc.flush();
    return { sent, waits, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },

  latency: async ({ size, warmup, n, raw = false }) => {
    const buf = payload(size);
    for (let i = 0; i < warmup; i++) await nc.request('bench.echo', buf, { timeout: 5000 });
    const samples = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const t = now();
      const r = await nc.request('bench.echo', buf, { timeout: 5000 });
      samples[i] = now() - t;
      if (r.data.length !== size) throw new Error(`echo returned ${r.data.length} bytes`);
    }
    // raw: the samples themselves (ms), for the coordinator to merge rounds.
    return raw ? Array.from(samples) : summarizeUs(samples);
  },
});

emit('started');
