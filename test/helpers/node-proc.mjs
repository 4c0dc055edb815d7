// A Foundation node in its own OS process, driven by the multi-process tests.
// argv[2]: JSON start options. Prints one JSON line per event on stdout; reads JSON commands on stdin.
import { createInterface } from 'node:readline';
import { Foundation } from '../../dist/index.js';

const opts = JSON.parse(process.argv[2] ?? '{}');
const out = (o) => process.stdout.write(`${JSON.stringify({ at: Date.now(), ...o })}\n`);
let node;
try {
  node = await Foundation.start(opts);
} catch (err) {
  out({ event: 'start-failed', code: err.code, message: err.message });
  process.exit(3);
}
out({ event: 'started', id: node.id, http: node.httpAddress });
for (const ev of ['up', 'suspect', 'alive']) node.cluster.on(ev, (m) => out({ event: ev, member: m }));
node.cluster.on('down', (m, reason) => out({ event: 'down', member: m, reason }));
node.cluster.on('name-taken', (e) => out({ event: 'name-taken', code: e.error.code, name: e.error.name, via: e.via, byIncarnation: e.byIncarnation }));
// Links can come up while start() is still running, before the listeners above exist.
for (const m of node.cluster.members()) out({ event: 'up', member: m, before: 'listeners' });
node.mesh.handle('echo', (p) => p);
node.mesh.handle('whoami', () => node.id);

const commands = {
  members: () => out({ event: 'members', members: node.cluster.members({ includeDown: true, includeHidden: true }) }),
  busy: ({ ms }) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {}
    out({ event: 'busy-done' });
  },
  request: async ({ to, topic, payload }) => {
    try {
      out({ event: 'reply', value: await node.mesh.request(to, topic, payload, { timeoutMs: 3000 }) });
    } catch (err) {
      out({ event: 'reply-error', code: err.code, message: err.message });
    }
  },
  stats: () => out({ event: 'stats', stats: node.mesh.stats(), health: node.health(), ready: node.cluster.isReady() }),
  // A full GC first when started with NODE_OPTIONS=--expose-gc, so memory reads what is still held.
  memory: () => {
    if (globalThis.gc) globalThis.gc();
    out({ event: 'memory', gc: Boolean(globalThis.gc), memory: process.memoryUsage() });
  },
  stop: async () => {
    await node.stop();
    out({ event: 'stopped' });
    process.exit(0);
  },
};
createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  Promise.resolve(commands[cmd.cmd]?.(cmd)).catch((err) => out({ event: 'command-error', message: err.message }));
});
process.on('SIGTERM', () => commands.stop());
