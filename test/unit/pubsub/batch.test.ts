import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { LaneName } from '../../../src/mesh/types.js';
import { BATCH_MARK, BATCH_MAX_BYTES, FrameBatcher, forEachBatchFrame } from '../../../src/pubsub/batch.js';
import { FrameFlags, readFrame, writeFrameHead } from '../../../src/pubsub/frame.js';

interface Sent {
  dest: readonly string[];
  lane: LaneName;
  bytes: Buffer;
  frames: number;
}

/** The frames a sent message holds: a batch, or one lone frame. */
function framesOf(bytes: Buffer): Buffer[] {
  if (bytes[0] !== BATCH_MARK) return [bytes];
  const out: Buffer[] = [];
  expect(forEachBatchFrame(bytes, (s, e) => out.push(bytes.subarray(s, e)))).toBe(true);
  return out;
}

describe('FrameBatcher', () => {
  it('sends every frame once, in order, to its own destinations and lane, in batches within the size bound (property)', async () => {
    const nodeSets = [['a'], ['b'], ['a', 'b'], ['b', 'c', 'a']];
    const op = fc.record({
      dest: fc.integer({ min: 0, max: nodeSets.length - 1 }),
      lane: fc.constantFrom<LaneName>('events', 'telemetry'),
      size: fc.oneof(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 4000, max: 8192 })),
      flushAfter: fc.integer({ min: 0, max: 39 }),
      // Destinations and lane change now and then, so batches grow long.
      change: fc.integer({ min: 0, max: 15 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 100, maxLength: 400 }), async (ops) => {
        const sent: Sent[] = [];
        const b = new FrameBatcher((dest, bytes, frames, lane) => sent.push({ dest, lane, bytes: Buffer.from(bytes), frames }));
        const want: Array<{ dest: readonly string[]; lane: LaneName; topic: string; body: Buffer }> = [];
        let destIdx = 0;
        let lane: LaneName = 'events';
        for (const [i, o] of ops.entries()) {
          if (o.change === 0) {
            destIdx = o.dest;
            lane = o.lane;
          }
          const topic = `t.${i}`;
          const body = Buffer.alloc(o.size, i & 0xff);
          // A fresh array each time: destinations are compared by content.
          const dest = [...(nodeSets[destIdx] as string[])];
          b.add(dest, lane, writeFrameHead({ topic, flags: FrameFlags.RAW }), body);
          want.push({ dest, lane, topic, body });
          if (o.flushAfter === 0) b.flush();
          if (o.flushAfter === 1) await Promise.resolve(); // the microtask flush
        }
        b.flush();
        // Replayed in send order, the frames come back in publish order, each with its own destinations and lane.
        const got: typeof want = [];
        for (const s of sent) {
          expect(s.bytes.length).toBeLessThanOrEqual(BATCH_MAX_BYTES);
          const frames = framesOf(s.bytes);
          expect(frames).toHaveLength(s.frames);
          for (const f of frames) {
            const r = readFrame(f);
            expect(r).toBeDefined();
            got.push({ dest: s.dest, lane: s.lane, topic: r!.topic, body: Buffer.from(r!.body) });
          }
        }
        expect(got.map((g) => g.topic)).toEqual(want.map((w) => w.topic));
        got.forEach((g, i) => {
          expect(g.dest).toEqual(want[i]!.dest);
          expect(g.lane).toBe(want[i]!.lane);
          expect(g.body.equals(want[i]!.body)).toBe(true);
        });
      }),
      { numRuns: 100 },
    );
  });

  it('sends what one job published as one message when it fits, at the end of the job', async () => {
    const sent: Sent[] = [];
    const b = new FrameBatcher((dest, bytes, frames, lane) => sent.push({ dest, lane, bytes, frames }));
    for (let i = 0; i < 100; i++) b.add(['n1'], 'events', writeFrameHead({ topic: 'rooms.1', flags: FrameFlags.RAW }), Buffer.alloc(100, i));
    expect(sent).toHaveLength(0);
    await Promise.resolve();
    expect(sent.map((s) => s.frames)).toEqual([100]);
  });

  it('sends a lone frame as itself, not as a batch of one', () => {
    const sent: Sent[] = [];
    const b = new FrameBatcher((dest, bytes, frames, lane) => sent.push({ dest, lane, bytes, frames }));
    const head = writeFrameHead({ topic: 'x', flags: FrameFlags.RAW });
    b.add(['n1'], 'events', head, Buffer.from('hi'));
    b.flush();
    expect(sent[0]!.bytes.equals(Buffer.concat([head, Buffer.from('hi')]))).toBe(true);
  });

  it('reports a malformed batch', () => {
    expect(forEachBatchFrame(Buffer.from([BATCH_MARK, 0, 0, 0, 9, 1]), () => {})).toBe(false);
    expect(forEachBatchFrame(Buffer.from([BATCH_MARK, 0, 0, 0, 0]), () => {})).toBe(false);
    expect(forEachBatchFrame(Buffer.from([BATCH_MARK, 0, 0]), () => {})).toBe(false);
  });
});
