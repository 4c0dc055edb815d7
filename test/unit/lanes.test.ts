import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, ErrorCodes, FrameError, LaneOverflowError, SerializationError } from '../../src/errors.js';
import { FRAME_HEADER_BYTES, FrameDecoder, FrameType } from '../../src/mesh/framing.js';
import { Inbox } from '../../src/mesh/inbox.js';
import { DEFAULT_LANE_OPTIONS, DEFAULT_WINDOW_BYTES, Lane, Outbox, type OutboxOptions, ZERO_COPY_MIN_BYTES } from '../../src/mesh/lanes.js';
import { encodeMessageBody, fragmentMessage, GatherPayload, type InboundMessage, MessageFlags, parseMessageBody, topicBytes } from '../../src/mesh/message.js';

interface WireFrame {
  lane: number;
  fin: number;
  chunk: number;
  /** Bytes of the frame on the wire (frame header included). */
  wire: number;
  /** Index of the pull() call that produced the frame. */
  pull: number;
}

/** A receiving end: frames → messages, recording each frame's lane/fin/size. */
class Receiver {
  readonly frames: WireFrame[] = [];
  readonly messages: InboundMessage[] = [];
  private readonly decoder = new FrameDecoder(16 << 20);
  private readonly inbox: Inbox;
  private pulls = 0;
  constructor(maxMessageBytes = 64 << 20) {
    this.inbox = new Inbox({ maxMessageBytes });
  }
  feed(buf: Buffer): void {
    this.decoder.push(buf);
    for (let f = this.decoder.next(); f !== undefined; f = this.decoder.next()) {
      expect(f.type).toBe(FrameType.DATA);
      // A first fragment (fin 2) also carries the message's u32 size.
      this.frames.push({ lane: f.body[0]!, fin: f.body[1]!, chunk: f.body.length - 2 - (f.body[1] === 2 ? 4 : 0), wire: 5 + f.body.length, pull: this.pulls });
      const m = this.inbox.push(f.body);
      if (m) this.messages.push(m);
    }
    expect(this.decoder.bufferedBytes).toBe(0); // pull() only returns whole frames
    this.pulls++;
  }
  /** Returns everything consumed so far to `out`'s send window, as an ACK frame would. */
  ack(out: Outbox): void {
    const n = this.inbox.takeUnacked();
    if (n > 0) out.ack(n);
  }
}

/** Pulls until nothing is sendable, acking each pull at once (a receiver that keeps up). */
function pullAll(out: Outbox, rx: Receiver, budget: number): number {
  let n = 0;
  for (let buf = out.pull(budget); buf !== undefined; buf = out.pull(budget)) {
    rx.feed(buf);
    rx.ack(out);
    n++;
  }
  return n;
}

const roomy = (extra: OutboxOptions = {}): OutboxOptions => ({
  ...extra,
  lanes: {
    control: { highWaterMark: 1 << 30, hardLimit: 1 << 30 },
    events: { highWaterMark: 1 << 30, hardLimit: 1 << 30 },
    telemetry: { highWaterMark: 1 << 30, hardLimit: 1 << 30, overflow: 'backpressure' },
    bulk: { highWaterMark: 1 << 30, hardLimit: 1 << 30 },
    ...extra.lanes,
  },
});

const idOf = (m: InboundMessage): number => m.payload.readUInt32BE(0);
function payloadWithId(id: number, size: number): Buffer {
  const p = Buffer.alloc(Math.max(4, size), id & 0xff);
  p.writeUInt32BE(id, 0);
  return p;
}

describe('message bodies', () => {
  it('serializes [flags][u32 corrId][topicLength][topic][payload] and parses it back', () => {
    const body = encodeMessageBody(MessageFlags.REQUEST | MessageFlags.RAW, 0xdeadbeef, 'a.b', Buffer.from([1, 2]));
    expect([...body]).toEqual([3, 0xde, 0xad, 0xbe, 0xef, 3, 0x61, 0x2e, 0x62, 1, 2]);
    const m = parseMessageBody(2, body);
    expect(m).toEqual({ lane: 2, flags: 3, corrId: 0xdeadbeef, topic: 'a.b', payload: Buffer.from([1, 2]) });
    expect(m.payload.buffer).toBe(body.buffer);
  });

  it('limits topics to 255 UTF-8 bytes at the call site', () => {
    expect(topicBytes('x'.repeat(255)).length).toBe(255);
    expect(() => topicBytes('x'.repeat(256))).toThrow(SerializationError);
    // 128 two-byte characters: short in UTF-16, too long in UTF-8.
    expect(() => topicBytes('é'.repeat(128))).toThrow(/256 bytes/);
    const out = new Outbox();
    expect(() => out.enqueue(Lane.EVENTS, 0, 0, 'é'.repeat(128), Buffer.alloc(1))).toThrow(SerializationError);
    expect(out.pendingMessages).toBe(0);
  });

  it('decodes repeated and colliding topics correctly (receive-side topic cache)', () => {
    const topics = Array.from({ length: 3000 }, (_, i) => `topic.${i % 1500}.é${i % 7}`);
    for (const t of topics) expect(parseMessageBody(0, encodeMessageBody(0, 1, t, Buffer.alloc(0))).topic).toBe(t);
  });

  it('fragmentMessage cuts a body into DATA frame bodies the Inbox reassembles', () => {
    const body = encodeMessageBody(0, 7, 't', randomBytes(1000));
    const frags = fragmentMessage(1, body, 64);
    expect(frags.length).toBe(Math.ceil(body.length / 64));
    // The first fragment says 2 and carries the body's size; the middle ones say 0.
    expect(frags[0]![1]).toBe(2);
    expect(frags[0]!.length).toBe(70);
    expect(frags[0]!.readUInt32BE(2)).toBe(body.length);
    expect(frags.slice(1, -1).every((f) => f[1] === 0 && f.length === 66)).toBe(true);
    expect(frags.at(-1)![1]).toBe(1);
    const inbox = new Inbox();
    const got = frags.map((f) => inbox.push(f));
    expect(got.slice(0, -1).every((m) => m === undefined)).toBe(true);
    expect(got.at(-1)!.payload.equals(body.subarray(7))).toBe(true);
  });
});

describe('Outbox → wire → Inbox', () => {
  it('carries every header field and the payload', () => {
    const out = new Outbox();
    const rx = new Receiver();
    const payload = randomBytes(100);
    expect(out.enqueue(Lane.BULK, MessageFlags.REPLY | MessageFlags.ERROR, 4_000_000_000, 'svc.reply', payload)).toBe(true);
    expect(out.enqueue(Lane.CONTROL, 0, 0, '', Buffer.alloc(0))).toBe(true);
    pullAll(out, rx, 1 << 16);
    expect(rx.messages).toHaveLength(2);
    expect(rx.messages[0]).toEqual({ lane: 0, flags: 0, corrId: 0, topic: '', payload: Buffer.alloc(0) });
    const m = rx.messages[1]!;
    expect(m.lane).toBe(Lane.BULK);
    expect(m.flags).toBe(MessageFlags.REPLY | MessageFlags.ERROR);
    expect(m.corrId).toBe(4_000_000_000);
    expect(m.topic).toBe('svc.reply');
    expect(m.payload.equals(payload)).toBe(true);
    expect(out.pull(1000)).toBeUndefined();
  });

  it('rejects bad lane, flags and corrId at enqueue', () => {
    const out = new Outbox();
    expect(() => out.enqueue(4, 0, 0, 't', Buffer.alloc(1))).toThrow(RangeError);
    expect(() => out.enqueue(0, 256, 0, 't', Buffer.alloc(1))).toThrow(RangeError);
    expect(() => out.enqueue(0, 0, -1, 't', Buffer.alloc(1))).toThrow(RangeError);
    expect(() => out.enqueue(0, 0, 2 ** 32, 't', Buffer.alloc(1))).toThrow(RangeError);
  });

  it('returns one buffer of whole frames within the budget, at least one frame', () => {
    const out = new Outbox(roomy());
    for (let i = 0; i < 100; i++) out.enqueue(Lane.EVENTS, 0, i, 'e', payloadWithId(i, 100));
    // 7 (frame + DATA header) + 6 (message header) + 1 (topic) + 100 = 114 bytes per frame.
    const buf = out.pull(1000)!;
    expect(buf.length).toBe(8 * 114);
    const tiny = out.pull(1)!;
    expect(tiny.length).toBe(114);
    const rx = new Receiver();
    rx.feed(buf);
    rx.feed(tiny);
    expect(rx.messages.map(idOf)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('fragments large messages and reassembles them, interleaved across lanes', () => {
    const out = new Outbox(roomy({ fragmentBytes: 1000 }));
    const rx = new Receiver();
    const bulk = randomBytes(50_000);
    const events = randomBytes(20_000);
    out.enqueue(Lane.BULK, MessageFlags.RAW, 1, 'bulk', bulk);
    out.enqueue(Lane.EVENTS, MessageFlags.RAW, 2, 'events', events);
    pullAll(out, rx, 5000);
    expect(rx.frames.every((f) => f.chunk <= 1000)).toBe(true);
    // Fragments of the two lanes really were interleaved on the wire.
    const lanes = rx.frames.map((f) => f.lane);
    const firstBulk = lanes.indexOf(Lane.BULK);
    const lastEvents = lanes.lastIndexOf(Lane.EVENTS);
    expect(firstBulk).toBeLessThan(lastEvents);
    const byLane = new Map(rx.messages.map((m) => [m.lane, m]));
    expect(byLane.get(Lane.BULK)!.payload.equals(bulk)).toBe(true);
    expect(byLane.get(Lane.EVENTS)!.payload.equals(events)).toBe(true);
  });

  it('reassembles random messages across lanes with random fragment sizes, budgets and pull timing (property)', () => {
    const arbMsg = fc.record({
      lane: fc.integer({ min: 0, max: 3 }),
      size: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 30_000 })),
      topic: fc.string({ maxLength: 12 }),
      flags: fc.integer({ min: 0, max: 15 }),
      pullAfter: fc.option(fc.integer({ min: 1, max: 20_000 }), { freq: 3 }),
    });
    fc.assert(
      fc.property(
        fc.array(arbMsg, { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 16, max: 8192 }),
        fc.integer({ min: 1, max: 100_000 }),
        fc.constantFrom<'priority' | 'fifo'>('priority', 'fifo'),
        (msgs, fragmentBytes, budget, mode) => {
          const out = new Outbox(roomy({ fragmentBytes, mode }));
          const rx = new Receiver();
          const sent = msgs.map((m, i) => ({ ...m, corrId: i, payload: randomBytes(m.size) }));
          for (const m of sent) {
            out.enqueue(m.lane, m.flags, m.corrId, m.topic, m.payload);
            // Pull part-way, so that later messages are queued behind partly sent ones.
            if (m.pullAfter !== null) {
              const buf = out.pull(m.pullAfter);
              if (buf) rx.feed(buf);
            }
          }
          pullAll(out, rx, budget);
          expect(rx.frames.every((f) => f.chunk <= fragmentBytes)).toBe(true);
          expect(rx.messages).toHaveLength(sent.length);
          for (let lane = 0; lane < 4; lane++) {
            const want = sent.filter((m) => m.lane === lane);
            const got = rx.messages.filter((m) => m.lane === lane);
            expect(got.map((m) => m.corrId)).toEqual(want.map((m) => m.corrId));
            got.forEach((m, i) => {
              expect(m.topic).toBe(want[i]!.topic);
              expect(m.flags).toBe(want[i]!.flags);
              expect(m.payload.equals(want[i]!.payload)).toBe(true);
            });
          }
          if (mode === 'fifo') expect(rx.messages.map((m) => m.corrId)).toEqual(sent.map((m) => m.corrId));
          const counters = out.counters();
          expect(counters.reduce((s, c) => s + c.messagesSent, 0)).toBe(sent.length);
          expect(counters.every((c) => c.bytesQueued === 0 && c.messagesQueued === 0)).toBe(true);
          expect(out.pendingMessages).toBe(0);
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('scheduling', () => {
  it('puts a control message ahead of a 10 MB bulk message after at most one fragment', () => {
    const out = new Outbox();
    const rx = new Receiver();
    out.enqueue(Lane.BULK, MessageFlags.RAW, 1, 'bulk', randomBytes(10 << 20));
    // The link pulls; the first pull can only hold one 64 KiB fragment in this budget.
    rx.feed(out.pull(70_000)!);
    expect(rx.frames).toHaveLength(1);
    expect(rx.frames[0]).toMatchObject({ lane: Lane.BULK, fin: 2, chunk: 65536 });

    out.enqueue(Lane.CONTROL, 0, 2, 'ping', Buffer.from('hb'));
    rx.feed(out.pull(1 << 20)!);
    // The very next frame is the control message, ahead of all remaining bulk fragments.
    expect(rx.frames[1]).toMatchObject({ lane: Lane.CONTROL, fin: 1 });
    expect(rx.messages[0]!.topic).toBe('ping');

    // And again mid-message: a control message enqueued between pulls waits behind no bulk
    // fragment that was not already pulled.
    for (let i = 0; i < 20; i++) {
      out.enqueue(Lane.CONTROL, 0, 100 + i, 'hb', Buffer.from([i]));
      const before = rx.frames.length;
      rx.feed(out.pull(200_000)!);
      rx.ack(out);
      expect(rx.frames[before]).toMatchObject({ lane: Lane.CONTROL });
    }
    pullAll(out, rx, 1 << 20);
    expect(rx.messages.at(-1)!.payload.length).toBe(10 << 20);
  });

  it('sends queued control messages before bulk even when both were queued first', () => {
    const out = new Outbox();
    const rx = new Receiver();
    out.enqueue(Lane.BULK, 0, 1, 'b', Buffer.alloc(200_000));
    out.enqueue(Lane.EVENTS, 0, 2, 'e', Buffer.alloc(10));
    out.enqueue(Lane.CONTROL, 0, 3, 'c', Buffer.alloc(10));
    pullAll(out, rx, 1 << 20);
    expect(rx.frames[0]!.lane).toBe(Lane.CONTROL);
    expect(rx.messages.map((m) => m.corrId)).toEqual([3, 2, 1]);
  });

  /** Share of wire bytes per lane over the frames sent while all `lanes` still had data queued. */
  function sharesWhileBacklogged(rx: Receiver, lanes: number[]): Map<number, number> {
    const lastFrame = new Map(lanes.map((l) => [l, rx.frames.map((f) => f.lane).lastIndexOf(l)]));
    const end = Math.min(...lastFrame.values());
    const bytes = new Map(lanes.map((l) => [l, 0]));
    for (const f of rx.frames.slice(0, end)) bytes.set(f.lane, (bytes.get(f.lane) ?? 0) + f.chunk);
    const total = [...bytes.values()].reduce((a, b) => a + b, 0);
    return new Map([...bytes].map(([l, b]) => [l, b / total]));
  }

  it('does not starve bulk under a flood of events (DRR 4:1)', () => {
    const out = new Outbox(roomy());
    const rx = new Receiver();
    for (let i = 0; i < 2000; i++) out.enqueue(Lane.EVENTS, 0, i, 'e', Buffer.alloc(4000));
    for (let i = 0; i < 40; i++) out.enqueue(Lane.BULK, 0, i, 'b', Buffer.alloc(100_000));
    pullAll(out, rx, 1 << 16);
    const shares = sharesWhileBacklogged(rx, [Lane.EVENTS, Lane.BULK]);
    expect(shares.get(Lane.BULK)!).toBeGreaterThan(0.17);
    expect(shares.get(Lane.BULK)!).toBeLessThan(0.23);
    // The first 100 kB bulk message needs ~500 kB of link at a 1/5 share: it completes after
    // ~100 of the 2000 events, not after all of them.
    const firstBulk = rx.messages.findIndex((m) => m.lane === Lane.BULK);
    expect(firstBulk).toBeGreaterThan(50);
    expect(firstBulk).toBeLessThan(150);
  });

  it('shares the link 4:2:1 between events, telemetry and bulk', () => {
    const out = new Outbox(roomy());
    const rx = new Receiver();
    for (let i = 0; i < 3000; i++) out.enqueue(Lane.EVENTS, 0, i, 'e', Buffer.alloc(1000));
    for (let i = 0; i < 1000; i++) out.enqueue(Lane.TELEMETRY, 0, i, 't', Buffer.alloc(2000));
    for (let i = 0; i < 20; i++) out.enqueue(Lane.BULK, 0, i, 'b', Buffer.alloc(150_000));
    pullAll(out, rx, 1 << 16);
    const shares = sharesWhileBacklogged(rx, [Lane.EVENTS, Lane.TELEMETRY, Lane.BULK]);
    expect(shares.get(Lane.EVENTS)!).toBeCloseTo(4 / 7, 1);
    expect(shares.get(Lane.TELEMETRY)!).toBeCloseTo(2 / 7, 1);
    expect(shares.get(Lane.BULK)!).toBeCloseTo(1 / 7, 1);
  });

  it('an idle lane does not bank credit for a later burst', () => {
    const out = new Outbox(roomy({ fragmentBytes: 1000 }));
    const rx = new Receiver();
    // Bulk (quantum 1000) sends one 100-byte message and goes idle with 900 of unused credit.
    for (let i = 0; i < 5; i++) out.enqueue(Lane.EVENTS, 0, i, '', Buffer.alloc(994));
    out.enqueue(Lane.BULK, 0, 0, '', Buffer.alloc(94));
    pullAll(out, rx, 1 << 20);
    const before = rx.frames.length;
    for (let i = 0; i < 50; i++) out.enqueue(Lane.EVENTS, 0, i, '', Buffer.alloc(994));
    for (let i = 0; i < 50; i++) out.enqueue(Lane.BULK, 0, i, '', Buffer.alloc(94));
    pullAll(out, rx, 1 << 20);
    // With its credit reset, one bulk turn is one quantum: 10 messages of 100 bytes, not 19.
    let run = 0;
    let longest = 0;
    for (const f of rx.frames.slice(before)) {
      run = f.lane === Lane.BULK ? run + 1 : 0;
      longest = Math.max(longest, run);
    }
    expect(longest).toBe(10);
  });

  it('fifo mode keeps enqueue order across lanes, with no priority', () => {
    const out = new Outbox(roomy({ mode: 'fifo', fragmentBytes: 1000 }));
    const rx = new Receiver();
    const order = [Lane.BULK, Lane.EVENTS, Lane.CONTROL, Lane.TELEMETRY, Lane.CONTROL, Lane.BULK, Lane.EVENTS];
    order.forEach((lane, i) => {
      out.enqueue(lane, 0, i, 'x', Buffer.alloc(i === 0 ? 5000 : 10));
    });
    pullAll(out, rx, 3000);
    expect(rx.messages.map((m) => m.corrId)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    // The big first message went out whole before anything else: head-of-line blocking.
    expect(rx.frames.slice(0, 6).every((f) => f.lane === Lane.BULK)).toBe(true);

    // The same queue in priority mode reorders.
    const prio = new Outbox(roomy({ fragmentBytes: 1000 }));
    const rx2 = new Receiver();
    order.forEach((lane, i) => {
      prio.enqueue(lane, 0, i, 'x', Buffer.alloc(i === 0 ? 5000 : 10));
    });
    pullAll(prio, rx2, 3000);
    expect(rx2.messages.map((m) => m.corrId).slice(0, 2)).toEqual([2, 4]);
  });
});

describe('queue bounds', () => {
  it('signals back-pressure at the high-water mark, drains, and throws LaneOverflowError past the hard limit', () => {
    const drained: number[] = [];
    const out = new Outbox({ lanes: { events: { highWaterMark: 1000, hardLimit: 3000 } }, onDrain: (lane) => drained.push(lane) });
    // Empty topic: body = 6 + payload bytes.
    const msg = Buffer.alloc(494);
    expect(out.enqueue(Lane.EVENTS, 0, 1, '', msg)).toBe(true);
    expect(out.isOverHighWaterMark(Lane.EVENTS)).toBe(false);
    expect(out.enqueue(Lane.EVENTS, 0, 2, '', msg)).toBe(false);
    expect(out.isOverHighWaterMark(Lane.EVENTS)).toBe(true);
    expect(out.queuedBytes(Lane.EVENTS)).toBe(1000);
    for (let i = 3; i <= 6; i++) expect(out.enqueue(Lane.EVENTS, 0, i, '', msg)).toBe(false);
    expect(out.queuedBytes(Lane.EVENTS)).toBe(3000);

    let caught: unknown;
    try {
      out.enqueue(Lane.EVENTS, 0, 7, '', msg);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(LaneOverflowError);
    expect((caught as LaneOverflowError).code).toBe(ErrorCodes.LANE_OVERFLOW);
    expect((caught as Error).message).toContain('events');
    // Not queued.
    expect(out.counters()[Lane.EVENTS]).toMatchObject({ messagesQueued: 6, bytesQueued: 3000 });

    // Other lanes are unaffected.
    expect(out.enqueue(Lane.CONTROL, 0, 0, '', msg)).toBe(true);

    // Pull until events is under its high-water mark: one drain notification, for events only.
    const rx = new Receiver();
    rx.feed(out.pull(4 * 507)!); // control + 3 events messages
    expect(drained).toEqual([]);
    rx.feed(out.pull(507)!); // 2 events left = 1000 bytes: still at the mark
    expect(drained).toEqual([]);
    rx.feed(out.pull(507)!);
    expect(drained).toEqual([Lane.EVENTS]);
    pullAll(out, rx, 1 << 20);
    expect(drained).toEqual([Lane.EVENTS]);
    expect(rx.messages.filter((m) => m.lane === Lane.EVENTS).map((m) => m.corrId)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('lets a drain handler enqueue during pull without corrupting the pulled buffer', () => {
    let out: Outbox;
    const rx = new Receiver();
    let refills = 0;
    out = new Outbox({
      lanes: { events: { highWaterMark: 300, hardLimit: 10_000 } },
      onDrain: (lane) => {
        if (refills++ < 3) for (let i = 0; i < 3; i++) out.enqueue(lane, 0, 1000 + refills * 10 + i, 'r', Buffer.alloc(100));
      },
    });
    for (let i = 0; i < 3; i++) out.enqueue(Lane.EVENTS, 0, i, 'r', Buffer.alloc(100));
    pullAll(out, rx, 1 << 20);
    expect(rx.messages.map((m) => m.corrId)).toEqual([0, 1, 2, 1010, 1011, 1012, 1020, 1021, 1022, 1030, 1031, 1032]);
  });

  it('drops the oldest telemetry and counts it', () => {
    const out = new Outbox({ lanes: { telemetry: { highWaterMark: 1000, hardLimit: 1000, overflow: 'drop-oldest' } } });
    // Each body: 6 + 0 topic + 194 = 200 bytes, so 5 fit.
    for (let i = 0; i < 12; i++) out.enqueue(Lane.TELEMETRY, 0, i, '', payloadWithId(i, 194));
    const c = out.counters()[Lane.TELEMETRY]!;
    expect(c.dropped).toBe(7);
    expect(c.messagesQueued).toBe(5);
    expect(c.bytesQueued).toBe(1000);
    const rx = new Receiver();
    pullAll(out, rx, 1 << 20);
    expect(rx.messages.map(idOf)).toEqual([7, 8, 9, 10, 11]);
    expect(c.messagesSent).toBe(5);
    expect(c.bytesSent).toBe(5 * 207);
    // Telemetry default: 1 MiB, drop-oldest.
    expect(DEFAULT_LANE_OPTIONS.telemetry).toEqual({ highWaterMark: 1 << 20, hardLimit: 1 << 20, overflow: 'drop-oldest' });
  });

  it('never drops a partly sent message, and drops a message that can never fit', () => {
    const out = new Outbox({ fragmentBytes: 100, lanes: { telemetry: { highWaterMark: 700, hardLimit: 700, overflow: 'drop-oldest' } } });
    const rx = new Receiver();
    out.enqueue(Lane.TELEMETRY, 0, 0, '', payloadWithId(0, 394)); // 400-byte body, 4 fragments
    rx.feed(out.pull(1)!); // first fragment on the wire
    expect(out.queuedBytes(Lane.TELEMETRY)).toBe(300);
    for (let i = 1; i <= 5; i++) out.enqueue(Lane.TELEMETRY, 0, i, '', payloadWithId(i, 94)); // 100 bytes each
    // 300 left of #0 + 5 × 100 = 800 > 700: #1 is dropped, #0 is kept.
    expect(out.counters()[Lane.TELEMETRY]!.dropped).toBe(1);
    // A 701-byte message can never fit: it is the one dropped.
    expect(out.enqueue(Lane.TELEMETRY, 0, 99, '', Buffer.alloc(695))).toBe(false);
    expect(out.counters()[Lane.TELEMETRY]!.dropped).toBe(2);
    // 300 left of #0 makes room for at most 400 more: dropping everything else.
    out.enqueue(Lane.TELEMETRY, 0, 6, '', payloadWithId(6, 394));
    expect(out.counters()[Lane.TELEMETRY]).toMatchObject({ dropped: 6, messagesQueued: 2, bytesQueued: 700 });
    pullAll(out, rx, 1 << 20);
    expect(rx.messages.map(idOf)).toEqual([0, 6]);
    expect(rx.messages[0]!.payload.length).toBe(394);
  });

  it('clear() empties the queues but keeps cumulative counters', () => {
    const out = new Outbox();
    out.enqueue(Lane.EVENTS, 0, 0, 'a', Buffer.alloc(10));
    out.pull(1000);
    out.enqueue(Lane.EVENTS, 0, 1, 'a', Buffer.alloc(100_000));
    out.pull(1000);
    out.clear();
    expect(out.pendingMessages).toBe(0);
    expect(out.pull(1000)).toBeUndefined();
    expect(out.counters()[Lane.EVENTS]).toMatchObject({ messagesQueued: 0, bytesQueued: 0, messagesSent: 1 });
  });
});

describe('flow control (send window)', () => {
  /** Wire bytes of one DATA frame carrying `bodyBytes` of message body. */
  const wire = (bodyBytes: number): number => FRAME_HEADER_BYTES + 2 + bodyBytes;

  it('holds non-control frames once the window is full, lets control through, and reopens on ack', () => {
    const out = new Outbox({ windowBytes: 200_000 });
    const rx = new Receiver();
    expect(out.windowBytes).toBe(200_000);
    expect(new Outbox().windowBytes).toBe(DEFAULT_WINDOW_BYTES);
    out.enqueue(Lane.EVENTS, 0, 2, 'e', Buffer.alloc(100));
    out.enqueue(Lane.BULK, 0, 1, 'b', Buffer.alloc(1 << 20));
    // Whatever the budget, no more than the window goes out: the small message and two 64 KiB
    // fragments fit, a third does not.
    for (let buf = out.pull(1 << 20); buf !== undefined; buf = out.pull(1 << 20)) rx.feed(buf);
    const sent = rx.frames.reduce((sum, f) => sum + f.wire, 0);
    expect(sent).toBeLessThanOrEqual(200_000);
    expect(sent).toBeGreaterThan(200_000 - wire(65536));
    expect(out.inFlightBytes).toBe(sent);
    expect(out.pull(1 << 20)).toBeUndefined();
    // Nor does anything queued now on a non-control lane.
    out.enqueue(Lane.EVENTS, 0, 4, 'e', Buffer.alloc(100));
    expect(out.pull(1 << 20)).toBeUndefined();
    expect(out.pendingMessages).toBe(2);
    expect(rx.messages.map((m) => m.corrId)).toEqual([2]);

    // Control still flows, alone.
    out.enqueue(Lane.CONTROL, 0, 3, 'c', Buffer.from('ping'));
    const before = rx.frames.length;
    rx.feed(out.pull(1 << 20)!);
    expect(rx.frames.slice(before).map((f) => f.lane)).toEqual([Lane.CONTROL]);
    expect(rx.messages.map((m) => m.corrId)).toEqual([2, 3]);
    expect(out.inFlightBytes).toBe(sent); // control does not count
    expect(out.pull(1 << 20)).toBeUndefined();

    // The receiver counted exactly what the sender has in flight; acking part of it lets as much through.
    const inbox = (rx as unknown as { inbox: Inbox }).inbox;
    expect(inbox.unackedBytes).toBe(sent);
    const consumed = inbox.takeUnacked();
    out.ack(wire(65536));
    expect(out.inFlightBytes).toBe(sent - wire(65536));
    const framesBefore = rx.frames.length;
    rx.feed(out.pull(1 << 20)!);
    expect(rx.frames.slice(framesBefore).some((f) => f.lane === Lane.BULK && f.chunk === 65536)).toBe(true);
    expect(out.inFlightBytes).toBeLessThanOrEqual(200_000);
    expect(out.inFlightBytes).toBeGreaterThan(200_000 - wire(65536));
    expect(out.pull(1 << 20)).toBeUndefined();

    // Acking everything as it arrives delivers the rest, in order.
    out.ack(consumed - wire(65536));
    rx.ack(out);
    pullAll(out, rx, 1 << 20);
    expect(rx.messages.map((m) => m.corrId)).toEqual([2, 3, 4, 1]);
    expect(rx.messages[3]!.payload.length).toBe(1 << 20);
    expect(out.inFlightBytes).toBe(0);
    expect(out.pendingMessages).toBe(0);
  });

  it('lets one frame through when nothing is in flight, whatever the window', () => {
    const out = new Outbox({ windowBytes: 1 });
    const rx = new Receiver();
    for (let i = 0; i < 3; i++) out.enqueue(Lane.EVENTS, 0, i, 'e', Buffer.alloc(1000));
    rx.feed(out.pull(1 << 20)!);
    expect(rx.frames).toHaveLength(1);
    expect(out.pull(1 << 20)).toBeUndefined();
    rx.ack(out);
    pullAll(out, rx, 1 << 20);
    expect(rx.messages.map((m) => m.corrId)).toEqual([0, 1, 2]);
  });

  it('fifo mode uses the window too, as one queue: a control message waits behind older bulk', () => {
    const out = new Outbox({ mode: 'fifo', windowBytes: 100_000, fragmentBytes: 10_000 });
    const rx = new Receiver();
    out.enqueue(Lane.BULK, 0, 1, 'b', Buffer.alloc(300_000));
    out.enqueue(Lane.CONTROL, 0, 2, 'c', Buffer.alloc(10));
    for (let buf = out.pull(1 << 20); buf !== undefined; buf = out.pull(1 << 20)) rx.feed(buf);
    expect(rx.frames.length).toBeGreaterThan(0);
    expect(rx.frames.every((f) => f.lane === Lane.BULK)).toBe(true);
    expect(out.inFlightBytes).toBeLessThanOrEqual(100_000);
    rx.ack(out);
    pullAll(out, rx, 1 << 20);
    expect(rx.messages.map((m) => m.corrId)).toEqual([1, 2]);

    // With the window full, a control message at the head of the queue still goes out.
    const head = new Outbox({ mode: 'fifo', windowBytes: 1000 });
    const rx2 = new Receiver();
    head.enqueue(Lane.EVENTS, 0, 1, '', Buffer.alloc(5000));
    rx2.feed(head.pull(1 << 20)!);
    head.enqueue(Lane.EVENTS, 0, 2, '', Buffer.alloc(10));
    expect(head.pull(1 << 20)).toBeUndefined();
    head.enqueue(Lane.CONTROL, 0, 3, '', Buffer.alloc(10));
    expect(head.pull(1 << 20)).toBeUndefined(); // behind events #2
    rx2.ack(head);
    pullAll(head, rx2, 1 << 20);
    expect(rx2.messages.map((m) => m.corrId)).toEqual([1, 2, 3]);
    head.enqueue(Lane.EVENTS, 0, 4, '', Buffer.alloc(5000));
    head.enqueue(Lane.CONTROL, 0, 5, '', Buffer.alloc(10));
    head.enqueue(Lane.EVENTS, 0, 6, '', Buffer.alloc(10));
    // #4 fills the window (smaller than one frame: allowed since nothing was in flight); #5 is
    // control, next in the queue, so it follows; #6 waits for credit.
    rx2.feed(head.pull(1 << 20)!);
    expect(rx2.messages.map((m) => m.corrId).slice(3)).toEqual([4, 5]);
    expect(head.pull(1 << 20)).toBeUndefined();
  });

  it('keeps DRR shares when the window throttles the link', () => {
    const out = new Outbox(roomy({ windowBytes: 150_000 }));
    const rx = new Receiver();
    for (let i = 0; i < 2000; i++) out.enqueue(Lane.EVENTS, 0, i, 'e', Buffer.alloc(4000));
    for (let i = 0; i < 40; i++) out.enqueue(Lane.BULK, 0, i, 'b', Buffer.alloc(100_000));
    // Ack in small random pieces, as a receiver consuming frame by frame would.
    let seed = 7;
    for (;;) {
      const buf = out.pull(1 << 16);
      if (buf === undefined) {
        const n = (rx as unknown as { inbox: Inbox }).inbox.takeUnacked();
        if (n === 0) break;
        let left = n;
        while (left > 0) {
          seed = (seed * 1103515245 + 12345) & 0x7fffffff;
          const part = Math.min(left, 1 + (seed % 50_000));
          out.ack(part);
          left -= part;
        }
        continue;
      }
      rx.feed(buf);
    }
    const lastEvents = rx.frames.map((f) => f.lane).lastIndexOf(Lane.EVENTS);
    const lastBulk = rx.frames.map((f) => f.lane).lastIndexOf(Lane.BULK);
    const end = Math.min(lastEvents, lastBulk);
    let bulk = 0;
    let total = 0;
    for (const f of rx.frames.slice(0, end)) {
      total += f.chunk;
      if (f.lane === Lane.BULK) bulk += f.chunk;
    }
    expect(bulk / total).toBeGreaterThan(0.17);
    expect(bulk / total).toBeLessThan(0.23);
    expect(rx.messages).toHaveLength(2040);
  });

  it('ignoreWindow sends everything (a graceful close) and still counts it in flight', () => {
    const out = new Outbox({ windowBytes: 10_000 });
    out.enqueue(Lane.BULK, 0, 1, 'b', Buffer.alloc(500_000));
    const rx = new Receiver();
    for (let buf = out.pull(1 << 16, true); buf !== undefined; buf = out.pull(1 << 16, true)) rx.feed(buf);
    expect(rx.messages).toHaveLength(1);
    expect(out.inFlightBytes).toBe(rx.frames.reduce((sum, f) => sum + f.wire, 0));
    rx.ack(out);
    expect(out.inFlightBytes).toBe(0);
  });

  it('refuses an ack of more than is in flight, or of nothing, with FRAME_INVALID', () => {
    const out = new Outbox();
    const expectInvalid = (fn: () => unknown) => {
      let caught: unknown;
      try {
        fn();
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(FrameError);
      expect((caught as FrameError).code).toBe(ErrorCodes.FRAME_INVALID);
    };
    expectInvalid(() => out.ack(1));
    out.enqueue(Lane.EVENTS, 0, 0, '', Buffer.alloc(100));
    out.pull(1 << 16);
    expect(out.inFlightBytes).toBe(wire(106));
    expectInvalid(() => out.ack(wire(106) + 1));
    expectInvalid(() => out.ack(0));
    expectInvalid(() => out.ack(-5));
    expectInvalid(() => out.ack(1.5));
    expect(out.inFlightBytes).toBe(wire(106));
    out.ack(wire(106));
    expect(out.inFlightBytes).toBe(0);
  });

  it('validates windowBytes', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, '1' as unknown as number]) {
      expect(() => new Outbox({ windowBytes: bad })).toThrow(ConfigError);
    }
    expect(new Outbox({ windowBytes: Number.POSITIVE_INFINITY }).windowBytes).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('zero-copy output (pullSegments)', () => {
  it('passes large payload slices as views and batches headers and small payloads into one buffer', () => {
    const out = new Outbox(roomy());
    const big = randomBytes(200_000);
    const small = randomBytes(100);
    out.enqueue(Lane.EVENTS, 0, 1, 's', small);
    out.enqueue(Lane.BULK, 0, 2, 'big', big);
    out.enqueue(Lane.EVENTS, 0, 3, 's', small);
    const rx = new Receiver();
    let views = 0;
    for (let segs = out.pullSegments(1 << 20); segs !== undefined; segs = out.pullSegments(1 << 20)) {
      for (const seg of segs) {
        if (seg.buffer === big.buffer) {
          views++;
          expect(seg.length).toBeGreaterThanOrEqual(ZERO_COPY_MIN_BYTES);
        }
      }
      rx.feed(Buffer.concat(segs));
      rx.ack(out);
    }
    // 200 kB in 64 KiB fragments: three full slices are views, the 3.4 kB tail is copied.
    expect(views).toBe(3);
    expect(rx.messages.map((m) => m.corrId)).toEqual([1, 3, 2]);
    expect(rx.messages[2]!.payload.equals(big)).toBe(true);
  });

  it('copies a payload under ZERO_COPY_MIN_BYTES, and views a plain Uint8Array without copying', () => {
    const out = new Outbox(roomy());
    out.enqueue(Lane.EVENTS, 0, 1, '', Buffer.alloc(ZERO_COPY_MIN_BYTES - 1, 1));
    const segs = out.pullSegments(1 << 20)!;
    expect(segs).toHaveLength(1);
    const u8 = new Uint8Array(50_000).fill(9);
    out.enqueue(Lane.EVENTS, 0, 2, '', u8);
    const segs2 = out.pullSegments(1 << 20)!;
    expect(segs2).toHaveLength(2);
    expect(Buffer.isBuffer(segs2[1])).toBe(true);
    expect(segs2[1]!.buffer).toBe(u8.buffer);
    const rx = new Receiver();
    rx.feed(Buffer.concat([...segs, ...segs2]));
    expect(rx.messages[1]!.payload.equals(Buffer.from(u8))).toBe(true);
  });

  it('delivers the same messages whatever the segments and the cuts of the stream (property)', () => {
    const arbMsg = fc.record({
      lane: fc.integer({ min: 0, max: 3 }),
      size: fc.oneof(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 60_000 })),
      topic: fc.string({ maxLength: 8 }),
    });
    fc.assert(
      fc.property(
        fc.array(arbMsg, { minLength: 1, maxLength: 25 }),
        fc.integer({ min: 16, max: 40_000 }),
        fc.integer({ min: 1, max: 200_000 }),
        fc.integer({ min: 1, max: 300_000 }),
        fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 8 }),
        (msgs, fragmentBytes, budget, windowBytes, cutSizes) => {
          const out = new Outbox(roomy({ fragmentBytes, windowBytes }));
          const sent = msgs.map((m, i) => ({ ...m, corrId: i, payload: randomBytes(m.size) }));
          for (const m of sent) out.enqueue(m.lane, 0, m.corrId, m.topic, m.payload);
          const decoder = new FrameDecoder(1 << 20, { dataParts: true });
          const inbox = new Inbox();
          const got: InboundMessage[] = [];
          let cut = 0;
          for (;;) {
            const segs = out.pullSegments(budget);
            if (segs === undefined) {
              const n = inbox.takeUnacked();
              if (n === 0) break;
              out.ack(n);
              continue;
            }
            // Re-cut the byte stream, as socket reads would.
            const stream = Buffer.concat(segs);
            for (let p = 0; p < stream.length; ) {
              const n = cutSizes[cut++ % cutSizes.length] as number;
              decoder.push(Buffer.from(stream.subarray(p, p + n)));
              p += n;
              for (let f = decoder.next(); f !== undefined; f = decoder.next()) {
                const m = f.parts === undefined ? inbox.push(f.body) : inbox.pushParts(f.parts);
                if (m) got.push(m);
              }
            }
          }
          expect(decoder.bufferedBytes).toBe(0);
          expect(got).toHaveLength(sent.length);
          for (let lane = 0; lane < 4; lane++) {
            const want = sent.filter((m) => m.lane === lane);
            const have = got.filter((m) => m.lane === lane);
            expect(have.map((m) => m.corrId)).toEqual(want.map((m) => m.corrId));
            have.forEach((m, i) => {
              expect(m.topic).toBe(want[i]!.topic);
              expect(m.payload.equals(want[i]!.payload)).toBe(true);
            });
          }
          expect(out.inFlightBytes).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('Inbox', () => {
  const frame = (lane: number, fin: number, chunk: Uint8Array): Buffer => Buffer.concat([Buffer.from([lane, fin]), chunk]);

  function expectCode(fn: () => unknown, code: string): void {
    let caught: unknown;
    try {
      fn();
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(FrameError);
    expect((caught as FrameError).code).toBe(code);
  }

  it('does not copy a single-fragment message', () => {
    const f = frame(1, 1, encodeMessageBody(0, 5, 'topic', Buffer.from('payload')));
    const m = new Inbox().push(f)!;
    expect(m.payload.toString()).toBe('payload');
    expect(m.payload.buffer).toBe(f.buffer);
    expect(m.payload.byteOffset).toBe(f.byteOffset + 2 + 6 + 5);
  });

  it('rejects bad lanes, fin bytes and truncated headers with FRAME_INVALID', () => {
    const body = encodeMessageBody(0, 1, 'abc', Buffer.alloc(3));
    expectCode(() => new Inbox().push(frame(4, 1, body)), ErrorCodes.FRAME_INVALID);
    expectCode(() => new Inbox().push(frame(255, 1, body)), ErrorCodes.FRAME_INVALID);
    expectCode(() => new Inbox().push(frame(0, 2, body)), ErrorCodes.FRAME_INVALID);
    expectCode(() => new Inbox().push(Buffer.from([0])), ErrorCodes.FRAME_INVALID);
    expectCode(() => new Inbox().push(frame(0, 1, body.subarray(0, 5))), ErrorCodes.FRAME_INVALID);
    // Topic length runs past the end.
    expectCode(() => new Inbox().push(frame(0, 1, body.subarray(0, 8))), ErrorCodes.FRAME_INVALID);
    expectCode(() => new Inbox().push(frame(0, 0, Buffer.alloc(0))), ErrorCodes.FRAME_INVALID);
  });

  /** A first fragment: `[lane][2][u32 total][chunk]`. */
  const first = (lane: number, total: number, chunk: Uint8Array): Buffer => {
    const size = Buffer.alloc(4);
    size.writeUInt32BE(total);
    return Buffer.concat([Buffer.from([lane, 2]), size, chunk]);
  };

  it('throws MESSAGE_TOO_LARGE at the first fragment of a message declared over maxMessageBytes', () => {
    const inbox = new Inbox({ maxMessageBytes: 1000 });
    expect(inbox.push(first(3, 1000, Buffer.alloc(600)))).toBeUndefined();
    expect(inbox.pendingBytes).toBe(600);
    expect(inbox.reservedBytes).toBe(1000);
    expectCode(() => new Inbox({ maxMessageBytes: 1000 }).push(first(3, 1001, Buffer.alloc(10))), ErrorCodes.MESSAGE_TOO_LARGE);
    expectCode(() => new Inbox({ maxMessageBytes: 1000 }).pushParts([first(3, 1001, Buffer.alloc(10))]), ErrorCodes.MESSAGE_TOO_LARGE);
    expectCode(() => new Inbox({ maxMessageBytes: 1000 }).push(frame(1, 1, encodeMessageBody(0, 0, '', Buffer.alloc(995)))), ErrorCodes.MESSAGE_TOO_LARGE);
    // Exactly the limit is fine.
    expect(new Inbox({ maxMessageBytes: 1000 }).push(frame(1, 1, encodeMessageBody(0, 0, '', Buffer.alloc(994))))?.payload.length).toBe(994);
  });

  it('keeps partial messages of different lanes apart', () => {
    const inbox = new Inbox();
    const a = encodeMessageBody(0, 1, 'a', randomBytes(300));
    const b = encodeMessageBody(0, 2, 'b', randomBytes(300));
    const fa = fragmentMessage(1, a, 100);
    const fb = fragmentMessage(3, b, 100);
    const got: InboundMessage[] = [];
    for (let i = 0; i < Math.max(fa.length, fb.length); i++) {
      for (const f of [fb[i], fa[i]]) {
        const m = f && inbox.push(f);
        if (m) got.push(m);
      }
    }
    expect(got.map((m) => [m.lane, m.topic])).toEqual([
      [3, 'b'],
      [1, 'a'],
    ]);
    expect(got[1]!.payload.equals(a.subarray(7))).toBe(true);
  });

  it('reassembles fragments given as pieces (pushParts), copying once, with the lane/fin header split', () => {
    const body = encodeMessageBody(MessageFlags.RAW, 9, 'parts', randomBytes(30_000));
    const frags = fragmentMessage(3, body, 10_000);
    const inbox = new Inbox();
    let m: InboundMessage | undefined;
    for (const f of frags) {
      // Cut each frame body in three: [lane] [fin + some] [rest].
      m = inbox.pushParts([f.subarray(0, 1), f.subarray(1, 500), f.subarray(500)]);
    }
    expect(m?.corrId).toBe(9);
    expect(m?.payload.equals(body.subarray(6 + 5))).toBe(true);
    expect(inbox.pendingBytes).toBe(0);
    // A single-fragment message in pieces is gathered into one buffer.
    const one = fragmentMessage(1, encodeMessageBody(0, 4, 't', Buffer.from('hello')), 1000)[0]!;
    const single = new Inbox().pushParts([one.subarray(0, 4), one.subarray(4)]);
    expect(single).toMatchObject({ lane: 1, corrId: 4, topic: 't' });
    expect(single!.payload.toString()).toBe('hello');
    // Mixed: views held from push(), then pieces.
    const mixed = new Inbox();
    expect(mixed.push(frags[0]!)).toBeUndefined();
    expect(mixed.pushParts([frags[1]!.subarray(0, 2), frags[1]!.subarray(2)])).toBeUndefined();
    expect(mixed.pushParts([frags[2]!])).toBeUndefined();
    expect(mixed.pushParts([frags[3]!])!.payload.equals(body.subarray(11))).toBe(true);
  });

  it('rejects bad pieces like bad frames', () => {
    const body = encodeMessageBody(0, 1, 'abc', Buffer.alloc(3));
    expectCode(() => new Inbox().pushParts([Buffer.from([4]), Buffer.from([1]), body]), ErrorCodes.FRAME_INVALID);
    expectCode(() => new Inbox().pushParts([Buffer.from([0]), Buffer.from([2]), body]), ErrorCodes.FRAME_INVALID);
    expectCode(() => new Inbox().pushParts([Buffer.from([0])]), ErrorCodes.FRAME_INVALID);
    expectCode(() => new Inbox().pushParts([Buffer.from([0, 0])]), ErrorCodes.FRAME_INVALID);
    const small = new Inbox({ maxMessageBytes: 1000 });
    expect(small.pushParts([first(3, 1000, Buffer.alloc(300)), Buffer.alloc(300)])).toBeUndefined();
    // 600 + 401 passes the declared 1000: out of sync.
    expectCode(() => small.pushParts([frame(3, 1, Buffer.alloc(300)), Buffer.alloc(101)]), ErrorCodes.FRAME_INVALID);
    // The size field split across pieces.
    const split = first(3, 700, Buffer.alloc(400));
    expect(new Inbox({ maxMessageBytes: 1000 }).pushParts([split.subarray(0, 3), split.subarray(3, 5), split.subarray(5)])).toBeUndefined();
    expectCode(
      () => new Inbox({ maxMessageBytes: 600 }).pushParts([split.subarray(0, 3), split.subarray(3, 5), split.subarray(5)]),
      ErrorCodes.MESSAGE_TOO_LARGE,
    );
  });

  it('counts the wire bytes of consumed non-control DATA frames for the next ACK', () => {
    const inbox = new Inbox();
    inbox.push(frame(0, 1, encodeMessageBody(0, 1, '', Buffer.alloc(10))));
    expect(inbox.unackedBytes).toBe(0);
    inbox.push(frame(1, 1, encodeMessageBody(0, 1, '', Buffer.alloc(10))));
    expect(inbox.unackedBytes).toBe(5 + 2 + 16);
    const body = encodeMessageBody(0, 0, '', Buffer.alloc(194));
    inbox.push(first(3, 200, body.subarray(0, 100)));
    inbox.pushParts([frame(3, 1, body.subarray(100, 150)), body.subarray(150)]);
    expect(inbox.unackedBytes).toBe(23 + 111 + 5 + 2 + 50 + 50);
    expect(inbox.takeUnacked()).toBe(23 + 111 + 107);
    expect(inbox.unackedBytes).toBe(0);
    // A frame that fails validation is not counted.
    expectCode(() => inbox.push(frame(9, 1, Buffer.alloc(10))), ErrorCodes.FRAME_INVALID);
    expect(inbox.unackedBytes).toBe(0);
  });
});

describe('gather payloads and incremental reassembly (large bodies)', () => {
  /** Random bytes of `n` (fast: one random block repeated with a varying first byte per block). */
  const bulk = (n: number, seed: number): Buffer => {
    const b = Buffer.allocUnsafe(n);
    const block = randomBytes(4096);
    for (let o = 0; o < n; o += 4096) {
      block.copy(b, o);
      b[o] = (seed + o / 4096) & 0xff;
    }
    return b;
  };

  it('reassembles head + body byte for byte whatever the fragment size, lanes and socket cuts, copying at most one fragment per step (property)', () => {
    const arbMsg = fc.record({
      lane: fc.integer({ min: 0, max: 3 }),
      head: fc.integer({ min: 0, max: 300 }),
      body: fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 200_000 })),
      gather: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.array(arbMsg, { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 16, max: 70_000 }),
        fc.array(fc.integer({ min: 1, max: 100_000 }), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 0, max: 1 << 30 }),
        (msgs, fragmentBytes, cutSizes, seed) => {
          const out = new Outbox(roomy({ fragmentBytes, windowBytes: 256 * 1024 }));
          const sent = msgs.map((m, i) => {
            const head = bulk(m.head, seed + i);
            const body = bulk(m.body, seed + 7 * i + 1);
            return {
              lane: m.lane,
              corrId: i,
              data: m.gather ? new GatherPayload(head, body) : Buffer.concat([head, body]),
              bytes: Buffer.concat([head, body]),
            };
          });
          for (const m of sent) out.enqueue(m.lane, MessageFlags.RAW, m.corrId, `t${m.corrId}`, m.data);
          const decoder = new FrameDecoder(fragmentBytes + 1024, { dataParts: true });
          const inbox = new Inbox();
          const got: InboundMessage[] = [];
          let cut = 0;
          for (;;) {
            const segs = out.pullSegments(64 * 1024);
            if (segs === undefined) {
              const n = inbox.takeUnacked();
              if (n === 0) break;
              out.ack(n);
              continue;
            }
            const stream = Buffer.concat(segs);
            for (let p = 0; p < stream.length; ) {
              const n = cutSizes[cut++ % cutSizes.length] as number;
              decoder.push(Buffer.from(stream.subarray(p, p + n)));
              p += n;
              for (let f = decoder.next(); f !== undefined; f = decoder.next()) {
                const m = f.parts === undefined ? inbox.push(f.body) : inbox.pushParts(f.parts);
                if (m) got.push(m);
              }
            }
          }
          expect(got).toHaveLength(sent.length);
          for (let lane = 0; lane < 4; lane++) {
            const want = sent.filter((m) => m.lane === lane);
            const have = got.filter((m) => m.lane === lane);
            expect(have.map((m) => m.corrId)).toEqual(want.map((m) => m.corrId));
            have.forEach((m, i) => {
              expect(m.topic).toBe(`t${want[i]!.corrId}`);
              expect(m.payload.equals(want[i]!.bytes)).toBe(true);
            });
          }
          // No synchronous step of the receiver copied more than one fragment (header included).
          expect(inbox.longestCopyBytes).toBeLessThanOrEqual(fragmentBytes);
          expect(inbox.pendingBytes).toBe(0);
          expect(inbox.reservedBytes).toBe(0);
          expect(out.inFlightBytes).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it("sends the body of a gather payload as views of the caller's bytes: only headers and the head are copied", () => {
    const out = new Outbox(roomy());
    const head = Buffer.from('pubsub-frame-head');
    // Header (6) + topic (3) + head (17) + body = 16 full fragments and a last one of 30,000 bytes,
    // so every body slice is over ZERO_COPY_MIN_BYTES.
    const body = bulk(16 * 65536 + 30_000 - 26, 3);
    out.enqueue(Lane.TELEMETRY, MessageFlags.RAW, 0, 'big', new GatherPayload(head, body));
    let viewed = 0;
    let copied = 0;
    for (let segs = out.pullSegments(1 << 30, true); segs !== undefined; segs = out.pullSegments(1 << 30, true)) {
      for (const seg of segs) {
        if (seg.buffer === body.buffer) viewed += seg.length;
        else copied += seg.length;
      }
    }
    expect(viewed).toBe(body.length);
    // Per fragment: frame header (5) + DATA header (2), + 4 for the first; message header, topic and head once.
    const frames = Math.ceil((6 + 3 + head.length + body.length) / 65536);
    expect(copied).toBe(frames * 7 + 4 + 6 + 3 + head.length);
  });

  it('lets a control message through between two fragments of a 4 MiB gather body, and delivers it before the body is complete', () => {
    const out = new Outbox(roomy());
    const rx = new Receiver();
    const body = bulk(4 << 20, 9);
    out.enqueue(Lane.TELEMETRY, MessageFlags.RAW, 1, 'telemetry', new GatherPayload(Buffer.from([1, 2, 3]), body));
    rx.feed(out.pull(70_000)!);
    rx.feed(out.pull(70_000)!);
    expect(rx.frames.map((f) => f.fin)).toEqual([2, 0]);
    out.enqueue(Lane.CONTROL, 0, 2, 'control', Buffer.from('urgent'));
    rx.feed(out.pull(70_000)!);
    expect(rx.frames[2]).toMatchObject({ lane: Lane.CONTROL, fin: 1 });
    expect(rx.messages.map((m) => m.topic)).toEqual(['control']);
    const inbox = (rx as unknown as { inbox: Inbox }).inbox;
    // The control frame's pull had room for one more telemetry fragment behind it.
    expect(inbox.pendingBytes).toBe(3 * 65536);
    expect(inbox.reservedBytes).toBe(6 + 9 + 3 + body.length);
    rx.ack(out);
    for (let buf = out.pull(1 << 20); buf !== undefined; buf = out.pull(1 << 20)) {
      rx.feed(buf);
      rx.ack(out);
    }
    expect(rx.messages.map((m) => m.topic)).toEqual(['control', 'telemetry']);
    const big = rx.messages[1]!.payload;
    expect(big.subarray(0, 3)).toEqual(Buffer.from([1, 2, 3]));
    expect(big.subarray(3).equals(body)).toBe(true);
  });

  it('copies a 32 MiB message one fragment per step: no push blocks for the whole body', () => {
    const body = encodeMessageBody(MessageFlags.RAW, 1, 'bulk', bulk(32 << 20, 1));
    const frags = fragmentMessage(Lane.BULK, body, 65536);
    const inbox = new Inbox();
    let m: InboundMessage | undefined;
    for (const f of frags) m = inbox.push(f);
    expect(m!.payload.equals(body.subarray(6 + 4))).toBe(true);
    // The old reassembly copied all 32 MiB at the last fragment.
    expect(inbox.longestCopyBytes).toBe(65536);
  });

  it('refuses fragments out of sequence: a middle or last one with no first, a first inside a message, a wrong total', () => {
    const body = encodeMessageBody(0, 1, 'x', randomBytes(300));
    const frags = fragmentMessage(1, body, 100);
    const expectInvalid = (fn: () => unknown) => expect(fn).toThrow(expect.objectContaining({ code: ErrorCodes.FRAME_INVALID }));
    expectInvalid(() => new Inbox().push(frags[1]!));
    const twice = new Inbox();
    twice.push(frags[0]!);
    expectInvalid(() => twice.push(frags[0]!));
    const short = new Inbox();
    short.push(frags[0]!);
    // The last fragment right after the first: 200 of the 307 declared bytes.
    expectInvalid(() => short.push(frags.at(-1)!));
    const long = new Inbox();
    for (const f of frags.slice(0, -1)) long.push(f);
    expectInvalid(() => long.push(Buffer.concat([frags.at(-1)!, Buffer.alloc(1)])));
    // A first fragment holding the whole message, or nothing, is never sent.
    const whole = Buffer.concat([Buffer.from([1, 2, 0, 0, 0, body.length]), body]);
    expectInvalid(() => new Inbox().push(whole));
    expectInvalid(() => new Inbox().push(Buffer.from([1, 2, 0, 0, 1, 0])));
  });
});
