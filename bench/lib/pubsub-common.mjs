// What every pubsub bench worker shares, whatever carries the messages (Foundation, NATS, Redis,
// Moleculer): the payloads, the subscriber's counters and latency recorder, the fixed-rate
// publisher, and the acknowledgement window for brokers without end-to-end flow control.
import { now, sleep, wallNow } from './common.mjs';

/** The topic (subject, channel, event name) of the workload. */
export const TOPIC = 'bench.ps';
/** Bytes of every message's payload. */
export const SIZE = 100;
/** Most latency samples one subscriber keeps per measurement. */
const MAX_SAMPLES = 200_000;

/**
 * The payload kinds:
 * - `bytes`: a 100-byte Buffer (Foundation: a Uint8Array skips the codec); its first 8 bytes hold
 *   the send time (float64 LE, wall-clock ms) in latency runs;
 * - `object`: `{ i, t, pad }` with `pad` a string making the JSON encoding 100 bytes, what users
 *   send (Foundation: msgpack; NATS and Redis: JSON.stringify/JSON.parse; Moleculer: its JSON).
 */
export const KINDS = ['bytes', 'object'];

const PAD = 'x'.repeat(SIZE - JSON.stringify({ i: 1000000, t: 1796000000000.123, pad: '' }).length);

/** A `bytes` payload: 100 bytes, not all zero, send time in its first 8. */
export function bytesPayload(t = 0) {
  const b = Buffer.allocUnsafe(SIZE);
  for (let i = 0; i < SIZE; i++) b[i] = (i * 31 + 7) & 0xff;
  b.writeDoubleLE(t, 0);
  return b;
}

/** An `object` payload (a new object per message, as an application builds it). */
export const objectPayload = (i, t = 0) => ({ i, t, pad: PAD });

/** Send time carried by a received payload (bytes: first 8 bytes; object: `t`). */
export function sentAt(kind, p) {
  if (kind === 'bytes') return p.readDoubleLE ? p.readDoubleLE(0) : new DataView(p.buffer, p.byteOffset, 8).getFloat64(0, true);
  return p.t;
}

/**
 * An `object` payload from its JSON text (the NATS and Redis peers), or undefined for a message
 * that is not JSON: a `bytes` message of the previous run still in flight when the subscriber
 * switched kinds. It must not throw: nats.js closes a subscription whose callback throws, and the
 * subscriber would then stop counting for the rest of the bench.
 */
export function parseObjectPayload(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * A subscriber's bookkeeping: counts every message, and between latStart and latStop records
 * one-way latency (receive wall clock - the send time in the payload; all processes are on one
 * machine, so one clock).
 */
export function recorder() {
  let msgs = 0;
  let samples;
  let n = 0;
  return {
    get msgs() {
      return msgs;
    },
    /** One message received; `t` its send time (wall ms) or undefined when not measuring. */
    got(t) {
      msgs++;
      if (samples !== undefined && t > 0 && n < MAX_SAMPLES) samples[n++] = wallNow() - t;
    },
    count: () => ({ msgs, t: now() }),
    latStart() {
      samples = new Float64Array(MAX_SAMPLES);
      n = 0;
    },
    /** The samples (ms) since latStart, for the coordinator to merge over subscribers. */
    latStop() {
      const out = samples ? Array.from(samples.subarray(0, n)) : [];
      samples = undefined;
      return out;
    },
  };
}

/**
 * Publishes at `rate` messages per second for `ms` (one-way latency runs): each turn of the
 * loop publishes the messages due by now (normally one), then sleeps 1 ms. `publishOne(i, t)`
 * gets the wall-clock send time to put in the payload.
 */
export async function publishAtRate(rate, ms, publishOne) {
  const start = now();
  const end = start + ms;
  let i = 0;
  while (now() < end) {
    const due = Math.floor(((now() - start) * rate) / 1000);
    while (i < due) publishOne(i++, wallNow());
    await sleep(1);
  }
  return { sent: i };
}

/**
 * The acknowledgement window of bench/lib/common.mjs (ackWindow) for several subscribers: each
 * reports its running count every ACK_EVERY messages, tagged with its id; the publisher waits
 * while the slowest one is more than `window` messages behind.
 */
export function ackWindowMulti(window, subscribers) {
  const acked = new Map();
  let wake;
  let waits = 0;
  const slowest = () => (acked.size < subscribers ? 0 : Math.min(...acked.values()));
  return {
    get waits() {
      return waits;
    },
    ack(id, count) {
      acked.set(id, count);
      const w = wake;
      wake = undefined;
      w?.();
    },
    async wait(sent, end) {
      while (sent - slowest() > window && now() < end) {
        waits++;
        // The timeout only matters if messages were lost (the subscriber would never ack them).
        const timer = setTimeout(() => wake?.(), 1000);
        await new Promise((r) => {
          wake = r;
        });
        clearTimeout(timer);
      }
    },
  };
}

/** Subscriber id for acknowledgements: the process id is unique on the machine. */
export const SUB_ID = process.pid;
