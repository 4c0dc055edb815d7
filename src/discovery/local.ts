/**
 * `local`: nodes on the same host find each other with no configuration. Each node drops a small
 * file into a directory under the temp dir and watches it. The directory is per user, per
 * network namespace and per cluster name, so nodes that cannot reach each other's addresses
 * (another namespace) never see each other.
 */
import { type FSWatcher, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, unlinkSync, watch, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { parseAddress } from '../mesh/identity.js';
import { rejectUnknownKeys, type Strategy, type StrategyContext } from './strategy.js';
import { intOption, requireConfigObject } from './strategy-config.js';

/** Configuration of the `local` strategy. */
export interface LocalStrategyConfig {
  /** Directory holding one registration file per node. Default `<tmpdir>/foundation-<uid>/<netns>/<clusterName>`. */
  dir?: string;
  /** How often the directory is rescanned, in ms, besides file-system notifications. Default 1000. */
  scanIntervalMs?: number;
}

interface Registration {
  name: string;
  address: string;
  incarnation: number;
  pid: number;
}

function netnsId(): string {
  try {
    // "net:[4026531840]" — the inode names the network namespace.
    return readlinkSync('/proc/self/ns/net').replace(/[^0-9]/g, '') || 'default';
  } catch {
    return 'default';
  }
}

/** Default directory for a cluster's local registrations. */
export function defaultLocalDir(clusterName: string): string {
  let uid: string;
  try {
    uid = String(userInfo().uid);
  } catch {
    uid = 'user';
  }
  return join(tmpdir(), `foundation-${uid}`, netnsId(), clusterName.replace(/[^A-Za-z0-9._-]/g, '_'));
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Loopback stands in for a wildcard bind: it is how a same-host peer reaches it. */
function localAddress(address: string): string {
  const a = parseAddress(address);
  if (!a) return address;
  if (a.host === '0.0.0.0') return `127.0.0.1:${a.port}`;
  if (a.host === '::') return `[::1]:${a.port}`;
  return address;
}

const LOCAL_CONFIG_KEYS: readonly (keyof LocalStrategyConfig)[] = ['dir', 'scanIntervalMs'];

export class LocalStrategy implements Strategy {
  readonly name = 'local';
  /** Every node reads the same shared medium, so discovery is mutual (see `Strategy.mutual`). */
  readonly mutual = true;
  private dir = '';
  private file = '';
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private ctx?: StrategyContext;
  private scanQueued = false;
  private readonly scanIntervalMs: number;

  constructor(private readonly config: LocalStrategyConfig = {}) {
    requireConfigObject(config);
    rejectUnknownKeys(config, LOCAL_CONFIG_KEYS);
    if (config.dir !== undefined && (typeof config.dir !== 'string' || config.dir.length === 0)) {
      throw new ConfigError('dir', 'expected a non-empty directory path');
    }
    this.scanIntervalMs = intOption('scanIntervalMs', config.scanIntervalMs, 1000, 50, 3_600_000);
  }

  start(ctx: StrategyContext): void {
    this.ctx = ctx;
    this.dir = this.config.dir ?? defaultLocalDir(ctx.clusterName);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.file = join(this.dir, `${encodeURIComponent(ctx.self.name)}.json`);
    const reg: Registration = { name: ctx.self.name, address: localAddress(ctx.self.address), incarnation: ctx.self.incarnation, pid: process.pid };
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(reg), { mode: 0o600 });
    renameSync(tmp, this.file);
    try {
      this.watcher = watch(this.dir, () => this.queueScan());
      this.watcher.on('error', () => this.watcher?.close());
      this.watcher.unref();
    } catch {
      // Polling alone still works where the file system has no notifications.
    }
    this.timer = setInterval(() => this.scan(), this.scanIntervalMs);
    this.timer.unref();
    this.scan();
  }

  private queueScan(): void {
    if (this.scanQueued) return;
    this.scanQueued = true;
    // Coalesce the burst of notifications a write+rename makes.
    setTimeout(() => {
      this.scanQueued = false;
      this.scan();
    }, 10).unref();
  }

  private scan(): void {
    const ctx = this.ctx;
    if (!ctx || ctx.signal.aborted) return;
    let entries: string[];
    try {
      entries = readdirSync(this.dir);
    } catch (err) {
      ctx.lookupFailed(new Error(`cannot read ${this.dir}: ${(err as Error).message}`));
      return;
    }
    const peers: string[] = [];
    for (const entry of entries) {
      if (!entry.endsWith('.json')) continue;
      const path = join(this.dir, entry);
      if (path === this.file) continue;
      let reg: Partial<Registration>;
      try {
        reg = JSON.parse(readFileSync(path, 'utf8')) as Partial<Registration>;
      } catch {
        continue; // Being written, or garbage: not a peer.
      }
      if (typeof reg.address !== 'string' || !parseAddress(reg.address) || typeof reg.pid !== 'number') continue;
      if (!pidAlive(reg.pid)) {
        try {
          unlinkSync(path);
        } catch {
          // Another node cleaned it first.
        }
        continue;
      }
      peers.push(reg.address);
    }
    ctx.setPeers(peers);
  }

  stop(): void {
    clearInterval(this.timer);
    this.watcher?.close();
    try {
      const reg = JSON.parse(readFileSync(this.file, 'utf8')) as Registration;
      // Only remove our own registration, not a newer incarnation's that replaced it.
      if (reg.pid === process.pid) unlinkSync(this.file);
    } catch {
      // Already gone.
    }
  }
}
