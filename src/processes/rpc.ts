/**
 * Requests between the process layers of two nodes (calls and casts by name, placement, handoff,
 * `explain`'s question to the host), on the system topic `$proc.rpc`. Replies are values, never
 * thrown errors, so the caller tells "not here, try again" from a worker's own failure.
 */
import { ErrorCodes } from '../errors.js';
import type { ChildEntry } from './process-table.js';
import type { SupervisionOptions } from './types.js';

/** System topic of requests between nodes' process layers. */
export const RPC_TOPIC = '$proc.rpc';

/** Requests between the process layers of two nodes. */
export type Rpc =
  | { t: 'call'; name: string; msg: unknown; timeoutMs: number }
  | { t: 'cast'; name: string; msg: unknown }
  | { t: 'start-child'; name: string; spec: ChildEntry; rebalance?: 'passive' | 'active'; moved?: boolean; handoff?: unknown; orphanOf?: string }
  | { t: 'adopt-singleton'; name: string; moved?: boolean; handoff?: unknown }
  | { t: 'stop-child'; name: string }
  | { t: 'start-replicated'; name: string; type: string; args: unknown; sup: SupervisionOptions }
  | { t: 'stop-replicated'; name: string }
  | { t: 'info'; name: string };

export type RpcReply = { ok: true; v?: unknown } | { ok: false; code: string; message: string };

/** Failures after which a call by name tries again (the worker was not there, or not reachable, and did not handle it). */
export const RETRYABLE = new Set<string>([
  'NOT_HERE',
  ErrorCodes.WORKER_STOPPED,
  ErrorCodes.NODE_UNREACHABLE,
  ErrorCodes.LINK_CLOSED,
  ErrorCodes.NO_HANDLER,
  ErrorCodes.NODE_STOPPED,
]);

/** Checks a decoded request from the wire; undefined refuses it. */
export function parseRpc(v: unknown): Rpc | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as Record<string, unknown>;
  if (typeof r.name !== 'string' || r.name.length === 0) return undefined;
  switch (r.t) {
    case 'call':
      return typeof r.timeoutMs === 'number' && r.timeoutMs > 0 ? (r as Rpc) : undefined;
    case 'start-child': {
      const s = r.spec as Record<string, unknown> | null;
      return typeof s === 'object' && s !== null && s.k === 'child' && typeof s.type === 'string' ? (r as Rpc) : undefined;
    }
    case 'start-replicated':
      return typeof r.type === 'string' && typeof r.sup === 'object' && r.sup !== null ? (r as Rpc) : undefined;
    case 'cast':
    case 'adopt-singleton':
    case 'stop-child':
    case 'stop-replicated':
    case 'info':
      return r as Rpc;
    default:
      return undefined;
  }
}
