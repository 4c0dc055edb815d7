/** Dispatch: system topics, one handler per topic, and loopback to this node. */
import { describe, expect, it } from 'vitest';
import { ConfigError, ErrorCodes, FoundationError } from '../../src/errors.js';
import { encode } from '../../src/mesh/codec.js';
import { Dispatcher, LOCAL_SESSION } from '../../src/mesh/dispatch.js';
import { MessageFlags } from '../../src/mesh/message.js';
import { Requests } from '../../src/mesh/requests.js';
import type { MessageContext } from '../../src/mesh/types.js';
import { RateLimitedLog } from '../../src/util/logger.js';
import { silentLogger } from '../compliance/strategy-compliance.js';

const self = { name: 'me', address: '127.0.0.1:1', incarnation: 42 };
const make = () => {
  const requests = new Requests();
  return { d: new Dispatcher(self, requests, silentLogger, new RateLimitedLog(silentLogger)), requests };
};

describe('dispatch', () => {
  it('refuses "$" topics to user code and plain topics to system registration', () => {
    const { d } = make();
    expect(() => d.handle('$mesh.peers', () => {})).toThrow(ConfigError);
    expect(() => d.handleSystem('user.topic', () => {})).toThrow(ConfigError);
    expect(() => d.handleSystem('$', () => {})).toThrow(ConfigError);
    expect(() => d.handleSystem('$layer.x', () => {})).not.toThrow();
  });

  it('reports a second handler for a topic with its own code', () => {
    const { d } = make();
    const off = d.handle('t', () => {});
    let err: unknown;
    try {
      d.handle('t', () => {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FoundationError);
    expect((err as FoundationError).code).toBe(ErrorCodes.HANDLER_EXISTS);
    off();
    expect(() => d.handle('t', () => {})).not.toThrow();
  });

  it('loops a message to this node back later, in order, with the same context shape, never re-entrantly', async () => {
    const { d } = make();
    const seen: Array<{ p: unknown; ctx: MessageContext; depth: number }> = [];
    let depth = 0;
    d.handleSystem('$t', (p, ctx) => {
      depth++;
      seen.push({ p, ctx, depth });
      // A handler sending to itself again does not run the handler inside this call.
      if (p === 1) d.loopback(1, 0, 0, '$t', encode(3));
      depth--;
    });
    d.loopback(1, 0, 0, '$t', encode(1));
    d.loopback(1, 0, 0, '$t', encode(2));
    expect(seen).toHaveLength(0);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(seen.map((s) => s.p)).toEqual([1, 2, 3]);
    expect(seen.every((s) => s.depth === 1)).toBe(true);
    expect(seen[0]?.ctx).toEqual({ from: 'me', topic: '$t', lane: 'events', incarnation: 42, session: LOCAL_SESSION });
  });

  it('answers a request to this node through the same path', async () => {
    const { d, requests } = make();
    d.handle('double', (p) => (p as number) * 2);
    const reply = requests.start<number>('me', 'double', 1000, (corr) => d.loopback(1, MessageFlags.REQUEST, corr, 'double', encode(21)));
    await expect(reply).resolves.toBe(42);
  });
});
