/**
 * The evidence an `mdns` strategy weighs before it lets a record expire: did this node's own
 * query come back (multicast loopback, so its receive path worked), was any other responder
 * heard around then, and did a socket error happen since. Silence is the owner's only when all
 * three say so; otherwise the record is held (see browser-cache.ts).
 */
import { isIPv4 } from 'node:net';
import { ipv4ToInt, unmapV4 } from '../net-interfaces.js';
import { type DnsPacket, fingerprint, type RemoteInfo } from './records.js';
import type { MdnsCounters } from './stats.js';

/** How long after a query its echo, and other responders' packets, count as evidence about the answers to it. */
export const EVIDENCE_WINDOW_MS = 2000;
/** Recent evidence kept (echo send times, other responders' arrival times). */
const EVIDENCE_MAX = 512;
const EVIDENCE_AGE_MS = 180_000;
/** A packet sent and not heard back within this long never will be (a deaf socket must not grow the list). */
const ECHO_WAIT_MS = 10_000;

/** Why the silence of a record's owner says nothing: this node's own packets did not come back, or nobody else was heard. */
export type Doubt = 'echo' | 'others';

/** Appends a time to a bounded list of recent ones. */
function pushRecent(list: number[], t: number): void {
  list.push(t);
  if (list.length > EVIDENCE_MAX) list.splice(0, list.length - EVIDENCE_MAX);
  while (list.length > 0 && (list[0] as number) < t - EVIDENCE_AGE_MS) list.shift();
}

/** Which on-link sources count: the interface's subnet. */
export class LinkFilter {
  private readonly base: number;
  private readonly mask: number;
  constructor(iface: string, netmask: string) {
    this.mask = ipv4ToInt(netmask);
    this.base = (ipv4ToInt(iface) & this.mask) >>> 0;
  }

  /** Whether `address` is in the interface's subnet. */
  onLink(address: string): boolean {
    const a = unmapV4(address);
    if (!isIPv4(a)) return false;
    return (ipv4ToInt(a) & this.mask) >>> 0 === this.base;
  }
}

export class ReceiveEvidence {
  /** Multicast packets sent and not heard back yet, by fingerprint: their send times (the last 10 s). */
  private readonly sentPackets = new Map<string, number[]>();
  /** Send times of this node's packets heard back, and arrival times of other responders' packets. */
  private readonly echoedSends: number[] = [];
  private readonly othersHeard: number[] = [];
  private lastErrorAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly iface: string,
    private readonly port: number,
    private readonly link: LinkFilter,
    private readonly counters: MdnsCounters,
  ) {}

  /** Remembers a multicast packet, to recognise it when multicast loopback brings it back. */
  noteSent(packet: DnsPacket): void {
    const now = Date.now();
    const fp = fingerprint(packet);
    const times = this.sentPackets.get(fp) ?? [];
    while (times.length > 0 && (times[0] as number) < now - ECHO_WAIT_MS) times.shift();
    times.push(now);
    this.sentPackets.set(fp, times);
    if (this.sentPackets.size > 64) {
      for (const [k, t] of this.sentPackets) {
        while (t.length > 0 && (t[0] as number) < now - ECHO_WAIT_MS) t.shift();
        if (t.length === 0) this.sentPackets.delete(k);
      }
    }
  }

  /** Sorts an arriving packet into this node's own (heard back) or another responder's. */
  noteArrival(packet: DnsPacket, rinfo: RemoteInfo): void {
    const now = Date.now();
    const from = unmapV4(rinfo.address);
    if (from === this.iface && rinfo.port === this.port) {
      const fp = fingerprint(packet);
      // Loopback brings a packet back within a moment: this is the latest identical one sent, and
      // earlier ones not heard back by now were lost (to a deaf socket, say).
      const sentAt = this.sentPackets.get(fp)?.at(-1);
      this.sentPackets.delete(fp);
      if (sentAt !== undefined) {
        this.counters.ownPacketsReceived++;
        pushRecent(this.echoedSends, sentAt);
        return;
      }
    }
    if (this.link.onLink(from)) pushRecent(this.othersHeard, now);
  }

  /** A socket error or failed send: nothing asked before it can be judged by its silence. */
  noteError(): void {
    this.lastErrorAt = Date.now();
  }

  /**
   * Why the silence of a record asked for at `askedAt` says nothing about its owner, if it does
   * not: `echo` when this node's own packets sent around then did not come back (or the socket is
   * closed, or a socket error came after), so it may simply not have received the answer; `others`
   * when no other responder was heard around then either, so multicast from other hosts may not
   * arrive, or every peer is gone without a goodbye, which this node cannot tell apart.
   */
  doubt(askedAt: number, socketOpen: boolean): Doubt | undefined {
    const around = (t: number) => t >= askedAt && t <= askedAt + EVIDENCE_WINDOW_MS;
    if (!socketOpen || this.lastErrorAt >= askedAt || !this.echoedSends.some(around)) return 'echo';
    if (!this.othersHeard.some(around)) return 'others';
    return undefined;
  }
}
