// Raw TCP peer: the physical ceiling. Records are `[u32 BE length][payload]`.
// Commands: listen (sink | echo), count, tp-send, latency.
import { connect, createServer } from 'node:net';
import { emit, now, payload, serve, timeRoundTrips } from './common.mjs';

const count = { msgs: 0, bytes: 0 };
let server;

/**
 * A 'data' listener that finds the complete records of each chunk and calls
 * `onChunkDone(buf, endOfCompleteRecords, msgs, bytes)`; a partial record is carried over.
 */
function recordParser(onChunkDone) {
  let carry;
  return (chunk) => {
    let buf = chunk;
    if (carry !== undefined) {
      buf = Buffer.concat([carry, chunk]);
      carry = undefined;
    }
    const n = buf.length;
    let p = 0;
    let msgs = 0;
    let bytes = 0;
    while (p + 4 <= n) {
      const len = buf.readUInt32BE(p);
      if (p + 4 + len > n) break;
      p += 4 + len;
      msgs++;
      bytes += len;
    }
    if (p < n) carry = buf.subarray(p);
    onChunkDone(buf, p, msgs, bytes);
  };
}

function record(size) {
  const r = Buffer.allocUnsafe(4 + size);
  r.writeUInt32BE(size, 0);
  payload(size).copy(r, 4);
  return r;
}

function dial(port) {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
}

serve({
  listen: ({ mode }) =>
    new Promise((resolve, reject) => {
      server = createServer((sock) => {
        sock.setNoDelay(true);
        sock.on('error', () => {});
        if (mode === 'echo') {
          // Echo every complete record back as soon as it is parsed.
          sock.on(
            'data',
            recordParser((buf, end) => {
              if (end > 0) sock.write(end === buf.length ? buf : buf.subarray(0, end));
            }),
          );
        } else {
          sock.on(
            'data',
            recordParser((_buf, _end, msgs, bytes) => {
              count.msgs += msgs;
              count.bytes += bytes;
            }),
          );
        }
      });
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: 0 }, () => resolve(server.address().port));
    }),

  count: () => ({ msgs: count.msgs, bytes: count.bytes, t: now() }),

  /** Writes batches of `batch` records for `ms`, honouring socket back-pressure. */
  'tp-send': async ({ port, size, ms, batch = 1024 }) => {
    const sock = await dial(port);
    sock.setNoDelay(true);
    const one = record(size);
    const buf = Buffer.allocUnsafe(one.length * batch);
    for (let i = 0; i < batch; i++) one.copy(buf, i * one.length);
    const end = now() + ms;
    let sent = 0;
    let maxRss = 0;
    while (now() < end) {
      const ok = sock.write(buf);
      sent += batch;
      if (!ok) await new Promise((r) => sock.once('drain', r));
      if ((sent & 0x3ffff) < batch) maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }
    sock.end();
    return { sent, maxRss: Math.max(maxRss, process.memoryUsage().rss) };
  },

  /** One record out, wait for the whole echo, repeat. */
  latency: async ({ port, size, warmup, n, raw = false }) => {
    const sock = await dial(port);
    sock.setNoDelay(true);
    const rec = record(size);
    let got = 0;
    let wake;
    sock.on('data', (c) => {
      got += c.length;
      if (got >= rec.length) {
        got -= rec.length;
        wake();
      }
    });
    const once = () =>
      new Promise((resolve) => {
        wake = resolve;
        sock.write(rec);
      });
    try {
      return await timeRoundTrips(once, { warmup, n, raw });
    } finally {
      sock.destroy();
    }
  },
});

emit('started');
