/**
 * Multi-host mesh tests: every node runs inside its own network namespace (a lab "host"),
 * and partitions are made with iptables DROP inside the lab.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDown, isUp, type NodeProc } from '../helpers/cluster.js';
import { startLabCluster } from '../helpers/lab-cluster.js';
import { createHosts, type NetLab, netnsGate } from '../helpers/netns.js';

const NODE_PROC = fileURLToPath(new URL('../helpers/node-proc.mjs', import.meta.url));
const gate = netnsGate({ what: 'mesh partition tests (network namespaces)' });
const PORT = 7400;

describe.skipIf(gate.skip)('mesh across hosts (network namespaces)', () => {
  let lab: NetLab;
  const procs: NodeProc[] = [];

  beforeAll(async () => {
    lab = await createHosts(3);
    procs.push(...(await startLabCluster(lab, { script: NODE_PROC, port: PORT, secret: 'lab' })));
  });

  afterAll(async () => {
    await lab?.teardown();
  });

  it('sees a cut-off host down within 3 s on both sides, and heals within 2 s', async () => {
    const [p0, p1, p2] = procs as [NodeProc, NodeProc, NodeProc];
    const [, h1] = lab.hosts;
    await new Promise((r) => setTimeout(r, 600)); // heartbeat history
    const downs = [
      p0.waitForNext(isDown('h1'), 5000),
      p2.waitForNext(isDown('h1'), 5000),
      p1.waitForNext(isDown('h0'), 5000),
      p1.waitForNext(isDown('h2'), 5000),
    ];
    const cutAt = Date.now();
    await lab.partition(h1 as never);
    const seen = await Promise.all(downs);
    for (const e of seen) {
      expect(e.reason).toBe('heartbeat-timeout');
      expect(e.at - cutAt).toBeLessThan(3000);
    }
    // The rest of the cluster stays whole.
    expect(p0.events.some((e) => isDown('h2')(e))).toBe(false);

    const ups = [p0.waitForNext(isUp('h1'), 6000), p2.waitForNext(isUp('h1'), 6000), p1.waitForNext(isUp('h0'), 6000), p1.waitForNext(isUp('h2'), 6000)];
    const healAt = Date.now();
    await lab.heal(h1 as never);
    const back = await Promise.all(ups);
    const fullMeshAt = Math.max(...back.map((e) => e.at));
    console.log(`partition: down after ${Math.max(...seen.map((e) => e.at)) - cutAt} ms; full mesh ${fullMeshAt - healAt} ms after heal`);
    expect(fullMeshAt - healAt).toBeLessThan(2000);
  });
});
