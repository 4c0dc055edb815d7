/**
 * A hybrid logical clock (Kulkarni et al., 2014): stamps that follow the wall clock when clocks
 * agree, never go backwards, and order an event after every stamp its node has seen. The
 * registry stamps registrations with it, so "who registered first" is the same answer on every
 * node, and a tie breaks on the node name.
 *
 * A remote stamp far ahead of this node's wall clock (a peer with a broken clock) would drag
 * every later stamp with it; stamps more than `maxDriftMs` ahead are not adopted (the caller
 * still orders the remote entry by its own stamp).
 */

/** A stamp: wall-clock milliseconds and a counter for events within the same millisecond. */
export type HlcStamp = readonly [wall: number, logical: number];

/** Orders two stamps; ties on the stamp break on `aNode`/`bNode` when given. */
export function compareStamps(a: HlcStamp, b: HlcStamp, aNode = '', bNode = ''): number {
  if (a[0] !== b[0]) return a[0] - b[0];
  if (a[1] !== b[1]) return a[1] - b[1];
  return aNode < bNode ? -1 : aNode > bNode ? 1 : 0;
}

/** True when `v` has the shape of a stamp (from the wire). */
export function isStamp(v: unknown): v is HlcStamp {
  return Array.isArray(v) && v.length === 2 && Number.isSafeInteger(v[0]) && (v[0] as number) >= 0 && Number.isSafeInteger(v[1]) && (v[1] as number) >= 0;
}

export class HybridClock {
  private wall = 0;
  private logical = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly maxDriftMs = 60_000,
  ) {}

  /** A stamp for a local event: later than every stamp this clock issued or observed. */
  tick(): HlcStamp {
    const pt = this.now();
    if (pt > this.wall) {
      this.wall = pt;
      this.logical = 0;
    } else {
      this.logical++;
    }
    return [this.wall, this.logical];
  }

  /** Takes a stamp seen on a message into account, so later local stamps order after it. */
  observe(remote: HlcStamp): void {
    const pt = this.now();
    if (remote[0] > pt + this.maxDriftMs) return;
    if (remote[0] > this.wall) {
      this.wall = remote[0];
      this.logical = remote[1];
    } else if (remote[0] === this.wall && remote[1] > this.logical) {
      this.logical = remote[1];
    }
  }
}
