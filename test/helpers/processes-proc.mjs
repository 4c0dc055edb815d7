// A Foundation node in its own OS process, driven by the multi-process and multi-host tests of
// node.processes (failover after kill -9 and SIGSTOP, 1,000 children, calls through a failover,
// partitions). argv[2]: JSON start options. Prints one JSON line per event on stdout; reads JSON
// commands on stdin. Defines one worker type, `counter` (state: a number; `get` returns it with
// the node, the fencing token and whether it was handed over).
import { createInterface } from 'node:readline';
import { Foundation } from '../../dist/index.js';

const opts = JSON.parse(process.argv[2] ?? '{}');
const out = (o) => process.stdout.write(`${JSON.stringify({ at: Date.now(), ...o })}\n`);
const node = await Foundation.start(opts);
const self = node.id.name;
out({ event: 'started', id: node.id });
node.cluster.on('up', (m) => out({ event: 'up', member: m }));
node.cluster.on('down', (m, reason) => out({ event: 'down', member: m, reason }));
for (const m of node.cluster.members()) out({ event: 'up', member: m });

node.processes.define('counter', {
  init: (args, ctx) => ({ n: ctx.handoff ?? args?.start ?? 0, token: ctx.fencingToken, handedOver: ctx.handoff !== undefined }),
  handleCall: (msg, s) => {
    if (msg === 'get') return { reply: { n: s.n, node: self, token: s.token, handedOver: s.handedOver } };
    return { reply: s.n + msg.add, state: { ...s, n: s.n + msg.add } };
  },
  handleCast: (msg, s) => ({ ...s, n: s.n + msg.add }),
  handoff: (s) => s.n,
});
node.processes.watch((e) => out({ event: 'proc', e: { ...e, reason: typeof e.reason === 'object' ? 'crash' : e.reason } }));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const localNames = () =>
  node.processes
    .list()
    .filter((p) => p.node === self)
    .map((p) => p.name);

const commands = {
  singleton: async ({ name, consistency, clusterSize, leaseMs }) => {
    await node.processes.startSingleton(name, 'counter', { start: 0 }, { consistency, clusterSize, leaseMs });
    out({ event: 'declared', name });
  },
  replicated: async ({ name }) => out({ event: 'replicated', refs: await node.processes.startReplicated(name, 'counter', null) }),
  children: async ({ count, prefix }) => {
    const refs = [];
    for (let i = 0; i < count; i += 100) {
      refs.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(100, count - i) }, (_, j) => node.processes.startChild('counter', null, { name: `${prefix}${i + j}` })),
        )),
      );
    }
    const perNode = {};
    for (const r of refs) perNode[r.node] = (perNode[r.node] ?? 0) + 1;
    out({ event: 'children', perNode });
  },
  /** What runs on this node (its own view of its workers), and the cluster-wide list as it sees it. */
  running: () => out({ event: 'running', local: localNames(), stats: node.processes.stats(), all: node.processes.list().length }),
  call: async ({ id, name, msg, timeoutMs }) => {
    try {
      out({ event: 'reply', id, value: await node.processes.call(name, msg, { timeoutMs }) });
    } catch (err) {
      out({ event: 'reply', id, error: err.code ?? err.message });
    }
  },
  /** Calls `name` every `everyMs` for `durationMs`; reports every failure and the count of successes. */
  'call-loop': async ({ id, name, everyMs, durationMs, timeoutMs }) => {
    const end = Date.now() + durationMs;
    let ok = 0;
    const failures = [];
    while (Date.now() < end) {
      try {
        await node.processes.call(name, { add: 1 }, { timeoutMs });
        ok++;
      } catch (err) {
        failures.push(err.code ?? err.message);
      }
      await sleep(everyMs);
    }
    out({ event: 'call-loop', id, ok, failures });
  },
  explain: async ({ name }) => out({ event: 'explain', explanation: await node.processes.explain(name) }),
  lookup: ({ name }) => out({ event: 'lookup', name, owner: node.registry.lookup(name) ?? null }),
  stop: async () => {
    await node.stop();
    out({ event: 'stopped' });
    process.exit(0);
  },
};
createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  Promise.resolve(commands[cmd.cmd]?.(cmd)).catch((err) => out({ event: 'command-error', cmd: cmd.cmd, message: err.message, code: err.code }));
});
process.on('SIGTERM', () => commands.stop());
