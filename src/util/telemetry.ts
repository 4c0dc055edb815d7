/**
 * Telemetry events go through `node:diagnostics_channel`. Channel names are stable and
 * documented in docs/telemetry.md; subscribe with `diagnostics_channel.subscribe(name, fn)`.
 */
import { type Channel, channel } from 'node:diagnostics_channel';

export const TelemetryChannels = {
  /** `{ node, member }` — a member came up. */
  memberUp: 'foundation:member:up',
  /** `{ node, member, reason }` — a member went down. */
  memberDown: 'foundation:member:down',
  /** `{ node, member, phi }` — the failure detector suspects a member. */
  memberSuspect: 'foundation:member:suspect',
  /** `{ node, member }` — a suspected member answered again. */
  memberAlive: 'foundation:member:alive',
  /** `{ node, remote, address?, reason, message }` — a handshake failed (`address`: the dialed address, for outbound links). */
  handshakeFailed: 'foundation:link:handshake-failed',
  /** `{ node, peer, remote, reason }` — a member's link closed (`reason` is the member's DownReason). */
  linkClosed: 'foundation:link:closed',
  /** `{ node, topology, strategy, peer, durationMs, result: 'ok' | 'error', error? }` — a discovery connect attempt ended. */
  discoveryConnect: 'foundation:discovery:connect',
  /** `{ node, topology, strategy, peer, result }` — a discovery strategy disconnected a node. */
  discoveryDisconnect: 'foundation:discovery:disconnect',
  /** `{ node, topology, strategy, error }` — a discovery lookup failed; membership is kept. */
  discoveryLookupError: 'foundation:discovery:lookup-error',
  /** `{ node, topic, pattern, group?, error }` — a pubsub subscription handler threw or rejected; it stays subscribed. */
  pubsubHandlerError: 'foundation:pubsub:handler-error',
  /** `{ node, topic, pattern, group?, policy }` — a subscriber's queue was full: its oldest message was dropped (`drop-oldest`) or the subscription ended (`disconnect`). */
  pubsubOverflow: 'foundation:pubsub:overflow',
  /** `{ node, from, reason }` — a published frame from a peer was dropped (malformed, undecodable). */
  pubsubFrameDropped: 'foundation:pubsub:frame-dropped',
} as const;

const channels = new Map<string, Channel>();

/** Publishes only when someone listens, so telemetry costs nothing otherwise. */
export function publish(name: string, message: object): void {
  let ch = channels.get(name);
  if (!ch) {
    ch = channel(name);
    channels.set(name, ch);
  }
  if (ch.hasSubscribers) ch.publish(message);
}
