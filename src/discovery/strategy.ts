/**
 * The discovery strategy interface (the libcluster layer). A strategy finds peers; the topology
 * that runs it turns what it finds into mesh connects and disconnects.
 */
import { ConfigError } from '../errors.js';
import type { ConnectResult } from '../mesh/mesh.js';
import type { NodeIdentity } from '../mesh/types.js';
import type { Logger } from '../util/logger.js';
import { didYouMean } from '../util/suggest.js';

/** What a strategy may do. Every capability is scoped to the strategy's topology. */
export interface StrategyContext {
  /** Name of the topology this strategy runs under, e.g. `dataPlane`. */
  readonly topology: string;
  /** This node. */
  readonly self: NodeIdentity;
  /** Cluster name: strategies that share a medium (multicast, mDNS, a directory) keep clusters apart with it. */
  readonly clusterName: string;
  /** Aborted when the topology stops. */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  /**
   * Declares the full set of `host:port` addresses the strategy currently sees. The topology
   * connects the new ones (in parallel, retrying with backoff) and disconnects the ones that
   * are gone, but only those this topology connected itself.
   */
  setPeers(addresses: Iterable<string>): void;
  /**
   * Reports a failed lookup. The peers are kept as they are ("unknown", never "no nodes");
   * one log line per distinct error.
   */
  lookupFailed(error: Error): void;
  /** One connect attempt, outside the `setPeers` bookkeeping. */
  connect(address: string): Promise<ConnectResult>;
  /** Disconnects an address this topology connected. */
  disconnect(address: string): void;
  /** Names of the currently connected members. */
  list(): string[];
}

/** A discovery strategy. Implement this for a custom strategy (see docs/guides/custom-strategy.md). */
export interface Strategy {
  /** Short name used in logs and telemetry, e.g. `static`. */
  readonly name: string;
  /**
   * Whether every node running this strategy finds every other one at about the same time
   * (gossip, mdns, local, dns, kubernetes: they all read the same shared medium). Then only the
   * node with the smaller address of a pair dials at once; the other waits briefly for that
   * connection before dialing itself, so a forming cluster opens one TCP connection per pair
   * instead of two. Leave it unset (the default, `false`) when discovery can be one-sided, as with
   * a static list of seeds: a node then dials everything it finds immediately.
   */
  readonly mutual?: boolean;
  start(ctx: StrategyContext): void | Promise<void>;
  stop(): void | Promise<void>;
}

/** A strategy class: constructed with the topology's `config`. */
export type StrategyClass<C = unknown> = new (config: C) => Strategy;

// ---------------------------------------------------------------------------
// Helpers shared by the built-in strategies (and available to custom ones).

/**
 * Refuses a strategy config holding a key that is not in `allowed`: throws a ConfigError on that
 * key, `unknown key; did you mean "x"? Allowed keys: ...` (the wording of the node options). Call
 * it from the constructor: the registry prefixes the key with `topologies.<name>.config.`.
 */
export function rejectUnknownKeys(config: object, allowed: readonly string[]): void {
  for (const key of Object.keys(config)) {
    if (allowed.includes(key)) continue;
    const hint = didYouMean(key, allowed);
    throw new ConfigError(key, `unknown key${hint ? `; did you mean "${hint}"?` : '.'} Allowed keys: ${allowed.join(', ')}`);
  }
}

/**
 * A ConfigError found when the strategy starts, on one of its config keys. The registry only
 * prefixes the errors constructors throw, so start-time errors carry the full key themselves:
 * `topologies.<topology>.config.<key>`, or `topologies.<topology>.<key>` with `{ config: false }`
 * (e.g. `strategy`).
 */
export function startConfigError(ctx: Pick<StrategyContext, 'topology'>, key: string, message: string, options?: { config?: boolean }): ConfigError {
  const path = options?.config === false ? key : `config.${key}`;
  return new ConfigError(`topologies.${ctx.topology}.${path}`, message);
}
