/**
 * A small replicated key-value store, used only in tests, built on the mesh's internal interface
 * alone (src/mesh/interface.ts): the proof that the interface is what a replicating layer needs.
 *
 * - Writes are last-writer-wins by (Lamport clock, node name). A write goes to every up member
 *   AND to this node with one `sendMany` (encoded once; this node's copy loops back through the
 *   same handler), so "this node" is handled like any member.
 * - Sync: a peer gets our whole state, and is asked for its own, when it comes up
 *   (`watchMembers`: the members already up when the store starts, then every later `up`), when
 *   its link is replaced (`link-replaced`: writes may have been lost between the two sessions),
 *   and when a message shows a new incarnation of it (a restart). Asking matters when stores
 *   start at different times: what a peer wrote before our handlers existed was dropped here.
 *   Messages from an older incarnation than the one known are dropped (`ctx.incarnation`).
 */
import type { InternalMesh } from '../../src/mesh/interface.js';
import type { MessageContext } from '../../src/mesh/types.js';

const TOPIC_WRITE = '$kv.write';
const TOPIC_SYNC = '$kv.sync';

interface Entry {
  key: string;
  value: unknown;
  clock: number;
  node: string;
}

export class ReplicatedKV {
  private readonly data = new Map<string, Entry>();
  private clock = 0;
  /** Highest incarnation seen per peer. */
  private readonly incarnations = new Map<string, number>();
  /** How many full-state syncs this node sent, by cause. */
  readonly resyncs = { up: 0, replaced: 0, incarnation: 0 };
  private readonly stops: Array<() => void> = [];

  constructor(private readonly mesh: InternalMesh) {
    this.stops.push(mesh.handleSystem(TOPIC_WRITE, (p, ctx) => this.onEntries([p as Entry], ctx)));
    this.stops.push(
      mesh.handleSystem(TOPIC_SYNC, (p, ctx) => {
        const sync = p as { entries: Entry[]; reply: boolean };
        this.onEntries(sync.entries, ctx);
        if (sync.reply) this.sendState(ctx.from, false);
      }),
    );
    const watch = mesh.watchMembers((change) => {
      if (change.type === 'up') this.syncTo(change.member.name, change.member.incarnation, 'up');
    });
    this.stops.push(() => watch.stop());
    for (const m of watch.members) this.syncTo(m.name, m.incarnation, 'up');
    const onReplaced = (e: { peer: string; incarnation: number }) => this.syncTo(e.peer, e.incarnation, 'replaced');
    mesh.events.on('link-replaced', onReplaced);
    this.stops.push(() => mesh.events.off('link-replaced', onReplaced));
  }

  set(key: string, value: unknown): void {
    const entry: Entry = { key, value, clock: ++this.clock, node: this.mesh.self.name };
    const targets = this.mesh.membership.upNames();
    targets.push(this.mesh.self.name);
    this.mesh.sendMany(targets, TOPIC_WRITE, entry, 'events');
  }

  get(key: string): unknown {
    return this.data.get(key)?.value;
  }

  entries(): Record<string, unknown> {
    return Object.fromEntries([...this.data].map(([k, e]) => [k, e.value]));
  }

  stop(): void {
    for (const s of this.stops) s();
  }

  private syncTo(node: string, incarnation: number, cause: keyof ReplicatedKV['resyncs']): void {
    this.noteIncarnation(node, incarnation);
    this.resyncs[cause]++;
    this.sendState(node, true);
  }

  private sendState(node: string, reply: boolean): void {
    try {
      this.mesh.send(node, TOPIC_SYNC, { entries: [...this.data.values()], reply }, 'events');
    } catch {
      // Gone again: its next `up` syncs it.
    }
  }

  /** Records the peer's incarnation; false for a stale one. A newer one (a restart) gets our state. */
  private noteIncarnation(node: string, incarnation: number): boolean {
    if (node === this.mesh.self.name) return true;
    const known = this.incarnations.get(node);
    if (known !== undefined && incarnation < known) return false;
    this.incarnations.set(node, incarnation);
    return true;
  }

  private onEntries(entries: Entry[], ctx: MessageContext): void {
    const known = this.incarnations.get(ctx.from);
    if (known !== undefined && ctx.incarnation < known) return;
    if (known !== undefined && ctx.incarnation > known && ctx.from !== this.mesh.self.name) {
      this.syncTo(ctx.from, ctx.incarnation, 'incarnation');
    } else {
      this.noteIncarnation(ctx.from, ctx.incarnation);
    }
    for (const e of entries) {
      this.clock = Math.max(this.clock, e.clock);
      const cur = this.data.get(e.key);
      if (!cur || e.clock > cur.clock || (e.clock === cur.clock && e.node > cur.node)) this.data.set(e.key, e);
    }
  }
}
