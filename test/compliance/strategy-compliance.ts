/**
 * The shared compliance suite every discovery strategy passes (built-in and custom), in the
 * spirit of js-libp2p's interface suites. A strategy's test file calls
 * `describeStrategyCompliance({...})` with a fixture that runs the real backing service
 * (dnsmasq, a Kubernetes API server, multicast on loopback, ...).
 *
 * The suite drives the strategy through a recording StrategyContext: that context is the
 * consumer side of the interface, so recording it is observation, not a stand-in for a
 * real component.
 */
import { describe, expect, it } from 'vitest';
import type { Strategy, StrategyContext } from '../../src/discovery/strategy.js';
import { ConfigError } from '../../src/errors.js';
import type { ConnectResult } from '../../src/mesh/mesh.js';

export interface ComplianceEnvironment {
  /** A strategy configured to discover `expectedPeers`, as `self`. */
  create(): Strategy;
  /** The node the strategy runs as. */
  self: { name: string; address: string; incarnation: number };
  clusterName?: string;
  /** Addresses the strategy must report (self excluded). */
  expectedPeers: string[];
  /** Makes lookups fail (server down, 403, SERVFAIL...). Optional: push-based strategies may not have lookups. */
  breakLookups?(): Promise<void>;
  restoreLookups?(): Promise<void>;
  /** Adds a peer to the backing source; resolves with its address. */
  addPeer?(): Promise<string>;
  /** Removes a peer from the backing source. */
  removePeer?(address: string): Promise<void>;
  teardown(): Promise<void>;
}

export interface ComplianceFixture {
  /** Strategy name, as in `Strategy.name`. */
  name: string;
  setup(): Promise<ComplianceEnvironment>;
  /** Configs the constructor must refuse with a ConfigError. */
  invalidConfigs: Array<{ config: unknown; key: string; create: (config: never) => Strategy }>;
  /** Upper bound for discovery to converge, in ms. Default 5000. */
  convergeMs?: number;
}

export class RecordingContext implements StrategyContext {
  readonly topology = 'compliance';
  readonly logger = silentLogger;
  readonly abort = new AbortController();
  readonly signal: AbortSignal = this.abort.signal;
  readonly peerSets: string[][] = [];
  readonly failures: Error[] = [];
  readonly connects: string[] = [];
  readonly disconnects: string[] = [];
  constructor(
    readonly self: { name: string; address: string; incarnation: number },
    readonly clusterName = 'foundation',
  ) {}
  setPeers(addresses: Iterable<string>): void {
    this.peerSets.push([...addresses].sort());
  }
  lookupFailed(error: Error): void {
    this.failures.push(error);
  }
  connect(address: string): Promise<ConnectResult> {
    this.connects.push(address);
    return Promise.resolve({ ok: false, error: new Error('not connected in the compliance suite') });
  }
  disconnect(address: string): void {
    this.disconnects.push(address);
  }
  list(): string[] {
    return [];
  }
  latest(): string[] | undefined {
    return this.peerSets.at(-1);
  }
}

export const silentLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};

export async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const same = (a: string[] | undefined, b: string[]) => !!a && a.length === b.length && [...b].sort().every((x, i) => a[i] === x);

export function describeStrategyCompliance(fx: ComplianceFixture): void {
  const converge = fx.convergeMs ?? 5000;
  describe(`strategy compliance: ${fx.name}`, () => {
    it('names itself', async () => {
      const env = await fx.setup();
      try {
        expect(env.create().name).toBe(fx.name);
      } finally {
        await env.teardown();
      }
    });

    it('reports exactly the expected peers, never itself', async () => {
      const env = await fx.setup();
      const s = env.create();
      const ctx = new RecordingContext(env.self, env.clusterName);
      try {
        await s.start(ctx);
        await until(() => same(ctx.latest(), env.expectedPeers), converge, `peers ${env.expectedPeers.join(',')} (last: ${ctx.latest()?.join(',')})`);
        for (const set of ctx.peerSets) expect(set).not.toContain(env.self.address);
      } finally {
        ctx.abort.abort();
        await s.stop();
        await env.teardown();
      }
    });

    it('keeps the peers when lookups fail ("unknown", never "no nodes")', async (t) => {
      const env = await fx.setup();
      if (!env.breakLookups || !env.restoreLookups) {
        await env.teardown();
        t.skip();
        return;
      }
      const s = env.create();
      const ctx = new RecordingContext(env.self, env.clusterName);
      try {
        await s.start(ctx);
        await until(() => same(ctx.latest(), env.expectedPeers), converge, 'initial peers');
        const before = ctx.peerSets.length;
        await env.breakLookups();
        await until(() => ctx.failures.length > 0, converge, 'lookupFailed to be called');
        // No narrower peer set may be reported while lookups fail.
        for (const set of ctx.peerSets.slice(before)) expect(set.length).toBeGreaterThanOrEqual(env.expectedPeers.length);
        expect(ctx.failures[0]).toBeInstanceOf(Error);
        await env.restoreLookups();
        const failuresAtRestore = ctx.peerSets.length;
        await until(() => ctx.peerSets.length > failuresAtRestore && same(ctx.latest(), env.expectedPeers), converge, 'peers after restore');
      } finally {
        ctx.abort.abort();
        await s.stop();
        await env.teardown();
      }
    });

    it('follows peers that join and leave the source', async (t) => {
      const env = await fx.setup();
      if (!env.addPeer || !env.removePeer) {
        await env.teardown();
        t.skip();
        return;
      }
      const s = env.create();
      const ctx = new RecordingContext(env.self, env.clusterName);
      try {
        await s.start(ctx);
        await until(() => same(ctx.latest(), env.expectedPeers), converge, 'initial peers');
        const added = await env.addPeer();
        await until(() => same(ctx.latest(), [...env.expectedPeers, added]), converge, `added peer ${added}`);
        await env.removePeer(added);
        await until(() => same(ctx.latest(), env.expectedPeers), converge + 5000, `removed peer ${added}`);
      } finally {
        ctx.abort.abort();
        await s.stop();
        await env.teardown();
      }
    });

    it('goes quiet after stop', async () => {
      const env = await fx.setup();
      const s = env.create();
      const ctx = new RecordingContext(env.self, env.clusterName);
      try {
        await s.start(ctx);
        await until(() => ctx.peerSets.length > 0, converge, 'a first peer set');
        ctx.abort.abort();
        await s.stop();
        const n = ctx.peerSets.length;
        await new Promise((r) => setTimeout(r, 300));
        expect(ctx.peerSets.length).toBe(n);
      } finally {
        await env.teardown();
      }
    });

    it('refuses invalid configuration with a ConfigError naming the key', () => {
      for (const bad of fx.invalidConfigs) {
        let err: unknown;
        try {
          bad.create(bad.config as never);
        } catch (e) {
          err = e;
        }
        expect(err, JSON.stringify(bad.config)).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).key).toBe(bad.key);
      }
    });
  });
}
