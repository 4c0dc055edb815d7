/**
 * The one order between the two nodes of a pair, used everywhere the pair must agree without
 * talking: who dials first when both found each other (mutual discovery, transitive join), and
 * which link survives when both dialed anyway (the tie-break). It is the order of the nodes'
 * advertised addresses (`host:port`, compared as strings): the only thing a node knows of a peer
 * before a handshake, and known to both ends after it.
 *
 * A node dials an address as discovery gives it, which may differ from the address the peer
 * advertises (a DNS name, a NAT): then the dial-first rule may pick both ends and the tie-break
 * still leaves one link, at the cost of one extra connect.
 */
import type { HandshakeResult } from './handshake.js';

/** Whether `a` comes first: the node at `a` dials first, and the link it opened is the one kept. */
export function addressFirst(a: string, b: string): boolean {
  return a < b;
}

/**
 * Of two links between the same pair of incarnations, whether `next` replaces `prev`. A peer
 * that opened a second link itself saw the first one die, so the newer wins; otherwise the link
 * opened by the node with the smaller address wins. Both ends compute the same answer.
 */
export function newLinkWins(selfName: string, selfAddress: string, prev: HandshakeResult, next: HandshakeResult): boolean {
  if (prev.initiator === next.initiator) return true;
  const openerAddress = next.initiator === selfName ? selfAddress : next.peer.address;
  const otherAddress = next.initiator === selfName ? next.peer.address : selfAddress;
  return addressFirst(openerAddress, otherAddress);
}
