/**
 * The registry across hosts (network namespaces): a 2|1 partition in which both sides register
 * the same name, then the heal. Every host must end with the same single owner (the earlier
 * registration), and the loser must be told (a `conflict` event).
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDown, type NodeProc } from '../helpers/cluster.js';
import { startLabCluster } from '../helpers/lab-cluster.js';
import { createHosts, type NetLab, netnsGate } from '../helpers/netns.js';

const PROC = fileURLToPath(new URL('../helpers/layer-proc.mjs', import.meta.url));
const gate = netnsGate({ what: 'registry partition tests (network namespaces)' });
const PORT = 7410;

describe.skipIf(gate.skip)('registry across hosts (network namespaces)', () => {
  let lab: NetLab;
  const procs: NodeProc[] = [];

  beforeAll(async () => {
    lab = await createHosts(3);
    procs.push(
      ...(await startLabCluster(lab, { script: PROC, port: PORT, secret: 'lab-registry-secret-0123456789abcdef', env: { FOUNDATION_LOG_LEVEL: 'warn' } })),
    );
    for (const p of procs) {
      const watching = p.waitFor((e) => e.event === 'watching', 5000, 'watching');
      p.send({ cmd: 'watch-registry' });
      await watching;
    }
  });

  afterAll(async () => {
    await lab?.teardown();
  });

  it('both sides of a 2|1 partition register one name; after the heal exactly one owner remains everywhere, and the loser hears of it', async () => {
    const [p0, p1, p2] = procs as [NodeProc, NodeProc, NodeProc];
    const h2 = lab.hosts[2];
    await new Promise((r) => setTimeout(r, 600)); // heartbeat history
    const downs = [p0.waitForNext(isDown('h2'), 6000), p2.waitForNext(isDown('h0'), 6000)];
    await lab.partition(h2 as never);
    await Promise.all(downs);
    // The minority registers first, the majority a little later: the minority's is the earlier stamp.
    p2.send({ cmd: 'register', name: 'scheduler', meta: { side: 'minority' } });
    await p2.waitFor((e) => e.event === 'registered', 3000, 'h2 registered');
    await new Promise((r) => setTimeout(r, 20));
    p0.send({ cmd: 'register', name: 'scheduler', meta: { side: 'majority' } });
    await p0.waitFor((e) => e.event === 'registered', 3000, 'h0 registered');
    await p1.waitFor((e) => e.event === 'registry' && (e.change as { type: string }).type === 'register', 3000, 'h1 sees the majority registration');

    const conflictOnLoser = p0.waitFor((e) => e.event === 'registry' && (e.change as { type: string }).type === 'conflict', 10_000, 'conflict on h0');
    const healAt = Date.now();
    await lab.heal(h2 as never);
    const conflict = await conflictOnLoser;
    expect(conflict.change).toEqual({ type: 'conflict', name: 'scheduler', winner: 'h2', loser: 'h0' });
    // Within 2 s of the heal the majority hosts, which had resolved it to h0, resolve it to h2.
    for (const p of [p0, p1]) {
      const resolved = await p.waitFor(
        (e) => e.event === 'registry' && e.at >= healAt && (e.change as { type: string; owner?: { node: string } }).owner?.node === 'h2',
        5000,
        `${p.label} resolves scheduler to h2`,
      );
      expect(resolved.at - healAt, `${p.label} resolved within 2 s of the heal`).toBeLessThan(2000);
    }
    // And every host, the minority included, looks it up as h2's, with h2's metadata.
    for (const p of procs) {
      const lookup = p.waitForNext((e) => e.event === 'lookup', 3000, 'lookup');
      p.send({ cmd: 'lookup', name: 'scheduler' });
      const owner = (await lookup).owner as { node: string; meta: unknown } | null;
      expect(owner, `owner seen by ${p.label}`).toMatchObject({ node: 'h2', meta: { side: 'minority' } });
    }
  });
});
