import { createHmac, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeHeartbeat,
  encodeHeartbeat,
  FLAG_SENDER_LOW,
  HEARTBEAT_BODY_BYTES,
  HEARTBEAT_PACKET_BYTES,
  type HeartbeatDecodeResult,
  type HeartbeatFields,
  ReplayWindow,
  U32_MAX,
} from '../../src/mesh/heartbeat-packet.js';

const key = randomBytes(32);
const linkId = 'a1b2c3d4e5f60718';
const lookup = (id: string) => (id === linkId ? key : undefined);

/** A first heartbeat: nothing to echo yet. */
const ping: HeartbeatFields = {
  linkId,
  seq: 7,
  sendTimeMicros: 1_700_000_000_123_456,
  echoTimeMicros: 0,
  echoHoldMicros: 0,
  mainLagMs: 12,
  flags: FLAG_SENDER_LOW,
};
/** The other end's heartbeat, echoing `ping` after holding it 76.5 ms. */
const pong: HeartbeatFields = { ...ping, seq: 7, sendTimeMicros: 1_700_000_000_200_000, echoTimeMicros: ping.sendTimeMicros, echoHoldMicros: 76_500, flags: 0 };

const isOk = (r: HeartbeatDecodeResult) => !('error' in r);

/** Re-MACs a hand-edited body, to reach the checks that run after authentication. */
function sign(body: Buffer, k: Buffer = key): Buffer {
  const mac = createHmac('sha256', k).update(body.subarray(0, HEARTBEAT_BODY_BYTES)).digest().subarray(0, 16);
  return Buffer.concat([body.subarray(0, HEARTBEAT_BODY_BYTES), mac]);
}

describe('heartbeat packet', () => {
  it('round-trips heartbeats with and without an echo in a 57-byte packet with the documented layout', () => {
    const buf = encodeHeartbeat(pong, key);
    expect(buf.length).toBe(HEARTBEAT_PACKET_BYTES);
    expect(HEARTBEAT_PACKET_BYTES).toBe(57);
    expect(buf.subarray(0, 4)).toEqual(Buffer.from([0x46, 0x48, 2, 3]));
    expect(buf.subarray(4, 12).toString('hex')).toBe(linkId);
    expect(buf.readUInt32BE(12)).toBe(7);
    expect(buf.readDoubleBE(16)).toBe(pong.sendTimeMicros);
    expect(buf.readDoubleBE(24)).toBe(ping.sendTimeMicros);
    expect(buf.readUInt32BE(32)).toBe(76_500);
    expect(buf.readUInt32BE(36)).toBe(12);
    expect(buf[40]).toBe(0);
    expect(encodeHeartbeat(ping, key)[40]).toBe(FLAG_SENDER_LOW);
    expect(decodeHeartbeat(buf, lookup)).toEqual(pong);
    expect(decodeHeartbeat(encodeHeartbeat(ping, key), lookup)).toEqual(ping);
  });

  it('accepts upper-case link ids and hands lower-case ones to lookupKey', () => {
    const seen: string[] = [];
    const r = decodeHeartbeat(encodeHeartbeat({ ...ping, linkId: linkId.toUpperCase() }, key), (id) => {
      seen.push(id);
      return lookup(id);
    });
    expect(isOk(r)).toBe(true);
    expect(seen).toEqual([linkId]);
  });

  it('rejects a wrong key (bad-mac) and an unknown link (unknown-link)', () => {
    expect(decodeHeartbeat(encodeHeartbeat(ping, randomBytes(32)), lookup)).toEqual({ error: 'bad-mac' });
    expect(decodeHeartbeat(encodeHeartbeat({ ...ping, linkId: '0000000000000000' }, key), lookup)).toEqual({ error: 'unknown-link' });
  });

  it('detects tampering with any single byte', () => {
    const good = encodeHeartbeat(pong, key);
    for (let i = 0; i < good.length; i++) {
      for (const bit of [0x01, 0x80]) {
        const bad = Buffer.from(good);
        bad[i] = (bad[i] ?? 0) ^ bit;
        const r = decodeHeartbeat(bad, lookup);
        expect(isOk(r), `byte ${i} bit ${bit}`).toBe(false);
      }
    }
  });

  it('rejects wrong sizes, magic, version and type as malformed', () => {
    const good = encodeHeartbeat(ping, key);
    const variants: Uint8Array[] = [
      Buffer.alloc(0),
      good.subarray(0, 56),
      Buffer.concat([good, Buffer.from([0])]),
      Buffer.alloc(57),
      Object.assign(Buffer.from(good), { 0: 0x47 }),
      // Version 1 (ping/pong) packets, and unknown versions
      Object.assign(Buffer.from(good), { 2: 1 }),
      Object.assign(Buffer.from(good), { 2: 3 }),
      Object.assign(Buffer.from(good), { 3: 0 }),
      Object.assign(Buffer.from(good), { 3: 1 }),
    ];
    for (const v of variants) expect(decodeHeartbeat(v, lookup)).toEqual({ error: 'malformed' });
  });

  it('rejects nonsense fields even when correctly authenticated', () => {
    const base = encodeHeartbeat(pong, key);
    const nan = Buffer.from(base);
    nan.writeDoubleBE(Number.NaN, 16);
    const inf = Buffer.from(base);
    inf.writeDoubleBE(Number.POSITIVE_INFINITY, 24);
    const negative = Buffer.from(base);
    negative.writeDoubleBE(-1, 16);
    // A hold time without an echo to hold.
    const holdWithoutEcho = encodeHeartbeat(ping, key);
    holdWithoutEcho.writeUInt32BE(5, 32);
    for (const b of [nan, inf, negative, holdWithoutEcho]) expect(decodeHeartbeat(sign(b), lookup)).toEqual({ error: 'malformed' });
  });

  it('never throws: non-buffers, throwing or odd lookups', () => {
    const good = encodeHeartbeat(ping, key);
    expect(decodeHeartbeat('hello' as unknown as Uint8Array, lookup)).toEqual({ error: 'malformed' });
    expect(decodeHeartbeat(null as unknown as Uint8Array, lookup)).toEqual({ error: 'malformed' });
    expect(
      decodeHeartbeat(good, () => {
        throw new Error('boom');
      }),
    ).toEqual({ error: 'unknown-link' });
    expect(decodeHeartbeat(good, () => randomBytes(16))).toEqual({ error: 'unknown-link' });
    expect(decodeHeartbeat(good, () => 'key' as unknown as Uint8Array)).toEqual({ error: 'unknown-link' });
    // A Uint8Array view into a larger buffer works too.
    const big = new Uint8Array(100);
    big.set(good, 10);
    expect(decodeHeartbeat(big.subarray(10, 10 + HEARTBEAT_PACKET_BYTES), lookup)).toEqual(ping);
  });

  it('random bytes of any length never throw and never authenticate (fuzz)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const r = decodeHeartbeat(bytes, () => key);
        return !isOk(r);
      }),
      { numRuns: 5000 },
    );
    // With a valid header, so that the MAC check is actually reached.
    fc.assert(
      fc.property(fc.uint8Array({ minLength: HEARTBEAT_PACKET_BYTES - 4, maxLength: HEARTBEAT_PACKET_BYTES - 4 }), (rest) => {
        const b = Buffer.concat([Buffer.from([0x46, 0x48, 2, 3]), rest]);
        const r = decodeHeartbeat(b, () => key);
        return 'error' in r && r.error === 'bad-mac';
      }),
      { numRuns: 2000 },
    );
  });

  it('saturates mainLagMs and echoHoldMicros, and validates what it encodes', () => {
    const roundTrip = (f: HeartbeatFields) => decodeHeartbeat(encodeHeartbeat(f, key), lookup) as HeartbeatFields;
    expect(roundTrip({ ...ping, mainLagMs: 1e12 }).mainLagMs).toBe(U32_MAX);
    expect(roundTrip({ ...ping, mainLagMs: -5 }).mainLagMs).toBe(0);
    expect(roundTrip({ ...pong, echoHoldMicros: 1e12 }).echoHoldMicros).toBe(U32_MAX);
    expect(roundTrip({ ...pong, echoHoldMicros: Number.NaN }).echoHoldMicros).toBe(U32_MAX);
    // Without an echo there is nothing to hold: the hold is written as 0.
    expect(roundTrip({ ...ping, echoHoldMicros: 123 }).echoHoldMicros).toBe(0);
    expect(() => encodeHeartbeat(ping, randomBytes(31))).toThrow(TypeError);
    expect(() => encodeHeartbeat({ ...ping, linkId: 'xyz' }, key)).toThrow(TypeError);
    expect(() => encodeHeartbeat({ ...ping, seq: U32_MAX + 1 }, key)).toThrow(RangeError);
    expect(() => encodeHeartbeat({ ...ping, seq: 1.5 }, key)).toThrow(RangeError);
    expect(() => encodeHeartbeat({ ...ping, sendTimeMicros: Number.NaN }, key)).toThrow(RangeError);
    expect(() => encodeHeartbeat({ ...ping, echoTimeMicros: -3 }, key)).toThrow(RangeError);
  });
});

describe('ReplayWindow', () => {
  it('a replayed captured heartbeat never counts as an arrival (strict window)', () => {
    // What the worker does per link: authenticate, then gate arrivals on the window.
    const pings = new ReplayWindow(1);
    const arrivals: number[] = [];
    const receive = (buf: Buffer) => {
      const r = decodeHeartbeat(buf, lookup);
      if ('error' in r) return;
      if (pings.accept(r.seq)) arrivals.push(r.seq);
    };
    const p1 = encodeHeartbeat({ ...ping, seq: 1 }, key);
    const p2 = encodeHeartbeat({ ...ping, seq: 2 }, key);
    receive(p1);
    receive(p2);
    receive(p1); // replay of an older one
    receive(p2); // replay of the newest one
    receive(encodeHeartbeat({ ...ping, seq: 3 }, key));
    receive(p1);
    expect(arrivals).toEqual([1, 2, 3]);
  });

  it('a wide window tolerates reordering but not duplicates or ancient seqs', () => {
    const w = new ReplayWindow(4);
    expect(w.accept(5)).toBe(true);
    expect(w.accept(3)).toBe(true); // late, within the window
    expect(w.accept(3)).toBe(false); // duplicate
    expect(w.accept(5)).toBe(false);
    expect(w.accept(1)).toBe(false); // 5 - 4: too old
    expect(w.accept(2)).toBe(true);
    expect(w.accept(9)).toBe(true); // slides: 6..8 unseen, 5 and below out
    expect(w.accept(6)).toBe(true);
    expect(w.accept(5)).toBe(false);
    expect(w.accept(-1)).toBe(false);
    expect(w.accept(U32_MAX + 1)).toBe(false);
    expect(w.highest).toBe(9);
  });

  it('accepts every seq at most once, and only increasing seqs when strict (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.array(fc.integer({ min: 0, max: 200 }), { maxLength: 300 }), (size, seqs) => {
        const w = new ReplayWindow(size);
        const accepted: number[] = [];
        for (const s of seqs) if (w.accept(s)) accepted.push(s);
        if (new Set(accepted).size !== accepted.length) return false;
        let high = -1;
        for (const s of accepted) {
          if (s <= high - size) return false; // never older than the window
          if (size === 1 && s <= high) return false;
          high = Math.max(high, s);
        }
        return true;
      }),
      { numRuns: 1000 },
    );
  });
});
