// Redis peer (ioredis) against a local redis-server. argv[2]: server port on 127.0.0.1.
// Commands: sub (counting subscriber + echo responder), count, tp-send, latency.
//
// Redis pub/sub, like core NATS, has no end-to-end flow control: a subscriber that falls behind
// grows its output buffer on the server until `client-output-buffer-limit` disconnects it. So
// the subscriber acknowledges every ACK_EVERY messages and the publisher keeps at most `window`
// unacknowledged (the scheme of nats-peer.mjs). Redis has no request/reply; the responder
// subscribes to `bench.echo` and publishes each payload back on the requester's own channel.
import Redis from 'ioredis';
import { ACK_EVERY, ackWindow, emit, now, payload, serve, timeRoundTrips } from './common.mjs';
import { ackWindowMulti, bytesPayload, objectPayload, parseObjectPayload, publishAtRate, recorder, SUB_ID, sentAt, TOPIC } from './pubsub-common.mjs';

const MAX_BATCHES = 8;
const port = Number(process.argv[2]);
/** A connection in subscriber mode can only (un)subscribe, so each role gets its own. */
const connection = () => new Redis({ host: '127.0.0.1', port, lazyConnect: true, enableAutoPipelining: false, maxRetriesPerRequest: 1 });
const pub = connection();
await pub.connect();
const count = { msgs: 0, bytes: 0 };
/** The requester's reply channel, subscribed once for all latency rounds. */
const REPLY_TO = Buffer.from(`bench.reply.${process.pid}`);
let replies;
let replyWake;
let replySize = 0;

async function subscriber(channels, onMessage) {
  const sub = connection();
  await sub.connect();
  sub.on('messageBuffer', (channel, message) => onMessage(channel.toString(), message));
  await sub.subscribe(...channels);
  return sub;
}

serve({
  sub: async () => {
    const ack = Buffer.alloc(8);
    await subscriber(['bench.tp', 'bench.echo'], (channel, message) => {
      if (channel === 'bench.echo') {
        // [u8 reply-channel length][reply channel][payload]
        const n = message[0];
        pub.publish(message.subarray(1, 1 + n), message.subarray(1 + n));
        return;
      }
      count.msgs++;
      count.bytes += message.length;
      if (count.msgs % ACK_EVERY === 0) {
        ack.writeDoubleBE(count.msgs, 0);
        pub.publish('bench.ack', ack);
      }
    });
    return true;
  },

  count: () => ({ msgs: count.msgs, bytes: count.bytes, t: now() }),

  'tp-send': async ({ size, ms, window = 131072 }) => {
    const buf = payload(size);
    const acks = ackWindow(window);
    await subscriber(['bench.ack'], (_channel, message) => acks.ack(message.readDoubleBE(0)));
    const end = now() + ms;
    let sent = 0;
    let maxRss = 0;
    // Pipelines whose replies are not in yet; at most MAX_BATCHES, so memory stays bounded.
    const batches = [];
    while (now() < end) {
      // One pipeline per batch: one write for 1024 PUBLISH commands, as a tuned client would.
      const batch = pub.pipeline();
      for (let i = 0; i < 1024; i++) batch.publish('bench.tp', buf);
      sent += 1024;
      batches.push(batch.exec());
      await acks.wait(sent, end);
      if (batches.length >= MAX_BATCHES) await batches.shift();
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    await Promise.all(batches);
    return { sent, waits: acks.waits, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },

  latency: async ({ size, warmup, n, raw = false }) => {
    const request = Buffer.concat([Buffer.from([REPLY_TO.length]), REPLY_TO, payload(size)]);
    replies ??= subscriber([REPLY_TO.toString()], (_channel, message) => {
      replySize = message.length;
      const w = replyWake;
      replyWake = undefined;
      w?.();
    });
    await replies;
    const once = async () => {
      await new Promise((resolve) => {
        replyWake = resolve;
        pub.publish('bench.echo', request);
      });
      if (replySize !== size) throw new Error(`echo returned ${replySize} bytes`);
    };
    return timeRoundTrips(once, { warmup, n, raw });
  },

  // ---- bench/pubsub.mjs: one publisher, several subscriber processes on channel TOPIC ----
  // Objects travel as JSON (JSON.stringify / JSON.parse), what Redis users do; bytes as they are.
  'ps-sub': async () => {
    const ack = Buffer.alloc(16);
    ack.writeDoubleBE(SUB_ID, 0);
    await subscriber([TOPIC], (_channel, message) => {
      const p = psKind === 'bytes' ? message : parseObjectPayload(message.toString());
      psRec.got(psMeasuring && p !== undefined ? sentAt(psKind, p) : undefined);
      if (psRec.msgs % ACK_EVERY === 0) {
        ack.writeDoubleBE(psRec.msgs, 8);
        pub.publish(`${TOPIC}.ack`, ack);
      }
    });
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
  /** Pipelines of 1024 PUBLISH (at most MAX_BATCHES awaiting replies), within the acknowledgement window of the slowest subscriber. */
  'ps-tp': async ({ kind, ms, subscribers, window = 131072 }) => {
    const buf = bytesPayload(0);
    const acks = ackWindowMulti(window, subscribers);
    psAckSub ??= subscriber([`${TOPIC}.ack`], (_channel, message) => psOnAck?.(message.readDoubleBE(0), message.readDoubleBE(8)));
    await psAckSub;
    psOnAck = (id, n) => acks.ack(id, n);
    const end = now() + ms;
    let sent = 0;
    let maxRss = 0;
    const batches = [];
    while (now() < end) {
      const batch = pub.pipeline();
      for (let i = 0; i < 1024; i++) batch.publish(TOPIC, kind === 'bytes' ? buf : JSON.stringify(objectPayload(sent + i, 0)));
      sent += 1024;
      batches.push(batch.exec());
      await acks.wait(sent, end);
      if (batches.length >= MAX_BATCHES) await batches.shift();
      if ((sent & 0x3ffff) === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    await Promise.all(batches);
    return { sent, waits: acks.waits, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },
  /** One PUBLISH per message (no pipeline: each is sent when due). */
  'ps-rate': ({ kind, rate, ms }) =>
    publishAtRate(rate, ms, (i, t) => {
      pub.publish(TOPIC, kind === 'bytes' ? bytesPayload(t) : JSON.stringify(objectPayload(i, t)));
    }),
});

const psRec = recorder();
let psKind = 'bytes';
let psMeasuring = false;
/** The publisher's subscription to acknowledgements (a promise), made once for all runs. */
let psAckSub;
let psOnAck;

emit('started');
