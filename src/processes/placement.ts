/**
 * Rendezvous (highest-random-weight) hashing: the node that runs a placed child is the member
 * whose hash of `(member, key)` is the highest. Every node computes the same owner from the same
 * member list, with no coordination; when a member joins or leaves, only the keys it wins or held
 * move (about 1/N of them), and the others stay where they are.
 */
import { createHash } from 'node:crypto';

/** 64-bit weight of `key` on `member` (the first 8 bytes of SHA-256, as a bigint). */
function weight(member: string, key: string): bigint {
  const h = createHash('sha256').update(member).update('\u0000').update(key).digest();
  return h.readBigUInt64BE(0);
}

/** The member that owns `key` (undefined when there is none). Ties, vanishingly rare, go to the smaller name. */
export function ownerOf(key: string, members: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestWeight = -1n;
  for (const m of members) {
    const w = weight(m, key);
    if (w > bestWeight || (w === bestWeight && best !== undefined && m < best)) {
      best = m;
      bestWeight = w;
    }
  }
  return best;
}

/** Members ordered by their weight for `key`, highest first: the owner, then who takes over if it goes. */
export function rankFor(key: string, members: Iterable<string>): string[] {
  return [...members]
    .map((m) => [m, weight(m, key)] as const)
    .sort((a, b) => (a[1] === b[1] ? (a[0] < b[0] ? -1 : 1) : a[1] > b[1] ? -1 : 1))
    .map(([m]) => m);
}
