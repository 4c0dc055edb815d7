/**
 * `gossip`: nodes on one LAN segment find each other over UDP multicast (or broadcast), with
 * no configuration — the Mortal-mode fallback, like libcluster's Gossip strategy, but
 * authenticated, replay-proof and loopback-confined by default.
 *
 * Every node announces `{cluster, name, address, incarnation, seq, timestamp}` to a
 * multicast group at start (three times in the first 300 ms, so one lost packet does not
 * delay formation), then every `intervalMs`. Hearing a new peer triggers an immediate
 * (rate-limited) announce, so a newcomer learns everyone in one round trip. A stopping node
 * says goodbye and is dropped at once.
 *
 * Expiry only acts on evidence. A peer not heard from for `expireAfterMs` is dropped only while
 * this node demonstrably receives: it hears its own announcements come back (multicast loopback,
 * set explicitly) with no gap longer than 2.5 × `intervalMs`, its receive socket is open, and
 * packets from other nodes keep arriving too. Silence caused by this side (a failed receive
 * socket, a firewall, multicast no longer delivered from other hosts) is "unknown": nobody
 * expires, `lookupFailed` says why (once per condition), and when the doubt clears the silent
 * peers get a full `expireAfterMs` to be heard again. A consequence: the last peers never
 * expire by silence alone (nobody else is heard); they go when they say goodbye, or once another
 * node is heard.
 *
 * Network confinement: both sockets are pinned to one interface address. The sending
 * socket is BOUND to that address, so Linux routes multicast and limited broadcast out of
 * the interface owning it, whatever the routing table says; the group is joined on that
 * interface only. A node whose address is on loopback (the default `127.0.0.1`) therefore
 * never sends a packet beyond loopback, and drops packets that come from elsewhere.
 *
 * Packet (all integers big-endian):
 *
 *   header   magic "FDNG" (4) | version u8 = 1 | flags u8 (bit 0: sealed; other bits 0)
 *   sealed:  header | nonce (12) | AES-256-GCM ciphertext of the payload | tag (16)
 *            (the 6-byte header is the additional authenticated data)
 *   plain:   header | payload
 *
 *   payload  kind u8 (1 announce, 2 goodbye) | incarnation u64 | seq u64 | timestamp u64 (ms)
 *            | cluster (u16 length + UTF-8) | name (u16 + UTF-8) | address (u16 + UTF-8)
 *
 * The key is HKDF-SHA256(secret, salt "foundation/gossip/v1", info "foundation gossip
 * aes-256-gcm key", 32 bytes). With a secret, a packet is accepted only if it authenticates,
 * its timestamp is within ±30 s of the local clock and not earlier than this node's start, and
 * its (name, incarnation, seq) is newer than the last accepted one from that name; the replay
 * record outlives the peer itself, so a replayed announce never re-adds a node that left.
 *
 * Replay bound. A node dials what it accepts, so a replayed announce of a node that has left would
 * make it dial a dead address. A running node refuses it by its replay record; a node that has
 * just started has none, so it also refuses every packet stamped before its own start
 * (`before-start`). A replay can therefore make a node dial only an address whose node sent that
 * packet after this node started, as the two clocks tell it: an attacker gains at most the
 * sender's clock lead over this node's (and nothing beyond the ±30 s window). The cost: a peer
 * whose clock lags this node's is heard only once its own clock passes this node's start time, so
 * it is found up to that lag later.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { ConfigError } from '../errors.js';
import { NODE_NAME_PATTERN, parseAddress } from '../mesh/identity.js';
import { LogOnce, RateLimitedLog } from '../util/logger.js';
import { directedBroadcasts, isLoopbackV4, isMulticastV4, multicastInterfaceFor, selectMulticastInterface, unmapV4 } from './net-interfaces.js';
import { rejectUnknownKeys, type Strategy, type StrategyContext, startConfigError } from './strategy.js';
import { booleanOption, interfaceOption, intOption, portOption, requireConfigObject } from './strategy-config.js';

/** Configuration of the `gossip` strategy. Every key is optional. */
export interface GossipStrategyConfig {
  /** IPv4 multicast group (224.0.0.0 – 239.255.255.255) the nodes announce to. Default `239.255.70.77`. Ignored with `broadcastOnly`. */
  group?: string;
  /** UDP port the nodes listen on and announce to (1 – 65535). Nodes of one host share it. Default `45892`. */
  port?: number;
  /** Multicast TTL (0 – 255): 1 keeps announcements on the local segment. Default `1`. */
  ttl?: number;
  /**
   * IPv4 address of the interface to join the group on and send from; it must be an address of
   * this host (checked at start). Default: derived from the node's advertised address —
   * `127.0.0.1` when that is a loopback address or a wildcard, else that address (a host name
   * is resolved) if it is an address of this host, else `127.0.0.1` with a warning. A node on
   * `127.0.0.1` therefore never announces beyond loopback.
   */
  interface?: string;
  /** Announce period in ms (integer, 50 – 3 600 000). Default `1000`. */
  intervalMs?: number;
  /** Announce by UDP broadcast to `broadcastAddress` instead of multicast, for networks that filter multicast. Default `false`. */
  broadcastOnly?: boolean;
  /**
   * Where broadcast announcements go with `broadcastOnly`: `255.255.255.255`, or the directed
   * broadcast address of the interface's subnet (any 127.x.x.x address on loopback).
   * Default `255.255.255.255`.
   */
  broadcastAddress?: string;
  /**
   * Shared secret (non-empty string or bytes). When set, every packet is AES-256-GCM encrypted
   * and authenticated, stale (±30 s) and replayed packets are refused, and packets without it
   * are dropped. Default: none (plaintext packets; anyone on the segment can announce).
   */
  secret?: string | Uint8Array;
  /**
   * A peer not heard from for this many ms is dropped (integer, at least 2 × `intervalMs`).
   * Default `max(5000, 5 × intervalMs)`.
   */
  expireAfterMs?: number;
}

/** A decoded gossip packet. */
export interface GossipMessage {
  kind: 'announce' | 'goodbye';
  cluster: string;
  name: string;
  /** `host:port` of the sender's mesh listener. */
  address: string;
  incarnation: number;
  /** Per-incarnation counter, strictly increasing over the sender's packets. */
  seq: number;
  /** Sender's clock at send time, ms since the epoch. */
  timestamp: number;
}

/** Why a packet was dropped (the keys of `GossipStats.dropped`). */
export const GOSSIP_DROP_REASONS = [
  /** Shorter than a header (or, sealed, than header + nonce + tag + fixed payload). */
  'too-short',
  /** Over GOSSIP_MAX_PACKET bytes. */
  'too-large',
  /** Not a gossip packet: the first 4 bytes are not `FDNG`. */
  'bad-magic',
  /** A protocol version this node does not speak. */
  'bad-version',
  /** Unknown flag bits set. */
  'bad-flags',
  /** Plaintext, while this node has a secret. */
  'not-encrypted',
  /** Sealed, while this node has no secret. */
  'encrypted-no-secret',
  /** Did not authenticate: wrong secret, or altered in transit. */
  'auth-failed',
  /** Authenticated (or plaintext) but the payload does not parse: bad kind, lengths, UTF-8, name or address. */
  'malformed',
  /** With a secret: the timestamp is more than GOSSIP_REPLAY_WINDOW_MS away from the local clock. */
  'expired',
  /**
   * With a secret: stamped (by the sender's clock) before this node started. Such a packet cannot
   * prove its sender is alive now, and a fresh node has no replay record to refuse it with.
   */
  'before-start',
  /** (name, incarnation, seq) not newer than the last accepted one from that name. */
  'replay',
  /** An incarnation older than one already accepted for that name. */
  'stale-incarnation',
  /** On a loopback interface, from a non-loopback source. */
  'foreign-source',
  /** Another node announcing this node's own address. */
  'self-address',
  /** A new name while GOSSIP_MAX_PEERS peers are tracked. */
  'peer-limit',
] as const;

/** Why a packet was dropped. */
export type GossipDropReason = (typeof GOSSIP_DROP_REASONS)[number];

/** Why a well-formed packet was ignored (not an error: our own echo, a neighbouring cluster). */
export type GossipIgnoreReason = 'self' | 'other-cluster';

/** Packet counters. `received` = `accepted` + Σ `ignored` + Σ `dropped`. */
export interface GossipStats {
  received: number;
  accepted: number;
  ignored: Record<GossipIgnoreReason, number>;
  dropped: Record<GossipDropReason, number>;
  /** Current number of peers. */
  peers: number;
}

export const GOSSIP_MAGIC = Buffer.from('FDNG', 'latin1');
export const GOSSIP_VERSION = 1;
/** Largest packet sent or accepted. */
export const GOSSIP_MAX_PACKET = 1200;
/** With a secret, packets whose timestamp is further than this from the local clock are refused. */
export const GOSSIP_REPLAY_WINDOW_MS = 30_000;
/** Most peers one node tracks; announcements of further names are dropped (`peer-limit`). */
export const GOSSIP_MAX_PEERS = 1024;

const HEADER_LEN = 6;
const NONCE_LEN = 12;
const TAG_LEN = 16;
const FLAG_SEALED = 1;
const KIND_ANNOUNCE = 1;
const KIND_GOODBYE = 2;
const FIXED_PAYLOAD = 1 + 8 + 8 + 8;
const MAX_CLUSTER_BYTES = 512;
const MAX_NAME_BYTES = 512;
const MAX_ADDRESS_BYTES = 300;
const HKDF_SALT = 'foundation/gossip/v1';
const HKDF_INFO = 'foundation gossip aes-256-gcm key';
/** Early announces after the first, in ms from start. */
const EARLY_ANNOUNCES_MS = [100, 300];
/** Minimum gap between two answers to newcomers (bounds what a flood of fake newcomers can make a node send). */
const REPLY_GAP_MS = 50;
/** Between attempts to (re)open a socket that failed. */
const SOCKET_RETRY_MS = 2000;
/** Config keys of the gossip strategy. */
const GOSSIP_CONFIG_KEYS: readonly (keyof GossipStrategyConfig)[] = [
  'group',
  'port',
  'ttl',
  'interface',
  'intervalMs',
  'broadcastOnly',
  'broadcastAddress',
  'secret',
  'expireAfterMs',
];

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The AES-256-GCM key for a gossip secret. */
export function deriveGossipKey(secret: string | Uint8Array): Buffer {
  const ikm = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : Buffer.from(secret);
  return Buffer.from(hkdfSync('sha256', ikm, HKDF_SALT, HKDF_INFO, 32));
}

function putString(parts: Buffer[], s: string, max: number, what: string): void {
  const b = Buffer.from(s, 'utf8');
  if (b.length > max) throw new RangeError(`gossip ${what} is ${b.length} bytes, over ${max}`);
  const len = Buffer.allocUnsafe(2);
  len.writeUInt16BE(b.length);
  parts.push(len, b);
}

function putU64(buf: Buffer, offset: number, n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`gossip ${what} must be a non-negative safe integer`);
  buf.writeBigUInt64BE(BigInt(n), offset);
}

/** Encodes a packet; sealed (encrypted and authenticated) when `key` is given. */
export function encodeGossipPacket(msg: GossipMessage, key?: Buffer): Buffer {
  const fixed = Buffer.alloc(FIXED_PAYLOAD);
  fixed.writeUInt8(msg.kind === 'goodbye' ? KIND_GOODBYE : KIND_ANNOUNCE, 0);
  putU64(fixed, 1, msg.incarnation, 'incarnation');
  putU64(fixed, 9, msg.seq, 'seq');
  putU64(fixed, 17, msg.timestamp, 'timestamp');
  const parts = [fixed];
  putString(parts, msg.cluster, MAX_CLUSTER_BYTES, 'cluster name');
  putString(parts, msg.name, MAX_NAME_BYTES, 'node name');
  putString(parts, msg.address, MAX_ADDRESS_BYTES, 'address');
  const payload = Buffer.concat(parts);
  const header = Buffer.alloc(HEADER_LEN);
  GOSSIP_MAGIC.copy(header, 0);
  header.writeUInt8(GOSSIP_VERSION, 4);
  header.writeUInt8(key ? FLAG_SEALED : 0, 5);
  let packet: Buffer;
  if (key) {
    const nonce = randomBytes(NONCE_LEN);
    const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_LEN });
    cipher.setAAD(header);
    const ct = Buffer.concat([cipher.update(payload), cipher.final()]);
    packet = Buffer.concat([header, nonce, ct, cipher.getAuthTag()]);
  } else {
    packet = Buffer.concat([header, payload]);
  }
  if (packet.length > GOSSIP_MAX_PACKET) throw new RangeError(`gossip packet is ${packet.length} bytes, over ${GOSSIP_MAX_PACKET}`);
  return packet;
}

export type GossipDecodeResult = { ok: true; msg: GossipMessage } | { ok: false; reason: GossipDropReason };

/**
 * Decodes untrusted bytes. Never throws: anything but a well-formed packet (authenticated
 * when `key` is given) comes back as `{ ok: false, reason }`.
 */
export function decodeGossipPacket(packet: Uint8Array, key?: Buffer): GossipDecodeResult {
  try {
    return decodeUnsafe(Buffer.from(packet.buffer, packet.byteOffset, packet.byteLength), key);
  } catch {
    return { ok: false, reason: 'malformed' };
  }
}

function decodeUnsafe(buf: Buffer, key?: Buffer): GossipDecodeResult {
  if (buf.length > GOSSIP_MAX_PACKET) return { ok: false, reason: 'too-large' };
  if (buf.length < HEADER_LEN) return { ok: false, reason: 'too-short' };
  if (!buf.subarray(0, 4).equals(GOSSIP_MAGIC)) return { ok: false, reason: 'bad-magic' };
  if (buf[4] !== GOSSIP_VERSION) return { ok: false, reason: 'bad-version' };
  const flags = buf[5] as number;
  if ((flags & ~FLAG_SEALED) !== 0) return { ok: false, reason: 'bad-flags' };
  const sealed = (flags & FLAG_SEALED) !== 0;
  let payload: Buffer;
  if (key) {
    if (!sealed) return { ok: false, reason: 'not-encrypted' };
    if (buf.length < HEADER_LEN + NONCE_LEN + TAG_LEN + FIXED_PAYLOAD) return { ok: false, reason: 'too-short' };
    const nonce = buf.subarray(HEADER_LEN, HEADER_LEN + NONCE_LEN);
    const tag = buf.subarray(buf.length - TAG_LEN);
    try {
      const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_LEN });
      d.setAAD(buf.subarray(0, HEADER_LEN));
      d.setAuthTag(tag);
      payload = Buffer.concat([d.update(buf.subarray(HEADER_LEN + NONCE_LEN, buf.length - TAG_LEN)), d.final()]);
    } catch {
      return { ok: false, reason: 'auth-failed' };
    }
  } else {
    if (sealed) return { ok: false, reason: 'encrypted-no-secret' };
    payload = buf.subarray(HEADER_LEN);
  }
  const msg = parsePayload(payload);
  return msg ? { ok: true, msg } : { ok: false, reason: 'malformed' };
}

function parsePayload(p: Buffer): GossipMessage | undefined {
  if (p.length < FIXED_PAYLOAD + 6) return undefined;
  const kindByte = p[0];
  if (kindByte !== KIND_ANNOUNCE && kindByte !== KIND_GOODBYE) return undefined;
  const u64 = (at: number): number | undefined => {
    const v = p.readBigUInt64BE(at);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
  };
  const incarnation = u64(1);
  const seq = u64(9);
  const timestamp = u64(17);
  if (incarnation === undefined || seq === undefined || timestamp === undefined) return undefined;
  let off = FIXED_PAYLOAD;
  const str = (max: number): string | undefined => {
    if (off + 2 > p.length) return undefined;
    const len = p.readUInt16BE(off);
    off += 2;
    if (len === 0 || len > max || off + len > p.length) return undefined;
    const s = utf8.decode(p.subarray(off, off + len));
    off += len;
    return s;
  };
  const cluster = str(MAX_CLUSTER_BYTES);
  const name = str(MAX_NAME_BYTES);
  const address = str(MAX_ADDRESS_BYTES);
  if (cluster === undefined || name === undefined || address === undefined || off !== p.length) return undefined;
  if (!NODE_NAME_PATTERN.test(name) || !parseAddress(address)) return undefined;
  return { kind: kindByte === KIND_GOODBYE ? 'goodbye' : 'announce', cluster, name, address, incarnation, seq, timestamp };
}

// ---------------------------------------------------------------------------
// Addresses

/** The interface this strategy multicasts on for a node's advertised address (see `multicastInterfaceFor`). */
export const gossipInterfaceFor = multicastInterfaceFor;

// ---------------------------------------------------------------------------
// Strategy

interface Peer {
  address: string;
  incarnation: number;
  /** performance.now() of the last accepted packet. */
  heardAt: number;
}

interface ReplayRecord {
  incarnation: number;
  seq: number;
  /** Wall-clock ms after which the timestamp window alone refuses every packet this record guards. */
  keepUntil: number;
}

/** UDP multicast (or broadcast) discovery on one LAN segment; see the file comment. */
export class GossipStrategy implements Strategy {
  readonly name = 'gossip';
  /** Every node reads the same shared medium, so discovery is mutual (see `Strategy.mutual`). */
  readonly mutual = true;
  private readonly group: string;
  private readonly port: number;
  private readonly ttl: number;
  private readonly intervalMs: number;
  private readonly expireAfterMs: number;
  private readonly broadcastOnly: boolean;
  private readonly broadcastAddress: string;
  private readonly key: Buffer | undefined;
  private readonly configuredInterface: string | undefined;

  private ctx?: StrategyContext;
  private rlog?: RateLimitedLog;
  private iface = '127.0.0.1';
  private loopbackOnly = true;
  private rx?: Socket;
  private tx?: Socket;
  private rxRetryAt = 0;
  private txRetryAt = 0;
  private opening?: Promise<void>;
  private seq = 0;
  private lastReplyAt = Number.NEGATIVE_INFINITY;
  private replyTimer?: NodeJS.Timeout;
  private announceTimer?: NodeJS.Timeout;
  private sweepTimer?: NodeJS.Timeout;
  private readonly earlyTimers: NodeJS.Timeout[] = [];
  private readonly peers = new Map<string, Peer>();
  private readonly replay = new Map<string, ReplayRecord>();
  private lastReported = '';
  /** Errors reported with `lookupFailed`, so each distinct one is reported once. */
  private readonly reportedErrors = new LogOnce(undefined, 100);
  /** Receive-path conditions currently reported (`echo`, `others`), so each is reported once while it lasts. */
  private readonly conditions = new LogOnce();
  private startedAt = 0;
  /** Date.now() at start: with a secret, packets stamped earlier are refused (`before-start`). */
  private startedWallMs = Number.POSITIVE_INFINITY;
  /** performance.now() of this node's last own announcement heard back, and of the first one after a gap. */
  private lastEchoAt = Number.NEGATIVE_INFINITY;
  private echoSince: number | undefined;
  /** performance.now() of the last packet from any other sender, and of the first one after a gap. */
  private lastOtherAt = Number.NEGATIVE_INFINITY;
  private othersSince: number | undefined;
  private started = false;
  private stopped = false;
  private readonly counters: GossipStats;

  constructor(config: GossipStrategyConfig = {}) {
    requireConfigObject(config);
    rejectUnknownKeys(config, GOSSIP_CONFIG_KEYS);
    const c = config as GossipStrategyConfig;
    this.group = c.group ?? '239.255.70.77';
    if (typeof this.group !== 'string' || !isMulticastV4(this.group)) {
      throw new ConfigError('group', `"${String(c.group)}" is not an IPv4 multicast address (224.0.0.0 – 239.255.255.255)`);
    }
    this.port = portOption('port', c.port, 45892);
    this.ttl = intOption('ttl', c.ttl, 1, 0, 255);
    this.configuredInterface = interfaceOption('interface', c.interface);
    this.intervalMs = intOption('intervalMs', c.intervalMs, 1000, 50, 3_600_000);
    this.broadcastOnly = booleanOption('broadcastOnly', c.broadcastOnly, false);
    this.broadcastAddress = c.broadcastAddress ?? '255.255.255.255';
    if (
      typeof this.broadcastAddress !== 'string' ||
      !isIPv4(this.broadcastAddress) ||
      isMulticastV4(this.broadcastAddress) ||
      this.broadcastAddress === '0.0.0.0'
    ) {
      throw new ConfigError(
        'broadcastAddress',
        `expected "255.255.255.255" or the broadcast address of the interface's subnet, got ${JSON.stringify(c.broadcastAddress)}`,
      );
    }
    if (c.secret !== undefined) {
      const ok = (typeof c.secret === 'string' || c.secret instanceof Uint8Array) && c.secret.length > 0;
      if (!ok) throw new ConfigError('secret', 'expected a non-empty string or byte array');
      this.key = deriveGossipKey(c.secret);
    }
    const defaultExpire = Math.max(5000, 5 * this.intervalMs);
    this.expireAfterMs = c.expireAfterMs ?? defaultExpire;
    if (!Number.isSafeInteger(this.expireAfterMs) || this.expireAfterMs < 2 * this.intervalMs) {
      throw new ConfigError(
        'expireAfterMs',
        `expected an integer number of ms, at least 2 × intervalMs (${2 * this.intervalMs}), got ${JSON.stringify(c.expireAfterMs)}`,
      );
    }
    const dropped = Object.fromEntries(GOSSIP_DROP_REASONS.map((r) => [r, 0])) as Record<GossipDropReason, number>;
    this.counters = { received: 0, accepted: 0, ignored: { self: 0, 'other-cluster': 0 }, dropped, peers: 0 };
  }

  /** Packet counters, for tests and diagnostics. */
  stats(): GossipStats {
    return { ...this.counters, ignored: { ...this.counters.ignored }, dropped: { ...this.counters.dropped }, peers: this.peers.size };
  }

  /** The interface this strategy joined and sends on (known after `start`). */
  get interfaceAddress(): string {
    return this.iface;
  }

  async start(ctx: StrategyContext): Promise<void> {
    if (this.started) throw new Error('GossipStrategy instances cannot be started twice');
    this.started = true;
    this.ctx = ctx;
    this.startedAt = performance.now();
    this.startedWallMs = Date.now();
    this.rlog = new RateLimitedLog(ctx.logger);
    this.iface = (await selectMulticastInterface(ctx, this.configuredInterface, 'gossip')).address;
    this.loopbackOnly = isLoopbackV4(this.iface);
    if (this.broadcastOnly && this.broadcastAddress !== '255.255.255.255') {
      const allowed = this.loopbackOnly ? isLoopbackV4(this.broadcastAddress) : directedBroadcasts(this.iface).includes(this.broadcastAddress);
      if (!allowed) {
        throw startConfigError(
          ctx,
          'broadcastAddress',
          `"${this.broadcastAddress}" is not a broadcast address of interface ${this.iface}; allowed: 255.255.255.255${
            this.loopbackOnly
              ? ', 127.x.x.x'
              : directedBroadcasts(this.iface)
                  .map((b) => `, ${b}`)
                  .join('')
          }`,
        );
      }
    }
    if (this.stopped) return;
    await this.openSockets();
    if (this.stopped) return;
    this.announce();
    for (const ms of EARLY_ANNOUNCES_MS) {
      const t = setTimeout(() => this.announce(), ms);
      t.unref();
      this.earlyTimers.push(t);
    }
    this.scheduleAnnounce();
    this.sweepTimer = setInterval(() => this.sweep(), Math.min(500, this.intervalMs));
    this.sweepTimer.unref();
  }

  // -- sockets ---------------------------------------------------------------

  private openSockets(): Promise<void> {
    this.opening ??= Promise.all([this.openRx(), this.openTx()]).then(
      () => {
        this.opening = undefined;
      },
      () => {
        this.opening = undefined;
      },
    );
    return this.opening;
  }

  private async openRx(): Promise<void> {
    if (this.rx || this.stopped || performance.now() < this.rxRetryAt) return;
    const s = createSocket({ type: 'udp4', reuseAddr: true });
    // On Linux, binding to the group keeps unicast datagrams to the port out.
    const bindAddr = !this.broadcastOnly && process.platform === 'linux' ? this.group : undefined;
    try {
      await bindSocket(s, this.port, bindAddr);
      if (!this.broadcastOnly) s.addMembership(this.group, this.iface);
    } catch (err) {
      this.rxRetryAt = performance.now() + SOCKET_RETRY_MS;
      closeQuietly(s);
      this.fail(err, this.broadcastOnly ? `cannot listen on UDP port ${this.port}` : `cannot join ${this.group}:${this.port} on ${this.iface}`);
      return;
    }
    if (this.stopped) {
      closeQuietly(s);
      return;
    }
    s.on('message', (msg, rinfo) => this.ingest(msg, rinfo.address));
    s.on('error', (err) => {
      this.fail(err, 'gossip receive socket failed');
      // Until its own announcements come back through a new socket, nothing this node does not hear is news.
      this.echoSince = undefined;
      if (this.rx === s) this.rx = undefined;
      this.rxRetryAt = performance.now() + SOCKET_RETRY_MS;
      closeQuietly(s);
    });
    s.unref();
    this.rx = s;
  }

  private async openTx(): Promise<void> {
    if (this.tx || this.stopped || performance.now() < this.txRetryAt) return;
    const s = createSocket({ type: 'udp4' });
    try {
      // Bound to the interface address: multicast and limited broadcast leave by that interface only.
      await bindSocket(s, 0, this.iface);
      if (this.broadcastOnly) s.setBroadcast(true);
      else {
        s.setMulticastInterface(this.iface);
        s.setMulticastTTL(this.ttl);
        // IP_MULTICAST_LOOP (the default, set anyway): this node hearing its own announcements
        // is how it knows its receive path works, and so whether silence means anything.
        s.setMulticastLoopback(true);
      }
    } catch (err) {
      this.txRetryAt = performance.now() + SOCKET_RETRY_MS;
      closeQuietly(s);
      this.fail(err, `cannot open a UDP socket on ${this.iface}`);
      return;
    }
    if (this.stopped) {
      closeQuietly(s);
      return;
    }
    s.on('error', (err) => {
      this.fail(err, 'gossip send socket failed');
      if (this.tx === s) this.tx = undefined;
      this.txRetryAt = performance.now() + SOCKET_RETRY_MS;
      closeQuietly(s);
    });
    s.unref();
    this.tx = s;
  }

  /** Reports an error through `lookupFailed`, once per distinct message. */
  private fail(err: unknown, what: string): void {
    const ctx = this.ctx;
    if (!ctx || this.stopped) return;
    const message = `${what}: ${err instanceof Error ? err.message : String(err)}`;
    if (!this.reportedErrors.first(message)) return;
    ctx.lookupFailed(new Error(message, { cause: err }));
  }

  // -- sending ---------------------------------------------------------------

  private packet(kind: GossipMessage['kind']): Buffer | undefined {
    const ctx = this.ctx;
    if (!ctx) return undefined;
    this.seq++;
    try {
      return encodeGossipPacket(
        {
          kind,
          cluster: ctx.clusterName,
          name: ctx.self.name,
          address: ctx.self.address,
          incarnation: ctx.self.incarnation,
          seq: this.seq,
          timestamp: Date.now(),
        },
        this.key,
      );
    } catch (err) {
      this.fail(err, 'cannot encode a gossip packet');
      return undefined;
    }
  }

  private get destination(): string {
    return this.broadcastOnly ? this.broadcastAddress : this.group;
  }

  private announce(): void {
    if (this.stopped) return;
    if (!this.rx || !this.tx) void this.openSockets();
    const tx = this.tx;
    if (!tx) return;
    const p = this.packet('announce');
    if (!p) return;
    tx.send(p, this.port, this.destination, (err) => {
      if (err) this.fail(err, `cannot send to ${this.destination}:${this.port} from ${this.iface}`);
    });
  }

  private scheduleAnnounce(): void {
    if (this.stopped) return;
    // ±10% jitter keeps a cluster started in lockstep from announcing in lockstep.
    const delay = Math.round(this.intervalMs * (0.9 + Math.random() * 0.2));
    this.announceTimer = setTimeout(() => {
      this.announce();
      this.scheduleAnnounce();
    }, delay);
    this.announceTimer.unref();
  }

  /**
   * Answers a newcomer at once (on the next tick, so a burst of newcomers gets one answer),
   * then at most once per REPLY_GAP_MS.
   */
  private replySoon(): void {
    if (this.replyTimer || this.stopped) return;
    const wait = Math.max(0, this.lastReplyAt + REPLY_GAP_MS - performance.now());
    this.replyTimer = setTimeout(() => {
      this.replyTimer = undefined;
      this.lastReplyAt = performance.now();
      this.announce();
    }, wait);
    this.replyTimer.unref();
  }

  // -- receiving -------------------------------------------------------------

  private drop(reason: GossipDropReason, source: string, detail?: string): void {
    this.counters.dropped[reason]++;
    this.rlog?.warn(`gossip-drop:${reason}`, { source, reason, ...(detail ? { detail } : {}) }, 'gossip: dropped a packet');
  }

  /**
   * Handles one datagram from `source` (an IP address). This is what the socket handler runs;
   * public for tests. Never throws.
   */
  ingest(packet: Uint8Array, source: string): void {
    try {
      const r = this.ingestUnsafe(packet, source);
      if (r === 'echo') return;
      // Anything else that arrives, even a packet dropped below, shows that others' packets reach this node.
      if (this.ctx && !this.stopped) this.heard('other');
      if (r) this.drop(r[0], source, r[1]);
    } catch (err) {
      // Unreachable by design; a bug here must not take the socket handler down.
      this.drop('malformed', source, err instanceof Error ? err.message : String(err));
    }
  }

  /** Notes a packet of this node's own (`echo`) or of another sender, tracking since when they arrive without a gap. */
  private heard(from: 'echo' | 'other'): void {
    const now = performance.now();
    if (from === 'echo') {
      if (this.echoSince === undefined || now - this.lastEchoAt > this.gapMs) this.echoSince = now;
      this.lastEchoAt = now;
    } else {
      if (this.othersSince === undefined || now - this.lastOtherAt > this.gapMs) this.othersSince = now;
      this.lastOtherAt = now;
    }
  }

  /** Longest gap between two packets of a steady sender: its jittered period, plus one lost packet. */
  private get gapMs(): number {
    return 2.5 * this.intervalMs;
  }

  private ingestUnsafe(packet: Uint8Array, source: string): [GossipDropReason, string?] | 'echo' | undefined {
    const ctx = this.ctx;
    if (!ctx || this.stopped) return;
    this.counters.received++;
    if (this.loopbackOnly && !isLoopbackV4(unmapV4(String(source)))) return ['foreign-source'];
    const r = decodeGossipPacket(packet, this.key);
    if (!r.ok) return [r.reason];
    const m = r.msg;
    if (m.cluster !== ctx.clusterName) {
      this.counters.ignored['other-cluster']++;
      return;
    }
    if (m.name === ctx.self.name) {
      this.counters.ignored.self++;
      if (m.incarnation !== ctx.self.incarnation || m.address !== ctx.self.address) return; // Another process of that name.
      this.heard('echo');
      return 'echo';
    }
    const now = Date.now();
    if (this.key && Math.abs(now - m.timestamp) > GOSSIP_REPLAY_WINDOW_MS) return ['expired', m.name];
    // A fresh node has no replay record yet: a captured packet of a node that has left since would
    // pass the window and be dialed. Only a packet made after this node started can say its sender is alive.
    if (this.key && m.timestamp < this.startedWallMs) return ['before-start', m.name];
    const rec = this.replay.get(m.name);
    if (rec) {
      if (m.incarnation < rec.incarnation) return ['stale-incarnation', m.name];
      if (m.incarnation === rec.incarnation && m.seq <= rec.seq) return ['replay', m.name];
    } else if (this.replay.size >= 4 * GOSSIP_MAX_PEERS) {
      this.pruneReplay(now);
      if (this.replay.size >= 4 * GOSSIP_MAX_PEERS) return ['peer-limit', m.name];
    }
    if (m.address === ctx.self.address) return ['self-address', m.name];
    const existing = this.peers.get(m.name);
    if (m.kind === 'announce' && !existing && this.peers.size >= GOSSIP_MAX_PEERS) return ['peer-limit', m.name];

    // Accepted: remember it so neither it nor anything older from this name is taken again.
    const keepFor = this.key ? GOSSIP_REPLAY_WINDOW_MS + 5000 : 60_000;
    const keepUntil = Math.max(rec && rec.incarnation === m.incarnation ? rec.keepUntil : 0, (this.key ? Math.max(now, m.timestamp) : now) + keepFor);
    this.replay.set(m.name, { incarnation: m.incarnation, seq: m.seq, keepUntil });
    this.counters.accepted++;

    if (m.kind === 'goodbye') {
      if (existing) {
        this.peers.delete(m.name);
        this.report();
      }
      return;
    }
    const isNew = !existing || existing.incarnation !== m.incarnation;
    this.peers.set(m.name, { address: m.address, incarnation: m.incarnation, heardAt: performance.now() });
    if (isNew || existing?.address !== m.address) this.report();
    if (isNew) this.replySoon();
  }

  private pruneReplay(now: number): void {
    for (const [name, rec] of this.replay) if (now > rec.keepUntil && !this.peers.has(name)) this.replay.delete(name);
  }

  /**
   * Drops the peers not heard from for `expireAfterMs`, on evidence only: while this node hears
   * its own announcements (receive socket open, no gap) and other nodes' packets (no gap), over
   * the whole window. A gap restarts the window, so peers silenced by this side's trouble get a
   * full `expireAfterMs` to be heard again once it is over.
   */
  private sweep(): void {
    if (this.stopped) return;
    const now = performance.now();
    const echoing = this.rx !== undefined && this.echoSince !== undefined && now - this.lastEchoAt <= this.gapMs;
    const othersHeard = this.othersSince !== undefined && now - this.lastOtherAt <= this.gapMs;
    let changed = false;
    if (echoing && othersHeard) {
      const receivingSince = Math.max(this.echoSince as number, this.othersSince as number);
      // The peer's next announce was due by then (jitter is ±10 %).
      const dueMs = 1.1 * this.intervalMs;
      for (const [name, p] of this.peers) {
        if (now - Math.max(p.heardAt, receivingSince) <= this.expireAfterMs) continue;
        // This node still received after the peer's next announce was due: the silence is the peer's.
        if (this.lastEchoAt <= p.heardAt + dueMs || this.lastOtherAt <= p.heardAt + dueMs) continue;
        this.peers.delete(name);
        changed = true;
      }
    }
    if (changed) this.report();
    this.checkReceivePath(now);
    this.pruneReplay(Date.now());
  }

  /** Reports (once each, until it clears) why silent peers are not expired. */
  private checkReceivePath(now: number): void {
    const window = this.expireAfterMs;
    const where = `${this.destination}:${this.port} on ${this.iface}`;
    const deaf = now - Math.max(this.lastEchoAt, this.startedAt) > window;
    this.condition(
      'echo',
      deaf,
      `gossip: this node has not heard its own announcements (${where}) for over ${window} ms, so its receive path is not working (a firewall dropping the traffic, multicast loopback disabled, or a failed receive socket): silent peers are kept, not expired, until it hears itself again`,
    );
    const silentPeer = [...this.peers.values()].some((p) => now - p.heardAt > window);
    const alone = !deaf && silentPeer && now - Math.max(this.lastOtherAt, this.startedAt) > window;
    this.condition(
      'others',
      alone,
      `gossip: no packet from any other node has arrived (${where}) for over ${window} ms: the silent peers are kept rather than emptying the cluster (multicast from other hosts may no longer be delivered here, e.g. by a switch doing IGMP snooping without a querier, or every peer stopped without a goodbye)`,
    );
  }

  private condition(name: string, active: boolean, message: string): void {
    if (!active) {
      this.conditions.forget(name);
      return;
    }
    if (!this.ctx || this.stopped || !this.conditions.first(name)) return;
    this.ctx.lookupFailed(new Error(message));
  }

  private report(): void {
    const ctx = this.ctx;
    if (!ctx || this.stopped || ctx.signal.aborted) return;
    const addresses = [...new Set([...this.peers.values()].map((p) => p.address))].sort();
    const key = addresses.join(',');
    if (key === this.lastReported) return;
    this.lastReported = key;
    ctx.setPeers(addresses);
  }

  // -- stop ------------------------------------------------------------------

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.earlyTimers) clearTimeout(t);
    clearTimeout(this.announceTimer);
    clearTimeout(this.replyTimer);
    clearInterval(this.sweepTimer);
    await this.opening;
    const tx = this.tx;
    if (tx && this.seq > 0) {
      // Goodbye, so peers drop this node now rather than after expireAfterMs.
      const p = this.packet('goodbye');
      if (p) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 200);
          try {
            tx.send(p, this.port, this.destination, () => {
              clearTimeout(t);
              resolve();
            });
          } catch {
            clearTimeout(t);
            resolve();
          }
        });
      }
    }
    if (this.tx) closeQuietly(this.tx);
    if (this.rx) closeQuietly(this.rx);
    this.tx = undefined;
    this.rx = undefined;
    this.peers.clear();
  }
}

function bindSocket(s: Socket, port: number, address?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    s.once('error', onError);
    s.bind({ port, ...(address ? { address } : {}), exclusive: false }, () => {
      s.off('error', onError);
      resolve();
    });
  });
}

function closeQuietly(s: Socket): void {
  try {
    s.close();
  } catch {
    // Already closed.
  }
}
