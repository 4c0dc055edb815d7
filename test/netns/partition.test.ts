/**
 * Multi-host mesh tests: every node runs inside its own network namespace (a lab "host"),
 * and partitions are made with iptables DROP inside the lab.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDown, isUp, type NodeProc } from '../helpers/cluster.js';
import { startLabCluster } from '../helpers/lab-cluster.js';
import { ask } from '../helpers/layer-cluster.js';
import { createHosts, type Host, type NetLab, netnsGate } from '../helpers/netns.js';

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

describe.skipIf(gate.skip)('a heal leaves one link between two hosts (network namespaces)', () => {
  let lab: NetLab;
  const procs: NodeProc[] = [];

  beforeAll(async () => {
    lab = await createHosts(2);
    // A connect that outlasts the partition: the dial started when the link died is still
    // retransmitting its SYN when the other side's dial gets through.
    procs.push(...(await startLabCluster(lab, { script: NODE_PROC, port: PORT + 1, secret: 'lab', nodeOptions: { connectTimeoutMs: 20_000 } })));
  });

  afterAll(async () => {
    await lab?.teardown();
  });

  const stats = async (p: NodeProc) => (await ask(p, { cmd: 'stats' }, 'stats', 5000)).stats as { linksOpened: number; linksReplaced: number };

  it('a dial still connecting when the link comes up the other way is given up, not left to replace that link', async () => {
    // `first` is the host whose link wins a tie-break (the smaller address): its late link
    // would replace the one `second` opened.
    const byAddress = [0, 1].sort((a, b) => (`${lab.hosts[a]?.ip}:${PORT + 1}` < `${lab.hosts[b]?.ip}:${PORT + 1}` ? -1 : 1));
    const [first, second] = byAddress.map((i) => lab.hosts[i]) as [Host, Host];
    const [pFirst, pSecond] = byAddress.map((i) => procs[i]) as [NodeProc, NodeProc];
    await new Promise((r) => setTimeout(r, 600)); // heartbeat history
    const downs = [pFirst.waitForNext(isDown(second.name), 5000), pSecond.waitForNext(isDown(first.name), 5000)];
    await lab.partition(second as never);
    await Promise.all(downs);
    await new Promise((r) => setTimeout(r, 300)); // both sides redialing, SYNs dropped
    // Heal, except that `first`'s SYNs still do not reach `second`: only `second`'s dial gets through.
    const synDrop = ['INPUT', '-s', first.ip, '-p', 'tcp', '--syn', '-j', 'DROP'];
    const ins = await second.exec(['iptables', '-w', '-I', ...synDrop]);
    expect(ins.code).toBe(0);
    const ups = [pFirst.waitForNext(isUp(second.name), 20_000), pSecond.waitForNext(isUp(first.name), 20_000)];
    await lab.heal(second as never);
    await Promise.all(ups);
    const before = await Promise.all([stats(pFirst), stats(pSecond)]);
    const del = await second.exec(['iptables', '-w', '-D', ...synDrop]);
    expect(del.code).toBe(0);
    // `first`'s SYN is retransmitted at 1, 3, 7 s after its dial began: by 8 s it would have connected.
    await new Promise((r) => setTimeout(r, 8000));
    const after = await Promise.all([stats(pFirst), stats(pSecond)]);
    expect(after.map((s) => s.linksReplaced)).toEqual(before.map((s) => s.linksReplaced));
    expect(after.map((s) => s.linksOpened)).toEqual(before.map((s) => s.linksOpened));
    expect(pFirst.events.filter(isDown(second.name))).toHaveLength(1);
  }, 60_000);
});
