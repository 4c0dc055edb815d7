/**
 * What a link replacement relies on in the outbox: queued messages move to the new link's
 * outbox whole and in order (a partly written one too), and what was written but not
 * acknowledged is counted per lane.
 */
import { describe, expect, it } from 'vitest';
import { FrameDecoder, FrameType } from '../../src/mesh/framing.js';
import { Inbox } from '../../src/mesh/inbox.js';
import { Outbox } from '../../src/mesh/lanes.js';
import type { InboundMessage } from '../../src/mesh/message.js';

function drain(out: Outbox, inbox = new Inbox()): InboundMessage[] {
  const decoder = new FrameDecoder(16 << 20);
  const got: InboundMessage[] = [];
  for (let buf = out.pull(1 << 20, true); buf; buf = out.pull(1 << 20, true)) {
    decoder.push(buf);
    for (let f = decoder.next(); f; f = decoder.next()) {
      expect(f.type).toBe(FrameType.DATA);
      const m = inbox.push(f.body);
      if (m) got.push(m);
    }
  }
  return got;
}

describe('outbox carry-over', () => {
  it('moves every queued message, a partly written one whole, in order per lane', () => {
    const old = new Outbox({ fragmentBytes: 1024 });
    for (let i = 0; i < 5; i++) old.enqueue(1, 0, 0, 'events', Buffer.from(`e${i}`));
    old.enqueue(3, 0, 0, 'bulk', Buffer.alloc(5000, 7));
    old.enqueue(3, 0, 0, 'bulk', Buffer.from('after-big'));
    // One pull writes the events and the first fragment of the big bulk message.
    const first = old.pull(1200);
    expect(first).toBeDefined();
    const fresh = new Outbox({ fragmentBytes: 1024 });
    const moved = old.moveQueuedTo(fresh);
    expect(old.pendingMessages).toBe(0);
    expect(old.queuedBytes(3)).toBe(0);
    const got = drain(fresh);
    const bodies = got.map((m) => `${m.lane}:${m.payload.length > 100 ? `big${m.payload.length}` : m.payload.toString()}`);
    // Whatever the first pull did not finish is here, whole, in order.
    const expectedTail = ['1:e0', '1:e1', '1:e2', '1:e3', '1:e4', '3:big5000', '3:after-big'].slice(-bodies.length);
    expect(bodies).toEqual(expectedTail);
    expect(bodies).toContain('3:big5000');
    expect(moved[3]?.messages).toBe(2);
    expect(moved.reduce((n, t) => n + t.messages, 0)).toBe(got.length);
  });

  it('counts written and unacknowledged messages per lane, and forgets them once acknowledged', () => {
    const out = new Outbox();
    for (let i = 0; i < 3; i++) out.enqueue(1, 0, 0, 't', Buffer.from('x'));
    out.enqueue(2, 0, 0, 't', Buffer.from('y'));
    out.enqueue(0, 0, 0, 't', Buffer.from('control'));
    const inbox = new Inbox();
    drain(out, inbox);
    const un = out.unacknowledged();
    expect(un[0]).toEqual({ messages: 0, bytes: 0 }); // control is not acknowledged by the protocol
    expect(un[1]?.messages).toBe(3);
    expect(un[2]?.messages).toBe(1);
    // The receiver acknowledges what it consumed: nothing is in doubt any more.
    out.ack(inbox.takeUnacked());
    expect(out.unacknowledged().every((t) => t.messages === 0 && t.bytes === 0)).toBe(true);
  });

  it('keeps counting past its initial capacity', () => {
    const out = new Outbox({ windowBytes: Number.POSITIVE_INFINITY });
    for (let i = 0; i < 5000; i++) out.enqueue(1, 0, 0, 't', Buffer.from('x'));
    drain(out);
    expect(out.unacknowledged()[1]?.messages).toBe(5000);
  });
});
