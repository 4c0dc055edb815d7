/**
 * Runs one strategy under one named topology and reconciles what it finds with what the mesh
 * has: new addresses are kept connected, vanished ones are dropped — only if this topology
 * brought them in. A failed lookup changes nothing.
 */
import { HandshakeError } from '../errors.js';
import type { Mesh } from '../mesh/mesh.js';
import { type Logger, LogOnce } from '../util/logger.js';
import { publish, TelemetryChannels } from '../util/telemetry.js';
import type { Strategy, StrategyContext } from './strategy.js';

/** Counters of one topology, for metrics. */
export interface TopologyStats {
  topology: string;
  strategy: string;
  peers: number;
  connects: { ok: number; failed: number };
  disconnects: number;
  lookupErrors: number;
}

export class Topology {
  private readonly abort = new AbortController();
  private readonly owned = new Set<string>();
  /** Lookup errors logged since the last successful lookup, so each is logged once. */
  private readonly seenErrors = new LogOnce();
  private readonly failing = new Map<string, string>();
  private readonly stats_: TopologyStats;
  private readonly unsubscribe: () => void;
  private readonly log: Logger;

  constructor(
    readonly name: string,
    readonly strategy: Strategy,
    private readonly mesh: Mesh,
    private readonly clusterName: string,
    logger: Logger,
  ) {
    this.log = logger.child({ topology: name, strategy: strategy.name });
    this.stats_ = { topology: name, strategy: strategy.name, peers: 0, connects: { ok: 0, failed: 0 }, disconnects: 0, lookupErrors: 0 };
    this.unsubscribe = mesh.onDialAttempt((a) => {
      if (!a.owners.includes(this.name)) return;
      // A lost simultaneous-connect tie-break is the peer's link winning, not a failure.
      const lostTieBreak = a.error instanceof HandshakeError && a.error.reason === 'duplicate-link';
      if (a.ok || lostTieBreak) {
        this.stats_.connects.ok++;
        this.failing.delete(a.address);
      } else {
        this.stats_.connects.failed++;
        // One line per address and distinct error; retries of the same failure stay quiet.
        const msg = a.error?.message ?? 'unknown error';
        if (this.failing.get(a.address) !== msg) {
          this.failing.set(a.address, msg);
          this.log.warn({ peer: a.address, error: msg }, 'cannot connect to discovered node; retrying with backoff');
        }
      }
      publish(TelemetryChannels.discoveryConnect, {
        node: mesh.self.name,
        topology: this.name,
        strategy: strategy.name,
        peer: a.address,
        durationMs: a.durationMs,
        result: a.ok ? 'ok' : 'error',
        error: a.error?.message,
      });
    });
  }

  async start(): Promise<void> {
    await this.strategy.start(this.context());
  }

  stats(): TopologyStats {
    return { ...this.stats_, peers: this.owned.size, connects: { ...this.stats_.connects } };
  }

  private context(): StrategyContext {
    const mesh = this.mesh;
    return {
      topology: this.name,
      self: mesh.self,
      clusterName: this.clusterName,
      signal: this.abort.signal,
      logger: this.log,
      setPeers: (addresses) => this.setPeers(addresses),
      lookupFailed: (error) => this.lookupFailed(error),
      connect: (address) => mesh.connect(address),
      disconnect: (address) => this.drop(address),
      list: () => mesh.connectedPeers(),
    };
  }

  private setPeers(addresses: Iterable<string>): void {
    if (this.abort.signal.aborted) return;
    this.seenErrors.clear();
    const next = new Set<string>();
    for (const a of addresses) if (a !== this.mesh.self.address) next.add(a);
    for (const a of next) {
      if (this.owned.has(a)) continue;
      this.owned.add(a);
      this.mesh.want(a, this.name, { mutual: this.strategy.mutual === true });
    }
    for (const a of [...this.owned]) if (!next.has(a)) this.drop(a);
  }

  private drop(address: string): void {
    if (!this.owned.delete(address)) return;
    this.stats_.disconnects++;
    this.mesh.release(address, this.name, true);
    publish(TelemetryChannels.discoveryDisconnect, {
      node: this.mesh.self.name,
      topology: this.name,
      strategy: this.strategy.name,
      peer: address,
      result: 'ok',
    });
  }

  private lookupFailed(error: Error): void {
    this.stats_.lookupErrors++;
    publish(TelemetryChannels.discoveryLookupError, { node: this.mesh.self.name, topology: this.name, strategy: this.strategy.name, error: error.message });
    if (!this.seenErrors.first(error.message)) return;
    this.log.warn({ error: error.message, keptPeers: this.owned.size }, 'discovery lookup failed: keeping the current members');
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.unsubscribe();
    try {
      await this.strategy.stop();
    } finally {
      for (const a of this.owned) this.mesh.release(a, this.name, false);
      this.owned.clear();
    }
  }
}
