/**
 * Self-test of the network-namespace harness (test/helpers/netns.ts), using
 * only standard tools (ip, iptables, ping, node's dgram): no Foundation code.
 */
import { execFileSync, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupStale, createHosts, type Host, type NetLab, netnsGate } from '../helpers/netns.js';

const gate = netnsGate({ tools: ['ping'], what: 'netns harness tests' });

/** What the root namespace looks like: links, addresses, routes (v4 and v6, all tables). Read-only. */
function rootSnapshot(): { links: string[]; addrs: string[]; routes: string[] } {
  const sh = (args: string[]) => execFileSync('ip', args, { encoding: 'utf8' });
  const lines = (s: string) =>
    s
      .split('\n')
      .map((l) => l.replace(/\s+expires \S+/g, '').trim())
      .filter(Boolean)
      .sort();
  return {
    links: lines(sh(['-o', 'link', 'show'])).map((l) => l.split(/\s+/).slice(0, 2).join(' ')),
    addrs: lines(sh(['-o', 'addr', 'show'])).map((l) => l.split(/\s+/).slice(0, 4).join(' ')),
    routes: [...lines(sh(['-4', 'route', 'show', 'table', 'all'])), ...lines(sh(['-6', 'route', 'show', 'table', 'all']))],
  };
}

function namespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

async function ping(from: Host, to: Host): Promise<boolean> {
  const r = await from.exec(['ping', '-n', '-c1', '-W1', to.ip]);
  return r.code === 0;
}

/** Positive checks retry a little (first ARP, scheduling); negative checks use one 1 s ping. */
async function pingEventually(from: Host, to: Host, tries = 4): Promise<boolean> {
  for (let i = 0; i < tries; i++) if (await ping(from, to)) return true;
  return false;
}

const MCAST_SCRIPT = `
const dgram = require('node:dgram');
const { ROLE, MY_IP, GROUP, PORT, NONCE } = process.env;
const port = Number(PORT);
const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
let timer;
s.on('error', (e) => { console.error('ERR ' + e.message); process.exit(2); });
s.on('message', (m, r) => {
  if (r.address === MY_IP) return;
  const t = m.toString();
  console.log('GOT ' + t + ' from ' + r.address);
  if (ROLE === 'responder' && t.startsWith('ping:')) s.send('pong:' + t.slice(5), port, GROUP);
  if (ROLE === 'initiator' && t === 'pong:' + NONCE) { clearInterval(timer); s.close(); }
});
s.bind(port, () => {
  s.addMembership(GROUP, MY_IP);
  s.setMulticastInterface(MY_IP);
  s.setMulticastTTL(1);
  console.log('READY');
  if (ROLE === 'initiator') timer = setInterval(() => s.send('ping:' + NONCE, port, GROUP), 200);
});
`;

describe.skipIf(gate.skip)('netns harness', () => {
  let lab: NetLab;
  let rootBefore: ReturnType<typeof rootSnapshot>;

  beforeAll(async () => {
    rootBefore = rootSnapshot();
    lab = await createHosts(3);
  }, 60_000);

  afterAll(async () => {
    await lab?.teardown();
  }, 30_000);

  it('builds 3 hosts on a bridge in its own namespace, with nothing added to the root namespace', async () => {
    expect(lab.hosts).toHaveLength(3);
    const ns = namespaces();
    for (const h of lab.hosts) {
      expect(ns).toContain(h.ns);
      expect(h.ns.startsWith('fdn-')).toBe(true);
      const addr = await h.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      expect(addr.stdout).toContain(h.cidr);
      const routes = await h.exec(['ip', '-4', 'route', 'show']);
      expect(routes.stdout).toMatch(/^224\.0\.0\.0\/4 dev eth0/m);
      expect(routes.stdout).not.toMatch(/^default/m);
      const lo = await h.exec(['ip', '-o', 'link', 'show', 'lo']);
      expect(lo.stdout).toMatch(/[<,]UP[,>]/);
    }
    expect(ns).toContain(lab.bridgeNs);
    const br = execFileSync('ip', ['-n', lab.bridgeNs, '-d', 'link', 'show', 'br0'], { encoding: 'utf8' });
    expect(br).toContain('mcast_snooping 0');
    expect(rootSnapshot()).toEqual(rootBefore);
  });

  it('host0 reaches host1 and host2; partition cuts host1 off; heal restores it', async () => {
    const [h0, h1, h2] = lab.hosts as [Host, Host, Host];
    expect(await pingEventually(h0, h1), lab.output()).toBe(true);
    expect(await pingEventually(h0, h2)).toBe(true);

    await lab.partition(h1);
    expect(await ping(h0, h1)).toBe(false);
    expect(await ping(h1, h2)).toBe(false);
    expect(await pingEventually(h0, h2)).toBe(true);
    // Loopback inside the partitioned host still works.
    expect((await h1.exec(['ping', '-n', '-c1', '-W1', '127.0.0.1'])).code).toBe(0);

    await lab.heal(h1);
    expect(await pingEventually(h0, h1)).toBe(true);
    expect(await pingEventually(h1, h2)).toBe(true);
  }, 60_000);

  it('dropBetween cuts one pair only; healBetween restores it', async () => {
    const [h0, h1, h2] = lab.hosts as [Host, Host, Host];
    await lab.dropBetween(h0, h2);
    await lab.dropBetween(h0, h2); // idempotent
    expect(await ping(h0, h2)).toBe(false);
    expect(await ping(h2, h0)).toBe(false);
    expect(await pingEventually(h0, h1)).toBe(true);
    expect(await pingEventually(h1, h2)).toBe(true);
    await lab.healBetween(h0, h2);
    expect(await pingEventually(h0, h2)).toBe(true);
  }, 60_000);

  it('loss drops packets at random (statistic match); probability 0 removes it', async () => {
    const [h0, h1] = lab.hosts as [Host, Host];
    await lab.loss(h1, 1);
    expect(await ping(h0, h1)).toBe(false);
    await lab.loss(h1, 0.5);
    const r = await h0.exec(['ping', '-n', '-q', '-c', '60', '-i', '0.01', '-W', '1', h1.ip]);
    const received = Number(/(\d+) received/.exec(r.stdout)?.[1] ?? -1);
    expect(received, r.stdout).toBeGreaterThan(0);
    expect(received, r.stdout).toBeLessThan(60);
    await lab.loss(h1, 0);
    expect(await pingEventually(h0, h1)).toBe(true);
  }, 60_000);

  it('UDP multicast round trip between two hosts (239.255.77.1)', async () => {
    const [h0, , h2] = lab.hosts as [Host, Host, Host];
    const env = { GROUP: '239.255.77.1', PORT: '47731', NONCE: Math.random().toString(36).slice(2) };
    const responder = h2.spawn([process.execPath, '-e', MCAST_SCRIPT], {
      env: { ...env, ROLE: 'responder', MY_IP: h2.ip },
      label: 'mcast responder',
    });
    await responder.waitFor('READY', 10_000);
    const initiator = h0.spawn([process.execPath, '-e', MCAST_SCRIPT], {
      env: { ...env, ROLE: 'initiator', MY_IP: h0.ip },
      label: 'mcast initiator',
    });
    await initiator.waitFor(new RegExp(`GOT pong:${env.NONCE} from ${h2.ip.replace(/\./g, '\\.')}`), 10_000);
    const { code } = await initiator.exited;
    expect(code, lab.output()).toBe(0);
    expect(responder.output()).toContain(`GOT ping:${env.NONCE} from ${h0.ip}`);
  }, 30_000);

  it('cleanupStale removes namespaces of dead owners (and kills what runs in them), leaving live ones', () => {
    // Our own pid with a start time that is not ours: an owner that is gone (pid reused).
    const stale = `fdn-${process.pid}-zzzzz-1-h0`;
    execFileSync('ip', ['netns', 'add', stale]);
    const sleeper = spawn('ip', ['netns', 'exec', stale, 'sleep', '300'], { stdio: 'ignore', detached: true });
    sleeper.unref();
    const deadline = Date.now() + 5_000;
    while (execFileSync('ip', ['netns', 'pids', stale], { encoding: 'utf8' }).trim() === '' && Date.now() < deadline) {
      /* wait for sleep to start */
    }
    const removed = cleanupStale('fdn-');
    expect(removed).toContain(stale);
    expect(namespaces()).not.toContain(stale);
    for (const h of lab.hosts) expect(namespaces()).toContain(h.ns); // live owner: untouched
    let alive = true;
    const until = Date.now() + 3_000;
    while (alive && Date.now() < until) {
      try {
        process.kill(sleeper.pid as number, 0);
        // A zombie still answers kill(0); it is reaped by node shortly.
        alive = !/^State:\s+Z/m.test(execFileSync('cat', [`/proc/${sleeper.pid}/status`], { encoding: 'utf8' }));
      } catch {
        alive = false;
      }
    }
    expect(alive).toBe(false);
  }, 20_000);

  it('teardown kills spawned processes, deletes every namespace, and leaves the root namespace as it was', async () => {
    const sleeper = lab.hosts[1]?.spawn(['sleep', '1000']) ?? expect.fail('no host 1');
    const inner = (await lab.hosts[1]?.exec(['ip', 'netns', 'identify'])) ?? expect.fail('no host 1');
    expect(inner.stdout.trim()).toBe(lab.hosts[1]?.ns);
    await lab.teardown();
    await lab.teardown(); // idempotent
    expect(sleeper.exitCode !== null || sleeper.signalCode !== null).toBe(true);
    const left = namespaces().filter((n) => n.includes(lab.runid));
    expect(left).toEqual([]);
    // No fdn- namespace remains but those of other live test processes (none when run alone).
    const ours = namespaces().filter((n) => n.startsWith(`fdn-${process.pid}-`));
    expect(ours).toEqual([]);
    expect(cleanupStale('fdn-')).toEqual([]);
    expect(rootSnapshot()).toEqual(rootBefore);
  }, 30_000);
});
