// NATS peer (@nats-io/transport-node) against a local nats-server. argv[2]: server "host:port".
// Commands: sub (counting subscriber + echo responder), count, tp-send, latency.
//
// Core NATS has no end-to-end flow control: a publisher faster than its subscriber fills the
// server's per-client buffer until the server cuts the subscriber off as a slow consumer. So
// the subscriber acknowledges every ACK_EVERY messages and the publisher keeps at most
// `window` messages unacknowledged: bounded memory everywhere, like Foundation's back-pressure.
import { connect } from '@nats-io/transport-node';
import { ACK_EVERY, ackWindow, emit, now, payload, serve, timeRoundTrips } from './common.mjs';
import { ackWindowMulti, bytesPayload, objectPayload, parseObjectPayload, publishAtRate, recorder, SUB_ID, sentAt, TOPIC } from './pubsub-common.mjs';

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

  // ---- bench/pubsub.mjs: one publisher, several subscriber processes on subject TOPIC ----
  // Objects travel as JSON (JSON.stringify / msg.json()), what NATS users do; bytes as they are.
  'ps-sub': async () => {
    const ack = new Uint8Array(16);
    const ackView = new DataView(ack.buffer);
    ackView.setFloat64(0, SUB_ID);
    nc.subscribe(TOPIC, {
      callback: (_err, msg) => {
        const p = psKind === 'bytes' ? msg.data : parseObjectPayload(msg.string());
        psRec.got(psMeasuring && p !== undefined ? sentAt(psKind, p) : undefined);
        if (psRec.msgs % ACK_EVERY === 0) {
          ackView.setFloat64(8, psRec.msgs);
          nc.publish(`${TOPIC}.ack`, ack);
        }
      },
    });
    await nc.flush();
    return true;
  },
  'ps-mode': ({ kind }) => {
    psKind = kind;
    return true;
  },
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
  /** As fast as the acknowledgement window allows (the slowest of `subscribers`), for `ms`. */
  'ps-tp': async ({ kind, ms, subscribers, window = 131072 }) => {
    const buf = bytesPayload(0);
    const acks = ackWindowMulti(window, subscribers);
    const sub = nc.subscribe(`${TOPIC}.ack`, {
      callback: (_err, msg) => {
        const v = new DataView(msg.data.buffer, msg.data.byteOffset, 16);
        acks.ack(v.getFloat64(0), v.getFloat64(8));
      },
    });
    await nc.flush();
    const end = now() + ms;
    let sent = 0;
    let maxRss = 0;
    while (now() < end) {
      for (let i = 0; i < 1024; i++) {
        nc.publish(TOPIC, kind === 'bytes' ? buf : JSON.stringify(objectPayload(sent, 0)));
        sent++;
      }
      await acks.wait(sent, end);
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    await nc.flush();
    sub.unsubscribe();
    return { sent, waits: acks.waits, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },
  'ps-rate': ({ kind, rate, ms }) =>
    publishAtRate(rate, ms, (i, t) => nc.publish(TOPIC, kind === 'bytes' ? bytesPayload(t) : JSON.stringify(objectPayload(i, t)))),
});

const psRec = recorder();
let psKind = 'bytes';
let psMeasuring = false;

emit('started');
