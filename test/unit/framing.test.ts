import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, FrameError } from '../../src/errors.js';
import {
  decodeAck,
  encodeAck,
  encodeFrame,
  FRAME_HEADER_BYTES,
  type Frame,
  FrameDecoder,
  FrameType,
  isFrameType,
  PARTS_MIN_BYTES,
  writeFrameHeader,
} from '../../src/mesh/framing.js';

function drain(decoder: FrameDecoder): Frame[] {
  const out: Frame[] = [];
  for (let f = decoder.next(); f !== undefined; f = decoder.next()) out.push(f);
  return out;
}

function expectFrameInvalid(fn: () => unknown): FrameError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(FrameError);
  expect((caught as FrameError).code).toBe(ErrorCodes.FRAME_INVALID);
  return caught as FrameError;
}

const sample = (): { type: FrameType; body: Buffer }[] => [
  { type: FrameType.HELLO, body: Buffer.from('hello body') },
  { type: FrameType.DATA, body: Buffer.alloc(0) },
  { type: FrameType.DATA, body: Buffer.from([1, 2, 3, 4, 5, 6, 7]) },
  { type: FrameType.LEAVE, body: Buffer.from([0xff]) },
  { type: FrameType.REJECT, body: randomBytes(300) },
  { type: FrameType.DATA, body: Buffer.from('x') },
];

describe('encodeFrame', () => {
  it('writes [u32 BE length][type][body] with length = 1 + body', () => {
    const f = encodeFrame(FrameType.DATA, Buffer.from([9, 8, 7]));
    expect([...f]).toEqual([0, 0, 0, 4, 2, 9, 8, 7]);
    expect([...encodeFrame(FrameType.HELLO, new Uint8Array(0))]).toEqual([0, 0, 0, 1, 1]);
    const big = encodeFrame(FrameType.REJECT, Buffer.alloc(0x10203));
    expect(big.readUInt32BE(0)).toBe(0x10204);
    expect(big[4]).toBe(4);
  });

  it('has the documented type numbers and refuses unknown types', () => {
    expect(FrameType).toEqual({ HELLO: 1, DATA: 2, LEAVE: 3, REJECT: 4, ACK: 5 });
    expect(isFrameType(FrameType.ACK)).toBe(true);
    for (const t of [0, 6, 255, 1.5, -1]) {
      expect(isFrameType(t)).toBe(false);
      expectFrameInvalid(() => encodeFrame(t, Buffer.alloc(1)));
    }
  });

  it('writeFrameHeader matches encodeFrame', () => {
    const target = Buffer.alloc(8);
    const at = writeFrameHeader(target, 0, FrameType.LEAVE, 3);
    expect(at).toBe(5);
    target.set([1, 2, 3], at);
    expect(target.equals(encodeFrame(FrameType.LEAVE, Buffer.from([1, 2, 3])))).toBe(true);
  });
});

describe('FrameDecoder', () => {
  it('decodes many frames from one chunk, as views without copying', () => {
    const frames = sample();
    const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.body)));
    const d = new FrameDecoder(1 << 20);
    d.push(wire);
    const out = drain(d);
    expect(out.map((f) => f.type)).toEqual(frames.map((f) => f.type));
    out.forEach((f, i) => {
      expect(f.body.equals(frames[i]!.body)).toBe(true);
    });
    expect(out[2]!.body.buffer).toBe(wire.buffer);
    expect(d.bufferedBytes).toBe(0);
    expect(d.next()).toBeUndefined();
  });

  it('decodes the same frames whatever the split point, for every byte boundary', () => {
    const frames = sample();
    const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.body)));
    for (let cut = 0; cut <= wire.length; cut++) {
      const d = new FrameDecoder(1 << 20);
      const out: Frame[] = [];
      d.push(wire.subarray(0, cut));
      out.push(...drain(d));
      d.push(wire.subarray(cut));
      out.push(...drain(d));
      expect(out.length).toBe(frames.length);
      out.forEach((f, i) => {
        expect(f.type).toBe(frames[i]!.type);
        expect(f.body.equals(frames[i]!.body)).toBe(true);
      });
    }
  });

  it('decodes a stream fed one byte at a time', () => {
    const frames = sample();
    const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.body)));
    const d = new FrameDecoder(1 << 20);
    const out: Frame[] = [];
    for (let i = 0; i < wire.length; i++) {
      d.push(wire.subarray(i, i + 1));
      out.push(...drain(d));
    }
    expect(out.map((f) => f.body.toString('hex'))).toEqual(frames.map((f) => f.body.toString('hex')));
    expect(d.bufferedBytes).toBe(0);
  });

  it('decodes any stream cut into random chunks (property)', () => {
    const arbFrame = fc.record({
      type: fc.constantFrom(FrameType.HELLO, FrameType.DATA, FrameType.LEAVE, FrameType.REJECT, FrameType.ACK),
      body: fc.uint8Array({ maxLength: 200 }),
    });
    fc.assert(
      fc.property(fc.array(arbFrame, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), (frames, cutSeeds) => {
        const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.body)));
        const cuts = [...new Set(cutSeeds.map((c) => (wire.length === 0 ? 0 : c % wire.length)))].sort((a, b) => a - b);
        const d = new FrameDecoder(1000);
        const out: Frame[] = [];
        let prev = 0;
        for (const c of [...cuts, wire.length]) {
          d.push(wire.subarray(prev, c));
          prev = c;
          out.push(...drain(d));
        }
        expect(out.length).toBe(frames.length);
        out.forEach((f, i) => {
          expect(f.type).toBe(frames[i]!.type);
          expect(Buffer.from(frames[i]!.body).equals(f.body)).toBe(true);
        });
      }),
      { numRuns: 300 },
    );
  });

  it('accepts a frame of exactly maxFrameBytes and refuses one byte more from the push that completes its header', () => {
    const max = 1000;
    const ok = encodeFrame(FrameType.DATA, Buffer.alloc(max - 1, 7));
    const d = new FrameDecoder(max);
    d.push(ok);
    expect(drain(d)[0]!.body.length).toBe(max - 1);

    // Only the header of an oversized frame: it must fail now, not wait for max+1 bytes.
    const header = Buffer.alloc(5);
    writeFrameHeader(header, 0, FrameType.DATA, max);
    const d2 = new FrameDecoder(max);
    const err = expectFrameInvalid(() => d2.push(header));
    expect(err.message).toContain(`${max + 1}`);
    expect(d2.bufferedBytes).toBe(0);
    // The decoder stays failed.
    expectFrameInvalid(() => d2.next());
    expectFrameInvalid(() => d2.push(Buffer.alloc(1)));
  });

  it('refuses a zero length and unknown types', () => {
    const zero = new FrameDecoder(100);
    expectFrameInvalid(() => zero.push(Buffer.from([0, 0, 0, 0, 2])));
    expectFrameInvalid(() => zero.next());
    for (const type of [0, 6, 200]) {
      const d = new FrameDecoder(100);
      expectFrameInvalid(() => d.push(Buffer.from([0, 0, 0, 2, type, 0])));
      expectFrameInvalid(() => d.next());
    }
    // A header split across chunks is checked as soon as it is complete.
    const split = new FrameDecoder(100);
    split.push(Buffer.from([0xff, 0xff]));
    expect(split.next()).toBeUndefined();
    expectFrameInvalid(() => split.push(Buffer.from([0xff, 0xff, 2])));
    expectFrameInvalid(() => split.next());
  });

  it('rejects 1 MB of random bytes quickly', () => {
    const junk = randomBytes(1 << 20);
    const d = new FrameDecoder(1 << 20);
    const start = performance.now();
    expectFrameInvalid(() => {
      d.push(junk);
      drain(d);
    });
    expect(performance.now() - start).toBeLessThan(100);
  });

  it('never hangs on random input: each chunk ends in frames, a wait, or FrameError (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), (chunks) => {
        const d = new FrameDecoder(256);
        try {
          for (const c of chunks) {
            d.push(c);
            drain(d);
          }
        } catch (error) {
          expect(error).toBeInstanceOf(FrameError);
          expect((error as FrameError).code).toBe(ErrorCodes.FRAME_INVALID);
        }
        expect(d.bufferedBytes).toBeLessThanOrEqual(256 + 4);
      }),
      { numRuns: 1000 },
    );
  });

  it('assembles a large frame arriving in many small chunks without quadratic cost', () => {
    const body = randomBytes(4 << 20);
    const wire = encodeFrame(FrameType.DATA, body);
    const d = new FrameDecoder(8 << 20);
    const start = performance.now();
    let got: Frame | undefined;
    for (let i = 0; i < wire.length; i += 1024) {
      d.push(wire.subarray(i, i + 1024));
      got ??= d.next();
    }
    expect(performance.now() - start).toBeLessThan(1000);
    expect(got?.body.equals(body)).toBe(true);
  });

  it('accepts Uint8Array chunks and returns Buffers', () => {
    const d = new FrameDecoder(100);
    d.push(new Uint8Array([0, 0, 0, 3, 3, 0xaa, 0xbb]));
    const f = d.next();
    expect(f?.type).toBe(FrameType.LEAVE);
    expect(Buffer.isBuffer(f?.body)).toBe(true);
    expect([...f!.body]).toEqual([0xaa, 0xbb]);
  });
});

describe('ACK frames', () => {
  it('encode [u32 BE bytes] and decode back', () => {
    const f = encodeAck(0x01020304);
    expect([...f]).toEqual([0, 0, 0, 5, 5, 1, 2, 3, 4]);
    const d = new FrameDecoder(100);
    d.push(f);
    const got = d.next()!;
    expect(got.type).toBe(FrameType.ACK);
    expect(decodeAck(got.body)).toBe(0x01020304);
    expect(decodeAck(encodeAck(0xffffffff).subarray(5))).toBe(0xffffffff);
    for (const bad of [0, -1, 1.5, 2 ** 32]) expect(() => encodeAck(bad)).toThrow(RangeError);
  });

  it('refuse a body of the wrong size, or an ack of 0 bytes, with FRAME_INVALID', () => {
    expectFrameInvalid(() => decodeAck(Buffer.alloc(0)));
    expectFrameInvalid(() => decodeAck(Buffer.alloc(3)));
    expectFrameInvalid(() => decodeAck(Buffer.alloc(5, 1)));
    expectFrameInvalid(() => decodeAck(Buffer.alloc(4)));
  });
});

describe('FrameDecoder with dataParts', () => {
  const big = (n: number): Buffer => randomBytes(n);

  it('returns a large DATA frame straddling chunks as views into them, without copying', () => {
    const body = big(100_000);
    const wire = Buffer.concat([
      encodeFrame(FrameType.HELLO, Buffer.from('x')),
      encodeFrame(FrameType.DATA, body),
      encodeFrame(FrameType.LEAVE, Buffer.from('y')),
    ]);
    const chunks = [wire.subarray(0, 30_000), wire.subarray(30_000, 70_000), wire.subarray(70_000)].map((c) => Buffer.from(c));
    const d = new FrameDecoder(1 << 20, { dataParts: true });
    const out: Frame[] = [];
    for (const c of chunks) {
      d.push(c);
      out.push(...drain(d));
    }
    expect(out.map((f) => f.type)).toEqual([FrameType.HELLO, FrameType.DATA, FrameType.LEAVE]);
    const data = out[1]!;
    expect(data.body.length).toBe(0);
    expect(data.parts).toHaveLength(3);
    expect(data.parts!.map((p, i) => p.buffer === chunks[i]!.buffer)).toEqual([true, true, true]);
    expect(Buffer.concat(data.parts!).equals(body)).toBe(true);
    expect(out[0]!.parts).toBeUndefined();
    expect(out[2]!.body.toString()).toBe('y');
    expect(d.bufferedBytes).toBe(0);
  });

  it('still gathers small DATA frames and other types, and leaves frames inside one chunk as plain views', () => {
    const small = encodeFrame(FrameType.DATA, big(PARTS_MIN_BYTES - 1));
    const hello = encodeFrame(FrameType.HELLO, big(PARTS_MIN_BYTES * 2));
    const whole = encodeFrame(FrameType.DATA, big(PARTS_MIN_BYTES * 2));
    for (const frame of [small, hello]) {
      const d = new FrameDecoder(1 << 20, { dataParts: true });
      d.push(frame.subarray(0, 100));
      expect(d.next()).toBeUndefined();
      d.push(frame.subarray(100));
      const f = d.next()!;
      expect(f.parts).toBeUndefined();
      expect(f.body.equals(frame.subarray(5))).toBe(true);
    }
    const d = new FrameDecoder(1 << 20, { dataParts: true });
    d.push(whole);
    const f = d.next()!;
    expect(f.parts).toBeUndefined();
    expect(f.body.buffer).toBe(whole.buffer);
  });

  describe('before the peer authenticates (initialLimit)', () => {
    const max = 1 << 20;
    const limit = 8 * 1024;

    it('refuses a header declaring more than the limit in the push that brings it, keeping none of the chunk', () => {
      const d = new FrameDecoder(max, { dataParts: true, initialLimit: limit });
      expect(d.frameLimit).toBe(limit);
      // A maximal frame's header followed by the start of its body, in one read.
      const chunk = Buffer.alloc(FRAME_HEADER_BYTES + 60_000, 1);
      writeFrameHeader(chunk, 0, FrameType.HELLO, max - 1);
      const err = expectFrameInvalid(() => d.push(chunk));
      expect(err.message).toContain(`allowed 1..${limit}`);
      expect(d.bufferedBytes).toBe(0);
      expect(d.chunksHeld).toBe(0);
      expectFrameInvalid(() => d.push(Buffer.alloc(10)));
    });

    it('accepts frames up to the limit, and up to maxFrameBytes after lift()', () => {
      const d = new FrameDecoder(max, { initialLimit: limit });
      d.push(encodeFrame(FrameType.HELLO, Buffer.alloc(limit - 1, 3)));
      expect(drain(d)[0]!.body.length).toBe(limit - 1);
      d.lift();
      expect(d.frameLimit).toBe(max);
      d.push(encodeFrame(FrameType.DATA, Buffer.alloc(max - 1, 4)));
      expect(drain(d)[0]!.body.length).toBe(max - 1);
    });

    it('refuses a header split over reads as soon as its last byte arrives', () => {
      const d = new FrameDecoder(max, { initialLimit: limit });
      const header = Buffer.alloc(FRAME_HEADER_BYTES);
      writeFrameHeader(header, 0, FrameType.HELLO, limit);
      for (let i = 0; i < 4; i++) d.push(header.subarray(i, i + 1));
      expectFrameInvalid(() => d.push(header.subarray(4)));
      expect(d.bufferedBytes).toBe(0);
    });

    it('holds few chunks for a frame trickled one byte per read', () => {
      const d = new FrameDecoder(max, { initialLimit: limit });
      const wire = encodeFrame(FrameType.HELLO, Buffer.alloc(limit - 1, 5));
      let most = 0;
      for (let i = 0; i < wire.length - 1; i++) {
        d.push(Buffer.from(wire.subarray(i, i + 1)));
        expect(d.next()).toBeUndefined();
        most = Math.max(most, d.chunksHeld);
      }
      expect(most).toBeLessThanOrEqual(17);
      d.push(Buffer.from(wire.subarray(wire.length - 1)));
      expect(drain(d)[0]!.body.equals(Buffer.alloc(limit - 1, 5))).toBe(true);
    });

    it('discard() drops what is buffered and fails every later call', () => {
      const d = new FrameDecoder(max, { initialLimit: limit });
      d.push(encodeFrame(FrameType.HELLO, Buffer.alloc(100)).subarray(0, 50));
      expect(d.bufferedBytes).toBe(50);
      d.discard();
      expect(d.bufferedBytes).toBe(0);
      expect(d.chunksHeld).toBe(0);
      expectFrameInvalid(() => d.next());
      expectFrameInvalid(() => d.push(Buffer.alloc(1)));
    });

    it('refuses an initialLimit outside 1..maxFrameBytes', () => {
      expect(() => new FrameDecoder(100, { initialLimit: 101 })).toThrow(RangeError);
      expect(() => new FrameDecoder(100, { initialLimit: 0 })).toThrow(RangeError);
    });
  });

  it('decodes any stream cut into random chunks, large frames included (property)', () => {
    const arbFrame = fc.record({
      type: fc.constantFrom(FrameType.HELLO, FrameType.DATA, FrameType.DATA, FrameType.ACK),
      size: fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 20_000 })),
    });
    fc.assert(
      fc.property(fc.array(arbFrame, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 30 }), (specs, cutSeeds) => {
        const frames = specs.map((f) => ({ type: f.type, body: big(f.size) }));
        const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.body)));
        const cuts = [...new Set(cutSeeds.map((c) => (wire.length === 0 ? 0 : c % wire.length)))].sort((a, b) => a - b);
        const d = new FrameDecoder(1 << 20, { dataParts: true });
        const out: Frame[] = [];
        let prev = 0;
        for (const c of [...cuts, wire.length]) {
          d.push(Buffer.from(wire.subarray(prev, c)));
          prev = c;
          out.push(...drain(d));
        }
        expect(out.length).toBe(frames.length);
        out.forEach((f, i) => {
          expect(f.type).toBe(frames[i]!.type);
          const body = f.parts === undefined ? f.body : Buffer.concat(f.parts);
          if (f.parts !== undefined) {
            expect(f.type).toBe(FrameType.DATA);
            expect(f.parts.every((p) => p.length > 0)).toBe(true);
          }
          expect(body.equals(frames[i]!.body)).toBe(true);
        });
      }),
      { numRuns: 300 },
    );
  });
});
