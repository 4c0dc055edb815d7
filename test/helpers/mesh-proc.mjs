// A bare mesh (layer 1, no discovery) in its own OS process, driven through the internal
// interface by the multi-process tests of the mesh's delivery guarantees. Run with
// `node --import tsx` (it loads test/helpers/replicated-kv.ts). argv[2]: JSON options
// { name, port?, secret, peers?: [address] }. Prints one JSON line per event on stdout; reads
// JSON commands on stdin.
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { resolveHeartbeatConfig } from '../../dist/mesh/heartbeat-protocol.js';
import { Mesh } from '../../dist/mesh/mesh.js';
import { ReplicatedKV } from './replicated-kv.ts';

const opts = JSON.parse(process.argv[2] ?? '{}');
const out = (o) => process.stdout.write(`${JSON.stringify({ at: Date.now(), ...o })}\n`);
const logger = pino({ level: process.env.FOUNDATION_LOG_LEVEL ?? 'info', base: { node: opts.name } }, pino.destination(2));
const incarnation = Date.now() * 1000 + Math.floor(Math.random() * 1000);

const mesh = await Mesh.start({
  name: opts.name,
  host: '127.0.0.1',
  port: opts.port ?? 0,
  clusterName: 'mesh-proc',
  secret: Buffer.from(opts.secret ?? 'mesh-proc-secret'),
  hidden: false,
  maxFrameBytes: 1024 * 1024,
  maxMessageBytes: 64 * 1024 * 1024,
  handshakeTimeoutMs: 5000,
  connectTimeoutMs: 1500,
  reconnect: { baseMs: 100, maxMs: 1000 },
  heartbeat: resolveHeartbeatConfig({ self: opts.name }),
  lanes: {},
  logger,
  incarnation,
});

// Who is up, as the membership events said, checked by the handlers below.
const upNow = new Set();
mesh.membership.on('up', (m) => {
  upNow.add(m.name);
  out({ event: 'up', member: m });
  // Right behind the handshake: the peer must not handle this before its own `up` for us.
  if (opts.helloOnUp) mesh.send(m.name, 'hello', { from: opts.name });
});
mesh.membership.on('down', (m, reason) => {
  upNow.delete(m.name);
  out({ event: 'down', member: m, reason });
});
mesh.events.on('link-replaced', (e) => out({ event: 'link-replaced', ...e }));
mesh.events.on('self-replaced', (e) => out({ event: 'self-replaced', ...e }));

mesh.handle('hello', (_p, ctx) => out({ event: 'hello', from: ctx.from, upBefore: upNow.has(ctx.from), session: ctx.session }));

// Sequence numbers of a burst, checked on arrival: in order, and where the gaps are.
const seq = new Map();
mesh.handle('seq', (p, ctx) => {
  const s = seq.get(ctx.from) ?? { last: -1, received: 0, outOfOrder: 0, gaps: 0, missing: 0, sessions: new Set() };
  seq.set(ctx.from, s);
  if (p.n <= s.last) s.outOfOrder++;
  else if (p.n !== s.last + 1) {
    s.gaps++;
    s.missing += p.n - s.last - 1;
  }
  s.last = Math.max(s.last, p.n);
  s.received++;
  s.sessions.add(ctx.session);
});

let kv;
const watches = [];

const commands = {
  want: ({ address }) => mesh.want(address, 'test'),
  // Test-only: a second dial to a node we are linked to, through the production dial and
  // handshake path (the connector's `dial`, past the "already linked" check of `connect`). The
  // peer's tie-break keeps the newer link (we opened both), so the old one is replaced.
  redial: async ({ address }) => {
    const r = await mesh.connector.dial(address);
    out({ event: 'redialed', ok: r.ok, error: r.ok ? undefined : r.error.message });
  },
  burst: async ({ to, count, size = 256, batch = 200, redialAt, address, lane = 'events' }) => {
    const pad = 'x'.repeat(size);
    let redial;
    for (let n = 0; n < count; n++) {
      try {
        mesh.send(to, 'seq', { n, pad }, lane);
      } catch (err) {
        out({ event: 'send-error', n, message: err.message, code: err.code });
        return;
      }
      if (n === redialAt) redial = mesh.connector.dial(address).then((r) => out({ event: 'redialed', ok: r.ok }));
      if (n % batch === batch - 1) await new Promise((r) => setImmediate(r));
    }
    await redial;
    out({ event: 'burst-done', count });
  },
  seq: () => out({ event: 'seq', seq: Object.fromEntries([...seq].map(([k, v]) => [k, { ...v, sessions: [...v.sessions] }])) }),
  stats: () => out({ event: 'stats', stats: mesh.stats() }),
  // Late subscribers: one watch per delay, each folding the snapshot and the changes into a member set.
  watch: ({ delays }) => {
    for (const d of delays) {
      setTimeout(() => {
        const seen = new Map();
        const errors = [];
        const w = mesh.watchMembers((c) => {
          const had = seen.get(c.member.name);
          if (c.type === 'up') {
            if (had === c.member.incarnation) errors.push(`duplicate up ${c.member.name}`);
            seen.set(c.member.name, c.member.incarnation);
          } else if (c.type === 'down') {
            if (had !== c.member.incarnation) errors.push(`down of ${c.member.name} never seen up (gap)`);
            seen.delete(c.member.name);
          }
        });
        for (const m of w.members) seen.set(m.name, m.incarnation);
        watches.push({ delay: d, seen, errors, snapshot: w.members.map((m) => m.name) });
      }, d);
    }
  },
  watched: () => {
    const truth = mesh.membership.list().map((m) => `${m.name}@${m.incarnation}`);
    out({
      event: 'watched',
      truth: truth.sort(),
      watches: watches.map((w) => ({
        delay: w.delay,
        snapshot: w.snapshot,
        errors: w.errors,
        folded: [...w.seen].map(([n, i]) => `${n}@${i}`).sort(),
      })),
    });
  },
  kvStart: () => {
    kv = new ReplicatedKV(mesh);
    out({ event: 'kv-started' });
  },
  kvSet: ({ key, value }) => kv.set(key, value),
  kvDump: () => out({ event: 'kv', entries: kv.entries(), resyncs: kv.resyncs }),
  stop: async () => {
    await mesh.stop();
    out({ event: 'stopped' });
    process.exit(0);
  },
};

out({ event: 'started', id: mesh.self });
for (const a of opts.peers ?? []) mesh.want(a, 'test');

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  Promise.resolve(commands[cmd.cmd]?.(cmd)).catch((err) => out({ event: 'command-error', message: err.message }));
});
process.on('SIGTERM', () => commands.stop());
