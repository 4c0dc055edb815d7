/**
 * The discovery strategy interface (the libcluster layer). A strategy finds peers; the topology
 * that runs it turns what it finds into mesh connects and disconnects.
 */
import type { ConnectResult } from '../mesh/mesh.js';
import type { NodeIdentity } from '../mesh/types.js';
import type { Logger } from '../util/logger.js';

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
  start(ctx: StrategyContext): void | Promise<void>;
  stop(): void | Promise<void>;
}

/** A strategy class: constructed with the topology's `config`. */
export type StrategyClass<C = unknown> = new (config: C) => Strategy;
