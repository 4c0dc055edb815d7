/**
 * `borrowPayload`: large raw payloads received into pooled memory (src/mesh/body-pool.ts) and
 * handed back when every subscriber that got them is done. The hub receives frames of at least
 * BODY_POOL_MIN_BYTES into its nodes' pools, as the mesh's inbox does. Each payload is filled
 * with one byte value: a payload overwritten while still held shows up as a mixed buffer.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BODY_POOL_MIN_BYTES, type BodyPool } from '../../../src/mesh/body-pool.js';
import { FrameFlags, writeFrameHead } from '../../../src/pubsub/frame.js';
import type { PubSub } from '../../../src/pubsub/pubsub.js';
import { Hub, settle } from '../../helpers/pubsub-hub.js';

const SIZE = BODY_POOL_MIN_BYTES + 4096;
let engines: PubSub[] = [];
afterEach(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  engines = [];
});

async function pair(): Promise<{ a: PubSub; b: PubSub; pool: BodyPool }> {
  const hub = new Hub();
  const a = await hub.node('a');
  const b = await hub.node('b');
  engines.push(a, b);
  await settle();
  return { a, b, pool: hub.pools.get('b') as BodyPool };
}

/** The byte every position of `p` holds, or -1 if they differ (the payload was overwritten). */
function uniform(p: unknown): number {
  const buf = p as Buffer;
  const first = buf[0] as number;
  return buf.every((x) => x === first) ? first : -1;
}

const tick = () => new Promise((r) => setTimeout(r, 1));

describe('borrowPayload', () => {
  it('a borrowing handler gets each payload intact until its promise settles, and the memory is reused', async () => {
    const { a, b, pool } = await pair();
    const seen: number[] = [];
    b.subscribe(
      'big',
      async (p) => {
        const before = uniform(p);
        await tick(); // later messages arrive (into the pool) while this one is borrowed
        seen.push(uniform(p) === before ? before : -1);
      },
      { borrowPayload: true },
    );
    await settle();
    for (let i = 0; i < 8; i++) {
      a.broadcast('big', Buffer.alloc(SIZE, i));
      await settle();
    }
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(pool.stats.reused).toBeGreaterThan(0);
  });

  it('a payload that an owning subscriber also got is never handed back', async () => {
    const { a, b, pool } = await pair();
    const kept: unknown[] = [];
    let borrowed = 0;
    b.subscribe('big', () => void borrowed++, { borrowPayload: true });
    b.subscribe('big', (p) => void kept.push(p));
    await settle();
    for (let i = 0; i < 6; i++) a.broadcast('big', Buffer.alloc(SIZE, i));
    await new Promise((r) => setTimeout(r, 50));
    expect(borrowed).toBe(6);
    expect(kept.map(uniform)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(pool.stats.reused).toBe(0);
  });

  it('payloads dropped by a full queue, thrown on, or discarded by unsubscribe are handed back', async () => {
    const { a, b, pool } = await pair();
    const seen: number[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const off = b.subscribe(
      'big',
      async (p) => {
        seen.push(uniform(p));
        await gate;
        if (seen.length === 1) throw new Error('handler fails after its first await');
      },
      { borrowPayload: true, maxQueue: 2 },
    );
    await settle();
    // One at a time, as a link delivers them: the first is held by the handler, the queue keeps
    // the newest 2 of the rest, and each one it drops is handed back for the next to reuse.
    for (let i = 0; i < 10; i++) {
      a.broadcast('big', Buffer.alloc(SIZE, i));
      await settle();
    }
    expect(seen).toEqual([0]);
    expect(pool.stats.reused).toBeGreaterThan(0);
    release();
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual([0, 8, 9]);
    expect(b.stats().topics.big?.handlerErrors).toBe(1);
    // Discarded by unsubscribe while queued: handed back too.
    let unblock: () => void = () => {};
    const blocked = new Promise<void>((r) => (unblock = r));
    off();
    const off2 = b.subscribe('big', () => blocked, { borrowPayload: true });
    await settle();
    for (let i = 10; i < 13; i++) a.broadcast('big', Buffer.alloc(SIZE, i));
    await settle(10);
    off2();
    unblock();
    await settle(10);
    // Every body came back: the next ones are all reused memory.
    const allocated = pool.stats.allocated;
    b.subscribe('big', () => {}, { borrowPayload: true });
    await settle();
    for (let i = 0; i < 3; i++) {
      a.broadcast('big', Buffer.alloc(SIZE, i));
      await settle();
    }
    expect(pool.stats.allocated).toBe(allocated);
  });

  it('a borrowing stream holds each payload until the reader asks for the next one', async () => {
    const { a, b, pool } = await pair();
    const stream = b.stream<Buffer>('big', { borrowPayload: true });
    await settle();
    const sending = (async () => {
      for (let i = 0; i < 6; i++) {
        a.broadcast('big', Buffer.alloc(SIZE, i));
        await tick();
      }
    })();
    const seen: number[] = [];
    for await (const msg of stream) {
      const before = uniform(msg.payload);
      await tick();
      await tick();
      seen.push(uniform(msg.payload) === before ? before : -1);
      if (seen.length === 6) break;
    }
    await sending;
    expect(seen).toEqual([0, 1, 2, 3, 4, 5]);
    expect(pool.stats.reused).toBeGreaterThan(0);
  });

  it('small, decoded and local payloads are ordinary values', async () => {
    const { a, b, pool } = await pair();
    const got: unknown[] = [];
    b.subscribe('t', (p) => void got.push(p), { borrowPayload: true });
    await settle();
    a.broadcast('t', Buffer.alloc(16, 1));
    a.broadcast('t', { blob: Buffer.alloc(SIZE, 2) });
    await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 3; i++) a.broadcast('t', Buffer.alloc(SIZE, 3));
    await new Promise((r) => setTimeout(r, 20));
    expect(uniform(got[0])).toBe(1);
    // The decoded object may hold views of its frame: it was not handed back, so it is intact.
    expect(uniform((got[1] as { blob: Buffer }).blob)).toBe(2);
    expect(pool.stats.allocated).toBeGreaterThan(0);
    expect(() => b.subscribe('t', () => {}, { borrowPayload: 'yes' as unknown as boolean })).toThrow(/borrowPayload/);
  });

  it('a malformed or undecodable large frame is dropped and counted, and its pooled memory handed back', async () => {
    const hub = new Hub();
    const a = await hub.node('a');
    const b = await hub.node('b');
    engines.push(a, b);
    b.subscribe('big', () => {}, { borrowPayload: true });
    await settle();
    const pool = hub.pools.get('b') as BodyPool;
    const host = hub.adapters.get('b')?.host;
    const receiveLarge = (fill: (body: Buffer) => void) => {
      const lent = pool.take(SIZE) as NonNullable<ReturnType<BodyPool['take']>>;
      fill(lent.body);
      host?.receive('a', 'events', lent.body, lent.release);
    };
    // No frame version this engine knows: malformed.
    receiveLarge((body) => body.fill(0xff));
    // A frame for 'big' whose deflated body is garbage: undecodable.
    receiveLarge((body) => {
      body.fill(0x5a);
      writeFrameHead({ topic: 'big', flags: FrameFlags.RAW | FrameFlags.DEFLATE }).copy(body);
    });
    // A well-formed frame for a topic nobody here subscribes to: unrouted.
    receiveLarge((body) => writeFrameHead({ topic: 'other', flags: FrameFlags.RAW }).copy(body));
    expect(b.stats()).toMatchObject({ framesDropped: 2, unrouted: 1 });
    // Each body was back in the pool before the next frame took one: one buffer served all three.
    expect(pool.stats).toEqual({ reused: 2, allocated: 1 });
    expect(pool.pooledBytes).toBe(2 * 1024 * 1024);
  });
});
