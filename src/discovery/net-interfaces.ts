/**
 * IPv4 and interface helpers shared by the multicast strategies (gossip, mdns): which interface
 * a node multicasts on, so that a node bound to loopback never multicasts beyond it, and the
 * check that an interface is an address of this host.
 */
import { lookup } from 'node:dns/promises';
import { isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { parseAddress } from '../mesh/identity.js';
import { type StrategyContext, startConfigError } from './strategy.js';

export function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0) >>> 0;
}

export function isLoopbackV4(ip: string): boolean {
  return isIPv4(ip) && ip.startsWith('127.');
}

export function isMulticastV4(ip: string): boolean {
  if (!isIPv4(ip)) return false;
  const first = Number(ip.split('.')[0]);
  return first >= 224 && first <= 239;
}

/** `::ffff:1.2.3.4` → `1.2.3.4` (a dual-stack socket reports IPv4 sources this way). */
export function unmapV4(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? (m[1] as string) : ip;
}

/**
 * The interface a node with this advertised address multicasts on, when the host part settles
 * it without a DNS lookup: loopback (and wildcards) → `127.0.0.1`, an IPv4 literal → itself.
 * `undefined` for a host name (resolve it) or a non-loopback IPv6 address (fall back to loopback).
 */
export function multicastInterfaceFor(address: string): string | undefined {
  const host = parseAddress(address)?.host ?? address;
  const h = unmapV4(host);
  if (h === 'localhost' || h === '0.0.0.0' || h === '::' || h === '::1' || isLoopbackV4(h)) return '127.0.0.1';
  if (isIPv4(h)) return h;
  return undefined;
}

/** The local IPv4 interface owning `ip`, with its netmask: `undefined` when `ip` is not an address of this host. */
export function findInterface(ip: string): { address: string; netmask: string } | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4' && a.address === ip) return { address: a.address, netmask: a.netmask };
    }
  }
  return undefined;
}

/** Whether `ip` is an IPv4 address of one of this host's interfaces. */
export function isAddressOfThisHost(ip: string): boolean {
  return findInterface(ip) !== undefined;
}

/** The IPv4 addresses of this host's interfaces (for error messages). */
export function localIPv4s(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((l) => l ?? [])
    .filter((a) => a.family === 'IPv4')
    .map((a) => a.address);
}

/** Directed broadcast addresses of the local interface that owns `ip`. */
export function directedBroadcasts(ip: string): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family !== 'IPv4' || a.address !== ip) continue;
      const mask = ipv4ToInt(a.netmask);
      const bcast = ((ipv4ToInt(ip) & mask) | (~mask >>> 0)) >>> 0;
      out.push([24, 16, 8, 0].map((s) => (bcast >>> s) & 255).join('.'));
    }
  }
  return out;
}

/** The interface a multicast strategy joins and sends on, with its netmask. */
export interface SelectedInterface {
  address: string;
  netmask: string;
}

/**
 * The interface a multicast strategy uses, checked to be an address of this host:
 * - `configured` (the strategy's `interface` option) when set; if this host has no such address,
 *   a ConfigError on `topologies.<topology>.config.interface` listing the addresses it has;
 * - else derived from the node's advertised address: loopback (and wildcards) → `127.0.0.1`; an
 *   IPv4 address, or the IPv4 address a host name resolves to (2 s limit), if it is an address of
 *   this host; otherwise (a NAT or port-mapped address, a name that resolves elsewhere or not at
 *   all, a non-loopback IPv6 address) `127.0.0.1` with a warning, so that a node never multicasts
 *   on an interface it merely guessed.
 */
export async function selectMulticastInterface(ctx: StrategyContext, configured: string | undefined, strategy: string): Promise<SelectedInterface> {
  if (configured !== undefined) {
    const owner = findInterface(configured);
    if (owner) return owner;
    throw startConfigError(ctx, 'interface', `${configured} is not an IPv4 address of this host; allowed: ${localIPv4s().join(', ') || 'none found'}`);
  }
  const loopback = { address: '127.0.0.1', netmask: findInterface('127.0.0.1')?.netmask ?? '255.0.0.0' };
  let derived = multicastInterfaceFor(ctx.self.address);
  if (derived === '127.0.0.1') return loopback;
  const host = parseAddress(ctx.self.address)?.host ?? ctx.self.address;
  if (derived === undefined && !isIPv6(host)) {
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<undefined>((r) => {
        timer = setTimeout(() => r(undefined), 2000);
        timer.unref();
      });
      const found = await Promise.race([lookup(host, { family: 4 }), timeout]);
      derived = found && multicastInterfaceFor(found.address);
    } catch {
      // Falls through to loopback.
    } finally {
      clearTimeout(timer);
    }
  }
  if (derived === '127.0.0.1') return loopback;
  // Only an address of this host: a name or address that leads elsewhere (NAT, a load balancer) says nothing about our interfaces.
  const owner = derived === undefined ? undefined : findInterface(derived);
  if (owner) return owner;
  ctx.logger.warn(
    { address: ctx.self.address, ...(derived ? { derived } : {}) },
    `${strategy}: the node address does not lead to an IPv4 address of this host; using loopback only (set the ${strategy} \`interface\` option)`,
  );
  return loopback;
}
