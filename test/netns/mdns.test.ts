/**
 * The `mdns` strategy between hosts, in network namespaces (test/helpers/netns.ts): every
 * packet stays in the lab. Needs `npm run build` (the nodes run dist/), and for the interop
 * part avahi-daemon, avahi-utils and dbus (skipped with a warning when they are missing,
 * unless FOUNDATION_REQUIRE_NETNS=1).
 *
 *   1. a node in loopback mode sends nothing on eth0 and joins the mDNS group on lo only;
 *   2. five nodes, one per host, `topologies: { lan: { strategy: 'mdns' } }`: full mesh;
 *   3. interop with avahi: avahi-browse (in another host) resolves a Foundation node's service
 *      with address, port and TXT; a service published with avahi-publish is found by the
 *      strategy's browse. avahi-daemon runs with a private system bus and a private /run
 *      (mount namespace) inside its lab host, so nothing of it reaches the machine.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHosts, type Host, type LabProcess, type NetLab, netnsGate, netnsRequired } from '../helpers/netns.js';

const gate = netnsGate();
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const NODE_PROC = fileURLToPath(new URL('../helpers/node-proc.mjs', import.meta.url));
const MESH_PORT = 4370;
const SECRET = 'mdns-lab-secret';

function haveTools(...tools: string[]): string | undefined {
  for (const t of tools) {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    } catch {
      return t;
    }
  }
  return undefined;
}

/** A Foundation node (test/helpers/node-proc.mjs) on `host`, with its JSON events parsed. */
class LabNode {
  readonly events: Array<{ at: number; event: string; member?: { name: string; hidden?: boolean } }> = [];
  readonly proc: LabProcess;
  constructor(
    readonly host: Host,
    readonly name: string,
    options: Record<string, unknown>,
  ) {
    this.proc = host.spawn([process.execPath, NODE_PROC, JSON.stringify({ name, ...options })], {
      label: `node ${name}`,
      env: { FOUNDATION_LOG_LEVEL: 'warn' },
    });
    let buf = '';
    this.proc.stdout?.on('data', (b: Buffer) => {
      buf += b.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        try {
          this.events.push(JSON.parse(line));
        } catch {
          // Not an event line.
        }
      }
    });
  }
  up(): Set<string> {
    const up = new Set<string>();
    for (const e of this.events) {
      if (!e.member || e.member.hidden) continue;
      if (e.event === 'up') up.add(e.member.name);
      if (e.event === 'down') up.delete(e.member.name);
    }
    return up;
  }
  startedAt(): number | undefined {
    return this.events.find((e) => e.event === 'started')?.at;
  }
  send(cmd: Record<string, unknown>): void {
    this.proc.stdin?.write(`${JSON.stringify(cmd)}\n`);
  }
}

async function until(pred: () => boolean | Promise<boolean>, ms: number, what: string, lab?: NetLab): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${lab?.output() ?? ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A standalone MdnsStrategy (from dist/) in a lab host, printing one JSON line per peer set.
 * With RAW=1 it also prints every mDNS response about `_foundation._tcp` it hears, raw.
 */
const STRATEGY_SCRIPT = `
const { createRequire } = await import('node:module');
const require = createRequire(process.env.REPO + '/package.json');
const { MdnsStrategy } = await import(process.env.REPO + '/dist/discovery/mdns.js');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const quiet = { debug() {}, info() {}, warn(o, m) { out({ warn: m }); }, error(o, m) { out({ error: m }); }, child() { return quiet; } };
const ctx = {
  topology: 'lab', clusterName: process.env.CLUSTER, signal: new AbortController().signal, logger: quiet,
  self: { name: process.env.NAME, address: process.env.ADDRESS, incarnation: Date.now() * 1000 },
  setPeers: (a) => out({ peers: [...a] }), lookupFailed: (e) => out({ failed: e.message }),
  connect: async () => ({ ok: false, error: new Error('no mesh') }), disconnect() {}, list: () => [],
};
const s = new MdnsStrategy(process.env.IFACE ? { interface: process.env.IFACE } : {});
if (process.env.RAW === '1') {
  const raw = require('multicast-dns')({ interface: process.env.RAW_IFACE, bind: '224.0.0.251', ip: '224.0.0.251', port: 5353 });
  const plain = (r) => ({ name: r.name, type: r.type, ttl: r.ttl, flush: r.flush,
    data: Array.isArray(r.data) ? r.data.map(String) : r.data });
  raw.on('response', (p, rinfo) => {
    const all = [...p.answers, ...p.additionals];
    if (all.some((r) => r.name.includes('_foundation._tcp'))) out({ raw: { from: rinfo.address, answers: p.answers.map(plain), additionals: p.additionals.map(plain) } });
  });
}
await s.start(ctx);
out({ started: s.interfaceAddress, instance: s.instanceName });
process.on('SIGTERM', async () => { await s.stop(); process.exit(0); });
setInterval(() => {}, 1 << 30);
`;

function spawnStrategy(host: Host, env: Record<string, string>): LabProcess {
  return host.spawn([process.execPath, '--input-type=module', '-e', STRATEGY_SCRIPT], { env: { REPO, ...env }, label: `mdns strategy ${env.NAME}` });
}

function jsonLines(p: LabProcess): Array<Record<string, unknown>> {
  return p
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
}

const latestPeers = (p: LabProcess): string[] | undefined =>
  jsonLines(p)
    .filter((o) => Array.isArray(o.peers))
    .at(-1)?.peers as string[] | undefined;

async function readCounter(host: Host, path: string): Promise<number> {
  return Number((await host.exec(['cat', path])).stdout.trim());
}

describe.skipIf(gate.skip)('mdns between network namespaces', () => {
  let lab: NetLab;

  beforeAll(async () => {
    lab = await createHosts(5);
  }, 30_000);

  afterAll(async () => {
    await lab?.teardown();
  }, 30_000);

  it('in loopback mode, sends nothing on eth0 and joins the mDNS group on lo only', async () => {
    const h = lab.hosts[0] as Host;
    const listener = lab.hosts[1] as Host;
    // A raw listener on the next host's eth0: it must hear nothing about the loopback nodes.
    const watch = spawnStrategy(listener, { NAME: 'watch', ADDRESS: `${listener.ip}:4400`, CLUSTER: 'loop', RAW: '1', RAW_IFACE: listener.ip });
    await watch.waitFor('"started"', 10_000);
    const tx = '/sys/class/net/eth0/statistics/tx_packets';
    const before = await readCounter(h, tx);
    const a = spawnStrategy(h, { NAME: 'loop-a', ADDRESS: '127.0.0.1:4401', CLUSTER: 'loop' });
    const b = spawnStrategy(h, { NAME: 'loop-b', ADDRESS: '127.0.0.1:4402', CLUSTER: 'loop' });
    await until(() => latestPeers(a)?.join() === '127.0.0.1:4402' && latestPeers(b)?.join() === '127.0.0.1:4401', 10_000, 'loopback peers', lab);
    expect(jsonLines(a).find((o) => o.started)?.started).toBe('127.0.0.1');
    const igmp = (await h.exec(['cat', '/proc/net/igmp'])).stdout;
    // 224.0.0.251 is FB0000E0 in /proc/net/igmp; the line before the group names the device.
    const devices = igmp
      .split('\n')
      .reduce<{ dev: string; groups: string[] }[]>((acc, line) => {
        const dev = /^\d+\s+(\S+)\s*:/.exec(line);
        if (dev) acc.push({ dev: dev[1] as string, groups: [] });
        else if (line.trim()) acc.at(-1)?.groups.push(line.trim().split(/\s+/)[0] as string);
        return acc;
      }, [])
      .filter((d) => d.groups.includes('FB0000E0'))
      .map((d) => d.dev);
    expect(devices, igmp).toEqual(['lo']);
    a.kill('SIGTERM');
    b.kill('SIGTERM');
    await Promise.all([a.exited, b.exited]);
    expect(await readCounter(h, tx), 'packets sent on eth0 by loopback-mode nodes').toBe(before);
    // Only its own announcements (from its own address) reached the listener.
    expect(jsonLines(watch).filter((o) => o.raw && (o.raw as { from: string }).from !== listener.ip)).toEqual([]);
    expect(latestPeers(watch)).toEqual([]);
    watch.kill('SIGTERM');
    await watch.exited;
  }, 30_000);

  it('five hosts, one node each with strategy mdns: a full mesh', async () => {
    const cluster = `mdns-lab-${process.pid}`;
    const t0 = Date.now();
    const nodes = lab.hosts.map(
      (h) =>
        new LabNode(h, `n${h.index}`, {
          host: '0.0.0.0',
          advertiseHost: h.ip,
          port: MESH_PORT,
          secret: SECRET,
          clusterName: cluster,
          topologies: { lan: { strategy: 'mdns' } },
        }),
    );
    await until(() => nodes.every((n) => n.startedAt() !== undefined), 20_000, 'all nodes to start', lab);
    const lastStart = Math.max(...nodes.map((n) => n.startedAt() as number));
    await until(() => nodes.every((n) => n.up().size === 4), 20_000, 'a full mesh', lab);
    const formed = Date.now();
    process.stdout.write(
      `\n[mdns lab] 5 nodes: full mesh ${formed - lastStart} ms after the last node started (${formed - t0} ms after spawning; ` +
        `node start spread ${lastStart - Math.min(...nodes.map((n) => n.startedAt() as number))} ms)\n`,
    );
    for (const n of nodes) expect([...n.up()].sort()).toEqual(lab.hosts.filter((h) => h.name !== n.host.name).map((h) => `n${h.index}`));
    for (const n of nodes) n.send({ cmd: 'stop' });
    await Promise.all(nodes.map((n) => n.proc.exited));
  }, 45_000);
});

const missingTool = haveTools('avahi-daemon', 'avahi-browse', 'avahi-publish', 'dbus-daemon', 'unshare');
if (missingTool && !gate.skip && !netnsRequired()) process.stderr.write(`\n!!! SKIPPING the avahi interop test: ${missingTool} is not installed\n`);

describe.skipIf(gate.skip || (!!missingTool && !netnsRequired()))('mdns interop with avahi (in network namespaces)', () => {
  let lab: NetLab;
  let dir: string;
  let avahiHost: Host;
  let nodeHost: Host;
  const dbusEnv = () => ({ DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${dir}/system_bus_socket` });

  beforeAll(async () => {
    if (missingTool) throw new Error(`${missingTool} is not installed (apt-get install avahi-daemon avahi-utils dbus)`);
    lab = await createHosts(2);
    [avahiHost, nodeHost] = lab.hosts as [Host, Host];
    dir = mkdtempSync(join(tmpdir(), 'fdn-avahi-'));
    writeFileSync(
      join(dir, 'dbus.conf'),
      `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${dir}/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
`,
    );
    writeFileSync(
      join(dir, 'avahi-daemon.conf'),
      `[server]
host-name=fdn-avahi-lab
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-addresses=yes
[reflector]
enable-reflector=no
[rlimits]
`,
    );
    const dbus = avahiHost.spawn(['dbus-daemon', `--config-file=${dir}/dbus.conf`, '--nofork', '--print-address', '--nopidfile'], { label: 'dbus-daemon' });
    await dbus.waitFor('unix:path=', 10_000);
    // A private /run (avahi's pid file and socket) and an empty services directory, in a mount
    // namespace of its own: nothing of this avahi is visible outside the lab host.
    const avahi = avahiHost.spawn(
      [
        'unshare',
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        `mount -t tmpfs fdn-avahi-run /run && mount -t tmpfs fdn-avahi-services /etc/avahi/services && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits --no-proc-title -f ${dir}/avahi-daemon.conf`,
      ],
      { env: dbusEnv(), label: 'avahi-daemon' },
    );
    await avahi.waitFor(/Server startup complete/, 15_000);
  }, 40_000);

  afterAll(async () => {
    await lab?.teardown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it('avahi-browse resolves a Foundation node: address, port and TXT (cluster, node, inc, v); the goodbye removes it', async () => {
    const node = new LabNode(nodeHost, 'fdn-interop', {
      host: '0.0.0.0',
      advertiseHost: nodeHost.ip,
      port: MESH_PORT,
      secret: SECRET,
      clusterName: 'interop',
      topologies: { lan: { strategy: 'mdns' } },
    });
    await until(() => node.startedAt() !== undefined, 15_000, 'the node to start', lab);
    let line: string | undefined;
    let browse = '';
    await until(
      async () => {
        const r = await avahiHost.exec(['avahi-browse', '-r', '-p', '-t', '_foundation._tcp'], { env: dbusEnv(), timeoutMs: 10_000 });
        browse = r.stdout + r.stderr;
        line = r.stdout.split('\n').find((l) => l.startsWith('=;') && l.includes(';fdn-interop;'));
        return line !== undefined;
      },
      15_000,
      'avahi-browse to resolve the node',
      lab,
    );
    process.stdout.write(`\n[mdns avahi] avahi-browse -r -p -t _foundation._tcp:\n${browse}\n`);
    // =;eth0;IPv4;fdn-interop;_foundation._tcp;local;fdn-interop.local;10.77.x.y;4370;"v=1" "inc=..." "node=fdn-interop" "cluster=interop"
    const f = (line as string).split(';');
    expect(f.slice(0, 9)).toEqual(['=', 'eth0', 'IPv4', 'fdn-interop', '_foundation._tcp', 'local', 'fdn-interop.local', nodeHost.ip, String(MESH_PORT)]);
    const txt = Object.fromEntries([...(f[9] ?? '').matchAll(/"([^"=]+)=([^"]*)"/g)].map((m) => [m[1], m[2]]));
    expect(txt).toMatchObject({ cluster: 'interop', node: 'fdn-interop', v: '1' });
    expect(txt.inc).toMatch(/^\d{16}$/);

    node.send({ cmd: 'stop' });
    await node.proc.exited;
    // Goodbye: avahi drops the records (after its one-second grace), not after the 120 s TTL.
    await until(
      async () => {
        const r = await avahiHost.exec(['avahi-browse', '-p', '-t', '-c', '_foundation._tcp'], { env: dbusEnv(), timeoutMs: 10_000 });
        return !r.stdout.includes(';fdn-interop;');
      },
      5_000,
      'avahi to forget the stopped node',
      lab,
    );
  }, 40_000);

  it('the strategy finds a service published with avahi-publish', async () => {
    const pub = avahiHost.spawn(['avahi-publish', '-s', 'avahi-peer', '_foundation._tcp', '4999', 'cluster=interop', 'node=avahi-peer', 'inc=1', 'v=1'], {
      env: dbusEnv(),
      label: 'avahi-publish',
    });
    await pub.waitFor(/Established under name/, 15_000);
    const s = spawnStrategy(nodeHost, { NAME: 'browser', ADDRESS: `${nodeHost.ip}:4400`, CLUSTER: 'interop', RAW: '1', RAW_IFACE: nodeHost.ip });
    await until(() => latestPeers(s)?.includes(`${avahiHost.ip}:4999`) === true, 10_000, 'the avahi-published peer', lab);
    const raw = jsonLines(s).filter((o) => o.raw && JSON.stringify(o.raw).includes('avahi-peer'));
    process.stdout.write(`\n[mdns avahi] raw answer from avahi-daemon:\n${JSON.stringify(raw[0]?.raw, null, 1)}\n`);
    expect(raw.length).toBeGreaterThan(0);
    expect(latestPeers(s)).toEqual([`${avahiHost.ip}:4999`]);
    // avahi-publish exits: avahi withdraws the service with a goodbye, and the peer goes.
    pub.kill('SIGTERM');
    await until(() => latestPeers(s)?.length === 0, 5_000, 'the peer to go on avahi-publish exit', lab);
    s.kill('SIGTERM');
    await s.exited;
  }, 40_000);
});
