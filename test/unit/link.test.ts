// Links over real loopback sockets: flow control (the send window and ACK frames) end to end.
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, FrameError } from '../../src/errors.js';
import { encodeAck, encodeFrame, FrameType } from '../../src/mesh/framing.js';
import type { HandshakeResult } from '../../src/mesh/handshake.js';
import { DEFAULT_WINDOW_BYTES, Lane, type OutboxOptions } from '../../src/mesh/lanes.js';
import { Link, type LinkCloseCause } from '../../src/mesh/link.js';
import { encodeMessageBody, fragmentMessage, type InboundMessage, MessageFlags } from '../../src/mesh/message.js';

const MiB = 1024 * 1024;
const servers: Server[] = [];
const sockets: Socket[] = [];

afterEach(() => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
});

/** Both ends of one TCP connection on 127.0.0.1: [dialer, acceptor]. */
async function socketPair(): Promise<[Socket, Socket]> {
  const server = createServer();
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [peer] = await accepted;
  sockets.push(client, peer);
  return [client, peer];
}

const HS = {
  peer: { name: 'peer', incarnation: 1, address: '127.0.0.1:1', cluster: 'test', hidden: false, heartbeatPort: 1 },
  sessionKey: Buffer.alloc(32),
  linkId: '0000000000000000',
  initiator: 'peer',
} as unknown as HandshakeResult;

interface Ends {
  link: Link;
  messages: InboundMessage[];
  closes: LinkCloseCause[];
  /** Called on every message, after it is recorded. */
  onMessage?: (m: InboundMessage) => void;
}

function open(socket: Socket, direction: 'inbound' | 'outbound', outbox: Partial<OutboxOptions> = {}): Ends {
  const link = new Link(socket, direction, { maxFrameBytes: 2 * MiB, maxMessageBytes: 64 * MiB, outbox, handshakeTimeoutMs: 1000 });
  const ends: Ends = { link, messages: [], closes: [] };
  link.activate(HS, {
    onMessage: (m) => {
      ends.messages.push(m);
      ends.onMessage?.(m);
    },
    onLeave: () => {},
    onDrain: () => {},
    onClose: (cause) => ends.closes.push(cause),
  });
  return ends;
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

function bulkPayload(id: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4096) b[i] = (id + i / 4096) & 0xff;
  b.writeUInt32BE(id, 0);
  return b;
}

describe('Link flow control over a real socket', () => {
  it('a control message overtakes more than 8 MiB of queued bulk data within a few ms', async () => {
    const [a, b] = await socketPair();
    const tx = open(a, 'outbound');
    const rx = open(b, 'inbound');
    const count = 24;
    for (let i = 0; i < count; i++) tx.link.send(Lane.BULK, 0, i, 'bulk', bulkPayload(i, MiB));
    await until(() => rx.messages.length >= 2, 'the first bulk messages');

    // The transfer is in full swing: send a control message behind everything still queued.
    const queuedAtSend = tx.link.outbox.queuedBytes(Lane.BULK);
    const bulkAtSend = rx.messages.length;
    const readAtSend = b.bytesRead;
    let arrived: { ms: number; bulkBefore: number; read: number } | undefined;
    const t0 = performance.now();
    rx.onMessage = (m) => {
      if (m.lane === Lane.CONTROL) arrived = { ms: performance.now() - t0, bulkBefore: rx.messages.length - 1, read: b.bytesRead - readAtSend };
    };
    tx.link.send(Lane.CONTROL, 0, 999, 'ping', Buffer.from('ping'));
    await until(() => arrived !== undefined, 'the control message');
    expect(queuedAtSend).toBeGreaterThanOrEqual(8 * MiB);
    // Only what was in flight (one window) was ahead of it: the receiver read at most that, plus
    // the rest of the socket read that carried the control frame. (Without the window, the
    // socket buffers of both ends hold several MB ahead of it.)
    expect(arrived!.read).toBeLessThanOrEqual(DEFAULT_WINDOW_BYTES + 128 * 1024);
    expect(arrived!.bulkBefore - bulkAtSend).toBeLessThanOrEqual(1);
    // Generous for a loaded CI machine; typically ~1 ms.
    expect(arrived!.ms).toBeLessThan(50);

    await until(() => rx.messages.length === count + 1, 'all bulk messages');
    const bulk = rx.messages.filter((m) => m.lane === Lane.BULK);
    expect(bulk.map((m) => m.corrId)).toEqual([...Array(count).keys()]);
    for (const m of bulk) expect(m.payload.equals(bulkPayload(m.corrId, MiB))).toBe(true);
    // Everything was acknowledged, including the tail under half a window.
    await until(() => tx.link.outbox.inFlightBytes === 0, 'the last ACK');
    expect(tx.closes).toEqual([]);
    expect(rx.closes).toEqual([]);
  });

  it('never has more than the window in flight, and never stalls on a tiny window', async () => {
    const [a, b] = await socketPair();
    const windowBytes = 50_000;
    const tx = open(a, 'outbound', { windowBytes, fragmentBytes: 16_384 });
    const rx = open(b, 'inbound', { windowBytes, fragmentBytes: 16_384 });
    let maxInFlight = 0;
    const timer = setInterval(() => {
      maxInFlight = Math.max(maxInFlight, tx.link.outbox.inFlightBytes);
    }, 0);
    try {
      const sent: Buffer[] = [];
      for (let i = 0; i < 200; i++) {
        const p = bulkPayload(i, i % 10 === 0 ? 300_000 : 100 + i);
        sent.push(p);
        tx.link.send(i % 3 === 0 ? Lane.BULK : Lane.EVENTS, 0, i, 't', p);
      }
      // And a single message smaller than half a window: acked by the end-of-read ACK.
      await until(() => rx.messages.length === 200, 'all messages');
      await until(() => tx.link.outbox.inFlightBytes === 0, 'the last ACK');
      tx.link.send(Lane.EVENTS, 0, 1000, 't', Buffer.alloc(10));
      await until(() => rx.messages.length === 201 && tx.link.outbox.inFlightBytes === 0, 'the small message and its ACK');
      for (const m of rx.messages.slice(0, 200)) expect(m.payload.equals(sent[m.corrId] as Buffer)).toBe(true);
    } finally {
      clearInterval(timer);
    }
    // The first frame may pass a window smaller than itself; never more than that.
    expect(maxInFlight).toBeLessThanOrEqual(windowBytes + 16_384 + 7);
  });

  it('a graceful close sends everything queued, past the window', async () => {
    const [a, b] = await socketPair();
    const tx = open(a, 'outbound', { windowBytes: 64 * 1024 });
    const rx = open(b, 'inbound', { windowBytes: 64 * 1024 });
    for (let i = 0; i < 4; i++) tx.link.send(Lane.BULK, 0, i, 'bulk', bulkPayload(i, MiB));
    tx.link.close('done', true);
    await until(() => rx.closes.length > 0, 'the close');
    expect(rx.messages.map((m) => m.corrId)).toEqual([0, 1, 2, 3]);
  });

  it.each([
    ['a short ACK body', encodeFrame(FrameType.ACK, Buffer.alloc(3, 1))],
    ['an ACK of 0 bytes', encodeFrame(FrameType.ACK, Buffer.alloc(4))],
    ['an ACK of more than was sent', encodeAck(100)],
  ])('closes the link as a protocol error on %s', async (_what, frame) => {
    const [a, b] = await socketPair();
    const rx = open(b, 'inbound');
    a.write(frame);
    await until(() => rx.closes.length > 0, 'the close');
    const cause = rx.closes[0]!;
    expect(cause.kind).toBe('protocol-error');
    const error = (cause as { error: Error }).error;
    expect(error).toBeInstanceOf(FrameError);
    expect((error as FrameError).code).toBe(ErrorCodes.FRAME_INVALID);
    expect(rx.link.isClosed).toBe(true);
  });

  it('dispatches a control frame read together with the fragments of a large message before copying them, and delivers the message whole, then a LEAVE behind it', async () => {
    const [a, b] = await socketPair();
    const rx = open(b, 'inbound');
    let leftAfter = -1;
    (rx.link as unknown as { events: { onLeave: () => void } }).events.onLeave = () => {
      leftAfter = rx.messages.length;
    };
    const big = bulkPayload(7, 2 * MiB);
    const frames = [
      ...fragmentMessage(Lane.BULK, encodeMessageBody(MessageFlags.RAW, 1, 'bulk', big), 65536).map((f) => encodeFrame(FrameType.DATA, f)),
      ...fragmentMessage(Lane.CONTROL, encodeMessageBody(0, 2, 'ping', Buffer.from('ping'))).map((f) => encodeFrame(FrameType.DATA, f)),
      encodeFrame(FrameType.LEAVE, Buffer.alloc(0)),
    ];
    // One write: the receiver reads the 2 MiB message and the control frame in the same burst.
    a.write(Buffer.concat(frames));
    await until(() => leftAfter >= 0, 'the LEAVE');
    // The control message went first, although its bytes came after the whole bulk message.
    expect(rx.messages.map((m) => m.topic)).toEqual(['ping', 'bulk']);
    expect(rx.messages[1]!.payload.equals(big)).toBe(true);
    // The LEAVE was handled after the message received before it.
    expect(leftAfter).toBe(2);
    expect(rx.closes).toEqual([]);
  });

  it('keeps the frames a peer sends while this side still runs its handshake (what layers send a new member), up to a bound, then closes the link', async () => {
    const frameOf = (i: number) => fragmentMessage(Lane.CONTROL, encodeMessageBody(0, i + 1, `t${i}`, Buffer.alloc(100)))[0] as Buffer;
    // 40 frames (a full map from each of the layers and more) before activation: all delivered, in order.
    const [a, b] = await socketPair();
    const link = new Link(b, 'inbound', { maxFrameBytes: 2 * MiB, maxMessageBytes: 64 * MiB, outbox: {}, handshakeTimeoutMs: 5000 });
    a.write(Buffer.concat(Array.from({ length: 40 }, (_, i) => encodeFrame(FrameType.DATA, frameOf(i)))));
    await new Promise((r) => setTimeout(r, 50));
    const got: string[] = [];
    const closes: LinkCloseCause[] = [];
    link.activate(HS, { onMessage: (m) => got.push(m.topic), onLeave: () => {}, onDrain: () => {}, onClose: (c) => closes.push(c) });
    await until(() => got.length === 40, '40 early messages');
    expect(got).toEqual(Array.from({ length: 40 }, (_, i) => `t${i}`));
    expect(closes).toEqual([]);
    // Past the bound (64 frames) before the handshake ends: the link closes.
    const [c, d] = await socketPair();
    new Link(d, 'inbound', { maxFrameBytes: 2 * MiB, maxMessageBytes: 64 * MiB, outbox: {}, handshakeTimeoutMs: 5000 });
    const closed = once(c, 'close');
    c.write(Buffer.concat(Array.from({ length: 80 }, (_, i) => encodeFrame(FrameType.DATA, frameOf(i)))));
    await closed;
  });
});
