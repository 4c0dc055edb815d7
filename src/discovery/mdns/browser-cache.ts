/**
 * The browser half of the `mdns` strategy: it asks for the service type (at once, then after 1 s,
 * 2 s, 4 s... up to `queryIntervalMs`), caches the records of the answers, asks for what an
 * instance still lacks, refreshes records at 80-95 % of their TTL (RFC 6762 §5.2), and turns the
 * cache into the peer set it reports. A record at the end of its TTL expires only on evidence
 * that its owner went quiet (see evidence.ts); otherwise it is held: kept, and asked for again.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { formatAddress } from '../../mesh/identity.js';
import { LogOnce } from '../../util/logger.js';
import type { StrategyContext } from '../strategy.js';
import { type Doubt, EVIDENCE_WINDOW_MS, type LinkFilter, type ReceiveEvidence } from './evidence.js';
import { type DnsPacket, type DnsQuestion, type DnsRecord, isInt, lower, type MdnsNames, parseTxt, recordClassOk, SUPPORTED_VERSIONS } from './records.js';
import type { MdnsCounters } from './stats.js';

/** Caps that keep a hostile link from growing the caches without bound. */
const MAX_INSTANCES = 2048;
const MAX_ADDRS_PER_HOST = 16;
const MAX_RESOLVE_TRIES = 8;
export const TICK_MS = 250;
const KNOWN_ANSWER_BUDGET = 1200;
/** A record kept past its TTL is asked for again after this long (growing per hold), between these bounds. */
const HOLD_MIN_MS = 1000;
const HOLD_BASE_MAX_MS = 10_000;
const HOLD_MAX_MS = 60_000;

interface Cached {
  receivedAt: number;
  ttlMs: number;
  expiresAt: number;
  /** Refresh queries sent for this record (RFC 6762 §5.2: at 80, 85, 90 and 95 % of the TTL). */
  refreshStep: number;
  refreshJitter: number;
  /** When this node last asked for this record (refresh, or a query after a hold). */
  askedAt?: number;
  /** Times it was kept past its TTL for want of evidence that its owner went quiet. */
  holds: number;
}

interface PtrEntry extends Cached {
  instance: string;
}
interface SrvEntry extends Cached {
  target: string;
  port: number;
}
interface TxtEntry extends Cached {
  kv: Map<string, string>;
  inc: number | undefined;
}
interface AddrEntry extends Cached {
  address: string;
  family: 4 | 6;
}

function cached(now: number, ttlSeconds: number): Cached {
  const ttlMs = Math.min(ttlSeconds, 86_400) * 1000;
  return { receivedAt: now, ttlMs, expiresAt: now + ttlMs, refreshStep: 0, refreshJitter: Math.random() * 0.02, holds: 0 };
}

/** What the browser needs from the strategy around it. */
export interface BrowserDeps {
  ctx: StrategyContext;
  names: MdnsNames;
  counters: MdnsCounters;
  evidence: ReceiveEvidence;
  link: LinkFilter;
  /** `<interface>:<port>`, for messages. */
  where: string;
  queryIntervalMs: number;
  send(packet: DnsPacket, to: null): Promise<void>;
  socketOpen(): boolean;
  /** Runs a timer callback, counting a throw as malformed input rather than crashing. */
  guard(fn: () => void): void;
}

export class Browser {
  private readonly ptrs = new Map<string, PtrEntry>();
  private readonly srvs = new Map<string, SrvEntry>();
  private readonly txts = new Map<string, TxtEntry>();
  private readonly addrs = new Map<string, Map<string, AddrEntry>>();
  private readonly resolving = new Map<string, { at: number; tries: number }>();

  private readonly questions = new Map<string, DnsQuestion>();
  private questionTimer?: NodeJS.Timeout;
  private browseTimer?: NodeJS.Timeout;
  private browseDelayMs = 1000;
  private tickTimer?: NodeJS.Timeout;
  private stopped = false;

  private lastReported: string | undefined;
  private peerCount = 0;
  /** Hold conditions currently reported (`echo`, `others`), so each is reported once while it lasts. */
  private readonly conditions = new LogOnce();
  /** The next browse query goes without known answers, so that every responder answers it. */
  private askEveryone = false;
  /** Some instance lacked a record at the last recompute: the tick retries its resolution. */
  private incomplete = false;

  constructor(private readonly d: BrowserDeps) {}

  /** Cached service instances (any cluster, self included). */
  get instances(): number {
    return this.ptrs.size;
  }

  /** Peers currently reported. */
  get peers(): number {
    return this.peerCount;
  }

  /** Reports the (empty) peer set, sends the first browse query and starts the timers. */
  start(): void {
    this.report(new Set());
    this.sendBrowseQuery();
    this.scheduleBrowse();
    this.tickTimer = setInterval(() => this.d.guard(() => this.tick()), TICK_MS);
    this.tickTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.browseTimer);
    clearTimeout(this.questionTimer);
    clearInterval(this.tickTimer);
    this.browseTimer = this.questionTimer = this.tickTimer = undefined;
    this.questions.clear();
  }

  // -- querier -----------------------------------------------------------------

  private queueQuestion(name: string, type: string): void {
    this.questions.set(`${type}|${lower(name)}`, { name, type, class: 'IN' });
    if (this.questionTimer || this.stopped) return;
    // Coalesces the questions of one burst of packets into one query.
    this.questionTimer = setTimeout(() => {
      this.questionTimer = undefined;
      this.d.guard(() => this.flushQuestions());
    }, 10);
    this.questionTimer.unref();
  }

  private flushQuestions(): void {
    if (this.questions.size === 0 || this.stopped) return;
    const questions = [...this.questions.values()];
    this.questions.clear();
    const asksPtr = questions.some((q) => q.type === 'PTR' && lower(q.name) === this.d.names.serviceLower);
    const known = asksPtr && !this.askEveryone ? this.knownAnswers() : [];
    if (asksPtr) this.askEveryone = false;
    void this.d.send({ type: 'query', id: 0, flags: 0, questions, answers: known }, null);
  }

  /** The PTRs this node already holds with more than half their TTL left (RFC 6762 §7.1). */
  private knownAnswers(): DnsRecord[] {
    const now = Date.now();
    const out: DnsRecord[] = [];
    let budget = KNOWN_ANSWER_BUDGET;
    for (const e of this.ptrs.values()) {
      const left = e.expiresAt - now;
      // A record kept past its TTL is in doubt: its owner must answer for it.
      if (e.holds > 0 || left <= e.ttlMs / 2) continue;
      budget -= e.instance.length + 14;
      if (budget < 0) break; // The rest is simply not claimed: responders send it.
      out.push({ name: this.d.names.service, type: 'PTR', ttl: Math.floor(left / 1000), data: e.instance });
    }
    return out;
  }

  private sendBrowseQuery(): void {
    this.queueQuestion(this.d.names.service, 'PTR');
  }

  private scheduleBrowse(): void {
    if (this.stopped) return;
    this.browseTimer = setTimeout(() => {
      this.d.guard(() => this.sendBrowseQuery());
      this.browseDelayMs = Math.min(this.browseDelayMs * 2, this.d.queryIntervalMs);
      this.scheduleBrowse();
    }, this.browseDelayMs);
    this.browseTimer.unref();
  }

  // -- cache -------------------------------------------------------------------

  /** Takes the records of a response from an on-link responder into the cache. */
  onResponse(packet: DnsPacket): void {
    if (this.stopped) return;
    if ((packet.rcode && packet.rcode !== 'NOERROR') || (packet.opcode && packet.opcode !== 'QUERY')) return;
    const counters = this.d.counters;
    const records = [...(packet.answers ?? []), ...(packet.additionals ?? [])].filter(
      (r): r is DnsRecord => !!r && typeof r.name === 'string' && typeof r.type === 'string' && recordClassOk(r.class),
    );
    const now = Date.now();
    const serviceLower = this.d.names.serviceLower;
    const suffix = `.${serviceLower}`;
    const isInstance = (n: string) => n.endsWith(suffix) && n.length > suffix.length;
    let changed = false;

    // An older incarnation's late packet (or goodbye) must not undo a newer one's records.
    const stale = new Set<string>();
    for (const r of records) {
      const name = lower(r.name);
      if (r.type !== 'TXT' || !isInstance(name)) continue;
      const inc = Number(parseTxt(r.data)?.get('inc'));
      const have = this.txts.get(name);
      if (have?.inc !== undefined && Number.isFinite(inc) && inc < have.inc && have.expiresAt > now) stale.add(name);
    }

    for (const r of records) {
      const name = lower(r.name);
      const ttl = isInt(r.ttl) && r.ttl >= 0 ? r.ttl : undefined;
      if (ttl === undefined) {
        counters.invalidRecords++;
        continue;
      }
      if (r.type === 'PTR' && name === serviceLower) {
        if (typeof r.data !== 'string' || !isInstance(lower(r.data))) {
          counters.invalidRecords++;
          continue;
        }
        const inst = lower(r.data);
        if (stale.has(inst)) continue;
        if (ttl === 0) {
          if (this.ptrs.delete(inst)) counters.goodbyesReceived++;
          changed = true;
        } else if (this.ptrs.has(inst) || this.ptrs.size < MAX_INSTANCES) {
          changed ||= !this.ptrs.has(inst);
          this.ptrs.set(inst, { instance: r.data, ...cached(now, ttl) });
          this.resolving.delete(`PTR|${inst}`);
        }
      } else if (r.type === 'SRV' && isInstance(name)) {
        if (stale.has(name)) continue;
        const d = r.data as { port?: unknown; target?: unknown } | undefined;
        if (ttl === 0) {
          if (this.srvs.delete(name)) counters.goodbyesReceived++;
          changed = true;
          continue;
        }
        if (!d || !isInt(d.port) || d.port < 1 || d.port > 65535 || typeof d.target !== 'string' || d.target.length === 0) {
          counters.invalidRecords++;
          continue;
        }
        if (!this.srvs.has(name) && this.srvs.size >= MAX_INSTANCES) continue;
        const prev = this.srvs.get(name);
        const target = lower(d.target);
        changed ||= !prev || prev.port !== d.port || prev.target !== target;
        this.srvs.set(name, { target, port: d.port, ...cached(now, ttl) });
        this.resolving.delete(`SRV|${name}`);
      } else if (r.type === 'TXT' && isInstance(name)) {
        if (stale.has(name)) continue;
        if (ttl === 0) {
          if (this.txts.delete(name)) counters.goodbyesReceived++;
          changed = true;
          continue;
        }
        const kv = parseTxt(r.data);
        if (!kv) {
          counters.invalidRecords++;
          continue;
        }
        if (!this.txts.has(name) && this.txts.size >= MAX_INSTANCES) continue;
        const incText = kv.get('inc');
        const inc = incText !== undefined && /^\d{1,16}$/.test(incText) ? Number(incText) : undefined;
        const prev = this.txts.get(name);
        changed ||= !prev || [...kv].join('\n') !== [...prev.kv].join('\n');
        this.txts.set(name, { kv, inc, ...cached(now, ttl) });
        this.resolving.delete(`TXT|${name}`);
      }
    }

    // Addresses only of hosts that some cached instance points to (the cache stays bounded).
    const targets = new Set([...this.srvs.values()].map((s) => s.target));
    const flushed = new Set<string>();
    for (const r of records) {
      if (r.type !== 'A' && r.type !== 'AAAA') continue;
      const name = lower(r.name);
      if (!targets.has(name)) continue;
      const family = r.type === 'A' ? 4 : 6;
      const address = typeof r.data === 'string' ? r.data : '';
      if (family === 4 ? !isIPv4(address) : !isIPv6(address)) {
        counters.invalidRecords++;
        continue;
      }
      let set = this.addrs.get(name);
      const ttl = isInt(r.ttl) && r.ttl >= 0 ? r.ttl : 0;
      if (ttl === 0) {
        if (set?.delete(address)) {
          counters.goodbyesReceived++;
          changed = true;
        }
        continue;
      }
      if (!set) {
        set = new Map();
        this.addrs.set(name, set);
      }
      const flushKey = `${r.type}|${name}`;
      if (r.flush && !flushed.has(flushKey)) {
        // Cache-flush bit (RFC 6762 §10.2): older records of this name and type are replaced.
        flushed.add(flushKey);
        for (const [a, e] of set) {
          if (e.family === family && e.receivedAt < now - 1000) {
            set.delete(a);
            changed = true;
          }
        }
      }
      if (!set.has(address) && set.size >= MAX_ADDRS_PER_HOST) continue;
      changed ||= !set.has(address);
      set.set(address, { address, family, ...cached(now, ttl) });
      this.resolving.delete(`A|${name}`);
    }
    if (changed) this.recompute();
  }

  /** Asks for a missing record, at most once a second per name and type, backing off, up to a few tries. */
  private resolve(name: string, type: string): void {
    const key = `${type}|${lower(name)}`;
    const now = Date.now();
    const r = this.resolving.get(key);
    if (r && (r.tries >= MAX_RESOLVE_TRIES || now - r.at < 1000 * 2 ** Math.min(r.tries - 1, 4))) return;
    this.resolving.set(key, { at: now, tries: (r?.tries ?? 0) + 1 });
    this.queueQuestion(name, type);
  }

  private pickAddress(host: string): string | undefined {
    const set = this.addrs.get(host);
    if (!set || set.size === 0) return undefined;
    const all = [...set.values()].sort((a, b) => (a.address < b.address ? -1 : 1));
    const v4 = all.filter((a) => a.family === 4);
    const best = v4.find((a) => this.d.link.onLink(a.address)) ?? v4[0] ?? all.find((a) => !/^fe80:/i.test(a.address));
    return best?.address;
  }

  private recompute(): void {
    const ctx = this.d.ctx;
    if (this.stopped) return;
    const peers = new Set<string>();
    this.incomplete = false;
    for (const [inst, ptr] of this.ptrs) {
      if (inst === this.d.names.instanceLower) continue;
      const srv = this.srvs.get(inst);
      const txt = this.txts.get(inst);
      if (!srv) this.resolve(ptr.instance, 'SRV');
      if (!txt) this.resolve(ptr.instance, 'TXT');
      if (!srv || !txt) {
        this.incomplete = true;
        continue;
      }
      if (txt.kv.get('cluster') !== ctx.clusterName) continue;
      if (!SUPPORTED_VERSIONS.has(txt.kv.get('v') ?? '')) continue;
      if (txt.kv.get('node') === ctx.self.name) continue;
      const ip = this.pickAddress(srv.target);
      if (!ip) {
        this.resolve(srv.target, 'A');
        this.incomplete = true;
        continue;
      }
      const address = formatAddress(ip, srv.port);
      if (address !== ctx.self.address) peers.add(address);
    }
    this.peerCount = peers.size;
    this.report(peers);
  }

  private report(peers: Set<string>): void {
    const ctx = this.d.ctx;
    if (this.stopped || ctx.signal.aborted) return;
    const list = [...peers].sort();
    const key = list.join(',');
    if (key === this.lastReported) return;
    this.lastReported = key;
    ctx.setPeers(list);
  }

  /**
   * Expires records and re-queries the ones still in use at 80, 85, 90 and 95 % of their TTL. A
   * record this node asked for expires only on evidence that its owner went quiet; otherwise it
   * is held: kept, and asked for again.
   */
  private tick(): void {
    if (this.stopped) return;
    const now = Date.now();
    let changed = false;
    let examined = false;
    const reasons = new Set<Doubt>();
    const expire = <T extends Cached>(map: Map<string, T>, question: (key: string, e: T) => DnsQuestion) => {
      for (const [k, e] of map) {
        if (e.expiresAt > now) continue;
        examined = true;
        // Never asked for (not in use: no peer rests on it): nothing to weigh.
        const why = e.askedAt === undefined ? undefined : this.d.evidence.doubt(e.askedAt, this.d.socketOpen());
        if (why === undefined) {
          map.delete(k);
          changed = true;
          continue;
        }
        reasons.add(why);
        this.hold(e, question(k, e), now);
      }
    };
    const service = this.d.names.service;
    expire(this.ptrs, () => ({ name: service, type: 'PTR' }));
    expire(this.srvs, (k) => ({ name: k, type: 'SRV' }));
    expire(this.txts, (k) => ({ name: k, type: 'TXT' }));
    for (const [host, set] of this.addrs) {
      expire(set, (_k, e) => ({ name: host, type: e.family === 4 ? 'A' : 'AAAA' }));
      if (set.size === 0) this.addrs.delete(host);
    }
    if (examined) this.reportHolds(reasons);
    const due = (e: Cached) => {
      if (e.refreshStep >= 4 || now < e.receivedAt + e.ttlMs * (0.8 + 0.05 * e.refreshStep + e.refreshJitter)) return false;
      e.refreshStep++;
      e.askedAt = now;
      return true;
    };
    let browse = false;
    const targets = new Set<string>();
    for (const [inst, ptr] of this.ptrs) {
      if (inst === this.d.names.instanceLower) continue;
      if (due(ptr)) browse = true;
      const srv = this.srvs.get(inst);
      if (srv) {
        targets.add(srv.target);
        if (due(srv)) this.queueQuestion(ptr.instance, 'SRV');
      }
      const txt = this.txts.get(inst);
      if (txt && due(txt)) this.queueQuestion(ptr.instance, 'TXT');
    }
    for (const host of targets) {
      for (const e of this.addrs.get(host)?.values() ?? []) {
        if (due(e)) this.queueQuestion(host, e.family === 4 ? 'A' : 'AAAA');
      }
    }
    if (browse) this.sendBrowseQuery();
    // Forget resolve attempts of names no longer wanted, so the map stays bounded.
    if (this.resolving.size > 4 * MAX_INSTANCES) this.resolving.clear();
    // Recomputing also retries the resolution of incomplete instances (rate-limited).
    if (changed || this.incomplete) this.recompute();
  }

  /**
   * Keeps a record past its TTL and asks for it again, with a browse query every responder
   * answers (no known answers), so the next look has fresh evidence; later and later per hold.
   */
  private hold(e: Cached, question: DnsQuestion, now: number): void {
    const base = Math.min(HOLD_BASE_MAX_MS, Math.max(HOLD_MIN_MS, e.ttlMs * 0.2));
    const wait = Math.min(HOLD_MAX_MS, base * 2 ** Math.min(e.holds, 6));
    e.holds++;
    e.askedAt = now;
    e.expiresAt = now + Math.max(wait, EVIDENCE_WINDOW_MS + TICK_MS);
    e.refreshStep = 4;
    this.d.counters.heldRecords++;
    this.queueQuestion(question.name, question.type);
    this.queueQuestion(this.d.names.service, 'PTR');
    this.askEveryone = true;
  }

  /** Reports why records are held, once per condition while it lasts (and only when peers rest on them). */
  private reportHolds(reasons: Set<Doubt>): void {
    for (const c of ['echo', 'others'] as const) if (!reasons.has(c)) this.conditions.forget(c);
    if (this.stopped || this.peerCount === 0) return;
    const where = this.d.where;
    const messages: Record<Doubt, string> = {
      echo: `mdns: records of peers reached the end of their TTL, but this node did not hear its own query for them come back (${where}), so its receive path is in doubt (a socket error, a firewall, multicast loopback disabled): they are kept, not expired, and asked for again until it hears itself`,
      others: `mdns: records of peers reached the end of their TTL, and no other mDNS responder was heard around the query for them (${where}): they are kept rather than emptying the cluster, and asked for again (multicast from other hosts may no longer be delivered here, or every peer stopped without a goodbye)`,
    };
    for (const c of reasons) if (this.conditions.first(c)) this.d.ctx.lookupFailed(new Error(messages[c]));
  }
}
