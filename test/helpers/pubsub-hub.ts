/**
 * An in-process network for the pubsub engine's unit tests: several PubSub engines in one
 * process, joined by FIFO links that deliver on a later turn of the event loop (as a socket
 * would). The engine under test is the real one; only the wire is simulated. The multi-process
 * tests run the same engine over the real mesh.
 */

import { BODY_POOL_MIN_BYTES, BodyPool } from '../../src/mesh/body-pool.js';
import type { LaneName } from '../../src/mesh/types.js';
import type { PubSubAdapter, PubSubAdapterHost } from '../../src/pubsub/adapter.js';
import type { InterestMessage } from '../../src/pubsub/interest.js';
import { PubSub } from '../../src/pubsub/pubsub.js';
import type { Logger } from '../../src/util/logger.js';

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silentLogger };

export class Hub {
  readonly adapters = new Map<string, HubAdapter>();
  /** Bytes of published frames each node received (interest messages excluded). */
  readonly frameBytes = new Map<string, number>();
  /**
   * Each node's pool for large frames: as the mesh's inbox does, a frame of at least
   * `BODY_POOL_MIN_BYTES` is received into a body from it and handed over with its `release`.
   */
  readonly pools = new Map<string, BodyPool>();

  async node(name: string, incarnation = 1, logger: Logger = silentLogger): Promise<PubSub> {
    const adapter = new HubAdapter(this, name, incarnation);
    this.adapters.set(name, adapter);
    this.pools.set(name, new BodyPool({ maxPooledBytes: 64 * BODY_POOL_MIN_BYTES }));
    const ps = new PubSub(name, incarnation, adapter, logger);
    await ps.start();
    for (const other of this.adapters.values()) {
      if (other === adapter || !other.host) continue;
      other.host.peerUp(name, incarnation);
      adapter.host?.peerUp(other.node, other.incarnation);
    }
    return ps;
  }

  /** The node is gone: every other node sees it down; what was in flight to or from it is lost. */
  kill(name: string): void {
    const a = this.adapters.get(name);
    if (!a) return;
    a.dead = true;
    this.adapters.delete(name);
    for (const other of this.adapters.values()) other.host?.peerDown(name);
  }

  deliver(from: string, to: string, fn: (host: PubSubAdapterHost) => void): void {
    const src = this.adapters.get(from);
    // One FIFO queue per pair, drained on a later turn: order per pair is kept.
    const key = `${from}>${to}`;
    let q = this.queues.get(key);
    if (!q) {
      q = [];
      this.queues.set(key, q);
    }
    q.push(fn);
    if (q.length === 1) {
      setImmediate(() => {
        const batch = this.queues.get(key) ?? [];
        this.queues.delete(key);
        for (const f of batch) {
          const dst = this.adapters.get(to);
          if (!dst?.host || !src || src.dead) return;
          f(dst.host);
        }
      });
    }
  }

  private readonly queues = new Map<string, Array<(h: PubSubAdapterHost) => void>>();
}

class HubAdapter implements PubSubAdapter {
  readonly name = 'hub';
  host?: PubSubAdapterHost;
  dead = false;
  suspect = new Set<string>();

  constructor(
    private readonly hub: Hub,
    /** The node this adapter belongs to. */
    readonly node: string,
    readonly incarnation: number,
  ) {}

  async start(host: PubSubAdapterHost): Promise<void> {
    this.host = host;
  }

  send(nodes: readonly string[], frame: Buffer, lane: LaneName): { full: readonly string[]; failed: number } {
    let failed = 0;
    for (const n of nodes) {
      if (!this.hub.adapters.has(n)) {
        failed++;
        continue;
      }
      this.hub.frameBytes.set(n, (this.hub.frameBytes.get(n) ?? 0) + frame.length);
      const lent = this.hub.pools.get(n)?.take(frame.length);
      if (lent === undefined) {
        const copy = Buffer.from(frame);
        this.hub.deliver(this.node, n, (h) => h.receive(this.node, lane, copy));
      } else {
        frame.copy(lent.body);
        this.hub.deliver(this.node, n, (h) => h.receive(this.node, lane, lent.body, lent.release));
      }
    }
    return { full: [], failed };
  }

  sendInterest(to: string | null, msg: InterestMessage): void {
    const copy = JSON.parse(JSON.stringify(msg));
    const targets = to === null ? [...this.hub.adapters.keys()].filter((n) => n !== this.node) : [to];
    for (const n of targets) this.hub.deliver(this.node, n, (h) => h.interest(this.node, this.incarnation, copy));
  }

  async drained(): Promise<void> {}

  isSuspect(node: string): boolean {
    return this.suspect.has(node);
  }

  async stop(): Promise<void> {
    this.host = undefined;
  }
}

/** Resolves after `turns` rounds of setImmediate: lets in-flight hub messages land. */
export async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}
