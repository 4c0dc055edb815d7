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
 * derived from the node's advertised address when not set (see `selectMulticastInterface`: an
 * address that is not one of this host's falls back to loopback): a loopback node (the default
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
 * The parts live in mdns/: records.ts (DNS records and names), socket.ts (the socket, through
 * multicast-dns), responder.ts (what this node publishes and answers), browser-cache.ts (queries,
 * the cache and the peer set), evidence.ts (what expiry rests on); this file wires them up.
 *
 * `multicast-dns` is an optional peer dependency, imported when the strategy starts: without
 * it, construction succeeds (the config is validated eagerly) and `start` rejects with a
 * ConfigError on `topologies.<name>.strategy` saying how to install it. `mdnsAvailable()` tells
 * beforehand.
 */
import { ConfigError } from '../../errors.js';
import { selectMulticastInterface } from '../net-interfaces.js';
import { rejectUnknownKeys, type Strategy, type StrategyContext, startConfigError } from '../strategy.js';
import { interfaceOption, intOption, portOption, requireConfigObject } from '../strategy-config.js';
import { Browser } from './browser-cache.js';
import { LinkFilter, ReceiveEvidence } from './evidence.js';
import { type DnsPacket, type MdnsNames, mdnsNames, type RemoteInfo } from './records.js';
import { buildRecords, type Published, Responder } from './responder.js';
import { loadFactory, MDNS_MISSING_MESSAGE, MDNS_MODULE, MdnsSocket, type MulticastDnsFactory } from './socket.js';
import { type MdnsCounters, type MdnsStats, newCounters } from './stats.js';

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
   * IPv4 address of the local interface to join the mDNS group on and send from; it must be an
   * address of this host (checked at start). Default: derived from the node's advertised address
   * — `127.0.0.1` when that is a loopback address or a wildcard, else that address (a host name
   * is resolved) if it is an address of this host, else `127.0.0.1` with a warning. A node on
   * `127.0.0.1` therefore never sends beyond loopback.
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

/** What runs between `start` and `stop`. */
interface Running {
  socket: MdnsSocket;
  responder: Responder;
  browser: Browser;
  evidence: ReceiveEvidence;
  link: LinkFilter;
}

/** DNS-SD over multicast DNS (see the file comment). */
export class MdnsStrategy implements Strategy {
  readonly name = 'mdns';
  /** Every node reads the same shared medium, so discovery is mutual (see `Strategy.mutual`). */
  readonly mutual = true;
  /** Module the strategy imports at start; a subclass may point it elsewhere (tests). */
  protected readonly moduleSpecifier: string = MDNS_MODULE;

  private readonly serviceType: string;
  private readonly domain: string;
  private readonly configuredInterface: string | undefined;
  private readonly ttlSeconds: number;
  private readonly queryIntervalMs: number;
  private readonly configuredHostLabel: string | undefined;
  private readonly port: number;
  private readonly announcementCount: number;

  private ctx?: StrategyContext;
  private iface = '127.0.0.1';
  private names?: MdnsNames;
  private running?: Running;
  private readonly announceTimers: NodeJS.Timeout[] = [];
  private started = false;
  private stopped = false;
  private readonly counters: MdnsCounters = newCounters();

  constructor(config: MdnsStrategyConfig = {}) {
    requireConfigObject(config);
    rejectUnknownKeys(config, CONFIG_KEYS);
    const c = config as MdnsStrategyConfig;
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
    this.configuredInterface = interfaceOption('interface', c.interface);
    this.ttlSeconds = intOption('ttlSeconds', c.ttlSeconds, 120, 1, 86_400);
    this.queryIntervalMs = intOption('queryIntervalMs', c.queryIntervalMs, 60_000, 1000, 3_600_000);
    if (c.hostLabel !== undefined && (typeof c.hostLabel !== 'string' || !/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(c.hostLabel))) {
      throw new ConfigError('hostLabel', `expected one DNS label (letters, digits and hyphens, at most 63), got ${JSON.stringify(c.hostLabel)}`);
    }
    this.configuredHostLabel = c.hostLabel;
    this.port = portOption('port', c.port, 5353);
    this.announcementCount = intOption('announcements', c.announcements, 3, 0, 10);
  }

  /** Packet counters, for tests and diagnostics. */
  stats(): MdnsStats {
    return { ...this.counters, instances: this.running?.browser.instances ?? 0, peers: this.running?.browser.peers ?? 0 };
  }

  /** The interface this strategy joined and sends on (known after `start`). */
  get interfaceAddress(): string {
    return this.iface;
  }

  /** This node's service instance name, e.g. `n1._foundation._tcp.local` (known after `start`). */
  get instanceName(): string {
    return this.names?.instance ?? '';
  }

  async start(ctx: StrategyContext): Promise<void> {
    if (this.started) throw new Error('MdnsStrategy instances cannot be started twice');
    this.started = true;
    this.ctx = ctx;
    const factory = await loadFactory(this.moduleSpecifier);
    if (!factory) throw startConfigError(ctx, 'strategy', MDNS_MISSING_MESSAGE, { config: false });
    if (this.stopped) return;

    const selected = await selectMulticastInterface(ctx, this.configuredInterface, 'mdns');
    this.iface = selected.address;
    const names = mdnsNames(this.serviceType, this.domain, ctx.self.name, this.configuredHostLabel);
    this.names = names;
    const published = await buildRecords(ctx, names, this.domain, this.iface, this.ttlSeconds);
    if (this.stopped) return;

    const running = await this.open(factory, ctx, names, selected.netmask, published);
    if (this.stopped) {
      await running.socket.close();
      return;
    }
    this.running = running;
    ctx.logger.info({ interface: this.iface, instance: names.instance, host: names.host, port: this.port }, 'mdns: advertising and browsing');

    running.browser.start();
    for (let i = 0; i < this.announcementCount; i++) {
      const t = setTimeout(() => running.responder.announce(), i * 1000);
      t.unref();
      this.announceTimers.push(t);
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.announceTimers) clearTimeout(t);
    const running = this.running;
    if (!running) return;
    running.browser.stop();
    running.responder.stop();
    await running.responder.sendGoodbye();
    await running.socket.close();
  }

  // -- wiring ------------------------------------------------------------------

  private async open(factory: MulticastDnsFactory, ctx: StrategyContext, names: MdnsNames, netmask: string, published: Published): Promise<Running> {
    const link = new LinkFilter(this.iface, netmask);
    const evidence = new ReceiveEvidence(this.iface, this.port, link, this.counters);
    // The parts are created once the socket is open; its events reach them through `parts`.
    let parts: { responder: Responder; browser: Browser } | undefined;
    const socket = await MdnsSocket.open(factory, {
      iface: this.iface,
      port: this.port,
      counters: this.counters,
      events: {
        query: (packet, rinfo) => this.guard(() => this.onQuery(packet, rinfo, evidence, link, parts?.responder)),
        response: (packet, rinfo) => this.guard(() => this.onResponse(packet, rinfo, evidence, link, parts?.browser)),
        error: (err) => this.failed(err, evidence),
        sent: (packet) => evidence.noteSent(packet),
      },
    });
    const send = (packet: DnsPacket, to: RemoteInfo | null) => socket.send(packet, to);
    const guard = (fn: () => void) => this.guard(fn);
    const responder = new Responder(names, published, send, guard);
    const browser = new Browser({
      ctx,
      names,
      counters: this.counters,
      evidence,
      link,
      where: `${this.iface}:${this.port}`,
      queryIntervalMs: this.queryIntervalMs,
      send,
      socketOpen: () => socket.open,
      guard,
    });
    parts = { responder, browser };
    return { socket, responder, browser, evidence, link };
  }

  private onQuery(packet: DnsPacket, rinfo: RemoteInfo, evidence: ReceiveEvidence, link: LinkFilter, responder: Responder | undefined): void {
    evidence.noteArrival(packet, rinfo);
    if (!link.onLink(rinfo.address)) {
      this.counters.offLink++;
      return;
    }
    this.counters.packetsReceived++;
    this.counters.queriesReceived++;
    responder?.onQuery(packet, rinfo, this.port);
  }

  private onResponse(packet: DnsPacket, rinfo: RemoteInfo, evidence: ReceiveEvidence, link: LinkFilter, browser: Browser | undefined): void {
    evidence.noteArrival(packet, rinfo);
    // RFC 6762 §6 / §11: responses come from port 5353, and only from the local link.
    if (rinfo.port !== this.port || !link.onLink(rinfo.address)) {
      this.counters.offLink++;
      return;
    }
    this.counters.packetsReceived++;
    this.counters.responsesReceived++;
    browser?.onResponse(packet);
  }

  /** Runs a handler; a throw (malformed data the checks missed) is counted, never propagated. */
  private guard(fn: () => void): void {
    if (this.stopped) return;
    try {
      fn();
    } catch {
      this.counters.malformed++;
    }
  }

  private failed(err: Error, evidence: ReceiveEvidence): void {
    if (this.stopped) return;
    evidence.noteError();
    this.ctx?.lookupFailed(err);
  }
}
