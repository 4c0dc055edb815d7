/**
 * `mdns`: nodes on one link find each other with DNS-SD over multicast DNS (RFC 6762 / 6763),
 * so they also show up in standard tools (`avahi-browse`, `dns-sd -B`) and can be found by
 * them.
 *
 * Each node publishes one service instance `<node>._foundation._tcp.local`:
 *
 *   _services._dns-sd._udp.local  PTR  _foundation._tcp.local          (service enumeration)
 *   _foundation._tcp.local        PTR  <node>._foundation._tcp.local
 *   <node>._foundation._tcp.local SRV  0 0 <mesh port> <host-label>.local
 *   <node>._foundation._tcp.local TXT  cluster=<cluster> node=<name> inc=<incarnation> v=1
 *   <host-label>.local            A    <advertised IPv4>   (AAAA for an IPv6 node address)
 *
 * It answers queries for these records (with the related records as additionals, known-answer
 * suppression, at most one multicast of a record per second per RFC 6762 §6, legacy unicast
 * replies to queriers not on port 5353), announces them at start (`announcements` times, 1 s
 * apart) and says goodbye (TTL 0) on stop.
 *
 * It browses for the same service type: a PTR query at once, then again after 1 s, 2 s, 4 s...
 * up to `queryIntervalMs`; instances come from answers and additionals, missing SRV/TXT/A
 * records are queried for, records expire by their TTL (and are re-queried at 80-95 % of it,
 * RFC 6762 §5.2), a goodbye removes an instance at once. An instance is a peer when its TXT
 * `cluster` is this node's cluster name and its `v` a supported protocol version; its address is
 * the IPv4 (else IPv6) address of the SRV target with the SRV port. Every change of the peer set
 * is reported with `setPeers`.
 *
 * A record at the end of its TTL only expires on evidence that its owner really went quiet: the
 * last query for it came back to this node (multicast loopback, set explicitly: it is how the
 * node knows its own receive path works), no socket error happened since, and another responder
 * was heard around that query. Otherwise (a failed socket, a firewall, multicast from other hosts
 * no longer delivered, or the last peers gone without a goodbye) the record is kept and asked
 * for again, with a backoff, and `lookupFailed` says why, once per condition: "unknown", never
 * "no nodes". A goodbye still removes an instance at once.
 *
 * Network confinement: multicast is joined and sent on ONE interface address (`interface`),
 * derived from the node's advertised address when not set: a loopback node (the default
 * `127.0.0.1`) never sends a packet beyond loopback. Packets from sources outside that
 * interface's subnet are dropped (and counted), so a node on loopback ignores whatever other
 * mDNS traffic the host receives. On Linux the socket is bound to the group address, so unicast
 * datagrams sent to port 5353 are not even received.
 *
 * Not implemented: probing and conflict resolution (RFC 6762 §8.1/§9) — node names are meant to
 * be unique, and a name collision with another cluster on the same link only hides that
 * instance (use a distinct `serviceType` per cluster if node names may collide); IPv6
 * multicast (FF02::FB). Anyone on the link can advertise an instance: the mesh handshake
 * (shared secret) decides who actually joins.
 *
 * `multicast-dns` is an optional peer dependency, imported when the strategy starts: without
 * it, construction succeeds (the config is validated eagerly) and `start` rejects with a
 * ConfigError on `topologies.<name>.strategy` saying how to install it. `mdnsAvailable()` tells
 * beforehand.
 */
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { ConfigError } from '../errors.js';
import { formatAddress, parseAddress } from '../mesh/identity.js';
import { findInterface, ipv4ToInt, isLoopbackV4, isMulticastV4, multicastInterfaceFor, unmapV4 } from './multicast.js';
import { rejectUnknownKeys, type Strategy, type StrategyContext, startConfigError } from './strategy.js';

/** Configuration of the `mdns` strategy. Every key is optional. */
export interface MdnsStrategyConfig {
  /**
   * DNS-SD service type, `_<name>._tcp` or `_<name>._udp` (name: 1-15 letters, digits and
   * hyphens, RFC 6335). Nodes only see instances of their own type. Default `_foundation._tcp`.
   */
  serviceType?: string;
  /** Domain the names live in (dot-separated labels of letters, digits and hyphens). Default `local`. */
  domain?: string;
  /**
   * IPv4 address of the local interface to join the mDNS group on and send from. Default:
   * derived from the node's advertised address — `127.0.0.1` when that is a loopback address
   * (or a wildcard, or cannot be resolved to an IPv4 address), else that address (a host name
   * is resolved). A node on `127.0.0.1` therefore never sends beyond loopback.
   */
  interface?: string;
  /** TTL, in seconds, of the records this node publishes (integer, 1 - 86 400). Default `120`. */
  ttlSeconds?: number;
  /**
   * Longest gap, in ms, between two browse queries (integer, 1 000 - 3 600 000). The first
   * query goes out at start, the next ones after 1 s, 2 s, 4 s... up to this. Default `60000`.
   */
  queryIntervalMs?: number;
  /**
   * Host label of the SRV target and the A/AAAA records, `<hostLabel>.<domain>` (one DNS label:
   * letters, digits and hyphens, at most 63). Default: the node name made a DNS label, so
   * every node has its own host name (network namespaces and containers often share a
   * hostname).
   */
  hostLabel?: string;
  /** UDP port (integer, 1 - 65535). Other mDNS stacks only use 5353: change it only to isolate tests. Default `5353`. */
  port?: number;
  /** Unsolicited announcements at start, 1 s apart (integer, 0 - 10; RFC 6762 §8.3 asks for at least 2). Default `3`. */
  announcements?: number;
}

/** Packet counters of one `mdns` strategy instance, for tests and diagnostics. */
export interface MdnsStats {
  /** Packets accepted for processing (on-link source, parsed). */
  packetsReceived: number;
  queriesReceived: number;
  responsesReceived: number;
  /** Query packets sent (browse, resolve and refresh queries). */
  queriesSent: number;
  /** Response packets sent (answers, announcements, goodbyes). */
  responsesSent: number;
  /** Goodbye (TTL 0) records that removed a cached record. */
  goodbyesReceived: number;
  /** Packets that could not be parsed or made a handler throw; ignored. */
  malformed: number;
  /** Records of a known type with unusable data (SRV port 0, bad address...); ignored. */
  invalidRecords: number;
  /** Packets from a source outside the interface's subnet, or responses not from port 5353; ignored. */
  offLink: number;
  /** Send failures (reported with `lookupFailed`). */
  sendErrors: number;
  /** This node's own multicast packets heard back (multicast loopback): the proof its receive path works. */
  ownPacketsReceived: number;
  /** Times a record was kept past the end of its TTL, because its owner's silence could not be told from this node's (see `lookupFailed`). */
  heldRecords: number;
  /** Cached service instances (any cluster, self included). */
  instances: number;
  /** Peers currently reported. */
  peers: number;
}

// ---------------------------------------------------------------------------
// The slice of multicast-dns (and dns-packet) this strategy uses.

interface DnsQuestion {
  name: string;
  type: string;
  class?: string;
}

interface DnsRecord {
  name: string;
  type: string;
  class?: string;
  ttl?: number;
  flush?: boolean;
  data?: unknown;
}

interface DnsPacket {
  id?: number;
  type?: string;
  flags?: number;
  opcode?: string;
  rcode?: string;
  questions?: DnsQuestion[];
  answers?: DnsRecord[];
  authorities?: DnsRecord[];
  additionals?: DnsRecord[];
}

interface RemoteInfo {
  address: string;
  port: number;
}

interface MulticastDns {
  on(event: string, listener: (...args: never[]) => void): unknown;
  removeAllListeners(event?: string): unknown;
  send(packet: DnsPacket, rinfo: { address?: string; port: number } | null, cb: (err?: Error | null) => void): void;
  destroy(cb?: () => void): void;
}

type MulticastDnsFactory = (options: Record<string, unknown>) => MulticastDns;

const MODULE = 'multicast-dns';

/** What `start` says when the optional package is missing. */
export const MDNS_MISSING_MESSAGE = 'the mdns strategy needs the optional package multicast-dns: npm install multicast-dns';

async function loadFactory(specifier: string): Promise<MulticastDnsFactory | undefined> {
  let mod: unknown;
  try {
    // A variable specifier: the package is optional, so neither TypeScript nor bundlers may insist on it.
    mod = await import(specifier);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return undefined;
    throw err;
  }
  const f = (mod as { default?: unknown }).default ?? mod;
  if (typeof f !== 'function') throw new Error(`${specifier} does not export a function`);
  return f as MulticastDnsFactory;
}

/** Whether the optional `multicast-dns` package can be imported (Mortal mode picks `mdns` when it can, else `gossip`). */
export async function mdnsAvailable(): Promise<boolean> {
  try {
    return (await loadFactory(MODULE)) !== undefined;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Helpers

const MDNS_GROUP = '224.0.0.251';
const SERVICES_NAME = '_services._dns-sd._udp';
const PROTOCOL_VERSION = '1';
const SUPPORTED_VERSIONS: ReadonlySet<string> = new Set([PROTOCOL_VERSION]);
const AUTHORITATIVE_ANSWER = 1 << 10;
/** RFC 6762 §6: a record is multicast at most once per second on an interface. */
const MULTICAST_RATE_MS = 1000;
/** RFC 6762 §6.7: legacy unicast answers carry a TTL of at most 10 s. */
const LEGACY_TTL = 10;
/** Caps that keep a hostile link from growing the caches without bound. */
const MAX_INSTANCES = 2048;
const MAX_ADDRS_PER_HOST = 16;
const MAX_RESOLVE_TRIES = 8;
const TICK_MS = 250;
const KNOWN_ANSWER_BUDGET = 1200;
/** How long after a query its echo, and other responders' packets, count as evidence about the answers to it. */
const EVIDENCE_WINDOW_MS = 2000;
/** Recent evidence kept (echo send times, other responders' arrival times). */
const EVIDENCE_MAX = 512;
const EVIDENCE_AGE_MS = 180_000;
/** A record kept past its TTL is asked for again after this long (growing per hold), between these bounds. */
const HOLD_MIN_MS = 1000;
const HOLD_BASE_MAX_MS = 10_000;
const HOLD_MAX_MS = 60_000;

const CONFIG_KEYS: readonly (keyof MdnsStrategyConfig)[] = [
  'serviceType',
  'domain',
  'interface',
  'ttlSeconds',
  'queryIntervalMs',
  'hostLabel',
  'port',
  'announcements',
];

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const lower = (s: string) => s.toLowerCase();

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/**
 * A DNS label from arbitrary text: runs of characters other than letters, digits and hyphens
 * become one hyphen; past 63 bytes it is cut and a short hash of the text keeps it unique.
 */
function dnsLabel(text: string): string {
  const base = text
    .replace(/[^A-Za-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^-|-$/g, '');
  if (base.length > 0 && base.length <= 63) return base;
  return `${base.slice(0, 54).replace(/-$/, '') || 'foundation'}-${shortHash(text)}`;
}

/**
 * The instance label: the node name as it is, but with dots as hyphens (the DNS encoder splits
 * labels on dots), cut with a short hash past 63 bytes. The TXT `node` key carries the exact name.
 */
function instanceLabel(name: string): string {
  const plain = name.replace(/\./g, '-');
  if (Buffer.byteLength(plain) <= 63) return plain;
  return `${plain.slice(0, 54)}-${shortHash(name)}`;
}

/** The interface this strategy multicasts on for a node's advertised address (see `multicastInterfaceFor`). */
export const mdnsInterfaceFor = multicastInterfaceFor;

function localIPv4s(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((l) => l ?? [])
    .filter((a) => a.family === 'IPv4')
    .map((a) => a.address);
}

/** Question classes that ask about IN records: IN, ANY, and both with the QU bit (dns-packet reports those as UNKNOWN_<n>). */
function classMatches(klass: string | undefined): boolean {
  return klass === undefined || klass === 'IN' || klass === 'ANY' || klass === 'UNKNOWN_32769' || klass === 'UNKNOWN_33023';
}

function recordClassOk(klass: string | undefined): boolean {
  return klass === undefined || klass === 'IN';
}

function parseTxt(data: unknown): Map<string, string> | undefined {
  const list = Array.isArray(data) ? data : [data];
  const kv = new Map<string, string>();
  for (const item of list) {
    let s: string;
    if (Buffer.isBuffer(item)) s = item.toString('utf8');
    else if (typeof item === 'string') s = item;
    else return undefined;
    if (s.length === 0) continue;
    const eq = s.indexOf('=');
    if (eq === 0) continue; // RFC 6763 §6.4: no key, ignored.
    const key = lower(eq < 0 ? s : s.slice(0, eq));
    if (kv.has(key)) continue; // §6.4: the first occurrence wins.
    kv.set(key, eq < 0 ? '' : s.slice(eq + 1));
  }
  return kv;
}

/** A comparable form of a record's data, for known-answer suppression and rate limiting. */
function dataKey(r: DnsRecord): string {
  const d = r.data;
  switch (r.type) {
    case 'PTR':
      return typeof d === 'string' ? lower(d) : '';
    case 'SRV': {
      const s = d as { target?: unknown; port?: unknown } | undefined;
      return `${lower(String(s?.target ?? ''))}:${String(s?.port ?? '')}`;
    }
    case 'TXT': {
      const list = Array.isArray(d) ? d : [d];
      return list.map((x) => (Buffer.isBuffer(x) ? x.toString('hex') : Buffer.from(String(x)).toString('hex'))).join('.');
    }
    default:
      return typeof d === 'string' ? lower(d) : JSON.stringify(d ?? null);
  }
}

const recordKey = (r: DnsRecord) => `${r.type}|${lower(r.name)}|${dataKey(r)}`;

/** What identifies a packet this node sent when it comes back: its questions and records. */
function fingerprint(p: DnsPacket): string {
  const questions = (p.questions ?? []).map((q) => (q && typeof q.name === 'string' ? `${q.type}|${lower(q.name)}` : '?')).sort();
  const records = [...(p.answers ?? []), ...(p.additionals ?? [])]
    .map((r) => (r && typeof r.name === 'string' ? `${recordKey(r)}|${String(r.ttl ?? '')}` : '?'))
    .sort();
  return `${p.type ?? ''}#${questions.join(',')}#${records.join(',')}`;
}

/** Appends a time to a bounded list of recent ones. */
function pushRecent(list: number[], t: number): void {
  list.push(t);
  if (list.length > EVIDENCE_MAX) list.splice(0, list.length - EVIDENCE_MAX);
  while (list.length > 0 && (list[0] as number) < t - EVIDENCE_AGE_MS) list.shift();
}

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

interface Published {
  servicesPtr: DnsRecord;
  ptr: DnsRecord;
  srv: DnsRecord;
  txt: DnsRecord;
  addrs: DnsRecord[];
}

// ---------------------------------------------------------------------------
// Strategy

/** DNS-SD over multicast DNS (see the file comment). */
export class MdnsStrategy implements Strategy {
  readonly name = 'mdns';
  /** Every node reads the same shared medium, so discovery is mutual (see `Strategy.mutual`). */
  readonly mutual = true;
  /** Module the strategy imports at start; a subclass may point it elsewhere (tests). */
  protected readonly moduleSpecifier: string = MODULE;

  private readonly serviceType: string;
  private readonly domain: string;
  private readonly configuredInterface: string | undefined;
  private readonly ttlSeconds: number;
  private readonly queryIntervalMs: number;
  private readonly configuredHostLabel: string | undefined;
  private readonly port: number;
  private readonly announcementCount: number;

  private ctx?: StrategyContext;
  private mdns?: MulticastDns;
  private iface = '127.0.0.1';
  private ifaceNet = { base: ipv4ToInt('127.0.0.0'), mask: ipv4ToInt('255.0.0.0') };
  private started = false;
  private stopped = false;

  private serviceFqdn = '';
  private serviceLower = '';
  private servicesFqdnLower = '';
  private instanceFqdn = '';
  private instanceLower = '';
  private hostFqdn = '';
  private hostLower = '';
  private published?: Published;

  private readonly ptrs = new Map<string, PtrEntry>();
  private readonly srvs = new Map<string, SrvEntry>();
  private readonly txts = new Map<string, TxtEntry>();
  private readonly addrs = new Map<string, Map<string, AddrEntry>>();
  private readonly resolving = new Map<string, { at: number; tries: number }>();

  private readonly lastMulticast = new Map<string, number>();
  private readonly pending = new Map<string, { record: DnsRecord; earliest: number }>();
  private pendingTimer?: NodeJS.Timeout;
  private pendingAt = Number.POSITIVE_INFINITY;

  private readonly questions = new Map<string, DnsQuestion>();
  private questionTimer?: NodeJS.Timeout;
  private browseTimer?: NodeJS.Timeout;
  private browseDelayMs = 1000;
  private tickTimer?: NodeJS.Timeout;
  private readonly announceTimers: NodeJS.Timeout[] = [];

  private lastReported: string | undefined;
  private peerCount = 0;
  /** Multicast packets sent and not heard back yet, by fingerprint: their send times (the last 10 s). */
  private readonly sentPackets = new Map<string, number[]>();
  /** Send times of this node's packets heard back, and arrival times of other responders' packets. */
  private readonly echoedSends: number[] = [];
  private readonly othersHeard: number[] = [];
  private lastErrorAt = Number.NEGATIVE_INFINITY;
  /** Hold conditions currently reported (`echo`, `others`), so each is reported once. */
  private readonly conditions = new Set<string>();
  /** The next browse query goes without known answers, so that every responder answers it. */
  private askEveryone = false;
  /** Some instance lacked a record at the last recompute: the tick retries its resolution. */
  private incomplete = false;
  private readonly counters = {
    packetsReceived: 0,
    queriesReceived: 0,
    responsesReceived: 0,
    queriesSent: 0,
    responsesSent: 0,
    goodbyesReceived: 0,
    malformed: 0,
    invalidRecords: 0,
    offLink: 0,
    sendErrors: 0,
    ownPacketsReceived: 0,
    heldRecords: 0,
  };

  constructor(config: MdnsStrategyConfig = {}) {
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new ConfigError('config', 'expected an object');
    rejectUnknownKeys(config, CONFIG_KEYS);
    const c = config;
    this.serviceType = c.serviceType ?? '_foundation._tcp';
    if (typeof this.serviceType !== 'string' || !/^_[A-Za-z0-9](?:[A-Za-z0-9-]{0,13}[A-Za-z0-9])?\._(?:tcp|udp)$/.test(this.serviceType)) {
      throw new ConfigError(
        'serviceType',
        `expected "_<name>._tcp" or "_<name>._udp" with a name of 1-15 letters, digits and hyphens (e.g. "_foundation._tcp"), got ${JSON.stringify(c.serviceType)}`,
      );
    }
    this.domain = c.domain ?? 'local';
    if (
      typeof this.domain !== 'string' ||
      this.domain.length > 200 ||
      !/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(this.domain)
    ) {
      throw new ConfigError('domain', `expected dot-separated DNS labels (letters, digits, hyphens), e.g. "local", got ${JSON.stringify(c.domain)}`);
    }
    if (c.interface !== undefined && (typeof c.interface !== 'string' || !isIPv4(c.interface) || c.interface === '0.0.0.0' || isMulticastV4(c.interface))) {
      throw new ConfigError(
        'interface',
        `expected the IPv4 address of a local interface (e.g. "127.0.0.1" or "192.168.1.20"), got ${JSON.stringify(c.interface)}`,
      );
    }
    this.configuredInterface = c.interface;
    this.ttlSeconds = c.ttlSeconds ?? 120;
    if (!isInt(this.ttlSeconds) || this.ttlSeconds < 1 || this.ttlSeconds > 86_400) {
      throw new ConfigError('ttlSeconds', `expected an integer number of seconds in 1 - 86400, got ${String(c.ttlSeconds)}`);
    }
    this.queryIntervalMs = c.queryIntervalMs ?? 60_000;
    if (!isInt(this.queryIntervalMs) || this.queryIntervalMs < 1000 || this.queryIntervalMs > 3_600_000) {
      throw new ConfigError('queryIntervalMs', `expected an integer number of ms in 1000 - 3600000, got ${String(c.queryIntervalMs)}`);
    }
    if (c.hostLabel !== undefined && (typeof c.hostLabel !== 'string' || !/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(c.hostLabel))) {
      throw new ConfigError('hostLabel', `expected one DNS label (letters, digits and hyphens, at most 63), got ${JSON.stringify(c.hostLabel)}`);
    }
    this.configuredHostLabel = c.hostLabel;
    this.port = c.port ?? 5353;
    if (!isInt(this.port) || this.port < 1 || this.port > 65535)
      throw new ConfigError('port', `expected an integer UDP port in 1 - 65535, got ${String(c.port)}`);
    this.announcementCount = c.announcements ?? 3;
    if (!isInt(this.announcementCount) || this.announcementCount < 0 || this.announcementCount > 10) {
      throw new ConfigError('announcements', `expected an integer in 0 - 10, got ${String(c.announcements)}`);
    }
  }

  /** Packet counters, for tests and diagnostics. */
  stats(): MdnsStats {
    return { ...this.counters, instances: this.ptrs.size, peers: this.peerCount };
  }

  /** The interface this strategy joined and sends on (known after `start`). */
  get interfaceAddress(): string {
    return this.iface;
  }

  /** This node's service instance name, e.g. `n1._foundation._tcp.local` (known after `start`). */
  get instanceName(): string {
    return this.instanceFqdn;
  }

  async start(ctx: StrategyContext): Promise<void> {
    if (this.started) throw new Error('MdnsStrategy instances cannot be started twice');
    this.started = true;
    this.ctx = ctx;
    const factory = await loadFactory(this.moduleSpecifier);
    if (!factory) throw startConfigError(ctx, 'strategy', MDNS_MISSING_MESSAGE, { config: false });
    if (this.stopped) return;

    this.iface = this.configuredInterface ?? (await this.deriveInterface(ctx));
    const owner = findInterface(this.iface);
    if (!owner) {
      const how = this.configuredInterface ? 'is' : `(derived from the node address ${ctx.self.address}) is`;
      throw startConfigError(ctx, 'interface', `${this.iface} ${how} not an IPv4 address of this host; allowed: ${localIPv4s().join(', ') || 'none found'}`);
    }
    const mask = ipv4ToInt(owner.netmask);
    this.ifaceNet = { base: (ipv4ToInt(this.iface) & mask) >>> 0, mask };

    this.serviceFqdn = `${this.serviceType}.${this.domain}`;
    this.serviceLower = lower(this.serviceFqdn);
    this.servicesFqdnLower = lower(`${SERVICES_NAME}.${this.domain}`);
    this.instanceFqdn = `${instanceLabel(ctx.self.name)}.${this.serviceFqdn}`;
    this.instanceLower = lower(this.instanceFqdn);
    this.hostFqdn = `${this.configuredHostLabel ?? dnsLabel(ctx.self.name)}.${this.domain}`;
    this.hostLower = lower(this.hostFqdn);
    this.published = await this.buildRecords(ctx);
    if (this.stopped) return;

    await this.open(factory);
    if (this.stopped) {
      this.close();
      return;
    }
    ctx.logger.info({ interface: this.iface, instance: this.instanceFqdn, host: this.hostFqdn, port: this.port }, 'mdns: advertising and browsing');

    this.report();
    this.sendBrowseQuery();
    this.scheduleBrowse();
    for (let i = 0; i < this.announcementCount; i++) {
      const t = setTimeout(() => this.announce(), i * 1000);
      t.unref();
      this.announceTimers.push(t);
    }
    this.tickTimer = setInterval(() => this.guard(() => this.tick()), TICK_MS);
    this.tickTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.announceTimers) clearTimeout(t);
    clearTimeout(this.browseTimer);
    clearTimeout(this.questionTimer);
    clearTimeout(this.pendingTimer);
    clearInterval(this.tickTimer);
    this.pending.clear();
    this.questions.clear();
    if (!this.mdns) return;
    await this.sendGoodbye();
    await this.close();
  }

  // -- setup -------------------------------------------------------------------

  private async deriveInterface(ctx: StrategyContext): Promise<string> {
    const direct = mdnsInterfaceFor(ctx.self.address);
    if (direct) return direct;
    const host = parseAddress(ctx.self.address)?.host ?? ctx.self.address;
    if (!isIPv6(host)) {
      try {
        const timeout = new Promise<undefined>((r) => setTimeout(() => r(undefined), 2000).unref());
        const found = await Promise.race([lookup(host, { family: 4 }), timeout]);
        if (found) return mdnsInterfaceFor(found.address) ?? '127.0.0.1';
      } catch {
        // Falls through to loopback.
      }
    }
    ctx.logger.warn(
      { address: ctx.self.address },
      'mdns: cannot derive an IPv4 interface from the node address; using loopback only (set the mdns `interface` option)',
    );
    return '127.0.0.1';
  }

  /** The A/AAAA addresses peers should connect to: the node's advertised host. */
  private async hostAddresses(ctx: StrategyContext): Promise<{ v4: string[]; v6: string[] }> {
    const host = unmapV4(parseAddress(ctx.self.address)?.host ?? '');
    if (isIPv4(host)) return { v4: [host === '0.0.0.0' ? this.iface : host], v6: [] };
    if (isIPv6(host)) return host === '::' ? { v4: [this.iface], v6: [] } : { v4: [], v6: [host] };
    try {
      const found = await lookup(host, { all: true });
      const v4 = [...new Set(found.filter((a) => a.family === 4).map((a) => a.address))];
      const v6 = [...new Set(found.filter((a) => a.family === 6).map((a) => a.address))];
      if (v4.length + v6.length > 0) return { v4, v6 };
    } catch {
      // Falls back to the interface address.
    }
    return { v4: [this.iface], v6: [] };
  }

  private async buildRecords(ctx: StrategyContext): Promise<Published> {
    const port = parseAddress(ctx.self.address)?.port ?? 0;
    const { v4, v6 } = await this.hostAddresses(ctx);
    if (!isLoopbackV4(this.iface) && v4.some(isLoopbackV4)) {
      ctx.logger.warn(
        { address: ctx.self.address, interface: this.iface },
        'mdns: advertising a loopback address on a non-loopback interface: peers cannot reach it',
      );
    }
    const ttl = this.ttlSeconds;
    return {
      servicesPtr: { name: `${SERVICES_NAME}.${this.domain}`, type: 'PTR', ttl, data: this.serviceFqdn },
      ptr: { name: this.serviceFqdn, type: 'PTR', ttl, data: this.instanceFqdn },
      srv: { name: this.instanceFqdn, type: 'SRV', ttl, flush: true, data: { priority: 0, weight: 0, port, target: this.hostFqdn } },
      txt: {
        name: this.instanceFqdn,
        type: 'TXT',
        ttl,
        flush: true,
        data: [`cluster=${ctx.clusterName}`, `node=${ctx.self.name}`, `inc=${ctx.self.incarnation}`, `v=${PROTOCOL_VERSION}`].map((s) => Buffer.from(s)),
      },
      addrs: [
        ...v4.map((a) => ({ name: this.hostFqdn, type: 'A', ttl, flush: true, data: a })),
        ...v6.map((a) => ({ name: this.hostFqdn, type: 'AAAA', ttl, flush: true, data: a })),
      ],
    };
  }

  private async open(factory: MulticastDnsFactory): Promise<void> {
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    const mdns = factory({
      socket,
      port: this.port,
      ip: MDNS_GROUP,
      // Joined and sent on this address only: see the file comment.
      interface: this.iface,
      // Bound to the group on Linux (only group traffic arrives); elsewhere to the wildcard.
      bind: process.platform === 'linux' ? MDNS_GROUP : '0.0.0.0',
      loopback: true,
      ttl: 255,
    });
    this.mdns = mdns;
    let membershipError: Error | undefined;
    mdns.on('warning', (err: Error) => {
      const e = err as NodeJS.ErrnoException;
      if (e.syscall || typeof e.errno === 'number') {
        if (e.syscall === 'addMembership' && !membershipError) membershipError = e;
        this.failed(new Error(`mdns socket on ${this.iface}: ${e.message}`));
      } else {
        // dns-packet could not decode a datagram.
        this.counters.malformed++;
      }
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`mdns: the socket on port ${this.port} did not become ready within 5 s`)), 5000);
      mdns.on('ready', () => {
        clearTimeout(timer);
        resolve();
      });
      mdns.on('error', (err: Error) => {
        clearTimeout(timer);
        reject(new Error(`mdns: cannot listen on UDP port ${this.port}: ${err.message}`));
      });
    }).catch(async (err: unknown) => {
      await this.close();
      throw err;
    });
    try {
      if (membershipError) throw membershipError;
      // multicast-dns sets it only after a successful join: set it again so a send can never
      // fall back to the routing table's interface.
      socket.setMulticastInterface(this.iface);
      // IP_MULTICAST_LOOP (the default, and multicast-dns's `loopback: true`, set anyway): hearing
      // its own packets is how this node knows its receive path works (see the file comment).
      socket.setMulticastLoopback(true);
    } catch (err) {
      await this.close();
      throw new Error(`mdns: cannot use interface ${this.iface} for multicast: ${(err as Error).message}`);
    }
    socket.unref();
    mdns.removeAllListeners('error');
    mdns.on('error', (err: Error) => this.failed(new Error(`mdns socket: ${err.message}`)));
    mdns.on('query', (packet: DnsPacket, rinfo: RemoteInfo) => this.guard(() => this.onQuery(packet, rinfo)));
    mdns.on('response', (packet: DnsPacket, rinfo: RemoteInfo) => this.guard(() => this.onResponse(packet, rinfo)));
  }

  private close(): Promise<void> {
    const mdns = this.mdns;
    this.mdns = undefined;
    if (!mdns) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = setTimeout(resolve, 1000);
      done.unref();
      try {
        mdns.destroy(() => {
          clearTimeout(done);
          resolve();
        });
      } catch {
        clearTimeout(done);
        resolve();
      }
      mdns.removeAllListeners('query');
      mdns.removeAllListeners('response');
      // Late socket errors must not crash the process.
      mdns.removeAllListeners('error');
      mdns.on('error', () => {});
    });
  }

  // -- plumbing ----------------------------------------------------------------

  /** Runs a handler; a throw (malformed data the checks missed) is counted, never propagated. */
  private guard(fn: () => void): void {
    if (this.stopped) return;
    try {
      fn();
    } catch {
      this.counters.malformed++;
    }
  }

  private failed(err: Error): void {
    if (this.stopped) return;
    this.lastErrorAt = Date.now();
    this.ctx?.lookupFailed(err);
  }

  private send(packet: DnsPacket, to: RemoteInfo | null): Promise<void> {
    const mdns = this.mdns;
    if (!mdns) return Promise.resolve();
    if (packet.type === 'query') this.counters.queriesSent++;
    else this.counters.responsesSent++;
    if (to === null) this.noteSent(packet);
    return new Promise<void>((resolve) => {
      try {
        mdns.send(packet, to, (err) => {
          if (err) {
            this.counters.sendErrors++;
            this.failed(new Error(`mdns send on ${this.iface} failed: ${err.message}`));
          }
          resolve();
        });
      } catch (err) {
        this.counters.sendErrors++;
        this.failed(new Error(`mdns: cannot encode a packet: ${(err as Error).message}`));
        resolve();
      }
    });
  }

  /** Remembers a multicast packet, to recognise it when multicast loopback brings it back. */
  private noteSent(packet: DnsPacket): void {
    const now = Date.now();
    const fp = fingerprint(packet);
    const times = this.sentPackets.get(fp) ?? [];
    // Not heard back within 10 s: it never will be (a deaf socket must not grow this).
    while (times.length > 0 && (times[0] as number) < now - 10_000) times.shift();
    times.push(now);
    this.sentPackets.set(fp, times);
    if (this.sentPackets.size > 64) {
      for (const [k, t] of this.sentPackets) {
        while (t.length > 0 && (t[0] as number) < now - 10_000) t.shift();
        if (t.length === 0) this.sentPackets.delete(k);
      }
    }
  }

  /** Sorts an arriving packet into this node's own (heard back) or another responder's: the evidence `tick` weighs. */
  private noteArrival(packet: DnsPacket, rinfo: RemoteInfo): void {
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
    if (this.onLink(from)) pushRecent(this.othersHeard, now);
  }

  private onLink(address: string): boolean {
    const a = unmapV4(address);
    if (!isIPv4(a)) return false;
    return (ipv4ToInt(a) & this.ifaceNet.mask) >>> 0 === this.ifaceNet.base;
  }

  // -- responder ---------------------------------------------------------------

  private ownRecords(): DnsRecord[] {
    const p = this.published;
    return p ? [p.servicesPtr, p.ptr, p.srv, p.txt, ...p.addrs] : [];
  }

  private onQuery(packet: DnsPacket, rinfo: RemoteInfo): void {
    this.noteArrival(packet, rinfo);
    if (!this.onLink(rinfo.address)) {
      this.counters.offLink++;
      return;
    }
    this.counters.packetsReceived++;
    this.counters.queriesReceived++;
    const p = this.published;
    if (!p || (packet.opcode && packet.opcode !== 'QUERY')) return;
    const answers = new Map<string, DnsRecord>();
    const add = (r: DnsRecord) => answers.set(recordKey(r), r);
    for (const q of packet.questions ?? []) {
      if (!q || typeof q.name !== 'string' || !classMatches(q.class)) continue;
      const name = lower(q.name);
      const any = q.type === 'ANY';
      if (name === this.servicesFqdnLower && (any || q.type === 'PTR')) add(p.servicesPtr);
      if (name === this.serviceLower && (any || q.type === 'PTR')) add(p.ptr);
      if (name === this.instanceLower) {
        if (any || q.type === 'SRV') add(p.srv);
        if (any || q.type === 'TXT') add(p.txt);
      }
      if (name === this.hostLower) for (const r of p.addrs) if (any || q.type === r.type) add(r);
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
    if (rinfo.port !== this.port) {
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
    if (!p) return [];
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

  private announce(): void {
    if (this.stopped) return;
    this.queueMulticast(this.ownRecords(), 0);
  }

  private async sendGoodbye(): Promise<void> {
    const p = this.published;
    if (!p) return;
    // The shared service-enumeration PTR and the host's addresses stay: other nodes may publish them too.
    const bye = [p.ptr, p.srv, p.txt].map((r) => ({ ...r, ttl: 0 }));
    const timeout = new Promise<void>((r) => setTimeout(r, 500).unref());
    await Promise.race([this.send({ type: 'response', id: 0, flags: AUTHORITATIVE_ANSWER, questions: [], answers: bye }, null), timeout]);
  }

  // -- querier -----------------------------------------------------------------

  private queueQuestion(name: string, type: string): void {
    this.questions.set(`${type}|${lower(name)}`, { name, type, class: 'IN' });
    if (this.questionTimer || this.stopped) return;
    // Coalesces the questions of one burst of packets into one query.
    this.questionTimer = setTimeout(() => {
      this.questionTimer = undefined;
      this.guard(() => this.flushQuestions());
    }, 10);
    this.questionTimer.unref();
  }

  private flushQuestions(): void {
    if (this.questions.size === 0) return;
    const questions = [...this.questions.values()];
    this.questions.clear();
    const asksPtr = questions.some((q) => q.type === 'PTR' && lower(q.name) === this.serviceLower);
    const known = asksPtr && !this.askEveryone ? this.knownAnswers() : [];
    if (asksPtr) this.askEveryone = false;
    void this.send({ type: 'query', id: 0, flags: 0, questions, answers: known }, null);
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
      out.push({ name: this.serviceFqdn, type: 'PTR', ttl: Math.floor(left / 1000), data: e.instance });
    }
    return out;
  }

  private sendBrowseQuery(): void {
    this.queueQuestion(this.serviceFqdn, 'PTR');
  }

  private scheduleBrowse(): void {
    if (this.stopped) return;
    this.browseTimer = setTimeout(() => {
      this.guard(() => this.sendBrowseQuery());
      this.browseDelayMs = Math.min(this.browseDelayMs * 2, this.queryIntervalMs);
      this.scheduleBrowse();
    }, this.browseDelayMs);
    this.browseTimer.unref();
  }

  private onResponse(packet: DnsPacket, rinfo: RemoteInfo): void {
    this.noteArrival(packet, rinfo);
    // RFC 6762 §6 / §11: responses come from port 5353, and only from the local link.
    if (rinfo.port !== this.port || !this.onLink(rinfo.address)) {
      this.counters.offLink++;
      return;
    }
    this.counters.packetsReceived++;
    this.counters.responsesReceived++;
    if ((packet.rcode && packet.rcode !== 'NOERROR') || (packet.opcode && packet.opcode !== 'QUERY')) return;
    const records = [...(packet.answers ?? []), ...(packet.additionals ?? [])].filter(
      (r): r is DnsRecord => !!r && typeof r.name === 'string' && typeof r.type === 'string' && recordClassOk(r.class),
    );
    const now = Date.now();
    const suffix = `.${this.serviceLower}`;
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
        this.counters.invalidRecords++;
        continue;
      }
      if (r.type === 'PTR' && name === this.serviceLower) {
        if (typeof r.data !== 'string' || !isInstance(lower(r.data))) {
          this.counters.invalidRecords++;
          continue;
        }
        const inst = lower(r.data);
        if (stale.has(inst)) continue;
        if (ttl === 0) {
          if (this.ptrs.delete(inst)) this.counters.goodbyesReceived++;
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
          if (this.srvs.delete(name)) this.counters.goodbyesReceived++;
          changed = true;
          continue;
        }
        if (!d || !isInt(d.port) || d.port < 1 || d.port > 65535 || typeof d.target !== 'string' || d.target.length === 0) {
          this.counters.invalidRecords++;
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
          if (this.txts.delete(name)) this.counters.goodbyesReceived++;
          changed = true;
          continue;
        }
        const kv = parseTxt(r.data);
        if (!kv) {
          this.counters.invalidRecords++;
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
        this.counters.invalidRecords++;
        continue;
      }
      let set = this.addrs.get(name);
      const ttl = isInt(r.ttl) && r.ttl >= 0 ? r.ttl : 0;
      if (ttl === 0) {
        if (set?.delete(address)) {
          this.counters.goodbyesReceived++;
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
    const best = v4.find((a) => this.onLink(a.address)) ?? v4[0] ?? all.find((a) => !/^fe80:/i.test(a.address));
    return best?.address;
  }

  private recompute(): void {
    const ctx = this.ctx;
    if (!ctx || this.stopped) return;
    const peers = new Set<string>();
    this.incomplete = false;
    for (const [inst, ptr] of this.ptrs) {
      if (inst === this.instanceLower) continue;
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

  private report(peers: Set<string> = new Set()): void {
    const ctx = this.ctx;
    if (!ctx || this.stopped || ctx.signal.aborted) return;
    const list = [...peers].sort();
    const key = list.join(',');
    if (key === this.lastReported) return;
    this.lastReported = key;
    ctx.setPeers(list);
  }

  /**
   * Expires records and re-queries the ones still in use at 80, 85, 90 and 95 % of their TTL. A
   * record this node asked for expires only on evidence that its owner went quiet (see `doubt`);
   * otherwise it is held: kept, and asked for again.
   */
  private tick(): void {
    const now = Date.now();
    let changed = false;
    let examined = false;
    const reasons = new Set<'echo' | 'others'>();
    const expire = <T extends Cached>(map: Map<string, T>, question: (key: string, e: T) => DnsQuestion) => {
      for (const [k, e] of map) {
        if (e.expiresAt > now) continue;
        examined = true;
        // Never asked for (not in use: no peer rests on it): nothing to weigh.
        const why = e.askedAt === undefined ? undefined : this.doubt(e.askedAt);
        if (why === undefined) {
          map.delete(k);
          changed = true;
          continue;
        }
        reasons.add(why);
        this.hold(e, question(k, e), now);
      }
    };
    expire(this.ptrs, () => ({ name: this.serviceFqdn, type: 'PTR' }));
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
      if (inst === this.instanceLower) continue;
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
   * Why the silence of a record asked for at `askedAt` says nothing about its owner, if it does
   * not: `echo` when this node's own packets sent around then did not come back (or a socket
   * error came after), so it may simply not have received the answer; `others` when no other
   * responder was heard around then either, so multicast from other hosts may not arrive, or
   * every peer is gone without a goodbye, which this node cannot tell apart.
   */
  private doubt(askedAt: number): 'echo' | 'others' | undefined {
    const around = (t: number) => t >= askedAt && t <= askedAt + EVIDENCE_WINDOW_MS;
    if (!this.mdns || this.lastErrorAt >= askedAt || !this.echoedSends.some(around)) return 'echo';
    if (!this.othersHeard.some(around)) return 'others';
    return undefined;
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
    this.counters.heldRecords++;
    this.queueQuestion(question.name, question.type);
    this.queueQuestion(this.serviceFqdn, 'PTR');
    this.askEveryone = true;
  }

  /** Reports why records are held, once per condition while it lasts (and only when peers rest on them). */
  private reportHolds(reasons: Set<'echo' | 'others'>): void {
    for (const c of ['echo', 'others'] as const) if (!reasons.has(c)) this.conditions.delete(c);
    const ctx = this.ctx;
    if (!ctx || this.stopped || this.peerCount === 0) return;
    const where = `${this.iface}:${this.port}`;
    const messages = {
      echo: `mdns: records of peers reached the end of their TTL, but this node did not hear its own query for them come back (${where}), so its receive path is in doubt (a socket error, a firewall, multicast loopback disabled): they are kept, not expired, and asked for again until it hears itself`,
      others: `mdns: records of peers reached the end of their TTL, and no other mDNS responder was heard around the query for them (${where}): they are kept rather than emptying the cluster, and asked for again (multicast from other hosts may no longer be delivered here, or every peer stopped without a goodbye)`,
    };
    for (const c of reasons) {
      if (this.conditions.has(c)) continue;
      this.conditions.add(c);
      ctx.lookupFailed(new Error(messages[c]));
    }
  }
}
