/**
 * `node.presence` (Phoenix.Presence): who is present on which topic across the cluster, with
 * join/leave diffs.
 *
 * Leaky on purpose: it is the owner-versioned replica of `src/replication/owned-replica.ts`
 * (`presence-table.ts` on top), carried on the `$presence` system topic over the control lane by
 * `MeshReplicaLink`, exactly as the registry is. Each node owns its presences; a change goes to
 * every member at once (one delta per turn of the event loop); a digest every `DIGEST_MS` repairs
 * a lost last delta; a node's presences leave with it when it goes down (within the mesh's
 * failure-detection time), and only that incarnation's. `list` is a local read.
 */
import { ConfigError, ErrorCodes, PresenceError } from '../errors.js';
import { assertSerializable } from '../mesh/codec.js';
import type { InternalMesh } from '../mesh/interface.js';
import { MeshReplicaLink } from '../replication/mesh-replica.js';
import type { Logger } from '../util/logger.js';
import { RateLimitedLog } from '../util/logger.js';
import { type PresenceDiff, type PresenceList, type PresenceMessage, type PresenceMeta, PresenceTable } from './presence-table.js';

export type { PresenceDiff, PresenceEntry, PresenceList, PresenceMeta } from './presence-table.js';

/** Handler of `presence.onDiff`. Errors it throws are logged, never thrown at the tracker. */
export type PresenceDiffHandler = (diff: PresenceDiff) => void;

/** The public `node.presence` API. */
export interface PresenceApi {
  /**
   * Tracks `key` (a user id, a device...) as present on `topic` from this node, with serializable
   * `meta`. Every node lists it until this node untracks it or goes down. Throws
   * `FOUNDATION_PRESENCE_TRACKED` when this node tracks that key on that topic already (use `update`).
   */
  track(topic: string, key: string, meta?: unknown): PresenceMeta;
  /** Stops tracking `key` on `topic` from this node; false when this node did not track it. */
  untrack(topic: string, key: string): boolean;
  /** Replaces the meta this node tracks for `key` on `topic` (a leave of the old ref and a join of the new one). Throws `FOUNDATION_PRESENCE_NOT_TRACKED` when it does not track it. */
  update(topic: string, key: string, meta: unknown): PresenceMeta;
  /** Everyone's presences on `topic`, grouped by key: `{ [key]: { metas: [{ node, ref, meta }...] } }`. Local state, no network. */
  list(topic: string): PresenceList;
  /** The metas of one key on one topic (one per node that tracks it). */
  get(topic: string, key: string): PresenceMeta[];
  /** Topics with at least one presence. */
  topics(): string[];
  /**
   * Calls `handler` with each diff of `topic` (`{ topic, joins, leaves }`, batched per turn of the
   * event loop) as this node sees it: its own tracks, others' arriving, a departed node's leaving.
   * Replaying the diffs (leaves, then joins) onto the `list` taken when subscribing gives the list.
   * Returns the function that stops it.
   */
  onDiff(topic: string, handler: PresenceDiffHandler): () => void;
  stats(): PresenceStats;
}

/** Counters of presence on this node. */
export interface PresenceStats {
  /** Presences (metas) in the cluster as this node sees them, and those this node tracks. */
  presences: number;
  own: number;
  /** Joins and leaves this node has seen (its own and others'), as handed to diffs. */
  joins: number;
  leaves: number;
  /** Replication messages from peers that were malformed and dropped. */
  messagesDropped: number;
}

/** System topic of presence replication. */
export const PRESENCE_TOPIC = '$presence';
/** Period of the digest that repairs lost deltas. */
const DIGEST_MS = 2000;
/** Longest topic or key, in UTF-8 bytes. */
export const MAX_PRESENCE_NAME_BYTES = 255;

function checkName(what: 'topic' | 'key', v: unknown): asserts v is string {
  if (typeof v !== 'string' || v.length === 0) throw new ConfigError(what, `a presence ${what} is a non-empty string, got ${JSON.stringify(v)}`);
  if (Buffer.byteLength(v, 'utf8') > MAX_PRESENCE_NAME_BYTES)
    throw new ConfigError(what, `a presence ${what} is at most ${MAX_PRESENCE_NAME_BYTES} bytes in UTF-8`);
  if (what === 'topic' && v.includes('\u0000')) throw new ConfigError(what, 'a presence topic may not contain NUL');
}

export class Presence implements PresenceApi {
  private readonly table: PresenceTable;
  private readonly link: MeshReplicaLink<PresenceMessage>;
  private readonly handlers = new Map<string, Set<PresenceDiffHandler>>();
  private readonly warn: RateLimitedLog;
  private diffsScheduled = false;

  constructor(mesh: InternalMesh, log: Logger) {
    this.warn = new RateLimitedLog(log);
    this.link = new MeshReplicaLink<PresenceMessage>(mesh, log, { topic: PRESENCE_TOPIC, digestMs: DIGEST_MS, what: 'presence' });
    this.table = new PresenceTable(mesh.self.name, mesh.self.incarnation, this.link.emit, () => this.scheduleDiffs());
  }

  /** Starts replicating: members already up get this node's presences, later ones when they come up. */
  start(): void {
    this.link.start(this.table);
  }

  /** Stops replicating; this node's presences leave with the node (peers drop them when it goes down). */
  stop(): void {
    this.link.stop();
    this.handlers.clear();
  }

  private scheduleDiffs(): void {
    if (this.diffsScheduled) return;
    this.diffsScheduled = true;
    queueMicrotask(() => {
      this.diffsScheduled = false;
      for (const diff of this.table.takeDiffs()) {
        for (const h of this.handlers.get(diff.topic) ?? []) {
          try {
            h(diff);
          } catch (err) {
            this.warn.warn(`diff:${diff.topic}`, { topic: diff.topic, error: (err as Error).message }, 'presence diff handler threw');
          }
        }
      }
    });
  }

  private checkLive(): void {
    if (this.link.isStopped) throw new PresenceError(ErrorCodes.NODE_STOPPED, 'node is stopped: presence takes no new tracks');
  }

  track(topic: string, key: string, meta: unknown = null): PresenceMeta {
    checkName('topic', topic);
    checkName('key', key);
    this.checkLive();
    assertSerializable(meta);
    const m = this.table.track(topic, key, meta);
    if (!m) throw new PresenceError(ErrorCodes.PRESENCE_TRACKED, `"${key}" is already tracked on "${topic}" by this node (update it instead)`);
    this.link.scheduleFlush();
    return m;
  }

  untrack(topic: string, key: string): boolean {
    checkName('topic', topic);
    checkName('key', key);
    const removed = this.table.untrack(topic, key);
    if (removed) this.link.scheduleFlush();
    return removed;
  }

  update(topic: string, key: string, meta: unknown): PresenceMeta {
    checkName('topic', topic);
    checkName('key', key);
    this.checkLive();
    assertSerializable(meta);
    const m = this.table.update(topic, key, meta);
    if (!m) throw new PresenceError(ErrorCodes.PRESENCE_NOT_TRACKED, `"${key}" is not tracked on "${topic}" by this node (track it first)`);
    this.link.scheduleFlush();
    return m;
  }

  list(topic: string): PresenceList {
    checkName('topic', topic);
    return this.table.list(topic);
  }

  get(topic: string, key: string): PresenceMeta[] {
    checkName('topic', topic);
    checkName('key', key);
    return this.table.get(topic, key);
  }

  topics(): string[] {
    return this.table.topics();
  }

  onDiff(topic: string, handler: PresenceDiffHandler): () => void {
    checkName('topic', topic);
    if (typeof handler !== 'function') throw new ConfigError('handler', 'expected a function');
    let set = this.handlers.get(topic);
    if (!set) {
      set = new Set();
      this.handlers.set(topic, set);
    }
    set.add(handler);
    return () => {
      const s = this.handlers.get(topic);
      s?.delete(handler);
      if (s?.size === 0) this.handlers.delete(topic);
    };
  }

  stats(): PresenceStats {
    return {
      presences: this.table.size,
      own: this.table.ownCount(),
      joins: this.table.joins,
      leaves: this.table.leaves,
      messagesDropped: this.link.messagesDropped,
    };
  }
}
