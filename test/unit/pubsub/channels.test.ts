import { afterEach, describe, expect, it } from 'vitest';
import { Channels } from '../../../src/pubsub/channels.js';
import type { PubSub } from '../../../src/pubsub/pubsub.js';
import type { DeliveryMeta } from '../../../src/pubsub/subscriber.js';
import { Hub, settle } from '../../helpers/pubsub-hub.js';

let engines: PubSub[] = [];
afterEach(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  engines = [];
});

describe('channels facade', () => {
  it('is exactly pubsub on foundation:<name>, on the channel’s lane, both ways', async () => {
    const hub = new Hub();
    const a = await hub.node('a');
    const b = await hub.node('b');
    engines.push(a, b);
    const ca = new Channels(a);
    const cb = new Channels(b);
    const viaPubsub: Array<[unknown, DeliveryMeta]> = [];
    const viaChannels: Array<[unknown, DeliveryMeta]> = [];
    b.subscribe('foundation:events', (p, m) => void viaPubsub.push([p, m]));
    cb.subscribe('control', (p, m) => void viaChannels.push([p, m]));
    await settle();
    ca.broadcast('events', 'e1');
    a.broadcast('foundation:control', 'c1', { lane: 'control' });
    await settle(10);
    expect(viaPubsub).toEqual([['e1', { topic: 'foundation:events', from: 'a', lane: 'events' }]]);
    expect(viaChannels).toEqual([['c1', { topic: 'foundation:control', from: 'a', lane: 'control' }]]);
    expect(ca.get('config')).toMatchObject({ topic: 'foundation:config', lane: 'control', compressAbove: undefined });
    expect(ca.pubsub).toBe(a);
  });

  it('defines user channels with a lane and compression, and refuses bad definitions by key', async () => {
    const hub = new Hub();
    const a = await hub.node('a');
    const b = await hub.node('b');
    engines.push(a, b);
    const ca = new Channels(a);
    const cb = new Channels(b);
    expect(ca.define('metrics', { lane: 'telemetry', compress: 1024 })).toMatchObject({ topic: 'foundation:metrics', lane: 'telemetry', compressAbove: 1024 });
    cb.define('metrics', { lane: 'telemetry', compress: true });
    const got: unknown[] = [];
    cb.subscribe('metrics', (p) => void got.push(p));
    await settle();
    const big = { rows: Array.from({ length: 500 }, (_, i) => ({ name: 'cpu', i })) };
    ca.broadcast('metrics', big);
    await settle(10);
    expect(got).toEqual([big]);
    expect(hub.frameBytes.get('b')).toBeLessThan(4000);
    expect(() => ca.define('metrics', { lane: 'events' })).toThrowError(/already defined/);
    expect(() => ca.define('bad name', { lane: 'events' })).toThrowError(expect.objectContaining({ key: 'channel' }));
    expect(() => ca.define('x', { lane: 'fast' as never })).toThrowError(expect.objectContaining({ key: 'channels.x.lane' }));
    expect(() => ca.define('y', { lane: 'events', compress: -1 })).toThrowError(expect.objectContaining({ key: 'channels.y.compress' }));
    expect(() => ca.broadcast('nope', 1)).toThrowError(/unknown channel "nope"; defined: control, events, telemetry, config, metrics/);
  });
});
