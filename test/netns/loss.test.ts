/**
 * No false "down" under 30% packet loss: three hosts in network namespaces, one of them losing
 * 30% of its packets in both directions (iptables statistic match) for 60 s. Heartbeats ride UDP,
 * so they are lost too; the failure detector must not declare anyone down, and must still see
 * a real partition afterwards.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDown, type NodeProc } from '../helpers/cluster.js';
import { startLabCluster } from '../helpers/lab-cluster.js';
import { createHosts, type NetLab, netnsGate } from '../helpers/netns.js';

const NODE_PROC = fileURLToPath(new URL('../helpers/node-proc.mjs', import.meta.url));
const gate = netnsGate({ what: 'packet-loss tests (network namespaces)' });
const PORT = 7420;
const LOSS_SECONDS = 60;

describe.skipIf(gate.skip)('30% packet loss (network namespaces)', () => {
  let lab: NetLab;
  const procs: NodeProc[] = [];

  beforeAll(async () => {
    lab = await createHosts(3);
    procs.push(
      ...(await startLabCluster(lab, { script: NODE_PROC, port: PORT, secret: 'lab-loss-secret-0123456789abcdef', env: { FOUNDATION_LOG_LEVEL: 'warn' } })),
    );
  });

  afterAll(async () => {
    await lab?.teardown();
  });

  it(`nobody is declared down during ${LOSS_SECONDS} s of 30% loss on one host; a partition after it is still seen`, {
    timeout: (LOSS_SECONDS + 30) * 1000,
  }, async () => {
    const [p0, p1, p2] = procs as [NodeProc, NodeProc, NodeProc];
    const h1 = lab.hosts[1];
    await new Promise((r) => setTimeout(r, 1000)); // heartbeat history
    const from = Math.max(...procs.map((p) => p.events.length));
    await lab.loss(h1 as never, 0.3);
    await new Promise((r) => setTimeout(r, LOSS_SECONDS * 1000));
    await lab.loss(h1 as never, 0);
    const downs = procs.flatMap((p) =>
      p.events
        .slice(from)
        .filter((e) => e.event === 'down')
        .map((e) => `${p.label}: ${JSON.stringify(e.member)} ${String(e.reason)}`),
    );
    expect(downs).toEqual([]);
    // Detection still works: cut h1 off and both sides see it.
    const seen = [p0.waitForNext(isDown('h1'), 5000), p2.waitForNext(isDown('h1'), 5000), p1.waitForNext(isDown('h0'), 5000)];
    await lab.partition(h1 as never);
    for (const e of await Promise.all(seen)) expect(e.reason).toBe('heartbeat-timeout');
  });
});
