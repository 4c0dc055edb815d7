/**
 * The one UDP socket of an `mdns` strategy, through the optional `multicast-dns` package: loading
 * the package, opening the socket pinned to one interface, sending (counted, failures reported)
 * and closing it so that nothing of it outlives `stop`.
 */
import { createSocket } from 'node:dgram';
import { type DnsPacket, MDNS_GROUP, type RemoteInfo } from './records.js';
import type { MdnsCounters } from './stats.js';

interface MulticastDns {
  on(event: string, listener: (...args: never[]) => void): unknown;
  removeAllListeners(event?: string): unknown;
  send(packet: DnsPacket, rinfo: { address?: string; port: number } | null, cb: (err?: Error | null) => void): void;
  destroy(cb?: () => void): void;
}

export type MulticastDnsFactory = (options: Record<string, unknown>) => MulticastDns;

export const MDNS_MODULE = 'multicast-dns';

/** What `start` says when the optional package is missing. */
export const MDNS_MISSING_MESSAGE = 'the mdns strategy needs the optional package multicast-dns: npm install multicast-dns';

/** The package's factory, or `undefined` when it is not installed. */
export async function loadFactory(specifier: string): Promise<MulticastDnsFactory | undefined> {
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
    return (await loadFactory(MDNS_MODULE)) !== undefined;
  } catch {
    return false;
  }
}

/** What the socket tells its owner. */
export interface MdnsSocketEvents {
  query(packet: DnsPacket, rinfo: RemoteInfo): void;
  response(packet: DnsPacket, rinfo: RemoteInfo): void;
  /** A socket error, or a failed send: reported, never thrown. */
  error(err: Error): void;
  /** A multicast packet went out (multicast loopback will bring it back). */
  sent(packet: DnsPacket): void;
}

export class MdnsSocket {
  private constructor(
    private mdns: MulticastDns | undefined,
    private readonly iface: string,
    private readonly counters: MdnsCounters,
    private readonly events: MdnsSocketEvents,
  ) {}

  /**
   * Opens the socket on `port`, joined and sending on `iface` only (bound to the group on Linux,
   * so only group traffic arrives; elsewhere to the wildcard). Rejects, with nothing left open,
   * when it is not ready within 5 s, cannot listen or cannot join on `iface`.
   */
  static async open(
    factory: MulticastDnsFactory,
    options: { iface: string; port: number; counters: MdnsCounters; events: MdnsSocketEvents },
  ): Promise<MdnsSocket> {
    const { iface, port, counters, events } = options;
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    const mdns = factory({
      socket,
      port,
      ip: MDNS_GROUP,
      interface: iface,
      bind: process.platform === 'linux' ? MDNS_GROUP : '0.0.0.0',
      loopback: true,
      ttl: 255,
    });
    const s = new MdnsSocket(mdns, iface, counters, events);
    let membershipError: Error | undefined;
    mdns.on('warning', (err: Error) => {
      const e = err as NodeJS.ErrnoException;
      if (e.syscall || typeof e.errno === 'number') {
        if (e.syscall === 'addMembership' && !membershipError) membershipError = e;
        events.error(new Error(`mdns socket on ${iface}: ${e.message}`));
      } else {
        // dns-packet could not decode a datagram.
        counters.malformed++;
      }
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`mdns: the socket on port ${port} did not become ready within 5 s`)), 5000);
      mdns.on('ready', () => {
        clearTimeout(timer);
        resolve();
      });
      mdns.on('error', (err: Error) => {
        clearTimeout(timer);
        reject(new Error(`mdns: cannot listen on UDP port ${port}: ${err.message}`));
      });
    }).catch(async (err: unknown) => {
      await s.close();
      throw err;
    });
    try {
      if (membershipError) throw membershipError;
      // multicast-dns sets it only after a successful join: set it again so a send can never
      // fall back to the routing table's interface.
      socket.setMulticastInterface(iface);
      // IP_MULTICAST_LOOP (the default, and multicast-dns's `loopback: true`, set anyway): hearing
      // its own packets is how this node knows its receive path works (see evidence.ts).
      socket.setMulticastLoopback(true);
    } catch (err) {
      await s.close();
      throw new Error(`mdns: cannot use interface ${iface} for multicast: ${(err as Error).message}`);
    }
    socket.unref();
    mdns.removeAllListeners('error');
    mdns.on('error', (err: Error) => events.error(new Error(`mdns socket: ${err.message}`)));
    mdns.on('query', (packet: DnsPacket, rinfo: RemoteInfo) => events.query(packet, rinfo));
    mdns.on('response', (packet: DnsPacket, rinfo: RemoteInfo) => events.response(packet, rinfo));
    return s;
  }

  /** Whether the socket is open. */
  get open(): boolean {
    return this.mdns !== undefined;
  }

  /** Sends a packet: multicast when `to` is null, else unicast to `to`. Never rejects. */
  send(packet: DnsPacket, to: RemoteInfo | null): Promise<void> {
    const mdns = this.mdns;
    if (!mdns) return Promise.resolve();
    if (packet.type === 'query') this.counters.queriesSent++;
    else this.counters.responsesSent++;
    if (to === null) this.events.sent(packet);
    return new Promise<void>((resolve) => {
      try {
        mdns.send(packet, to, (err) => {
          if (err) {
            this.counters.sendErrors++;
            this.events.error(new Error(`mdns send on ${this.iface} failed: ${err.message}`));
          }
          resolve();
        });
      } catch (err) {
        this.counters.sendErrors++;
        this.events.error(new Error(`mdns: cannot encode a packet: ${(err as Error).message}`));
        resolve();
      }
    });
  }

  /** Closes the socket (at most 1 s); late socket errors are swallowed. */
  close(): Promise<void> {
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
}
