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
import { AsyncLocalStorage, createHook } from 'node:async_hooks';
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
  /**
   * Upper bound, in ms, for everything the strategy opened to be released after `stop()`
   * resolves. Default 2000. A strategy using a shared HTTP client (fetch) may need the pool's
   * keep-alive timeout: the idle connection it leaves in the pool closes on that timer.
   */
  releaseMs?: number;
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

/**
 * Async resource types that say nothing about what a stopped strategy holds: one-shot work that
 * ends by itself (a tick, an immediate, a promise), and wrappers Node destroys only when they are
 * garbage-collected although nothing of them stays open: a resolver's channel, a TLS layer (the
 * TCPWRAP under it carries the connection, and is tracked), a synchronous crypto job.
 */
// STREAM_END_OF_STREAM (Node 24): the AsyncResource `stream.finished` binds its callback to;
// it holds no handle and is destroyed only when collected, so it would stay listed after stop.
const NOT_HELD = new Set(['PROMISE', 'TickObject', 'Immediate', 'Microtask', 'DNSCHANNEL', 'TLSWRAP', 'STREAM_END_OF_STREAM']);
const CRYPTO_JOB = /^(RANDOMBYTES|RANDOMPRIME|CHECKPRIME|PBKDF2|SCRYPT|HKDF|HASH|HMAC|CIPHER|SIGN|DERIVEBITS|KEYGEN|KEYPAIRGEN|KEYEXPORT)REQUEST$/;
const isHeld = (type: string) => !NOT_HELD.has(type) && !CRYPTO_JOB.test(type);

/**
 * Tracks the async resources (sockets, timers, requests, servers...) created by code run through
 * `run`, and by everything that code's callbacks create in turn, until they are destroyed. Used to
 * show that a stopped strategy let go of everything it held: a socket it forgot to close or a
 * timer it forgot to clear stays listed. Node's own `getActiveResourcesInfo()` would miss unref'd
 * timers and cannot tell this strategy's handles from its peers'.
 */
export class ResourceTracker {
  /** Marks the tracked code: the store follows it through callbacks, timers and awaits. */
  private readonly scope = new AsyncLocalStorage<ResourceTracker>();
  private readonly live = new Map<number, string>();
  private readonly waiters = new Set<() => void>();
  private readonly hook = createHook({
    init: (id, type) => {
      if (this.scope.getStore() === this && isHeld(type)) this.live.set(id, type);
    },
    destroy: (id) => {
      if (this.live.delete(id)) for (const w of this.waiters) w();
    },
  });

  constructor() {
    this.hook.enable();
  }

  /** Runs `fn` as the tracked code: what it (and its callbacks) create is tracked. */
  run<T>(fn: () => T): T {
    return this.scope.run(this, fn);
  }

  /** Types of the tracked resources still alive. */
  held(): string[] {
    return [...this.live.values()].sort();
  }

  /** Resolves with `[]` once every tracked resource is gone, or with what is still held after `ms`. */
  async released(ms: number): Promise<string[]> {
    if (this.live.size === 0) return [];
    await new Promise<void>((resolve) => {
      const done = () => {
        if (this.live.size > 0) return;
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(done);
        resolve();
      }, ms);
      this.waiters.add(done);
    });
    return this.held();
  }

  dispose(): void {
    this.hook.disable();
    this.scope.disable();
  }
}

/** Skips the running test, printing why (a skip nobody can explain hides a gap). */
export function skipWithReason(t: { skip(note?: string): never }, reason: string): never {
  console.warn(`skipped: ${reason}`);
  return t.skip(reason);
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
        skipWithReason(t, `${fx.name}: the fixture cannot make lookups fail (no breakLookups/restoreLookups)`);
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
        skipWithReason(t, `${fx.name}: the fixture cannot add or remove peers at its source (no addPeer/removePeer)`);
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

    it('goes quiet after stop: every socket, timer and request it opened is released', async () => {
      const env = await fx.setup();
      const s = env.create();
      const ctx = new RecordingContext(env.self, env.clusterName);
      const tracker = new ResourceTracker();
      try {
        await tracker.run(() => s.start(ctx));
        await until(() => ctx.peerSets.length > 0, converge, 'a first peer set');
        ctx.abort.abort();
        await tracker.run(() => s.stop());
        const n = ctx.peerSets.length;
        // Event-driven: resolves as the last of them is destroyed. Nothing held, nothing can call back.
        const held = await tracker.released(fx.releaseMs ?? 2000);
        expect(held, 'async resources the strategy still holds after stop').toEqual([]);
        expect(ctx.peerSets.length).toBe(n);
      } finally {
        tracker.dispose();
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
