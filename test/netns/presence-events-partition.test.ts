/**
 * Presence and events across hosts (network namespaces), partition 2|1: each side lists only what
 * it can see, with leave diffs; changes made on both sides during the partition; after the heal
 * every host lists the same presences, with join diffs. A cluster-wide events query during the
 * partition is flagged partial and names the unreachable host; after the heal it is complete.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventQueryResult } from '../../src/services/events/events.js';
import type { PresenceDiff, PresenceList } from '../../src/services/presence.js';
import { isDown, isUp, type NodeEvent, type NodeProc } from '../helpers/cluster.js';
import { startLabCluster } from '../helpers/lab-cluster.js';
import { createHosts, type NetLab, netnsGate } from '../helpers/netns.js';

const PROC = fileURLToPath(new URL('../helpers/layer-proc.mjs', import.meta.url));
const gate = netnsGate({ what: 'presence and events partition tests (network namespaces)' });
const PORT = 7430;
const TOPIC = 'room:lobby';

async function ask(p: NodeProc, cmd: Record<string, unknown>, reply: string, timeoutMs = 10_000): Promise<NodeEvent> {
  const next = p.waitForNext((e) => e.event === reply || e.event === 'command-error', timeoutMs, reply);
  p.send(cmd);
  const e = await next;
  if (e.event === 'command-error') throw new Error(`${p.label} ${String(cmd.cmd)}: ${String(e.message)}`);
  return e;
}

/** A list as sorted `key@node` strings. */
async function listed(p: NodeProc): Promise<string[]> {
  const l = (await ask(p, { cmd: 'presence-list', topic: TOPIC }, 'presence-list')).list as PresenceList;
  return Object.entries(l)
    .flatMap(([key, { metas }]) => metas.map((m) => `${key}@${m.node}`))
    .sort();
}

async function until(cond: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<number> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return Date.now() - t0;
}

/** The `key@node` of every join (or leave) in the diffs `p` printed from its `from`-th output line on. */
const diffsOf = (p: NodeProc, from: number, kind: 'joins' | 'leaves') =>
  p.events
    .slice(from)
    .filter((e) => e.event === 'presence-diff')
    .flatMap((e) => Object.entries((e.diff as PresenceDiff)[kind]).flatMap(([key, { metas }]) => metas.map((m) => `${key}@${m.node}`)))
    .sort();

describe.skipIf(gate.skip)('presence and events across hosts (network namespaces)', () => {
  let lab: NetLab;
  const procs: NodeProc[] = [];

  beforeAll(async () => {
    lab = await createHosts(3);
    procs.push(
      ...(await startLabCluster(lab, { script: PROC, port: PORT, secret: 'lab-presence-secret-0123456789abcdef', env: { FOUNDATION_LOG_LEVEL: 'warn' } })),
    );
    for (const p of procs) await ask(p, { cmd: 'presence-watch', topic: TOPIC }, 'presence-watching');
  });

  afterAll(async () => {
    await lab?.teardown();
  });

  it('a 2|1 partition: each side lists what it sees, with leave diffs; after the heal every host lists the same, with join diffs; a query during it is partial and names the far host', async () => {
    const [p0, p1, p2] = procs as [NodeProc, NodeProc, NodeProc];
    const h2 = lab.hosts[2];
    await ask(p0, { cmd: 'presence-track', topic: TOPIC, key: 'alice', meta: { host: 'h0' } }, 'presence-tracked');
    await ask(p1, { cmd: 'presence-track', topic: TOPIC, key: 'bob', meta: { host: 'h1' } }, 'presence-tracked');
    await ask(p2, { cmd: 'presence-track', topic: TOPIC, key: 'carol', meta: { host: 'h2' } }, 'presence-tracked');
    await ask(p2, { cmd: 'events-emit', type: 'audit.local', count: 3, distributed: false }, 'events-emitted');
    const everyone = ['alice@h0', 'bob@h1', 'carol@h2'];
    await until(async () => (await Promise.all(procs.map(listed))).every((l) => JSON.stringify(l) === JSON.stringify(everyone)), 'every host to list 3');
    const complete = (await ask(p0, { cmd: 'events-query', query: { type: 'audit.>' } }, 'events-query')).result as EventQueryResult;
    expect(complete).toMatchObject({ partial: false, missing: [] });
    expect(complete.events).toHaveLength(3);

    await new Promise((r) => setTimeout(r, 600)); // heartbeat history
    const cut = procs.map((p) => p.events.length);
    const downs = [
      p0.waitForNext(isDown('h2'), 8000, 'h2 down on h0'),
      p1.waitForNext(isDown('h2'), 8000, 'h2 down on h1'),
      p2.waitForNext(isDown('h0'), 8000, 'h0 down on h2'),
    ];
    await lab.partition(h2 as never);
    await Promise.all(downs);
    // Each side lists what it can see, and the majority heard carol leave.
    await until(async () => JSON.stringify(await listed(p0)) === JSON.stringify(['alice@h0', 'bob@h1']), 'the majority to drop carol');
    expect(await listed(p1)).toEqual(['alice@h0', 'bob@h1']);
    await until(async () => JSON.stringify(await listed(p2)) === JSON.stringify(['carol@h2']), 'the minority to drop alice and bob');
    expect(diffsOf(p0, cut[0] as number, 'leaves')).toEqual(['carol@h2']);
    expect(diffsOf(p2, cut[2] as number, 'leaves')).toEqual(['alice@h0', 'bob@h1']);
    // A query on the majority side: partial, naming h2 (the membership has it down), and h2's local events missing.
    const partial = (await ask(p0, { cmd: 'events-query', query: { type: 'audit.>', timeoutMs: 1000 } }, 'events-query')).result as EventQueryResult;
    expect(partial.partial).toBe(true);
    expect(partial.missing).toEqual([{ node: 'h2', reason: 'down' }]);
    expect(partial.events).toEqual([]);

    // Changes on both sides while apart.
    await ask(p0, { cmd: 'presence-untrack', topic: TOPIC, key: 'alice' }, 'presence-untracked');
    await ask(p2, { cmd: 'presence-track', topic: TOPIC, key: 'dave', meta: { host: 'h2' } }, 'presence-tracked');
    // Each host's own diff of its change is printed just after the reply: wait for them, then mark.
    await p2.waitFor((e) => e.event === 'presence-diff' && 'dave' in (e.diff as PresenceDiff).joins, 3000, "h2's own join of dave");
    await p0.waitFor(
      (e) => e.event === 'presence-diff' && 'alice' in (e.diff as PresenceDiff).leaves && (e.diff as PresenceDiff).leaves.alice?.metas[0]?.node === 'h0',
      3000,
      "h0's own leave of alice",
    );
    // h1 is on h0's side: alice's leave reaches it at once.
    await until(async () => JSON.stringify(await listed(p1)) === JSON.stringify(['bob@h1']), 'h1 to drop alice');
    const mark = procs.map((p) => p.events.length);

    const healAt = Date.now();
    const ups = [p0.waitForNext(isUp('h2'), 15_000, 'h2 up on h0'), p2.waitForNext(isUp('h0'), 15_000, 'h0 up on h2')];
    await lab.heal(h2 as never);
    await Promise.all(ups);
    const after = ['bob@h1', 'carol@h2', 'dave@h2'];
    const ms = await until(
      async () => (await Promise.all(procs.map(listed))).every((l) => JSON.stringify(l) === JSON.stringify(after)),
      'every host to list the same after the heal',
    );
    console.log(`[presence] after the heal every host listed the same ${Date.now() - healAt} ms after the heal (${ms} ms after both sides saw each other up)`);
    expect(diffsOf(p1, mark[1] as number, 'joins')).toEqual(['carol@h2', 'dave@h2']);
    expect(diffsOf(p2, mark[2] as number, 'joins')).toEqual(['bob@h1']);
    expect(diffsOf(p2, mark[2] as number, 'leaves')).toEqual([]);
    const healed = (await ask(p0, { cmd: 'events-query', query: { type: 'audit.>' } }, 'events-query')).result as EventQueryResult;
    expect(healed).toMatchObject({ partial: false, missing: [] });
    expect(healed.events.map((e) => e.node)).toEqual(['h2', 'h2', 'h2']);
  });
});
