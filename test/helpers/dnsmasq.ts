/**
 * A real dnsmasq for the DNS strategy tests, on 127.0.0.1 and a random high port. It never
 * forwards anywhere but to another test dnsmasq on loopback (`--no-resolv`, no `--server`
 * except in SERVFAIL mode), and nothing here touches /etc/resolv.conf: test resolvers are
 * pointed at `server` explicitly.
 *
 * - A/AAAA records come from an `--addn-hosts` file, rewritten and reloaded with SIGHUP.
 * - SRV records are command-line options (`--srv-host`), which SIGHUP does not reload:
 *   `setSrv` restarts dnsmasq on the same port.
 * - `pause()` (SIGSTOP) makes the server stop answering: clients time out.
 * - `servfail()` restarts it as a DNSSEC-validating forwarder (trust anchor: the root KSK)
 *   whose only upstream is a second loopback dnsmasq serving the same records unsigned:
 *   validation fails and every query is answered SERVFAIL (dnsmasq answers REFUSED, not
 *   SERVFAIL, when an upstream is unreachable, and nothing when it is silent).
 *   `servfail({ onlyMissing: true })` keeps the records answering locally and makes only what
 *   they lack fail. `restore()` goes back.
 *
 * Every change waits until dnsmasq demonstrably serves it: each hosts file carries a marker
 * name `gen-<n>.fixture.<domain>` that must resolve (or, in SERVFAIL mode, fail with
 * ESERVFAIL) before the call returns.
 *
 * Needs the `dnsmasq` binary (Debian: `apt-get install -y dnsmasq-base`). Processes are killed
 * by `stop()`, failing that synchronously on process 'exit', and, when the test process dies
 * without running either, by their parent-death signal (set with util-linux `setpriv`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool, requireTools } from './requires.js';

export interface SrvRecord {
  /** Owner name, e.g. `_foundation._tcp.app.test`. */
  name: string;
  target: string;
  port: number;
  priority?: number;
  weight?: number;
}

export interface DnsRecords {
  /** Name → IPv4 and/or IPv6 addresses (served from the addn-hosts file). */
  hosts: Record<string, string[]>;
  srv: SrvRecord[];
}

export interface DnsmasqOptions extends Partial<DnsRecords> {
  /** Domain answered locally: unknown names under it get NXDOMAIN. Default `test`. */
  domain?: string;
}

/** The dnsmasq binary, or undefined when it is not installed. */
export function findDnsmasq(): string | undefined {
  return findTool('dnsmasq');
}

/**
 * Whether the dnsmasq tests should be skipped: when dnsmasq is missing, with the reason printed,
 * through the one gate every suite uses (`requireTools`: where the tools are required,
 * FOUNDATION_REQUIRE_NETNS=1 as `.ci/run` sets it, a missing dnsmasq fails instead).
 */
export function skipWithoutDnsmasq(): boolean {
  return requireTools(['dnsmasq'], 'the DNS strategy tests') !== undefined;
}

const SETPRIV = process.platform === 'linux' ? findTool('setpriv') : undefined;

// Root zone KSK-2017 DS: any trust anchor works, as nothing upstream is signed.
const ROOT_TRUST_ANCHOR = '.,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D';

const live = new Set<ChildProcess>();
let exitHook = false;
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const c of live) {
        try {
          c.kill('SIGKILL');
        } catch {}
      }
    });
  }
}

async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const udp = createSocket('udp4');
    const port = await new Promise<number>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => resolve(udp.address().port));
    });
    // dnsmasq also listens on TCP: the port must be free there too.
    const tcpFree = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    await new Promise<void>((r) => udp.close(() => r()));
    if (tcpFree && port >= 1024) return port;
  }
  throw new Error('no free port for dnsmasq');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Proc {
  child: ChildProcess;
  port: number;
  log: string[];
  exited: Promise<void>;
}

export class Dnsmasq {
  readonly dir: string;
  readonly domain: string;
  private front?: Proc;
  private back?: Proc;
  private gen = 0;
  private mode: 'normal' | 'servfail' | 'servfail-missing' = 'normal';
  private paused = false;
  private records: DnsRecords;
  private readonly bin: string;
  /** UDP/TCP port of the server the strategies talk to. Stays the same across restarts. */
  port = 0;

  private constructor(opts: DnsmasqOptions) {
    const bin = findDnsmasq();
    if (!bin) throw new Error('dnsmasq is not installed (Debian: apt-get install -y dnsmasq-base)');
    this.bin = bin;
    this.domain = opts.domain ?? 'test';
    this.records = { hosts: opts.hosts ?? {}, srv: opts.srv ?? [] };
    this.dir = mkdtempSync(join(tmpdir(), 'foundation-dnsmasq-'));
  }

  static async start(opts: DnsmasqOptions = {}): Promise<Dnsmasq> {
    const d = new Dnsmasq(opts);
    try {
      d.writeHosts();
      for (let attempt = 0; ; attempt++) {
        d.port = await freePort();
        try {
          d.front = await d.spawnServer(d.port, d.dataArgs());
          break;
        } catch (err) {
          if (attempt >= 4 || !/in use/i.test((err as Error).message)) throw err;
        }
      }
      await d.waitServing();
      return d;
    } catch (err) {
      await d.stop();
      throw err;
    }
  }

  /** `127.0.0.1:<port>`, for a strategy's `servers`. */
  get server(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Name that resolves (to 127.0.0.1) once the current configuration is served. */
  get marker(): string {
    return `gen-${this.gen}.fixture.${this.domain}`;
  }

  /** The log lines of the server process (for failure messages). */
  get log(): string {
    return (this.front?.log ?? []).join('');
  }

  current(): DnsRecords {
    return { hosts: structuredClone(this.records.hosts), srv: structuredClone(this.records.srv) };
  }

  /** Replaces the A/AAAA records; reloaded with SIGHUP. */
  async setHosts(hosts: Record<string, string[]>): Promise<void> {
    this.records.hosts = structuredClone(hosts);
    this.writeHosts();
    this.signalData('SIGHUP');
    if (!this.paused) await this.waitServing();
  }

  /** Adds addresses to a name (creating it). */
  async addHost(name: string, ...addresses: string[]): Promise<void> {
    const hosts = this.current().hosts;
    hosts[name] = [...(hosts[name] ?? []), ...addresses];
    await this.setHosts(hosts);
  }

  /** Removes addresses from a name (the whole name when none are given). */
  async removeHost(name: string, ...addresses: string[]): Promise<void> {
    const hosts = this.current().hosts;
    const left = addresses.length === 0 ? [] : (hosts[name] ?? []).filter((a) => !addresses.includes(a));
    if (left.length === 0) delete hosts[name];
    else hosts[name] = left;
    await this.setHosts(hosts);
  }

  /** Replaces the SRV records: dnsmasq is restarted on the same port (SIGHUP does not reload them). */
  async setSrv(srv: SrvRecord[]): Promise<void> {
    this.records.srv = structuredClone(srv);
    await this.restart();
  }

  /** Sends SIGHUP to the process serving the records (re-reads the addn-hosts file). */
  sighup(): void {
    this.signalData('SIGHUP');
  }

  /** SIGSTOP: the server stops answering, queries time out. */
  pause(): void {
    this.front?.child.kill('SIGSTOP');
    this.paused = true;
  }

  /** SIGCONT after `pause()`. */
  async resume(): Promise<void> {
    this.front?.child.kill('SIGCONT');
    this.paused = false;
    await this.waitServing();
  }

  /**
   * From now on every query is answered SERVFAIL (see the file comment). With `onlyMissing`,
   * the records still answer and only what they lack is SERVFAIL instead of NXDOMAIN/NODATA:
   * the AAAA query of a name that has only A records, an unknown name...
   */
  async servfail(opts: { onlyMissing?: boolean } = {}): Promise<void> {
    this.mode = opts.onlyMissing ? 'servfail-missing' : 'servfail';
    await this.restart();
  }

  /** Back to answering from the records after `servfail()`. */
  async restore(): Promise<void> {
    this.mode = 'normal';
    await this.restart();
  }

  /** Restarts the server on the same port with the current records and mode. */
  async restart(): Promise<void> {
    await this.kill(this.front);
    await this.kill(this.back);
    this.front = this.back = undefined;
    this.paused = false;
    this.writeHosts();
    if (this.mode !== 'normal') {
      this.back = await this.spawnServer(await freePort(), this.dataArgs());
      const validating = ['--dnssec', `--trust-anchor=${ROOT_TRUST_ANCHOR}`, `--server=127.0.0.1#${this.back.port}`];
      // Local data answers without validation; what it lacks is forwarded, and fails validation.
      const local = this.mode === 'servfail-missing' ? this.dataArgs().filter((a) => !a.startsWith('--local=')) : [];
      this.front = await this.spawnServer(this.port, [...validating, ...local]);
    } else {
      this.front = await this.spawnServer(this.port, this.dataArgs());
    }
    await this.waitServing();
  }

  async stop(): Promise<void> {
    await this.kill(this.front);
    await this.kill(this.back);
    this.front = this.back = undefined;
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A resolver pointed at this server only. */
  resolver(timeoutMs = 300): Resolver {
    const r = new Resolver({ timeout: timeoutMs, tries: 1 });
    r.setServers([this.server]);
    return r;
  }

  /** Asks the server (like `dig @127.0.0.1 -p PORT name type`); resolves with the records or the error code. */
  async ask(name: string, type: 'A' | 'AAAA' | 'SRV'): Promise<{ records: string[] } | { code: string }> {
    const r = this.resolver();
    try {
      if (type === 'A') return { records: await r.resolve4(name) };
      if (type === 'AAAA') return { records: await r.resolve6(name) };
      return { records: (await r.resolveSrv(name)).map((s) => `${s.name}:${s.port}`) };
    } catch (err) {
      return { code: (err as NodeJS.ErrnoException).code ?? String(err) };
    } finally {
      r.cancel();
    }
  }

  private dataArgs(): string[] {
    const args = [`--addn-hosts=${join(this.dir, 'hosts')}`, `--local=/${this.domain}/`];
    for (const s of this.records.srv) args.push(`--srv-host=${s.name},${s.target},${s.port},${s.priority ?? 0},${s.weight ?? 0}`);
    return args;
  }

  private writeHosts(): void {
    this.gen++;
    const lines = [`127.0.0.1 ${this.marker}`];
    for (const [name, addrs] of Object.entries(this.records.hosts)) for (const a of addrs) lines.push(`${a} ${name}`);
    const file = join(this.dir, 'hosts');
    writeFileSync(`${file}.tmp`, `${lines.join('\n')}\n`);
    renameSync(`${file}.tmp`, file);
  }

  private signalData(sig: NodeJS.Signals): void {
    this.front?.child.kill(sig);
    this.back?.child.kill(sig);
  }

  /** Waits until the server answers for the current marker as the mode says it must. */
  private async waitServing(): Promise<void> {
    const end = Date.now() + 5000;
    let last: object = {};
    while (Date.now() < end) {
      const a = await this.ask(this.marker, 'A');
      const served = 'records' in a && a.records.includes('127.0.0.1');
      last = a;
      if (this.mode === 'normal' && served) return;
      if (this.mode === 'servfail' && 'code' in a && a.code === 'ESERVFAIL') return;
      if (this.mode === 'servfail-missing' && served) {
        last = await this.ask(this.marker, 'AAAA');
        if ('code' in last && last.code === 'ESERVFAIL') return;
      }
      await sleep(20);
    }
    throw new Error(`dnsmasq on ${this.server} does not serve ${this.marker} (${this.mode} mode); last answer ${JSON.stringify(last)}\n${this.log}`);
  }

  private async spawnServer(port: number, extra: string[]): Promise<Proc> {
    const args = [
      '--no-daemon',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--no-poll',
      '--bind-interfaces',
      '--listen-address=127.0.0.1',
      `--port=${port}`,
      '--log-facility=-',
      ...extra,
    ];
    const log: string[] = [];
    let lastTry: Error | undefined;
    // The port of a server just killed may take a moment to be free again.
    for (let attempt = 0; attempt < 20; attempt++) {
      // setpriv (util-linux) execs dnsmasq with a parent-death signal: even a test process killed
      // outright takes its dnsmasq along. The pid stays dnsmasq's, for SIGSTOP/SIGHUP.
      const child = SETPRIV
        ? spawn(SETPRIV, ['--pdeathsig', 'KILL', this.bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      track(child);
      child.stdout?.on('data', (b: Buffer) => log.push(b.toString()));
      child.stderr?.on('data', (b: Buffer) => log.push(b.toString()));
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const started = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((resolve) => {
          const check = () => (log.join('').includes('started, version') ? resolve(true) : setTimeout(check, 10));
          check();
        }),
      ]);
      if (started) {
        // dnsmasq prints "started" before it fails on a busy port: give it a moment to fail.
        const failed = await Promise.race([exited.then(() => true), sleep(30).then(() => false)]);
        if (!failed) return { child, port, log, exited };
      }
      lastTry = new Error(`dnsmasq ${args.join(' ')} exited: ${log.join('')}`);
      if (!/in use/i.test(log.join(''))) throw lastTry;
      log.length = 0;
      await sleep(50);
    }
    throw lastTry ?? new Error('dnsmasq did not start');
  }

  private async kill(p: Proc | undefined): Promise<void> {
    if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
    p.child.kill('SIGKILL');
    await p.exited;
  }
}
