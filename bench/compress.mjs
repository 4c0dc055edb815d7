// Where deflate starts to pay for pubsub payloads (channels' `compress` middleware).
//
// For realistic telemetry-like payloads (msgpack of arrays of metric records) of growing size,
// measures with node:zlib deflateRawSync + inflateRawSync: the CPU time to compress and
// decompress, and the bytes saved. Compression pays when the time it saves on the wire is
// larger than the time it costs:  saved_bytes / bandwidth  >  compress_time + inflate_time.
// Bandwidths: loopback as this machine's mesh measured it (2 GB/s, docs/benchmarks.md) and a
// rate-limited link (100 Mbit/s and 1 Gbit/s). Prints the table and the break-even size per link.
//
//   node bench/compress.mjs            (LEVEL=6 for zlib's default level; RATE_MBIT=100 for part 2's link)
import { performance } from 'node:perf_hooks';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { pack } from 'msgpackr';

const LINKS = [
  { name: 'loopback (2 GB/s)', bytesPerSec: 2e9 },
  { name: '1 Gbit/s', bytesPerSec: 125e6 },
  { name: '100 Mbit/s', bytesPerSec: 12.5e6 },
];

function payload(bytes) {
  // Metric-like records: repeated keys, numbers with a few significant digits, host names.
  const rows = [];
  let size = 0;
  let i = 0;
  while (size < bytes) {
    const row = {
      metric: `http_requests_total`,
      node: `node-${i % 7}`,
      route: `/api/v1/items/${i % 13}`,
      status: 200 + (i % 3),
      value: Math.round(Math.random() * 1e4) / 10,
      ts: 1_764_000_000_000 + i * 250,
    };
    rows.push(row);
    size = pack(rows).length;
    i++;
  }
  return pack(rows);
}

function time(fn, minMs = 200) {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < minMs) {
    fn();
    n++;
    now = performance.now();
  }
  return (now - start) / n; // ms per call
}

const LEVEL = Number(process.env.LEVEL ?? 1);
const sizes = [256, 512, 1024, 2048, 4096, 8192, 16384, 65536, 262144, 1048576];
const rows = [];
for (const size of sizes) {
  const body = payload(size);
  const deflated = deflateRawSync(body, { level: LEVEL });
  const compressMs = time(() => deflateRawSync(body, { level: LEVEL }));
  const inflateMs = time(() => inflateRawSync(deflated));
  const saved = body.length - deflated.length;
  const row = {
    bytes: body.length,
    deflated: deflated.length,
    ratio: +(deflated.length / body.length).toFixed(3),
    compressUs: +(compressMs * 1000).toFixed(1),
    inflateUs: +(inflateMs * 1000).toFixed(1),
  };
  for (const l of LINKS) row[l.name] = +((saved / l.bytesPerSec) * 1e6 - (compressMs + inflateMs) * 1000).toFixed(1); // µs gained (+) or lost (-)
  rows.push(row);
}
console.log(`Deflate (raw, level ${LEVEL}) on metric-like msgpack payloads; per link: µs gained (+) or lost (-) per message`);
console.table(rows);
for (const l of LINKS) {
  const first = rows.find((r) => r[l.name] > 0 && rows.slice(rows.indexOf(r)).every((x) => x[l.name] > 0));
  console.log(`${l.name}: compression pays from ${first ? `${first.bytes} bytes` : 'never (in the sizes measured)'}`);
}
console.log('CPU matters beyond the wire too: on a 2-core host every µs of deflate is taken from the application.');

import { existsSync } from 'node:fs';
// ---- Part 2: measured end to end through a rate-limited link -----------------------------------
// Two Foundation nodes in this process; B reaches A only through an in-process TCP proxy that
// paces bytes to RATE (a token bucket per direction), on 127.0.0.1. For each size, the median
// one-way time of a pubsub message (sent one at a time, after the previous one arrived), with
// and without compression. Needs a build (dist/).
import { createServer as createTcpServer, connect as tcpConnect } from 'node:net';
import { fileURLToPath } from 'node:url';

const DIST = fileURLToPath(new URL('../dist/index.js', import.meta.url));
if (!existsSync(DIST)) {
  console.log('\n(part 2 skipped: no dist/; run npm run build)');
  process.exit(0);
}
const { Foundation } = await import(DIST);

/** Forwards bytes at most `bytesPerSec` per direction, in 1 ms slices. */
function pacedProxy(targetPort, bytesPerSec) {
  const server = createTcpServer((client) => {
    const upstream = tcpConnect({ host: '127.0.0.1', port: targetPort });
    // As the mesh's own sockets: no Nagle delay on top of the pacing.
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const pipe = (from, to) => {
      const queue = [];
      let timer;
      const pump = () => {
        timer = undefined;
        let budget = Math.max(1, Math.floor(bytesPerSec / 1000));
        while (queue.length > 0 && budget > 0) {
          const head = queue[0];
          const n = Math.min(head.length, budget);
          to.write(head.subarray(0, n));
          budget -= n;
          if (n === head.length) queue.shift();
          else queue[0] = head.subarray(n);
        }
        if (queue.length > 0) timer = setTimeout(pump, 1);
      };
      from.on('data', (d) => {
        queue.push(d);
        if (!timer) timer = setTimeout(pump, 0);
      });
      from.on('close', () => to.destroy());
      from.on('error', () => to.destroy());
    };
    pipe(client, upstream);
    pipe(upstream, client);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const RATE_MBIT = Number(process.env.RATE_MBIT ?? 100);
const silent = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silent;
  },
};
const secret = 'bench-compress-secret-0123456789abcdef';
const a = await Foundation.start({ name: 'ca', clusterName: 'bench-compress', secret, logger: silent });
const proxy = await pacedProxy(Number(a.id.address.split(':').pop()), (RATE_MBIT * 1e6) / 8);
const b = await Foundation.start({
  name: 'cb',
  clusterName: 'bench-compress',
  secret,
  logger: silent,
  cluster: { strategy: 'static', hosts: [`127.0.0.1:${proxy.address().port}`] },
});
while (b.cluster.members().length === 0 || a.cluster.members().length === 0) await new Promise((r) => setTimeout(r, 20));
let arrived;
b.pubsub.subscribe('compress.>', () => arrived?.());
while (!a.pubsub.interest.table.route('compress.x').plain.has('cb')) await new Promise((r) => setTimeout(r, 20));

async function oneWayMs(value, compressAbove) {
  const samples = [];
  for (let i = 0; i < 15; i++) {
    const t0 = performance.now();
    const done = new Promise((r) => (arrived = r));
    a.pubsub.broadcast('compress.x', value, { compressAbove });
    await done;
    samples.push(performance.now() - t0);
  }
  samples.sort((x, y) => x - y);
  return samples[Math.floor(samples.length / 2)];
}

const linkRows = [];
for (const size of [1024, 2048, 4096, 8192, 16384, 65536]) {
  const value = { rows: payloadRows(size) };
  const plain = await oneWayMs(value, undefined);
  const deflated = await oneWayMs(value, 0);
  linkRows.push({ bytes: size, plainMs: +plain.toFixed(2), compressedMs: +deflated.toFixed(2), pays: deflated < plain });
}
console.log(`\nMeasured through a ${RATE_MBIT} Mbit/s in-process paced proxy (median one-way ms, pubsub message to a subscriber on the other node):`);
console.table(linkRows);
const firstPays = linkRows.find((r, i) => r.pays && linkRows.slice(i).every((x) => x.pays));
console.log(`${RATE_MBIT} Mbit/s link (measured): compression pays from ${firstPays ? `${firstPays.bytes} bytes` : 'never (in the sizes measured)'}`);
await b.stop();
await a.stop();
proxy.close();

function payloadRows(bytes) {
  const rows = [];
  for (let i = 0; pack(rows).length < bytes; i++)
    rows.push({
      metric: 'http_requests_total',
      node: `node-${i % 7}`,
      route: `/api/v1/items/${i % 13}`,
      status: 200 + (i % 3),
      value: Math.round(Math.random() * 1e4) / 10,
      ts: 1_764_000_000_000 + i * 250,
    });
  return rows;
}
