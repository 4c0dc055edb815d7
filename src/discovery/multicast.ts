/**
 * IPv4 and interface helpers shared by the multicast strategies (gossip, mdns): which interface
 * a node multicasts on, so that a node bound to loopback never multicasts beyond it.
 */
import { isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { parseAddress } from '../mesh/identity.js';

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

/** The local IPv4 interface owning `ip`, with its netmask. */
export function findInterface(ip: string): { address: string; netmask: string } | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4' && a.address === ip) return { address: a.address, netmask: a.netmask };
    }
  }
  return undefined;
}
