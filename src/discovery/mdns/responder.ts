/**
 * The responder half of the `mdns` strategy: the records this node publishes, answers to queries
 * for them (known-answer suppression, legacy unicast, at most one multicast of a record per second
 * per RFC 6762 §6), announcements at start and the goodbye at stop.
 */
import { lookup } from 'node:dns/promises';
import { isIPv4, isIPv6 } from 'node:net';
import { parseAddress } from '../../mesh/identity.js';
import { isLoopbackV4, unmapV4 } from '../net-interfaces.js';
import type { StrategyContext } from '../strategy.js';
import {
  AUTHORITATIVE_ANSWER,
  classMatches,
  type DnsPacket,
  type DnsRecord,
  lower,
  type MdnsNames,
  PROTOCOL_VERSION,
  type RemoteInfo,
  recordKey,
  SERVICES_NAME,
} from './records.js';

/** RFC 6762 §6: a record is multicast at most once per second on an interface. */
const MULTICAST_RATE_MS = 1000;
/** RFC 6762 §6.7: legacy unicast answers carry a TTL of at most 10 s. */
const LEGACY_TTL = 10;

/** The records one node publishes. */
export interface Published {
  servicesPtr: DnsRecord;
  ptr: DnsRecord;
  srv: DnsRecord;
  txt: DnsRecord;
  addrs: DnsRecord[];
}

/** The A/AAAA addresses peers should connect to: the node's advertised host. */
async function hostAddresses(ctx: StrategyContext, iface: string): Promise<{ v4: string[]; v6: string[] }> {
  const host = unmapV4(parseAddress(ctx.self.address)?.host ?? '');
  if (isIPv4(host)) return { v4: [host === '0.0.0.0' ? iface : host], v6: [] };
  if (isIPv6(host)) return host === '::' ? { v4: [iface], v6: [] } : { v4: [], v6: [host] };
  try {
    const found = await lookup(host, { all: true });
    const v4 = [...new Set(found.filter((a) => a.family === 4).map((a) => a.address))];
    const v6 = [...new Set(found.filter((a) => a.family === 6).map((a) => a.address))];
    if (v4.length + v6.length > 0) return { v4, v6 };
  } catch {
    // Falls back to the interface address.
  }
  return { v4: [iface], v6: [] };
}

/** The records this node publishes, for its advertised address. */
export async function buildRecords(ctx: StrategyContext, names: MdnsNames, domain: string, iface: string, ttl: number): Promise<Published> {
  const port = parseAddress(ctx.self.address)?.port ?? 0;
  const { v4, v6 } = await hostAddresses(ctx, iface);
  if (!isLoopbackV4(iface) && v4.some(isLoopbackV4)) {
    ctx.logger.warn({ address: ctx.self.address, interface: iface }, 'mdns: advertising a loopback address on a non-loopback interface: peers cannot reach it');
  }
  return {
    servicesPtr: { name: `${SERVICES_NAME}.${domain}`, type: 'PTR', ttl, data: names.service },
    ptr: { name: names.service, type: 'PTR', ttl, data: names.instance },
    srv: { name: names.instance, type: 'SRV', ttl, flush: true, data: { priority: 0, weight: 0, port, target: names.host } },
    txt: {
      name: names.instance,
      type: 'TXT',
      ttl,
      flush: true,
      data: [`cluster=${ctx.clusterName}`, `node=${ctx.self.name}`, `inc=${ctx.self.incarnation}`, `v=${PROTOCOL_VERSION}`].map((s) => Buffer.from(s)),
    },
    addrs: [
      ...v4.map((a) => ({ name: names.host, type: 'A', ttl, flush: true, data: a })),
      ...v6.map((a) => ({ name: names.host, type: 'AAAA', ttl, flush: true, data: a })),
    ],
  };
}

export class Responder {
  private readonly lastMulticast = new Map<string, number>();
  private readonly pending = new Map<string, { record: DnsRecord; earliest: number }>();
  private pendingTimer?: NodeJS.Timeout;
  private pendingAt = Number.POSITIVE_INFINITY;
  private stopped = false;

  constructor(
    private readonly names: MdnsNames,
    private readonly published: Published,
    private readonly send: (packet: DnsPacket, to: RemoteInfo | null) => Promise<void>,
    /** Runs a timer callback, counting a throw as malformed input rather than crashing. */
    private readonly guard: (fn: () => void) => void,
  ) {}

  private ownRecords(): DnsRecord[] {
    const p = this.published;
    return [p.servicesPtr, p.ptr, p.srv, p.txt, ...p.addrs];
  }

  /** Answers a query from an on-link source. */
  onQuery(packet: DnsPacket, rinfo: RemoteInfo, port: number): void {
    const p = this.published;
    if (this.stopped || (packet.opcode && packet.opcode !== 'QUERY')) return;
    const answers = new Map<string, DnsRecord>();
    const add = (r: DnsRecord) => answers.set(recordKey(r), r);
    for (const q of packet.questions ?? []) {
      if (!q || typeof q.name !== 'string' || !classMatches(q.class)) continue;
      const name = lower(q.name);
      const any = q.type === 'ANY';
      if (name === this.names.servicesLower && (any || q.type === 'PTR')) add(p.servicesPtr);
      if (name === this.names.serviceLower && (any || q.type === 'PTR')) add(p.ptr);
      if (name === this.names.instanceLower) {
        if (any || q.type === 'SRV') add(p.srv);
        if (any || q.type === 'TXT') add(p.txt);
      }
      if (name === this.names.hostLower) for (const r of p.addrs) if (any || q.type === r.type) add(r);
    }
    if (answers.size === 0) return;
    // Known-answer suppression (RFC 6762 §7.1): the querier has it with at least half our TTL.
    for (const known of packet.answers ?? []) {
      if (!known || typeof known.name !== 'string') continue;
      const key = recordKey(known);
      const ours = answers.get(key);
      if (ours && (known.ttl ?? 0) >= (ours.ttl ?? 0) / 2) answers.delete(key);
    }
    if (answers.size === 0) return;
    if (rinfo.port !== port) {
      // Legacy unicast (RFC 6762 §6.7): straight back to the querier, its ID and questions echoed.
      const all = [...answers.values()];
      const legacy = (r: DnsRecord): DnsRecord => ({ ...r, flush: false, ttl: Math.min(r.ttl ?? LEGACY_TTL, LEGACY_TTL) });
      void this.send(
        {
          type: 'response',
          id: packet.id ?? 0,
          flags: AUTHORITATIVE_ANSWER,
          questions: (packet.questions ?? []).map((q) => ({ name: q.name, type: q.type, class: 'IN' })),
          answers: all.map(legacy),
          additionals: this.additionalsFor(all).map(legacy),
        },
        { address: rinfo.address, port: rinfo.port },
      );
      return;
    }
    // Shared records (PTR) may be answered by many responders: RFC 6762 §6 asks for a 20-120 ms delay.
    const shared = [...answers.values()].some((r) => r.type === 'PTR');
    this.queueMulticast([...answers.values()], shared ? 20 + Math.random() * 100 : 0);
  }

  /** RFC 6763 §12: with a PTR, its SRV, TXT and addresses; with an SRV, its addresses. */
  private additionalsFor(answers: DnsRecord[]): DnsRecord[] {
    const p = this.published;
    const have = new Set(answers.map(recordKey));
    const out = new Map<string, DnsRecord>();
    const add = (r: DnsRecord) => {
      const k = recordKey(r);
      if (!have.has(k)) out.set(k, r);
    };
    if (have.has(recordKey(p.ptr))) [p.srv, p.txt, ...p.addrs].forEach(add);
    if (have.has(recordKey(p.srv))) p.addrs.forEach(add);
    return [...out.values()];
  }

  /** Queues records for a multicast response, no earlier than `delayMs` from now and 1 s after each one's last multicast. */
  private queueMulticast(records: DnsRecord[], delayMs: number): void {
    const now = Date.now();
    for (const r of records) {
      const key = recordKey(r);
      const earliest = Math.max(now + delayMs, (this.lastMulticast.get(key) ?? Number.NEGATIVE_INFINITY) + MULTICAST_RATE_MS);
      const prev = this.pending.get(key);
      this.pending.set(key, { record: r, earliest: prev ? Math.min(prev.earliest, earliest) : earliest });
    }
    this.armPending();
  }

  private armPending(): void {
    if (this.pending.size === 0 || this.stopped) return;
    const at = Math.min(...[...this.pending.values()].map((p) => p.earliest));
    if (this.pendingTimer && at >= this.pendingAt) return;
    clearTimeout(this.pendingTimer);
    this.pendingAt = at;
    this.pendingTimer = setTimeout(
      () => {
        this.pendingTimer = undefined;
        this.pendingAt = Number.POSITIVE_INFINITY;
        this.guard(() => this.flushPending());
      },
      Math.max(0, at - Date.now()),
    );
    this.pendingTimer.unref();
  }

  private flushPending(): void {
    const now = Date.now();
    const ready: DnsRecord[] = [];
    for (const [key, p] of this.pending) {
      if (p.earliest > now + 5) continue;
      ready.push(p.record);
      this.pending.delete(key);
      this.lastMulticast.set(key, now);
    }
    if (ready.length > 0) {
      void this.send({ type: 'response', id: 0, flags: AUTHORITATIVE_ANSWER, questions: [], answers: ready, additionals: this.additionalsFor(ready) }, null);
    }
    this.armPending();
  }

  /** Multicasts every published record (an unsolicited announcement). */
  announce(): void {
    if (this.stopped) return;
    this.queueMulticast(this.ownRecords(), 0);
  }

  /** Stops answering: pending answers are dropped, the timer cleared. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.pendingTimer);
    this.pendingTimer = undefined;
    this.pending.clear();
  }

  /** Multicasts the goodbye (TTL 0) of this node's instance; waits at most 500 ms. */
  async sendGoodbye(): Promise<void> {
    const p = this.published;
    // The shared service-enumeration PTR and the host's addresses stay: other nodes may publish them too.
    const bye = [p.ptr, p.srv, p.txt].map((r) => ({ ...r, ttl: 0 }));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => {
      timer = setTimeout(r, 500);
      timer.unref();
    });
    await Promise.race([this.send({ type: 'response', id: 0, flags: AUTHORITATIVE_ANSWER, questions: [], answers: bye }, null), timeout]);
    clearTimeout(timer);
  }
}
