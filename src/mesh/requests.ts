/**
 * Request/response correlation: each request waits under a correlation id for the reply that
 * carries it back, from the node it went to, until its timeout or its peer's link ends.
 */
import { ErrorCodes, MessagingError } from '../errors.js';
import { decode } from './codec.js';
import { type InboundMessage, MessageFlags } from './message.js';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  peer: string;
}

export class Requests {
  private readonly pending = new Map<number, Pending>();
  private nextCorr = 1;

  /**
   * Registers a request to `peer` and returns its correlation id; `send(corrId)` queues it
   * (a throw rejects the request). The promise settles with the reply, a timeout or a link end.
   */
  start<T>(peer: string, topic: string, timeoutMs: number, send: (corrId: number) => void): Promise<T> {
    const corrId = this.nextCorr;
    this.nextCorr = this.nextCorr >= 0xffffffff ? 1 : this.nextCorr + 1;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(corrId);
        reject(new MessagingError(ErrorCodes.REQUEST_TIMEOUT, `request "${topic}" to ${peer} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(corrId, { resolve: resolve as (v: unknown) => void, reject, timer, peer });
      try {
        send(corrId);
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(corrId);
        reject(err);
      }
    });
  }

  /** A REPLY message from `from`: settles its request (a reply from another node, or for no request, is ignored). */
  settle(from: string, msg: InboundMessage): void {
    const p = this.pending.get(msg.corrId);
    if (!p || p.peer !== from) return;
    this.pending.delete(msg.corrId);
    clearTimeout(p.timer);
    let value: unknown;
    try {
      value = msg.flags & MessageFlags.RAW ? msg.payload : decode(msg.payload);
    } catch (err) {
      p.reject(err as Error);
      return;
    }
    if (msg.flags & MessageFlags.ERROR) p.reject(remoteError(value, from, msg.topic));
    else p.resolve(value);
  }

  /** Fails every request waiting on `peer` (its link ended: the reply may never come). */
  failPeer(peer: string, why: string): void {
    for (const [id, p] of this.pending) {
      if (p.peer !== peer) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new MessagingError(ErrorCodes.LINK_CLOSED, why));
    }
  }
}

/** The payload of an error reply. */
export function errorPayload(err: unknown): { code?: string; message: string; name?: string } {
  if (err instanceof Error) return { name: err.name, message: err.message, code: (err as { code?: string }).code };
  return { message: String(err) };
}

function remoteError(value: unknown, from: string, topic: string): MessagingError {
  const v = (typeof value === 'object' && value !== null ? value : {}) as { code?: string; message?: string; name?: string };
  if (v.code === ErrorCodes.NO_HANDLER) return new MessagingError(ErrorCodes.NO_HANDLER, v.message ?? `no handler for "${topic}" on ${from}`);
  const cause = Object.assign(new Error(v.message ?? 'remote error'), { name: v.name ?? 'Error', code: v.code });
  return new MessagingError(ErrorCodes.REMOTE_ERROR, `handler for "${topic}" on ${from} failed: ${v.message ?? 'unknown error'}`, { cause });
}
