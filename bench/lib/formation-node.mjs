// One Foundation node for bench/formation.mjs, run inside a lab network namespace.
// argv[2]: JSON options for Foundation.start. Prints one JSON line per event on stdout, each with
// `at` = Date.now() (the same machine clock in every process), like test/helpers/node-proc.mjs:
//
//   {"event":"loaded"}                      dist/ imported (process start -> here is Node + module load)
//   {"event":"started","id":{...}}          Foundation.start resolved
//   {"event":"up","member":{"name":...}}    a member came up        (also before 'started': see below)
//   {"event":"down","member":...,"reason"}  a member went down
//   {"event":"complete","cpuUs"}            this node sees BENCH_EXPECT_PEERS members up (once)
//   {"event":"dial","peer","ms","ok"}       a discovery-driven connect attempt ended
//   {"event":"hs-fail","reason","remote"}   a handshake failed (tie-break losses are not failures: see logCounts)
//   {"event":"stats",...}                   answer to the stdin command {"cmd":"stats"}
//
// Membership events are taken from Foundation's diagnostics channels, subscribed BEFORE
// Foundation.start: the mesh listens (and can accept a peer's link) before start() resolves, so
// `node.cluster.on('up')` attached afterwards can miss the first members of a fast-forming cluster.
// The process exits when stdin closes (the coordinator went away).
import dc from 'node:diagnostics_channel';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const out = (o) => process.stdout.write(`${JSON.stringify({ at: Date.now(), ...o })}\n`);

const logCounts = {};
const count = (level, msg) => {
  const k = `${level}: ${msg ?? ''}`;
  logCounts[k] = (logCounts[k] ?? 0) + 1;
};
/** A pino-compatible logger that counts every message (debug included) and prints warn/error to stderr. */
function countingLogger(bindings = {}) {
  const print = (level) => (obj, msg) => {
    count(level, msg);
    process.stderr.write(`${JSON.stringify({ level, ...bindings, ...obj, msg })}\n`);
  };
  return {
    debug: (_obj, msg) => count('debug', msg),
    info: (_obj, msg) => count('info', msg),
    warn: print('warn'),
    error: print('error'),
    child: (b) => countingLogger({ ...bindings, ...b }),
  };
}

const opts = JSON.parse(process.argv[2] ?? '{}');

const expectPeers = Number(process.env.BENCH_EXPECT_PEERS ?? 0);
const upNow = new Set();
let completed = false;
dc.subscribe('foundation:member:up', (m) => {
  if (m.node !== opts.name || m.member?.hidden) return;
  out({ event: 'up', member: { name: m.member.name } });
  upNow.add(m.member.name);
  if (!completed && expectPeers > 0 && upNow.size >= expectPeers) {
    completed = true;
    out({ event: 'complete', cpuUs: process.cpuUsage() });
  }
});
dc.subscribe('foundation:member:down', (m) => {
  if (m.node !== opts.name) return;
  out({ event: 'down', member: { name: m.member.name }, reason: m.reason });
  upNow.delete(m.member.name);
});
dc.subscribe('foundation:discovery:connect', (m) => {
  if (m.node === opts.name) out({ event: 'dial', peer: m.peer, ms: Math.round(m.durationMs ?? 0), ok: m.result === 'ok', error: m.error });
});
dc.subscribe('foundation:link:handshake-failed', (m) => {
  if (m.node === opts.name) out({ event: 'hs-fail', reason: m.reason, remote: m.remote });
});

// BENCH_FOUNDATION_DIST (set by `formation.mjs --dist DIR`) benchmarks another build.
const dist = process.env.BENCH_FOUNDATION_DIST;
const { Foundation } = await import(dist ? pathToFileURL(join(dist, 'index.js')).href : '../../dist/index.js');
out({ event: 'loaded', processStart: Math.round(performance.timeOrigin), cpuUs: process.cpuUsage() });

let node;
try {
  node = await Foundation.start({ ...opts, logger: countingLogger({ node: opts.name }) });
} catch (err) {
  out({ event: 'start-failed', code: err.code, message: err.message });
  process.exit(3);
}
out({ event: 'started', id: node.id, cpuUs: process.cpuUsage() });

function stats() {
  // The strategy's own packet counters (gossip / mdns), through the node's (TS-private) topologies.
  let strategy;
  try {
    strategy = node.topologies?.map((t) => ({ name: t.strategy?.name, stats: t.strategy?.stats?.() }));
  } catch {}
  return {
    event: 'stats',
    cpuUs: process.cpuUsage(),
    rssMB: Math.round(process.memoryUsage().rss / 1e5) / 10,
    mesh: node.mesh.stats(),
    health: node.health(),
    discovery: node.discovery.topologies(),
    strategy,
    members: node.cluster.members({ includeDown: true }).map((m) => ({ name: m.name, status: m.status })),
    logCounts,
  };
}

createInterface({ input: process.stdin })
  .on('line', (line) => {
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch {
      return;
    }
    if (cmd.cmd === 'stats') out(stats());
    else if (cmd.cmd === 'exit') process.exit(0);
  })
  .on('close', () => process.exit(0));
