/**
 * The example custom strategy (examples/http-registry-strategy.ts) against the shared strategy
 * compliance suite, with a real node:http registry on 127.0.0.1, plus the cases specific to an
 * HTTP poller: timeouts, malformed answers, aborting on stop, and Wizard-mode wiring.
 */
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { HttpRegistryStrategy } from '../../examples/http-registry-strategy.js';
import { parseOptions } from '../../src/config/options.js';
import { resolveTopologies } from '../../src/discovery/modes.js';
import { createStrategy } from '../../src/discovery/registry.js';
import type { Strategy, StrategyContext } from '../../src/discovery/strategy.js';
import { ConfigError, ErrorCodes, FoundationError } from '../../src/errors.js';
import { describeStrategyCompliance, RecordingContext, ResourceTracker, until } from '../compliance/strategy-compliance.js';

const self = { name: 'self', address: '127.0.0.1:4000', incarnation: 1 };

/** A registry the tests steer: what it lists, its status code, a raw body, or no answer at all. */
interface RegistryState {
  nodes: string[];
  status: number;
  raw?: string;
  hang: boolean;
  requests: number;
  lastHeaders?: IncomingHttpHeaders;
}

async function startRegistry(nodes: string[]): Promise<{ url: string; state: RegistryState; close(): Promise<void> }> {
  const state: RegistryState = { nodes: [...nodes], status: 200, hang: false, requests: 0 };
  const server = createServer((req, res) => {
    state.requests++;
    state.lastHeaders = req.headers;
    if (state.hang) return; // accepts the request and never answers
    if (state.status !== 200) {
      res.writeHead(state.status, { 'content-type': 'text/plain' });
      res.end('registry unavailable\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(state.raw ?? JSON.stringify({ nodes: state.nodes }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/nodes`,
    state,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// The served list includes this node's own address: the strategy must leave it out.
const served = [self.address, '127.0.0.1:4001', '127.0.0.1:4002'];

describeStrategyCompliance({
  name: 'http-registry',
  // fetch leaves the idle connection to the registry in undici's shared pool, which closes it
  // after its keep-alive timeout (4 s, under the registry server's 5 s).
  releaseMs: 6000,
  async setup() {
    const registry = await startRegistry(served);
    let next = 4010;
    return {
      self,
      expectedPeers: served.slice(1),
      create: () => new HttpRegistryStrategy({ url: registry.url, intervalMs: 100, timeoutMs: 1000 }),
      breakLookups: async () => {
        registry.state.status = 503;
      },
      restoreLookups: async () => {
        registry.state.status = 200;
      },
      addPeer: async () => {
        const address = `127.0.0.1:${next++}`;
        registry.state.nodes.push(address);
        return address;
      },
      removePeer: async (address: string) => {
        registry.state.nodes = registry.state.nodes.filter((a) => a !== address);
      },
      teardown: () => registry.close(),
    };
  },
  invalidConfigs: [
    { config: {}, key: 'url', create: (c) => new HttpRegistryStrategy(c) },
    { config: { url: 'not a url' }, key: 'url', create: (c) => new HttpRegistryStrategy(c) },
    { config: { url: 'ftp://registry/nodes' }, key: 'url', create: (c) => new HttpRegistryStrategy(c) },
    { config: { url: 'http://registry/nodes', intervalMs: 10 }, key: 'intervalMs', create: (c) => new HttpRegistryStrategy(c) },
    { config: { url: 'http://registry/nodes', timeoutMs: 0 }, key: 'timeoutMs', create: (c) => new HttpRegistryStrategy(c) },
    { config: { url: 'http://registry/nodes', timeoutMs: '2s' }, key: 'timeoutMs', create: (c) => new HttpRegistryStrategy(c) },
    { config: { url: 'http://registry/nodes', headers: { authorization: 42 } }, key: 'headers', create: (c) => new HttpRegistryStrategy(c) },
  ],
});

describe('HttpRegistryStrategy beyond the shared suite', () => {
  /** Starts the strategy against a fresh registry and waits for the served peers. */
  async function running(options: { timeoutMs?: number; headers?: Record<string, string> } = {}) {
    const registry = await startRegistry(served);
    const strategy = new HttpRegistryStrategy({ url: registry.url, intervalMs: 100, timeoutMs: options.timeoutMs ?? 1000, headers: options.headers });
    const ctx = new RecordingContext(self);
    await strategy.start(ctx);
    await until(() => ctx.latest()?.join() === served.slice(1).join(), 5000, 'the served peers');
    const done = async () => {
      ctx.abort.abort();
      await strategy.stop();
      await registry.close();
    };
    return { registry, strategy, ctx, done };
  }

  it('times out a registry that never answers and keeps the peers', async () => {
    const { registry, ctx, done } = await running({ timeoutMs: 300 });
    try {
      const before = ctx.peerSets.length;
      registry.state.hang = true;
      const hungAt = Date.now();
      await until(() => ctx.failures.length > 0, 3000, 'a timeout to be reported');
      expect(Date.now() - hungAt).toBeLessThan(300 + 100 + 1000);
      expect(ctx.failures[0]?.message).toMatch(/no answer within 300 ms/);
      expect(ctx.failures[0]).toBeInstanceOf(FoundationError);
      expect((ctx.failures[0] as FoundationError).code).toBe(ErrorCodes.DISCOVERY_LOOKUP_FAILED);
      expect(ctx.peerSets.length).toBe(before);
    } finally {
      await done();
    }
  });

  it('treats a malformed answer as a failed lookup, never as a smaller cluster', async () => {
    const { registry, ctx, done } = await running();
    try {
      const before = ctx.peerSets.length;
      for (const raw of ['not json', '{"nodes": "127.0.0.1:4001"}', '{"nodes": ["127.0.0.1:4001", 42]}', '{"nodes": ["no-port"]}']) {
        const failures = ctx.failures.length;
        registry.state.raw = raw;
        await until(() => ctx.failures.length > failures, 3000, `a failure for ${raw}`);
      }
      expect(ctx.peerSets.length).toBe(before);
      registry.state.raw = undefined;
      await until(() => ctx.peerSets.length > before, 3000, 'peers after a good answer');
    } finally {
      await done();
    }
  });

  it('reports the connection error when the registry is down', async () => {
    const { registry, ctx, done } = await running();
    try {
      await registry.close();
      await until(() => ctx.failures.length > 0, 3000, 'a failure');
      expect(ctx.failures[0]?.message).toMatch(/ECONNREFUSED/);
    } finally {
      await done();
    }
  });

  it('passes an answer that really lists no other node through as an empty set', async () => {
    const { registry, ctx, done } = await running();
    try {
      registry.state.nodes = [self.address];
      await until(() => ctx.latest()?.length === 0, 3000, 'an empty peer set');
      expect(ctx.failures).toHaveLength(0);
    } finally {
      await done();
    }
  });

  it('sends the configured headers', async () => {
    const { registry, done } = await running({ headers: { authorization: 'Bearer t0ken' } });
    try {
      expect(registry.state.lastHeaders?.authorization).toBe('Bearer t0ken');
      expect(registry.state.lastHeaders?.accept).toBe('application/json');
    } finally {
      await done();
    }
  });

  it('stop() aborts the request in flight at once and reports nothing afterwards', async () => {
    const registry = await startRegistry(served);
    registry.state.hang = true;
    const strategy = new HttpRegistryStrategy({ url: registry.url, intervalMs: 100, timeoutMs: 10_000 });
    const ctx = new RecordingContext(self);
    const started = strategy.start(ctx);
    try {
      await until(() => registry.state.requests > 0, 3000, 'the first request');
      const t0 = Date.now();
      await strategy.stop();
      await started;
      expect(Date.now() - t0).toBeLessThan(500);
      await new Promise((r) => setTimeout(r, 300));
      expect(ctx.peerSets).toHaveLength(0);
      expect(ctx.failures).toHaveLength(0);
      expect(registry.state.requests).toBe(1);
    } finally {
      await registry.close();
    }
  });

  it('plugs into Wizard mode: the class passes validation and bad config names the topology key', () => {
    const topologies = { registry: { strategy: HttpRegistryStrategy, config: { url: 'http://registry.internal:8080/nodes' } } };
    const options = parseOptions({ topologies });
    const resolved = resolveTopologies(undefined, options.topologies as typeof topologies, { port: 0, mdnsAvailable: false });
    expect(resolved.mode).toBe('wizard');
    // The class itself reaches the topology (validation copies the objects, not the class).
    expect(resolved.topologies.registry?.strategy).toBe(HttpRegistryStrategy);
    expect(resolved.topologies.registry?.config).toEqual(topologies.registry.config);
    expect(createStrategy('registry', topologies.registry)).toBeInstanceOf(HttpRegistryStrategy);

    let err: unknown;
    try {
      createStrategy('registry', { strategy: HttpRegistryStrategy, config: { url: 'http://registry/nodes', intervalMs: 5 } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe('topologies.registry.config.intervalMs');
  });
});

/**
 * A strategy that forgets, on stop, to close its socket and clear its timer, and whose peer
 * reports return early once aborted (as gossip's and mdns's do): the compliance suite's
 * "goes quiet after stop" must catch it, where a check on peer sets alone would pass.
 */
class LeakyStrategy implements Strategy {
  readonly name = 'leaky';
  private socket?: Socket;
  private timer?: NodeJS.Timeout;
  constructor(private readonly leak: boolean) {}
  async start(ctx: StrategyContext): Promise<void> {
    const socket = createSocket('udp4');
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
    socket.unref();
    this.socket = socket;
    this.timer = setInterval(() => {
      if (!ctx.signal.aborted) ctx.setPeers(['127.0.0.1:4001']);
    }, 20);
    this.timer.unref();
    ctx.setPeers(['127.0.0.1:4001']);
  }
  async stop(): Promise<void> {
    if (this.leak) return;
    clearInterval(this.timer);
    await new Promise<void>((r) => this.socket?.close(() => r()) ?? r());
  }
}

describe('the "goes quiet after stop" check', () => {
  it('finds the socket and the timer a leaking strategy keeps after stop, and nothing once it releases them', async () => {
    for (const leak of [true, false]) {
      const s = new LeakyStrategy(leak);
      const ctx = new RecordingContext(self);
      const tracker = new ResourceTracker();
      try {
        await tracker.run(() => s.start(ctx));
        ctx.abort.abort();
        await tracker.run(() => s.stop());
        const held = await tracker.released(leak ? 300 : 2000);
        // The peer-set check alone cannot tell the two apart: both go quiet.
        const n = ctx.peerSets.length;
        await new Promise((r) => setTimeout(r, 100));
        expect(ctx.peerSets.length).toBe(n);
        expect(held).toEqual(leak ? ['Timeout', 'UDPWRAP'] : []);
      } finally {
        tracker.dispose();
        if (leak) await new LeakyStrategy(false).stop.call(s);
      }
    }
  });
});
