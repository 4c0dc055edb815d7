// Where deflate starts to pay for pubsub payloads (channels' `compress` middleware).
//
// For realistic telemetry-like payloads (msgpack of arrays of metric records) of growing size,
// measures with node:zlib deflateRawSync + inflateRawSync: the CPU time to compress and
// decompress, and the bytes saved. Compression pays when the time it saves on the wire is
// larger than the time it costs:  saved_bytes / bandwidth  >  compress_time + inflate_time.
// Bandwidths: loopback as this machine's mesh measured it (2 GB/s, docs/benchmarks.md) and a
// rate-limited link (100 Mbit/s and 1 Gbit/s). Prints the table and the break-even size per link.
//
//   node bench/compress.mjs            (LEVEL=6 node bench/compress.mjs for zlib's default level)
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
