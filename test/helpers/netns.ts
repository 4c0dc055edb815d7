/**
 * Multi-host test harness on Linux network namespaces.
 *
 * A lab is N "hosts", each one a network namespace `<prefix><runid>-h<i>` with
 * an `eth0` veth whose peer is enslaved to a bridge `br0` that lives in the
 * lab's OWN namespace `<prefix><runid>-br`. Nothing is created in the root
 * namespace: the veth pairs are created inside the host namespaces with their
 * peer moved straight into the bridge namespace, so the root namespace never
 * gets a link, an address or a route towards the lab, and the lab has no route
 * off the machine.
 *
 * Each host has `lo` up (with 127.0.0.1 and ::1), `eth0` with an IPv4 address
 * of the lab subnet and IPv6 disabled on `eth0` (the lab is IPv4-only between
 * hosts, so IPv4 iptables rules cut everything), and a 224.0.0.0/4 route on
 * `eth0` so UDP multicast works between hosts. Bridge multicast snooping is off,
 * so multicast floods to every port.
 *
 * Faults are iptables rules INSIDE the host namespaces (each has its own rule
 * set), in dedicated chains so that healing is a flush:
 *   INPUT  -> FDN-PART-IN,  FDN-PAIR-IN,  FDN-LOSS-IN
 *   OUTPUT -> FDN-PART-OUT, FDN-PAIR-OUT, FDN-LOSS-OUT
 *
 * The runid encodes the owner's PID and the owner's start time, so a later run
 * can tell a namespace left by a crashed run (owner dead) from one that belongs
 * to a test running in parallel (owner alive): see `cleanupStale`.
 *
 * Teardown kills every process inside the lab namespaces (not only the ones
 * spawned through the harness) and deletes the namespaces. It runs from
 * `teardown()`, and synchronously from process 'exit' / SIGINT / SIGTERM; a
 * SIGKILLed run is cleaned by the next run's `createHosts` (via `cleanupStale`).
 */
import { type ChildProcess, execFile, execFileSync, spawn as spawnChild } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { describeMissing, missingTools, requireTools, toolsRequired } from './requires.js';

// ---------------------------------------------------------------------------
// Types

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code; 128+signal number when killed by a signal; -1 when it could not start. */
  code: number;
}

export interface ExecOptions {
  /** Kill the command (SIGKILL) after this many ms. Default 30 000. */
  timeoutMs?: number;
  /** Written to the command's stdin. */
  input?: string;
  /** Added to (not replacing) the current environment. */
  env?: Record<string, string>;
  cwd?: string;
}

export interface SpawnOptions {
  /** Added to (not replacing) the current environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** Default 'pipe'. */
  stdin?: 'pipe' | 'ignore';
  /** Size of the output ring buffer in bytes (stdout and stderr together). Default 256 KiB. */
  bufferBytes?: number;
  /** Label shown in `output()` dumps; defaults to the command line. */
  label?: string;
}

export interface LabProcess extends ChildProcess {
  /** Host name and command line (or the given label). */
  readonly label: string;
  /** The last `bufferBytes` of stdout and stderr, interleaved as they came. */
  output(): string;
  /**
   * Resolves with the buffered output once it matches `pattern`; rejects when
   * the process exits first or after `timeoutMs` (default 10 000), with the
   * output in the error message.
   */
  waitFor(pattern: RegExp | string, timeoutMs?: number): Promise<string>;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface Host {
  /** `h<i>` */
  readonly name: string;
  readonly index: number;
  /** Network namespace name. */
  readonly ns: string;
  /** IPv4 address on `eth0`. */
  readonly ip: string;
  /** `ip/prefixlen` */
  readonly cidr: string;
  /** Always 'eth0'. */
  readonly iface: string;
  /** Runs `ip netns exec <ns> ...cmd`; never throws on a non-zero exit. */
  exec(cmd: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Spawns `ip netns exec <ns> ...cmd`; tracked and killed by teardown. */
  spawn(cmd: string[], opts?: SpawnOptions): LabProcess;
  /** Spawns `process.execPath <repo>/dist/surfaces/cli.js ...args` in the host. */
  spawnNode(args: string[], env?: Record<string, string>, opts?: Omit<SpawnOptions, 'env'>): LabProcess;
  /** Output of every process spawned on this host, one section per process. */
  output(): string;
}

export interface NetLab {
  readonly runid: string;
  readonly prefix: string;
  /** e.g. '10.77.42.0/24' */
  readonly subnet: string;
  /** Namespace that holds the bridge. */
  readonly bridgeNs: string;
  readonly hosts: Host[];
  /** Idempotent: kills every process in the lab's namespaces and deletes them. */
  teardown(): Promise<void>;
  /** Drops all non-loopback traffic in and out of `host` (INPUT and OUTPUT). */
  partition(host: Host): Promise<void>;
  /** Undoes `partition(host)` (pairwise drops and loss stay). */
  heal(host: Host): Promise<void>;
  /** Drops traffic between a and b, on both sides, both directions. */
  dropBetween(a: Host, b: Host): Promise<void>;
  healBetween(a: Host, b: Host): Promise<void>;
  /**
   * Drops each non-loopback packet with `probability` (0..1) at `host`, on
   * `direction` ('both' by default: INPUT and OUTPUT). Replaces any previous
   * loss on that host; `probability` 0 removes it.
   */
  loss(host: Host, probability: number, direction?: 'in' | 'out' | 'both'): Promise<void>;
  /** Removes every partition, pairwise drop and loss on every host. */
  healAll(): Promise<void>;
  /** Output of every process spawned in the lab, for test failure messages. */
  output(): string;
}

export interface CreateHostsOptions {
  /** Namespace name prefix. Default 'fdn-'. */
  prefix?: string;
  /** IPv4 subnet 'a.b.c.d/len'. Default '10.77.X.0/24' with a per-run X. */
  subnet?: string;
}

// ---------------------------------------------------------------------------
// Small utilities

const DEFAULT_PREFIX = 'fdn-';
const CLI_PATH = fileURLToPath(new URL('../../dist/surfaces/cli.js', import.meta.url));

function run(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      {
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
        timeout: opts.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
        env: opts.env ? { ...process.env, ...opts.env } : process.env,
        cwd: opts.cwd,
      },
      (err, stdout, stderr) => {
        let code = 0;
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: unknown; signal?: NodeJS.Signals | null };
          if (typeof e.code === 'number') code = e.code;
          else if (e.signal) code = 128 + signalNumber(e.signal);
          else {
            code = -1;
            stderr = `${stderr}${stderr ? '\n' : ''}${e.message}`;
          }
        }
        resolve({ stdout: String(stdout), stderr: String(stderr), code });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

function signalNumber(sig: NodeJS.Signals): number {
  return (osConstants.signals as Record<string, number | undefined>)[sig] ?? 0;
}

async function must(cmd: string, args: string[], opts?: ExecOptions): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`command failed (exit ${r.code}): ${[cmd, ...args].join(' ')}\n${r.stderr.trim()}`);
  }
  return r.stdout;
}

function tryExecSync(cmd: string, args: string[], input?: string): { ok: boolean; out: string; err: string } {
  try {
    const out = execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      input: input ?? '',
      timeout: 15_000,
    });
    return { ok: true, out, err: '' };
  } catch (e) {
    const x = e as { stderr?: string | Buffer; message?: string };
    return { ok: false, out: '', err: String(x.stderr ?? '').trim() || String(x.message ?? e) };
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), or undefined if gone. */
function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses: parse after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state), so field 22 is rest[19].
    return rest[19];
  } catch {
    return undefined;
  }
}

function ownStartTag(): string {
  return Number(procStartTime(process.pid) ?? 0).toString(36);
}

let runCounter = 0;
function newRunId(tag?: string): string {
  runCounter += 1;
  const t = tag ?? `${runCounter}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
  return `${process.pid}-${ownStartTag()}-${t}`;
}

function listNamespacesSync(): string[] {
  const r = tryExecSync('ip', ['netns', 'list']);
  if (!r.ok) return [];
  return r.out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

function nsPidsSync(ns: string): number[] {
  const r = tryExecSync('ip', ['netns', 'pids', ns]);
  if (!r.ok) return [];
  return r.out
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0 && n !== process.pid);
}

function killPids(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------
// Availability

let availability: { ok: boolean; why?: string } | undefined;

/** Tools `createHosts` and the lab itself run: every netns suite needs them. */
export const NETNS_BASE_TOOLS = ['ip', 'iptables', 'iptables-restore', 'sysctl'] as const;

/**
 * Whether network namespaces can be used here: root, the tools of `NETNS_BASE_TOOLS`
 * installed, and a throwaway namespace with a veth, a bridge and an iptables statistic rule
 * can be created and deleted. Cached.
 */
export function netnsAvailable(): { ok: boolean; why?: string } {
  if (availability) return availability;
  availability = probe();
  return availability;
}

function probe(): { ok: boolean; why?: string } {
  if (process.platform !== 'linux') return { ok: false, why: `platform is ${process.platform}, not linux` };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { ok: false, why: 'not running as root (uid 0 is needed for ip netns and iptables)' };
  }
  const missing = missingTools(NETNS_BASE_TOOLS);
  if (missing.length > 0) return { ok: false, why: `needs ${describeMissing(missing)}, not installed` };
  const ipv = tryExecSync('ip', ['-V']);
  if (!ipv.ok) return { ok: false, why: `'ip' (iproute2) is not usable: ${ipv.err}` };
  const ipt = tryExecSync('iptables', ['--version']);
  if (!ipt.ok) return { ok: false, why: `'iptables' is not usable: ${ipt.err}` };
  const ns = `${DEFAULT_PREFIX}${newRunId(`probe${Math.floor(Math.random() * 1e6).toString(36)}`)}-h0`;
  const steps: [string, string[]][] = [
    ['ip', ['netns', 'add', ns]],
    ['ip', ['-n', ns, 'link', 'set', 'lo', 'up']],
    ['ip', ['-n', ns, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']],
    ['ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']],
    ['ip', ['-n', ns, 'link', 'set', 'v1', 'master', 'br0']],
    ['ip', ['netns', 'exec', ns, 'iptables', '-w', '-N', 'FDN-PROBE']],
    [
      'ip',
      ['netns', 'exec', ns, 'iptables', '-w', '-A', 'FDN-PROBE', '!', '-i', 'lo', '-m', 'statistic', '--mode', 'random', '--probability', '0.5', '-j', 'DROP'],
    ],
  ];
  let why: string | undefined;
  for (const [cmd, args] of steps) {
    const r = tryExecSync(cmd, args);
    if (!r.ok) {
      why = `'${[cmd, ...args].join(' ')}' failed: ${r.err}`;
      break;
    }
  }
  const del = tryExecSync('ip', ['netns', 'del', ns]);
  if (why) return { ok: false, why };
  if (!del.ok) return { ok: false, why: `could not delete probe namespace ${ns}: ${del.err}` };
  return { ok: true };
}

/** True when env FOUNDATION_REQUIRE_NETNS=1 (CI): unusable namespaces or a missing tool must fail, not skip. */
export function netnsRequired(): boolean {
  return toolsRequired();
}

export interface NetnsGateOptions {
  /**
   * Tools the suite runs inside the lab besides `NETNS_BASE_TOOLS` (e.g. `ping`, `nft`,
   * `avahi-browse`): missing ones skip the suite with the reason printed, like unusable
   * namespaces do.
   */
  tools?: readonly string[];
  /** Names the suite in the skip message. Default 'network-namespace tests'. */
  what?: string;
}

/**
 * For `describe.skipIf(netnsGate().skip)`: skip (with the reason printed to stderr) when
 * namespaces are unavailable or a tool of `opts.tools` is missing. With
 * FOUNDATION_REQUIRE_NETNS=1 nothing skips: unusable namespaces give `skip` false and
 * `createHosts` throws the reason, failing the tests; a missing tool makes this call throw
 * (see `requireTools`), failing the file.
 */
export function netnsGate(opts: NetnsGateOptions = {}): { skip: boolean; why?: string } {
  const what = opts.what ?? 'network-namespace tests';
  const a = netnsAvailable();
  if (!a.ok) {
    // Name the suite's own missing tools too, so one run tells everything to install.
    const extra = missingTools(opts.tools ?? []);
    const why = extra.length > 0 ? `${a.why}; the suite also needs ${describeMissing(extra)}` : a.why;
    if (netnsRequired()) return { skip: false, why };
    const msg = `\n!!! SKIPPING ${what}: ${why}\n!!! (set FOUNDATION_REQUIRE_NETNS=1 to make this a failure)\n`;
    process.stderr.write(msg);
    return { skip: true, why };
  }
  const why = requireTools(opts.tools ?? [], what);
  return why === undefined ? { skip: false } : { skip: true, why };
}

// ---------------------------------------------------------------------------
// Stale cleanup

/**
 * Deletes namespaces named `<prefix><pid>-<start>-<tag>-<suffix>` whose owner
 * process (pid with that start time) is gone, after killing every process still
 * inside them. Namespaces of live owners (tests running in parallel) are left
 * alone. Returns the deleted names.
 */
export function cleanupStale(prefix: string = DEFAULT_PREFIX): string[] {
  const re = new RegExp(`^${escapeRe(prefix)}(\\d+)-([0-9a-z]+)-([0-9a-z]+)-([0-9a-z]+)$`);
  const stale: string[] = [];
  for (const name of listNamespacesSync()) {
    const m = re.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    const start = m[2] ?? '';
    const live = procStartTime(pid);
    const alive = live !== undefined && Number(live).toString(36) === start;
    if (!alive) stale.push(name);
  }
  if (stale.length === 0) return [];
  destroyNamespacesSync(stale);
  return stale;
}

/** Kill everything inside the namespaces, then delete them. Synchronous, never throws. */
function destroyNamespacesSync(names: string[], tracked: ChildProcess[] = []): void {
  for (const c of tracked) {
    if (c.exitCode === null && c.signalCode === null && c.pid) killPids([c.pid], 'SIGKILL');
  }
  for (let round = 0; round < 3; round++) {
    let any = false;
    for (const ns of names) {
      const pids = nsPidsSync(ns);
      if (pids.length) {
        any = true;
        killPids(pids, 'SIGKILL');
      }
    }
    if (!any) break;
    // SIGKILLed processes leave the namespace almost at once; give them a moment.
    const until = Date.now() + 100;
    while (Date.now() < until) {
      /* busy-wait: this also runs on the 'exit' path where timers don't */
    }
  }
  for (const ns of names) tryExecSync('ip', ['netns', 'del', ns]);
}

// ---------------------------------------------------------------------------
// Exit / signal hooks

const liveLabs = new Set<Lab>();
let hooksInstalled = false;

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const lab of [...liveLabs]) lab.teardownSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      for (const lab of [...liveLabs]) lab.teardownSync();
      process.removeListener(sig, handler);
      // Preserve the default behaviour (die of the signal) unless someone else handles it.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

// ---------------------------------------------------------------------------
// Ring buffer

class Ring {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly cap: number) {}
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
    while (this.size > this.cap && this.chunks.length > 1) {
      this.size -= (this.chunks.shift() as Buffer).length;
    }
    if (this.size > this.cap && this.chunks.length === 1) {
      const only = this.chunks[0] as Buffer;
      this.chunks[0] = only.subarray(only.length - this.cap);
      this.size = this.cap;
    }
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

// ---------------------------------------------------------------------------
// Lab

const CHAINS = ['FDN-PART-IN', 'FDN-PART-OUT', 'FDN-PAIR-IN', 'FDN-PAIR-OUT', 'FDN-LOSS-IN', 'FDN-LOSS-OUT'] as const;

function iptablesBaseline(): string {
  const lines = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]'];
  for (const c of CHAINS) lines.push(`:${c} - [0:0]`);
  lines.push('-A INPUT -j FDN-PART-IN', '-A INPUT -j FDN-PAIR-IN', '-A INPUT -j FDN-LOSS-IN');
  lines.push('-A OUTPUT -j FDN-PART-OUT', '-A OUTPUT -j FDN-PAIR-OUT', '-A OUTPUT -j FDN-LOSS-OUT');
  lines.push('COMMIT', '');
  return lines.join('\n');
}

function parseSubnet(subnet: string, n: number): { base: number; len: number } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(subnet);
  if (!m) throw new Error(`subnet must look like a.b.c.d/len, got ${JSON.stringify(subnet)}`);
  const octets = m.slice(1, 5).map(Number);
  const len = Number(m[5]);
  if (octets.some((o) => o > 255) || len < 8 || len > 30) throw new Error(`bad subnet ${subnet}`);
  const addr = octets.reduce((acc, o) => acc * 256 + o, 0);
  const size = 2 ** (32 - len);
  const base = addr - (addr % size);
  if (n > size - 2) throw new Error(`subnet ${subnet} has room for ${size - 2} hosts, ${n} asked`);
  return { base, len };
}

function intToIp(x: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(x / 2 ** s) % 256).join('.');
}

class LabHost implements Host {
  readonly iface = 'eth0';
  readonly procs: LabProcess[] = [];
  constructor(
    private readonly lab: Lab,
    readonly index: number,
    readonly name: string,
    readonly ns: string,
    readonly ip: string,
    readonly cidr: string,
  ) {}

  exec(cmd: string[], opts?: ExecOptions): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', this.ns, ...cmd], opts);
  }

  spawn(cmd: string[], opts: SpawnOptions = {}): LabProcess {
    if (this.lab.closed) throw new Error(`lab ${this.lab.runid} is torn down`);
    if (cmd.length === 0) throw new Error('spawn: empty command');
    const child = spawnChild('ip', ['netns', 'exec', this.ns, ...cmd], {
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      cwd: opts.cwd,
      stdio: [opts.stdin ?? 'pipe', 'pipe', 'pipe'],
    });
    const ring = new Ring(opts.bufferBytes ?? 256 * 1024);
    const label = `[${this.name}] ${opts.label ?? cmd.join(' ')}`;
    const listeners = new Set<() => void>();
    const onData = (b: Buffer) => {
      ring.push(b);
      for (const l of [...listeners]) l();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    let spawnError: Error | undefined;
    child.on('error', (e) => {
      spawnError = e;
      ring.push(Buffer.from(`\n[harness] spawn error: ${e.message}\n`));
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('close', (code, signal) => {
        for (const l of [...listeners]) l();
        resolve({ code, signal });
      });
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    let done = false;
    void exited.then(() => {
      done = true;
      for (const l of [...listeners]) l();
    });
    const lp = Object.assign(child, {
      label,
      exited,
      output: () => ring.text(),
      waitFor: (pattern: RegExp | string, timeoutMs = 10_000): Promise<string> =>
        new Promise<string>((resolve, reject) => {
          const test = (s: string) => (typeof pattern === 'string' ? s.includes(pattern) : pattern.test(s));
          const check = () => {
            const text = ring.text();
            if (test(text)) {
              finish();
              resolve(text);
            } else if (done) {
              finish();
              reject(
                new Error(
                  `${label}: exited (${child.exitCode ?? child.signalCode}) before output matched ${String(pattern)}` +
                    `${spawnError ? ` (${spawnError.message})` : ''}\n--- output ---\n${text}`,
                ),
              );
            }
          };
          const timer = setTimeout(() => {
            finish();
            reject(new Error(`${label}: no output matching ${String(pattern)} within ${timeoutMs} ms\n--- output ---\n${ring.text()}`));
          }, timeoutMs);
          const finish = () => {
            clearTimeout(timer);
            listeners.delete(check);
          };
          listeners.add(check);
          check();
        }),
    }) as LabProcess;
    this.procs.push(lp);
    return lp;
  }

  spawnNode(args: string[], env?: Record<string, string>, opts: Omit<SpawnOptions, 'env'> = {}): LabProcess {
    return this.spawn([process.execPath, CLI_PATH, ...args], { ...opts, ...(env ? { env } : {}) });
  }

  output(): string {
    return this.procs
      .map((p) => {
        const status = p.exitCode !== null ? `exit ${p.exitCode}` : p.signalCode !== null ? `signal ${p.signalCode}` : 'running';
        return `--- ${p.label} (pid ${p.pid ?? '?'}, ${status}) ---\n${p.output()}`;
      })
      .join('\n');
  }
}

class Lab implements NetLab {
  readonly hosts: LabHost[] = [];
  closed = false;
  private teardownPromise: Promise<void> | undefined;

  constructor(
    readonly runid: string,
    readonly prefix: string,
    readonly subnet: string,
    readonly bridgeNs: string,
  ) {}

  namespaces(): string[] {
    return [...this.hosts.map((h) => h.ns), this.bridgeNs];
  }

  private own(host: Host): LabHost {
    const h = this.hosts.find((x) => x === host || x.ns === host.ns);
    if (!h) throw new Error(`host ${host.name} (${host.ns}) is not part of lab ${this.runid}`);
    if (this.closed) throw new Error(`lab ${this.runid} is torn down`);
    return h;
  }

  private ipt(h: LabHost, args: string[]): Promise<string> {
    return must('ip', ['netns', 'exec', h.ns, 'iptables', '-w', ...args]);
  }

  async partition(host: Host): Promise<void> {
    const h = this.own(host);
    await this.ipt(h, ['-F', 'FDN-PART-IN']);
    await this.ipt(h, ['-F', 'FDN-PART-OUT']);
    await this.ipt(h, ['-A', 'FDN-PART-IN', '!', '-i', 'lo', '-j', 'DROP']);
    await this.ipt(h, ['-A', 'FDN-PART-OUT', '!', '-o', 'lo', '-j', 'DROP']);
  }

  async heal(host: Host): Promise<void> {
    const h = this.own(host);
    await this.ipt(h, ['-F', 'FDN-PART-IN']);
    await this.ipt(h, ['-F', 'FDN-PART-OUT']);
  }

  private pairRules(peer: LabHost): [string, string[]][] {
    return [
      ['FDN-PAIR-IN', ['-s', peer.ip, '-j', 'DROP']],
      ['FDN-PAIR-OUT', ['-d', peer.ip, '-j', 'DROP']],
    ];
  }

  async dropBetween(a: Host, b: Host): Promise<void> {
    const ha = this.own(a);
    const hb = this.own(b);
    if (ha === hb) throw new Error('dropBetween: a and b are the same host');
    for (const [self, peer] of [
      [ha, hb],
      [hb, ha],
    ] as const) {
      for (const [chain, spec] of this.pairRules(peer)) {
        const exists = await run('ip', ['netns', 'exec', self.ns, 'iptables', '-w', '-C', chain, ...spec]);
        if (exists.code !== 0) await this.ipt(self, ['-A', chain, ...spec]);
      }
    }
  }

  async healBetween(a: Host, b: Host): Promise<void> {
    const ha = this.own(a);
    const hb = this.own(b);
    for (const [self, peer] of [
      [ha, hb],
      [hb, ha],
    ] as const) {
      for (const [chain, spec] of this.pairRules(peer)) {
        for (let i = 0; i < 10; i++) {
          const r = await run('ip', ['netns', 'exec', self.ns, 'iptables', '-w', '-D', chain, ...spec]);
          if (r.code !== 0) break;
        }
      }
    }
  }

  async loss(host: Host, probability: number, direction: 'in' | 'out' | 'both' = 'both'): Promise<void> {
    const h = this.own(host);
    if (!(probability >= 0 && probability <= 1)) throw new Error(`loss: probability must be in [0, 1], got ${probability}`);
    await this.ipt(h, ['-F', 'FDN-LOSS-IN']);
    await this.ipt(h, ['-F', 'FDN-LOSS-OUT']);
    if (probability === 0) return;
    const p = probability.toFixed(6);
    const stat = ['-m', 'statistic', '--mode', 'random', '--probability', p, '-j', 'DROP'];
    if (direction !== 'out') await this.ipt(h, ['-A', 'FDN-LOSS-IN', '!', '-i', 'lo', ...stat]);
    if (direction !== 'in') await this.ipt(h, ['-A', 'FDN-LOSS-OUT', '!', '-o', 'lo', ...stat]);
  }

  async healAll(): Promise<void> {
    for (const h of this.hosts) {
      for (const c of CHAINS) await this.ipt(h, ['-F', c]);
    }
  }

  output(): string {
    return this.hosts
      .map((h) => h.output())
      .filter(Boolean)
      .join('\n');
  }

  teardown(): Promise<void> {
    this.teardownPromise ??= this.doTeardown();
    return this.teardownPromise;
  }

  private async doTeardown(): Promise<void> {
    this.closed = true;
    const procs = this.hosts.flatMap((h) => h.procs);
    // Polite first: SIGTERM everything in the namespaces, then SIGKILL what is left.
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    for (const ns of this.namespaces()) killPids(nsPidsSync(ns), 'SIGTERM');
    const deadline = Date.now() + 2_000;
    while (Date.now() < deadline) {
      const left = this.namespaces().some((ns) => nsPidsSync(ns).length > 0);
      const running = procs.some((p) => p.exitCode === null && p.signalCode === null);
      if (!left && !running) break;
      await sleep(50);
    }
    destroyNamespacesSync(this.namespaces(), procs);
    // Let the 'close' events of our children arrive so no handles leak into the next test.
    await Promise.race([Promise.all(procs.map((p) => p.exited)), sleep(2_000)]);
    liveLabs.delete(this);
  }

  /** Exit / signal path. */
  teardownSync(): void {
    this.closed = true;
    destroyNamespacesSync(
      this.namespaces(),
      this.hosts.flatMap((h) => h.procs),
    );
    liveLabs.delete(this);
  }
}

/**
 * Builds a lab of `n` hosts (see the file comment). Cleans namespaces left by
 * dead runs with the same prefix first. Throws (with the reason) when network
 * namespaces are unavailable. On failure half-way, whatever was created is
 * deleted before the error propagates.
 */
export async function createHosts(n: number, opts: CreateHostsOptions = {}): Promise<NetLab> {
  if (!Number.isInteger(n) || n < 1 || n > 250) throw new Error(`createHosts: n must be an integer in 1..250, got ${n}`);
  const avail = netnsAvailable();
  if (!avail.ok) throw new Error(`network namespaces unavailable: ${avail.why}`);
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  if (!/^[A-Za-z0-9_.-]{1,40}$/.test(prefix)) throw new Error(`bad prefix ${JSON.stringify(prefix)}`);
  cleanupStale(prefix);

  const runid = newRunId();
  const subnet = opts.subnet ?? `10.77.${1 + Math.floor(Math.random() * 254)}.0/24`;
  const { base, len } = parseSubnet(subnet, n);
  const lab = new Lab(runid, prefix, subnet, `${prefix}${runid}-br`);
  for (let i = 0; i < n; i++) {
    const ip = intToIp(base + i + 1);
    lab.hosts.push(new LabHost(lab, i, `h${i}`, `${prefix}${runid}-h${i}`, ip, `${ip}/${len}`));
  }
  installHooks();
  liveLabs.add(lab);

  try {
    const br = lab.bridgeNs;
    await must('ip', ['netns', 'add', br]);
    await must('ip', ['netns', 'exec', br, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    await must('ip', ['netns', 'exec', br, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
    await must('ip', ['-n', br, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', br, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'mcast_snooping', '0']);
    await must('ip', ['-n', br, 'link', 'set', 'br0', 'up']);

    for (const h of lab.hosts) {
      await must('ip', ['netns', 'add', h.ns]);
      await must('ip', ['-n', h.ns, 'link', 'set', 'lo', 'up']);
      // Before eth0 exists, so eth0 never gets an IPv6 address; lo keeps ::1.
      await must('ip', ['netns', 'exec', h.ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
      // Created inside the host namespace, the peer goes straight into the bridge namespace.
      const port = `p${h.index}`;
      await must('ip', ['-n', h.ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', port, 'netns', br]);
      await must('ip', ['netns', 'exec', h.ns, 'sysctl', '-qw', 'net.ipv6.conf.eth0.disable_ipv6=1']);
      await must('ip', ['-n', br, 'link', 'set', port, 'master', 'br0']);
      await must('ip', ['-n', br, 'link', 'set', port, 'up']);
      await must('ip', ['-n', h.ns, 'addr', 'add', h.cidr, 'dev', 'eth0']);
      await must('ip', ['-n', h.ns, 'link', 'set', 'eth0', 'up']);
      await must('ip', ['-n', h.ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
      await must('ip', ['netns', 'exec', h.ns, 'iptables-restore', '-w'], { input: iptablesBaseline() });
    }
  } catch (e) {
    lab.teardownSync();
    throw e;
  }
  return lab;
}
