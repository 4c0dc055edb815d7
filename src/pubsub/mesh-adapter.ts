/**
 * The default pubsub transport: Foundation's own mesh, through its internal interface for
 * layers. Frames go on the lane the publisher chose, as raw bytes on a system topic, the same
 * bytes queued on every destination link; interest messages go on the control lane.
 */
import type { InternalMesh, MembersWatch } from '../mesh/interface.js';
import { GatherPayload } from '../mesh/message.js';
import type { LaneName, MembershipChange } from '../mesh/types.js';
import type { PubSubAdapter, PubSubAdapterHost } from './adapter.js';
import type { InterestMessage } from './interest.js';

/** The system topics pubsub uses on the mesh. */
export const MESH_PUBSUB_TOPICS = { frame: '$ps.m', interest: '$ps.i' } as const;

export class MeshPubSubAdapter implements PubSubAdapter {
  readonly name = 'mesh';
  private readonly up = new Set<string>();
  private readonly offs: Array<() => void> = [];
  private watch?: MembersWatch;

  constructor(private readonly mesh: InternalMesh) {}

  async start(host: PubSubAdapterHost): Promise<void> {
    const self = this.mesh.self.name;
    this.offs.push(
      this.mesh.handleSystem(MESH_PUBSUB_TOPICS.frame, (payload, ctx) => {
        if (ctx.from === self || !(payload instanceof Uint8Array)) return;
        host.receive(ctx.from, ctx.lane, Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.length), ctx.release);
      }),
      this.mesh.handleSystem(MESH_PUBSUB_TOPICS.interest, (payload, ctx) => {
        if (ctx.from === self) return;
        host.interest(ctx.from, ctx.incarnation, payload);
      }),
    );
    this.offs.push(
      this.mesh.onLinkReplaced((e) => {
        if (this.up.has(e.peer)) host.peerResync(e.peer);
      }),
    );
    // Snapshot and changes with no gap: members already up get our interest now, later ones when they come up.
    this.watch = this.mesh.watchMembers((change: MembershipChange) => {
      if (change.member.hidden) return;
      if (change.type === 'up') {
        this.up.add(change.member.name);
        host.peerUp(change.member.name, change.member.incarnation);
      } else if (change.type === 'down') {
        this.up.delete(change.member.name);
        host.peerDown(change.member.name);
      }
    });
    for (const m of this.watch.members) {
      this.up.add(m.name);
      host.peerUp(m.name, m.incarnation);
    }
  }

  send(nodes: readonly string[], frame: Buffer | GatherPayload, lane: LaneName): { full: readonly string[]; failed: number } {
    if (nodes.length === 1) {
      try {
        const below = this.mesh.send(nodes[0] as string, MESH_PUBSUB_TOPICS.frame, frame, lane);
        return { full: below ? [] : nodes, failed: 0 };
      } catch {
        return { full: [], failed: 1 };
      }
    }
    const r = this.mesh.sendMany(nodes, MESH_PUBSUB_TOPICS.frame, frame, lane);
    return { full: r.full, failed: r.failed.length };
  }

  /** The frame's head and body as one gather write: the mesh fragments the body where it lies (no copy into a frame). */
  sendParts(nodes: readonly string[], head: Buffer, body: Uint8Array, lane: LaneName): { full: readonly string[]; failed: number } {
    return this.send(nodes, new GatherPayload(head, body), lane);
  }

  sendInterest(to: string | null, msg: InterestMessage): void {
    if (to !== null) {
      try {
        this.mesh.send(to, MESH_PUBSUB_TOPICS.interest, msg, 'control');
      } catch {
        // Gone in between: its down event drops its state, and a new up sends the whole set.
      }
      return;
    }
    if (this.up.size > 0) this.mesh.sendMany(this.up, MESH_PUBSUB_TOPICS.interest, msg, 'control');
  }

  drained(node: string, lane: LaneName): Promise<void> {
    return this.mesh.drained(node, lane);
  }

  isSuspect(node: string): boolean {
    return this.mesh.membership.get(node)?.status === 'suspect';
  }

  async stop(): Promise<void> {
    this.watch?.stop();
    for (const off of this.offs.splice(0)) off();
    this.up.clear();
  }
}
