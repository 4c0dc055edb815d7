/**
 * Service instances as the registry holds them, and as `services.discover` returns them.
 *
 * Each instance is one registry name, `service:<name>:<id>`, owned by the node that registered
 * it; the registration's `meta` carries the instance's record (`InstanceMeta`). The owning node
 * replaces that meta (`registry.update`) when the instance's health changes. Shaping a registry
 * entry into a `ServiceRecord` adds what only the reading node knows: the link RTT to the owner.
 */
import { ConfigError } from '../../errors.js';
import type { NameOwner } from '../../registry/name-table.js';

/** Health of one instance: `passing` and `warning` count as healthy, `critical` does not. */
export type HealthState = 'passing' | 'warning' | 'critical';

/** The health states, best first. */
export const HEALTH_STATES: readonly HealthState[] = ['passing', 'warning', 'critical'];

/** One service instance, as `services.discover` returns it. */
export interface ServiceRecord {
  /** Service name, as given to `register`. */
  readonly name: string;
  /** Instance id: unique in the cluster for this service (given to `register`, or random). */
  readonly id: string;
  /** The node that registered the instance: it runs its check and handles its calls. */
  readonly node: string;
  /** The instance's semver version, or null when none was given. */
  readonly version: string | null;
  /** Tags given at registration. */
  readonly tags: readonly string[];
  /** Application metadata given at registration. */
  readonly meta: Readonly<Record<string, unknown>>;
  /** Where clients reach the instance outside Foundation (a URL, `host:port`...), or null. */
  readonly endpoint: string | null;
  /** Current health, as last published by the owning node. */
  readonly health: HealthState;
  /** What the check that set `health` said (an error message, `HTTP 503`...), or null. */
  readonly output: string | null;
  /**
   * When (ms since epoch, on the owning node's clock) the check that set the current `health`
   * ran; null for an instance without a check. The owner publishes changes, not every run: an
   * instance that stays `passing` keeps the `checkedAt` of the run that made it pass.
   */
  readonly checkedAt: number | null;
  /** Heartbeat round-trip time to the owning node, in ms: 0 for this node, null before the first measurement. */
  readonly rttMs: number | null;
}

/** What the registry holds for one instance (the registration's `meta`). */
export interface InstanceMeta {
  /** Marks the meta as a service record (format version). */
  readonly $service: 1;
  readonly name: string;
  readonly id: string;
  readonly version: string | null;
  readonly tags: string[];
  readonly meta: Record<string, unknown>;
  readonly endpoint: string | null;
  readonly health: HealthState;
  readonly output: string | null;
  readonly checkedAt: number | null;
}

/** Prefix of every instance's registry name. */
export const SERVICE_PREFIX = 'service:';
/** Longest service name, in UTF-8 bytes. */
export const MAX_SERVICE_NAME_BYTES = 128;
/** Longest instance id. */
export const MAX_INSTANCE_ID_LENGTH = 64;

/** Letters, digits, `.`, `_`, `-`, `/`; starting with a letter or digit (no `:` and no glob characters, so a name is its own select pattern). */
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._/-]*$/;
const INSTANCE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function checkServiceName(name: unknown, key = 'name'): asserts name is string {
  if (typeof name !== 'string' || !SERVICE_NAME.test(name) || Buffer.byteLength(name, 'utf8') > MAX_SERVICE_NAME_BYTES)
    throw new ConfigError(
      key,
      `a service name is 1-${MAX_SERVICE_NAME_BYTES} characters of letters, digits, ".", "_", "-" and "/", starting with a letter or digit; got ${JSON.stringify(name)}`,
    );
}

export function checkInstanceId(id: unknown, key = 'id'): asserts id is string {
  if (typeof id !== 'string' || !INSTANCE_ID.test(id) || id.length > MAX_INSTANCE_ID_LENGTH)
    throw new ConfigError(
      key,
      `an instance id is 1-${MAX_INSTANCE_ID_LENGTH} letters, digits, ".", "_" and "-", starting with a letter or digit; got ${JSON.stringify(id)}`,
    );
}

/** The registry name of one instance. */
export function instanceName(service: string, id: string): string {
  return `${SERVICE_PREFIX}${service}:${id}`;
}

/** The registry glob that selects every instance of `service` (or of every service). */
export function instancePattern(service?: string): string {
  return service === undefined ? `${SERVICE_PREFIX}*` : `${SERVICE_PREFIX}${service}:*`;
}

export function isHealthState(v: unknown): v is HealthState {
  return v === 'passing' || v === 'warning' || v === 'critical';
}

const isStringOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';

/**
 * Reads one registry entry as an instance; undefined when it is not one (a name under
 * `service:` registered by hand through `node.registry`, or a malformed meta from a peer).
 */
export function parseInstance(owner: NameOwner): InstanceMeta | undefined {
  const m = owner.meta as Partial<InstanceMeta> | null;
  if (typeof m !== 'object' || m === null || m.$service !== 1) return undefined;
  if (typeof m.name !== 'string' || typeof m.id !== 'string' || owner.name !== instanceName(m.name, m.id)) return undefined;
  if (!isStringOrNull(m.version) || !isStringOrNull(m.endpoint) || !isStringOrNull(m.output) || !isHealthState(m.health)) return undefined;
  if (!Array.isArray(m.tags) || !m.tags.every((t) => typeof t === 'string')) return undefined;
  if (typeof m.meta !== 'object' || m.meta === null || Array.isArray(m.meta)) return undefined;
  if (m.checkedAt !== null && (typeof m.checkedAt !== 'number' || !Number.isFinite(m.checkedAt))) return undefined;
  return m as InstanceMeta;
}

/** A record from an instance's meta, its owning node and the RTT to that node. */
export function toRecord(node: string, m: InstanceMeta, rttMs: number | null): ServiceRecord {
  return {
    name: m.name,
    id: m.id,
    node,
    version: m.version,
    tags: m.tags,
    meta: m.meta,
    endpoint: m.endpoint,
    health: m.health,
    output: m.output,
    checkedAt: m.checkedAt,
    rttMs,
  };
}
