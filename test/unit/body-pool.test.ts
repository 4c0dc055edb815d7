import { describe, expect, it } from 'vitest';
import { BODY_POOL_IDLE_MS, BODY_POOL_MIN_BYTES, BodyPool } from '../../src/mesh/body-pool.js';
import { Inbox } from '../../src/mesh/inbox.js';
import { encodeMessageBody, fragmentMessage, MessageFlags } from '../../src/mesh/message.js';

const MiB = 1024 * 1024;

describe('BodyPool', () => {
  it('lends nothing below its minimum: small bodies are allocated as before', () => {
    const pool = new BodyPool({ maxPooledBytes: 8 * MiB });
    expect(pool.take(BODY_POOL_MIN_BYTES - 1)).toBeUndefined();
    expect(pool.take(BODY_POOL_MIN_BYTES)?.body.length).toBe(BODY_POOL_MIN_BYTES);
  });

  it('reuses a released body for the next one, and a body released twice is pooled once', () => {
    const pool = new BodyPool({ maxPooledBytes: 8 * MiB });
    const a = pool.take(3 * MiB + 7) as NonNullable<ReturnType<BodyPool['take']>>;
    expect(a.body.length).toBe(3 * MiB + 7);
    a.body.fill(1);
    a.release();
    a.release();
    expect(pool.pooledBytes).toBe(4 * MiB);
    const b = pool.take(3 * MiB + 100) as NonNullable<ReturnType<BodyPool['take']>>;
    expect(b.body.buffer).toBe(a.body.buffer);
    expect(pool.stats).toEqual({ reused: 1, allocated: 1 });
    // Only one holder at a time: the first body's memory is lent once, not to two messages.
    const c = pool.take(3 * MiB + 100) as NonNullable<ReturnType<BodyPool['take']>>;
    expect(c.body.buffer).not.toBe(b.body.buffer);
    // A late second release of the first loan does not hand b's memory out again.
    a.release();
    expect(pool.pooledBytes).toBe(0);
  });

  it('does not lend a buffer more than twice the size asked for, and keeps at most maxPooledBytes', () => {
    const pool = new BodyPool({ maxPooledBytes: 10 * MiB });
    const big = pool.take(8 * MiB) as NonNullable<ReturnType<BodyPool['take']>>;
    const other = pool.take(4 * MiB) as NonNullable<ReturnType<BodyPool['take']>>;
    big.release();
    other.release(); // 8 + 4 > 10: left to the GC
    expect(pool.pooledBytes).toBe(8 * MiB);
    const small = pool.take(2 * MiB) as NonNullable<ReturnType<BodyPool['take']>>;
    expect(small.body.buffer).not.toBe(big.body.buffer);
    expect(pool.take(5 * MiB)?.body.buffer).toBe(big.body.buffer);
  });

  it('drops buffers idle for BODY_POOL_IDLE_MS', () => {
    let now = 0;
    const pool = new BodyPool({ maxPooledBytes: 16 * MiB, now: () => now });
    const a = pool.take(2 * MiB) as NonNullable<ReturnType<BodyPool['take']>>;
    const b = pool.take(2 * MiB) as NonNullable<ReturnType<BodyPool['take']>>;
    a.release();
    now = 5000;
    b.release();
    now = BODY_POOL_IDLE_MS;
    pool.trim();
    expect(pool.pooledBytes).toBe(2 * MiB);
    now = BODY_POOL_IDLE_MS + 5000;
    pool.trim();
    expect(pool.pooledBytes).toBe(0);
    pool.clear();
  });
});

describe('Inbox with a body pool', () => {
  it('hands a large multi-fragment message over with release, and the next one reuses its memory', () => {
    const pool = new BodyPool({ maxPooledBytes: 8 * MiB });
    const inbox = new Inbox({ bodyPool: pool });
    const receive = (fill: number) => {
      const body = encodeMessageBody(MessageFlags.RAW, 0, 'big', Buffer.alloc(2 * MiB, fill));
      let msg: ReturnType<Inbox['push']>;
      for (const frag of fragmentMessage(2, body)) msg = inbox.push(frag) ?? msg;
      return msg as NonNullable<typeof msg>;
    };
    const first = receive(1);
    expect(first.release).toBeTypeOf('function');
    expect(first.payload.every((b) => b === 1)).toBe(true);
    first.release?.();
    const second = receive(2);
    expect(second.payload.buffer).toBe(first.payload.buffer);
    expect(second.payload.every((b) => b === 2)).toBe(true);
    expect(pool.stats).toEqual({ reused: 1, allocated: 1 });
    // A small message is not pooled.
    const small = inbox.push(fragmentMessage(2, encodeMessageBody(MessageFlags.RAW, 0, 's', Buffer.alloc(10)))[0] as Buffer);
    expect(small?.release).toBeUndefined();
  });

  it('a pooled message whose fragments do not add up closes the link as any other; reset hands a partial body back', () => {
    const pool = new BodyPool({ maxPooledBytes: 8 * MiB });
    const inbox = new Inbox({ bodyPool: pool });
    const frags = fragmentMessage(2, encodeMessageBody(MessageFlags.RAW, 0, 'big', Buffer.alloc(2 * MiB, 1)));
    inbox.push(frags[0] as Buffer);
    expect(inbox.reservedBytes).toBeGreaterThan(2 * MiB);
    // The last fragment comes right after the first: the message ends short of what it declared.
    expect(() => inbox.push(frags[frags.length - 1] as Buffer)).toThrow(expect.objectContaining({ code: 'FOUNDATION_FRAME_INVALID' }));
    // The link closes on it; the body was never handed to anyone, so nothing went back to the pool early.
    expect(pool.pooledBytes).toBe(0);
    const other = new Inbox({ bodyPool: pool });
    other.push(frags[0] as Buffer);
    other.reset();
    expect(pool.pooledBytes).toBe(3 * MiB);
    expect(other.reservedBytes).toBe(0);
  });
});
