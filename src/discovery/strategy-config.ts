/**
 * Validation of strategy config values, shared by the built-in strategies (and usable by custom
 * ones), so that every strategy refuses bad input with the same wording: a ConfigError on the key,
 * saying what is allowed and what it got. Constructors call these; the registry prefixes the key
 * with `topologies.<name>.config.`.
 */
import { isIPv4 } from 'node:net';
import { ConfigError } from '../errors.js';
import { isMulticastV4 } from './net-interfaces.js';

/** Refuses a config that is not a plain object (`null`, an array, a string...). */
export function requireConfigObject(config: unknown): asserts config is Record<string, unknown> {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new ConfigError('config', 'expected an object');
}

/** An integer in `min` – `max` (inclusive), or `def` when `value` is undefined. */
export function intOption(key: string, value: unknown, def: number, min: number, max: number): number {
  const v = value ?? def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(key, `expected an integer between ${min} and ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A port number (1 – 65535), or `def` when `value` is undefined. */
export function portOption(key: string, value: unknown, def: number): number {
  return intOption(key, value, def, 1, 65535);
}

/** `true` or `false`, or `def` when `value` is undefined. */
export function booleanOption(key: string, value: unknown, def: boolean): boolean {
  const v = value ?? def;
  if (typeof v !== 'boolean') throw new ConfigError(key, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** One of `allowed`, or `def` when `value` is undefined. */
export function oneOfOption<T extends string>(key: string, value: unknown, allowed: readonly T[], def: T): T {
  const v = value ?? def;
  if (typeof v !== 'string' || !allowed.includes(v as T)) {
    throw new ConfigError(key, `expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

/**
 * The `interface` option of the multicast strategies: an IPv4 unicast address (not `0.0.0.0`,
 * not multicast), or `undefined`. Whether it is an address of this host is checked at start
 * (see `selectMulticastInterface`), since interfaces can change between construction and start.
 */
export function interfaceOption(key: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !isIPv4(value) || value === '0.0.0.0' || isMulticastV4(value)) {
    throw new ConfigError(key, `expected the IPv4 address of a local interface (e.g. "127.0.0.1" or "192.168.1.20"), got ${JSON.stringify(value)}`);
  }
  return value;
}
