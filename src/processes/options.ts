/**
 * Checks of the options `node.processes` takes (names, supervision, call timeouts): each bad value
 * throws `FOUNDATION_CONFIG_INVALID` naming its key and what is allowed.
 */
import { ConfigError } from '../errors.js';
import type { RestartPolicy } from './supervisor.js';
import type { CallOptions, SupervisionOptions } from './types.js';

/** Throws `FOUNDATION_CONFIG_INVALID` (key `what`) unless `name` is a non-empty string. */
export function checkName(what: string, name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new ConfigError(what, `expected a non-empty string, got ${JSON.stringify(name)}`);
}

/** The supervision options of a worker, with defaults, checked key by key. */
export function supervision(o: SupervisionOptions | undefined): { restart: RestartPolicy; maxRestarts: number; windowMs: number } {
  const restart = o?.restart ?? 'permanent';
  if (!['permanent', 'transient', 'temporary'].includes(restart)) {
    throw new ConfigError('restart', `expected 'permanent', 'transient' or 'temporary', got ${JSON.stringify(restart)}`);
  }
  const maxRestarts = o?.maxRestarts ?? 3;
  const windowMs = o?.windowMs ?? 5000;
  if (!Number.isInteger(maxRestarts) || maxRestarts < 0) throw new ConfigError('maxRestarts', `expected an integer >= 0, got ${maxRestarts}`);
  if (!Number.isFinite(windowMs) || windowMs <= 0) throw new ConfigError('windowMs', `expected a positive number of ms, got ${windowMs}`);
  return { restart, maxRestarts, windowMs };
}

/** A call's timeout (default 5000 ms), checked. */
export function timeoutOf(opts: CallOptions | undefined): number {
  const t = opts?.timeoutMs ?? 5000;
  if (!Number.isFinite(t) || t <= 0) throw new ConfigError('timeoutMs', `expected a positive number of ms, got ${t}`);
  return t;
}
