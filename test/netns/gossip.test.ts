/**
 * The gossip strategy across hosts: every Foundation node runs in its own network namespace
 * (a lab "host"), discovering the others by UDP multicast on the lab bridge. No static
 * hosts anywhere: gossip is the only way in.
 *
 *   h0..h4  the cluster (gossip secret `g`), half bound to 0.0.0.0, half to their IP
 *   h5      right mesh secret, WRONG gossip secret: its packets arrive and are dropped
 *   h6      a node on 127.0.0.1: its announcements must never leave loopback
 *   h7, h8  a second cluster on broadcast (255.255.255.255) instead of multicast
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDown, isUp, NodeProc } from '../helpers/cluster.js';
import { createHosts, type Host, type NetLab, netnsGate } from '../helpers/netns.js';

const NODE_PROC = fileURLToPath(new URL('../helpers/node-proc.mjs', import.meta.url));
const gate = netnsGate();
const GOSSIP_PORT = 45892;
const BCAST_PORT = 45893;
const CLUSTER = ['h0', 'h1', 'h2', 'h3', 'h4'];

/** Packets counted so far by the counting rule (no target) in `chain` whose line mentions `ip` and the gossip port. */
async function counter(host: Host, chain: 'INPUT' | 'OUTPUT', ip: string): Promise<number> {
  const r = await host.exec(['iptables', '-w', '-L', chain, '-v', '-n', '-x']);
  const line = r.stdout.split('\n').find((l) => l.split(/\s+/).includes(ip) && l.includes(`dpt:${GOSSIP_PORT}`));
  if (!line) throw new Error(`no counting rule for ${ip} in ${host.name} ${chain}:\n${r.stdout}`);
  return Number(line.trim().split(/\s+/)[0]);
}

describe.skipIf(gate.skip)('gossip discovery across hosts (network namespaces)', () => {
  let lab: NetLab;
  const procs = new Map<string, NodeProc>();

  const spawn = (h: Host, opts: Record<string, unknown>): NodeProc => {
    const child = h.spawn([process.execPath, NODE_PROC, JSON.stringify(opts)], {
      stdin: 'pipe',
      label: String(opts.name),
      env: { FOUNDATION_LOG_LEVEL: 'warn' },
    });
    const p = new NodeProc(child, String(opts.name));
    procs.set(String(opts.name), p);
    return p;
  };
  const proc = (name: string) => procs.get(name) as NodeProc;
  const started = (p: NodeProc) => p.waitFor((e) => e.event === 'started' || e.event === 'start-failed', 10_000, 'start');

  beforeAll(async () => {
    lab = await createHosts(9);
  }, 60_000);

  afterAll(async () => {
    await lab?.teardown();
  }, 30_000);

  it('forms a full mesh of 5 hosts from nothing but multicast announcements', async () => {
    for (const h of lab.hosts.slice(0, 5)) {
      spawn(h, {
        name: h.name,
        host: h.index % 2 === 0 ? '0.0.0.0' : h.ip,
        advertiseHost: h.ip,
        secret: 's',
        topologies: { lan: { strategy: 'gossip', config: { secret: 'g' } } },
      });
    }
    const starts = await Promise.all(CLUSTER.map((n) => started(proc(n))));
    for (const s of starts) expect(s.event, JSON.stringify(s)).toBe('started');
    const lastStart = Math.max(...starts.map((s) => s.at));
    const ups = await Promise.all(
      CLUSTER.flatMap((me) => CLUSTER.filter((o) => o !== me).map((o) => proc(me).waitFor(isUp(o), 8000, `${o} up on ${me}`))),
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\n${lab.output()}`);
    });
    const formedAt = Math.max(...ups.map((e) => e.at));
    const firstStart = Math.min(...starts.map((s) => s.at));
    console.log(`gossip: full mesh of 5 ${formedAt - lastStart} ms after the last node started (${formedAt - firstStart} ms after the first)`);
    expect(formedAt - lastStart).toBeLessThan(1000);
    for (const n of CLUSTER) {
      const members = await proc(n).members();
      expect(
        members
          .filter((m) => m.status === 'up')
          .map((m) => m.name)
          .sort(),
        n,
      ).toEqual(CLUSTER.filter((o) => o !== n));
    }
  }, 30_000);

  it('never connects a node with the wrong gossip secret, though its packets arrive', async () => {
    const [h0, , , , , h5] = lab.hosts as Host[];
    const fromH5 = ['-s', h5!.ip, '-p', 'udp', '--dport', String(GOSSIP_PORT)];
    const fromH0 = ['-s', h0!.ip, '-p', 'udp', '--dport', String(GOSSIP_PORT)];
    await h0!.exec(['iptables', '-w', '-I', 'INPUT', ...fromH5]);
    await h5!.exec(['iptables', '-w', '-I', 'INPUT', ...fromH0]);
    const intruder = spawn(h5!, {
      name: 'h5',
      host: '0.0.0.0',
      advertiseHost: h5!.ip,
      secret: 's', // the mesh secret is right: only gossip keeps it out
      topologies: { lan: { strategy: 'gossip', config: { secret: 'wrong' } } },
    });
    expect((await started(intruder)).event).toBe('started');
    await new Promise((r) => setTimeout(r, 3000));
    // Its announcements (at start, +100 ms, +300 ms, then every second) reached h0, and h0's reached
    // it. h0 announces about once a second whatever h5 does, so under load three of them can take
    // a little over 3 s: the counters are read until both reach 3, for up to 5 s more.
    const deadline = Date.now() + 5000;
    while (((await counter(h0!, 'INPUT', h5!.ip)) < 3 || (await counter(h5!, 'INPUT', h0!.ip)) < 3) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(await counter(h0!, 'INPUT', h5!.ip)).toBeGreaterThanOrEqual(3);
    expect(await counter(h5!, 'INPUT', h0!.ip)).toBeGreaterThanOrEqual(3);
    for (const n of CLUSTER) expect(proc(n).events.some(isUp('h5')), `${n} saw h5 up`).toBe(false);
    expect(intruder.events.filter((e) => e.event === 'up')).toEqual([]);
    expect(await intruder.members()).toEqual([]);
  }, 20_000);

  it('keeps the announcements of a node on 127.0.0.1 on loopback', async () => {
    const h6 = lab.hosts[6] as Host;
    const out = ['-p', 'udp', '--dport', String(GOSSIP_PORT)];
    await h6.exec(['iptables', '-w', '-I', 'OUTPUT', '-o', 'eth0', ...out]);
    await h6.exec(['iptables', '-w', '-I', 'OUTPUT', '-o', 'lo', ...out]);
    const lonely = spawn(h6, { name: 'h6', host: '127.0.0.1', secret: 's', topologies: { lan: { strategy: 'gossip', config: { secret: 'g' } } } });
    expect((await started(lonely)).event).toBe('started');
    await new Promise((r) => setTimeout(r, 1500));
    const r = await h6.exec(['iptables', '-w', '-L', 'OUTPUT', '-v', '-n', '-x']);
    const line = (dev: string) => r.stdout.split('\n').find((l) => new RegExp(`\\s${dev}\\s+0\\.0\\.0\\.0/0`).test(l) && l.includes(`dpt:${GOSSIP_PORT}`));
    const count = (dev: string) => Number(line(dev)?.trim().split(/\s+/)[0] ?? Number.NaN);
    expect(count('lo'), r.stdout).toBeGreaterThanOrEqual(3);
    expect(count('eth0'), r.stdout).toBe(0);
    for (const n of CLUSTER) expect(proc(n).events.some(isUp('h6'))).toBe(false);
  }, 20_000);

  it('works over broadcast (255.255.255.255) with broadcastOnly', async () => {
    const pair = [lab.hosts[7], lab.hosts[8]] as Host[];
    for (const h of pair) {
      spawn(h, {
        name: h.name,
        host: h.ip,
        clusterName: 'bcast',
        secret: 's',
        topologies: { lan: { strategy: 'gossip', config: { secret: 'g', broadcastOnly: true, port: BCAST_PORT } } },
      });
    }
    for (const s of await Promise.all(['h7', 'h8'].map((n) => started(proc(n))))) expect(s.event, JSON.stringify(s)).toBe('started');
    await Promise.all([proc('h7').waitFor(isUp('h8'), 5000, 'h8 up on h7'), proc('h8').waitFor(isUp('h7'), 5000, 'h7 up on h8')]);
    // A different port and cluster name: the multicast cluster never sees them.
    for (const n of CLUSTER) expect(proc(n).events.some((e) => isUp('h7')(e) || isUp('h8')(e))).toBe(false);
  }, 20_000);

  it('sees a cut-off host down within 3 s, forgets it, and rediscovers it after the heal', async () => {
    const h4 = lab.hosts[4] as Host;
    const others = CLUSTER.slice(0, 4);
    const downs = others.map((n) => proc(n).waitForNext(isDown('h4'), 5000, `h4 down on ${n}`));
    const cutAt = Date.now();
    await lab.partition(h4);
    const seen = await Promise.all(downs);
    const downAfter = Math.max(...seen.map((e) => e.at)) - cutAt;
    expect(downAfter).toBeLessThan(3000);
    // Stay cut past the gossip expiry (5 s), so every side drops the other's address and only
    // a fresh announcement can bring it back.
    await new Promise((r) => setTimeout(r, Math.max(0, cutAt + 6000 - Date.now())));
    const ups = [
      ...others.map((n) => proc(n).waitForNext(isUp('h4'), 8000, `h4 up on ${n}`)),
      ...others.map((n) => proc('h4').waitForNext(isUp(n), 8000, `${n} up on h4`)),
    ];
    const healAt = Date.now();
    await lab.heal(h4);
    const back = await Promise.all(ups);
    const backAfter = Math.max(...back.map((e) => e.at)) - healAt;
    console.log(`gossip: h4 down on every peer ${downAfter} ms after the cut; full mesh again ${backAfter} ms after the heal`);
    expect(backAfter).toBeLessThan(4000);
    for (const n of CLUSTER) expect((await proc(n).members()).filter((m) => m.status === 'up')).toHaveLength(4);
  }, 30_000);
});
