import { randomInt } from 'node:crypto';
import { hostname } from 'node:os';
import type { NodeIdentity } from './types.js';

/**
 * A new incarnation for this start: ms since the epoch × 1000 plus 0..999 at random.
 * It grows over restarts (clock permitting) so a peer can tell a newer start from an
 * older one, and the random part separates two starts within one millisecond.
 * It stays below 2^53, so it is an exact JS number.
 */
export function newIncarnation(): number {
  return Date.now() * 1000 + randomInt(1000);
}

/** A default node name: `<hostname>-<pid>`, unique per host. */
export function defaultNodeName(): string {
  return `${hostname().split('.')[0] ?? 'node'}-${process.pid}`;
}

/** Node names travel in frames and URLs: keep them printable and bounded. */
export const NODE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/;

export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Parses `host:port` or `[v6]:port`. Returns undefined when malformed. */
export function parseAddress(address: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(address) ?? /^([^:[\]]+):(\d{1,5})$/.exec(address);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { host: m[1] as string, port };
}

export function describe(id: NodeIdentity): string {
  return `${id.name}@${id.address}#${id.incarnation}`;
}
