// A Foundation node in its own OS process, driven by the multi-process and multi-host tests of
// the layers above the mesh (pubsub, registry).
// argv[2]: JSON start options. Prints one JSON line per event on stdout; reads JSON commands on stdin.
import { createInterface } from 'node:readline';
import { Foundation } from '../../dist/index.js';

const opts = JSON.parse(process.argv[2] ?? '{}');
const out = (o) => process.stdout.write(`${JSON.stringify({ at: Date.now(), ...o })}\n`);
const node = await Foundation.start(opts);
out({ event: 'started', id: node.id });
node.cluster.on('up', (m) => out({ event: 'up', member: m }));
node.cluster.on('down', (m, reason) => out({ event: 'down', member: m, reason }));
for (const m of node.cluster.members()) out({ event: 'up', member: m });

/** What each subscription received: count, and per publisher the sequence seen (order and duplicates checked here). */
const subs = new Map();
/** What `events-watch` received, per origin incarnation. */
const eventOrigins = new Map();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** node.services: the state each instance's toggled check returns, by instance id; what each instance's `work` handler does. */
const svcStates = new Map();
const svcDie = new Set();

const commands = {
  sub: ({ id, topic, queue, slowMs, maxQueue }) => {
    const s = { count: 0, outOfOrder: 0, duplicates: 0, last: new Map(), ids: queue ? new Set() : undefined };
    subs.set(id, s);
    node.pubsub.subscribe(
      topic,
      async (p, meta) => {
        s.count++;
        const prev = s.last.get(meta.from) ?? -1;
        if (p.i === prev) s.duplicates++;
        else if (p.i < prev) s.outOfOrder++;
        if (!queue) s.last.set(meta.from, p.i);
        if (s.ids) {
          const key = `${meta.from}:${p.i}`;
          if (s.ids.has(key)) s.duplicates++;
          s.ids.add(key);
        }
        if (slowMs) await sleep(slowMs);
      },
      { queue, maxQueue },
    );
    out({ event: 'subscribed', id });
  },
  /**
   * A subscriber that borrows its payloads (Buffers filled with one byte value): checks each is
   * uniform when the handler starts and still the same after an await (a pooled body reused too
   * early would show up as a changed or mixed buffer).
   */
  'sub-borrow': ({ id, topic }) => {
    const s = { count: 0, intact: 0, values: [] };
    subs.set(id, s);
    const fill = (p) => (p.every((x) => x === p[0]) ? p[0] : -1);
    node.pubsub.subscribe(
      topic,
      async (p) => {
        const before = fill(p);
        await sleep(2);
        s.count++;
        if (before >= 0 && fill(p) === before) s.intact++;
        s.values.push(before);
      },
      { borrowPayload: true },
    );
    out({ event: 'subscribed', id });
  },
  /** Publishes `count` Buffers of `size` bytes, message i filled with i % 256. */
  'pub-bytes': async ({ topic, count, size }) => {
    for (let i = 0; i < count; i++) if (!node.pubsub.broadcast(topic, Buffer.alloc(size, i % 256))) await node.pubsub.drained();
    out({ event: 'published', topic, count });
  },
  /** Waits until this node routes `topic` to every node named in `to` (their interest arrived): a test-only look inside. */
  interest: async ({ topic, to, group }) => {
    const end = Date.now() + 10_000;
    const table = node.pubsub.interest.table;
    const ready = () => {
      const route = table.route(topic);
      if (!group) return to.every((n) => route.plain.has(n));
      const members = route.groups.get(group) ?? [];
      return to.every((n) => members.some((m) => m.node === n));
    };
    while (!ready()) {
      if (Date.now() > end) throw new Error(`no interest of ${to.join(',')} in ${topic} after 10 s`);
      await sleep(10);
    }
    out({ event: 'interest', topic, group });
  },
  pub: async ({ topic, count, size = 100, start = 0, pauseEvery, pauseMs }) => {
    const pad = 'x'.repeat(Math.max(0, size - 20));
    const t0 = Date.now();
    for (let i = start; i < start + count; i++) {
      if (!node.pubsub.broadcast(topic, { i, pad })) await node.pubsub.drained();
      if (pauseEvery && (i + 1) % pauseEvery === 0) await sleep(pauseMs ?? 1);
    }
    out({ event: 'published', topic, count, ms: Date.now() - t0 });
  },
  register: ({ name, meta }) => {
    try {
      out({ event: 'registered', owner: node.registry.register(name, meta ?? null) });
    } catch (err) {
      out({ event: 'register-refused', name, code: err.code, owner: err.owner });
    }
  },
  lookup: ({ name }) => out({ event: 'lookup', name, owner: node.registry.lookup(name) ?? null }),
  'watch-registry': () => {
    node.registry.watch((e) => out({ event: 'registry', change: e }));
    out({ event: 'watching' });
  },
  /**
   * node.services: registers an instance. Its check is a function returning the state `svc-health`
   * sets (or, with `checkUrl`, a GET of that URL); handlers: `whoami` ({ node, id }), `echo`,
   * `fail` (throws), `work` (kills this process with SIGKILL first when `dieOnWork`: a node killed
   * while handling a call).
   */
  'svc-register': async ({ name, id, version, tags, meta, endpoint, intervalMs, timeoutMs, checkUrl, noCheck, dieOnWork }) => {
    svcStates.set(id, 'passing');
    if (dieOnWork) svcDie.add(id);
    const run = checkUrl ?? (() => svcStates.get(id));
    const reg = await node.services.register(name, {
      id,
      version,
      tags,
      meta,
      endpoint,
      ...(noCheck ? {} : { check: { run, intervalMs, timeoutMs } }),
      handlers: {
        whoami: () => ({ node: node.id.name, id }),
        echo: (args) => args,
        fail: (args) => {
          throw Object.assign(new Error(`boom: ${args?.why ?? 'no reason'}`), { code: 'APP_BOOM' });
        },
        work: () => {
          if (svcDie.has(id)) process.kill(process.pid, 'SIGKILL');
          return { node: node.id.name, id };
        },
      },
    });
    out({ event: 'svc-registered', id, health: reg.health() });
  },
  'svc-health': ({ id, state }) => {
    svcStates.set(id, state);
    out({ event: 'svc-health-set', id, state });
  },
  'svc-discover': ({ query }) => out({ event: 'svc-discover', records: node.services.discover(query) }),
  'svc-call': async ({ name, method, args, opts }) => {
    try {
      out({ event: 'svc-call', ok: true, value: await node.services.call(name, method, args, opts) });
    } catch (err) {
      out({ event: 'svc-call', ok: false, name: err.name, code: err.code, message: err.message, attempts: err.attempts, remote: err.remote });
    }
  },
  'svc-stats': () => out({ event: 'svc-stats', stats: node.services.stats(), explain: node.services.explain('users') }),
  'svc-http': () => out({ event: 'svc-http', address: node.httpAddress }),
  report: ({ id }) => {
    const s = subs.get(id);
    out({
      event: 'report',
      id,
      count: s?.count ?? 0,
      outOfOrder: s?.outOfOrder ?? 0,
      duplicates: s?.duplicates ?? 0,
      distinct: s?.ids?.size,
      intact: s?.intact,
      values: s?.values,
    });
  },
  /** node.events: record what this node receives of `pattern`, per origin incarnation (order, gaps, duplicates checked here). */
  'events-watch': ({ pattern }) => {
    node.events.on(pattern, (e) => {
      const key = `${e.node}:${e.incarnation}`;
      const o = eventOrigins.get(key) ?? { node: e.node, count: 0, first: e.seq, last: 0, outOfOrder: 0, gaps: 0, ids: new Set() };
      eventOrigins.set(key, o);
      if (o.ids.has(e.id)) o.duplicates = (o.duplicates ?? 0) + 1;
      else if (o.count > 0 && e.seq <= o.last) o.outOfOrder++;
      else if (o.count > 0 && e.seq !== o.last + 1) o.gaps += e.seq - o.last - 1;
      o.ids.add(e.id);
      o.count++;
      o.last = Math.max(o.last, e.seq);
    });
    out({ event: 'events-watching', pattern });
  },
  'events-emit': async ({ type, count = 1, distributed = true, pauseEvery, pauseMs }) => {
    for (let i = 0; i < count; i++) {
      if (distributed) node.events.emitDistributed(type, { i });
      else node.events.emit(type, { i });
      if (pauseEvery && (i + 1) % pauseEvery === 0) await sleep(pauseMs ?? 1);
    }
    out({ event: 'events-emitted', type, count });
  },
  'events-report': () =>
    out({
      event: 'events-report',
      origins: [...eventOrigins.values()].map(({ ids, ...o }) => ({ ...o, duplicates: o.duplicates ?? 0 })),
      stats: node.events.stats(),
    }),
  'events-query': async ({ query }) => out({ event: 'events-query', result: await node.events.query(query ?? {}) }),
  /** node.presence */
  'presence-track': ({ topic, key, meta }) => out({ event: 'presence-tracked', meta: node.presence.track(topic, key, meta ?? null) }),
  'presence-list': ({ topic }) => out({ event: 'presence-list', topic, list: node.presence.list(topic) }),
  'presence-untrack': ({ topic, key }) => out({ event: 'presence-untracked', topic, key, removed: node.presence.untrack(topic, key) }),
  'presence-watch': ({ topic }) => {
    node.presence.onDiff(topic, (diff) => out({ event: 'presence-diff', diff }));
    out({ event: 'presence-watching', topic });
  },
  stats: () => out({ event: 'stats', pubsub: node.pubsub.stats(), lanes: node.mesh.stats().lanes, largeBodies: node.mesh.stats().largeBodies }),
  /** node.config: a cluster-wide set; prints each node's vote, or the error's code, votes and message. */
  'config-set-cw': async ({ path, value, timeoutMs }) => {
    const t0 = performance.now();
    try {
      const r = await node.config.setClusterWide(path, value, timeoutMs ? { timeoutMs } : {});
      out({ event: 'config-committed', path, ...r, ms: performance.now() - t0 });
    } catch (err) {
      out({ event: 'config-aborted', path, code: err.code, message: err.message, tx: err.tx, votes: err.votes, ms: performance.now() - t0 });
    }
  },
  'config-get': ({ path }) => out({ event: 'config-value', path, value: node.config.get(path) ?? null, version: node.config.version() }),
  /** A validator on `prefix` that vetoes with `reason`: every value, or only numbers above `max` when given. */
  'config-validator': ({ prefix, reason, max }) => {
    node.config.validate(prefix, (_path, value) => {
      if (max === undefined || (typeof value === 'number' && value > max)) throw new Error(reason ?? 'refused');
    });
    out({ event: 'config-validator', prefix });
  },
  'config-watch': ({ path }) => {
    node.config.watch(path, (value, e) => out({ event: 'config-changed', path, value, version: e.version, source: e.source }));
    out({ event: 'config-watching', path });
  },
  /** Test hook: hold this coordinator's commit decisions (except to `allow`), reporting each held one. */
  'config-hold': ({ allow }) => {
    node.config.holdCommitsForTest({ allow: allow ?? [], onHeld: (tx, to) => out({ event: 'config-held', tx, to }) });
    out({ event: 'config-holding' });
  },
  'config-state': () =>
    out({
      event: 'config-state',
      version: node.config.version(),
      inDoubt: node.config.inDoubt(),
      stats: node.config.stats(),
      history: node.config.history(),
      entries: node.config.entries(),
    }),
  'config-force': ({ tx, outcome }) => out({ event: 'config-forced', tx, done: node.config.forceResolve(tx, outcome) }),
  'config-http': () => out({ event: 'config-http', http: node.httpAddress ?? null }),
  /** Waits until the node reports ready and prints what `path` read at that first ready moment. */
  'config-when-ready': async ({ path }) => {
    while (!node.cluster.isReady()) await sleep(2);
    out({ event: 'config-ready', path, value: node.config.get(path) ?? null, version: node.config.version() });
  },
  stop: async () => {
    await node.stop();
    out({ event: 'stopped' });
    process.exit(0);
  },
};
createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  Promise.resolve(commands[cmd.cmd]?.(cmd)).catch((err) => out({ event: 'command-error', cmd: cmd.cmd, message: err.message }));
});
process.on('SIGTERM', () => commands.stop());
