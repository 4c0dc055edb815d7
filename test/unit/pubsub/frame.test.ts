import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameFlags, readFrame, writeFrame, writeFrameHead } from '../../../src/pubsub/frame.js';

describe('pubsub frame', () => {
  it('head + body is the frame, and reads back (property)', () => {
    const token = fc.stringMatching(/^[a-z0-9]{1,8}$/);
    fc.assert(
      fc.property(
        fc.array(token, { minLength: 1, maxLength: 4 }).map((t) => t.join('.')),
        fc.uint8Array({ maxLength: 300 }),
        fc.boolean(),
        fc.option(fc.stringMatching(/^[0-9a-f-]{10,55}$/), { nil: undefined }),
        fc.option(fc.array(fc.tuple(token, token), { minLength: 1, maxLength: 3 }), { nil: undefined }),
        (topic, body, raw, traceparent, groups) => {
          const f = { topic, body, flags: (raw ? FrameFlags.RAW : 0) | (groups ? FrameFlags.GROUPS : 0), traceparent, groups };
          const head = writeFrameHead(f);
          const whole = writeFrame(f);
          expect(Buffer.concat([head, body]).equals(whole)).toBe(true);
          const back = readFrame(whole);
          expect(back).toBeDefined();
          expect(back!.topic).toBe(topic);
          expect(back!.traceparent).toBe(traceparent);
          expect(back!.groups).toEqual(groups);
          expect(back!.flags & FrameFlags.RAW).toBe(raw ? FrameFlags.RAW : 0);
          expect(Buffer.from(back!.body).equals(Buffer.from(body))).toBe(true);
        },
      ),
    );
  });

  it('shares the head of plain frames per topic and flags (no allocation per publish), not of traced or grouped ones', () => {
    const a = writeFrameHead({ topic: 'rooms.1', flags: FrameFlags.RAW });
    expect(writeFrameHead({ topic: 'rooms.1', flags: FrameFlags.RAW })).toBe(a);
    expect(writeFrameHead({ topic: 'rooms.1', flags: 0 })).not.toBe(a);
    expect(writeFrameHead({ topic: 'rooms.2', flags: FrameFlags.RAW })).not.toBe(a);
    const traced = { topic: 'rooms.1', flags: FrameFlags.RAW, traceparent: '00-abc-def-01' };
    expect(writeFrameHead(traced)).not.toBe(writeFrameHead(traced));
  });

  it('rejects truncated frames', () => {
    const whole = writeFrame({ topic: 'a.b', body: Buffer.from('x'), flags: FrameFlags.GROUPS, groups: [['g', 'node-1']] });
    for (let n = 0; n < whole.length - 1; n++) expect(readFrame(whole.subarray(0, n))).toBeUndefined();
    expect(readFrame(whole)?.groups).toEqual([['g', 'node-1']]);
  });
});
