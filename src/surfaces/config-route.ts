/**
 * `/config` on the admin HTTP server (src/surfaces/http.ts): what `node.config` holds, secrets
 * redacted (src/services/cluster-config/redact.ts), and cluster-wide changes for
 * `foundation config set`.
 *
 * - `GET /config` 200 {@link ConfigJson}: version, whether the node fetched the cluster config,
 *   every effective value by path (redacted), the paths this node overrides, the transactions it
 *   holds in doubt (the blocked case included) and the recent history (values redacted).
 * - `GET /config?path=a.b` 200 `{ node, path, value, version }` (value redacted; `null` when unset).
 * - `POST /config` with `Content-Type: application/json` and `{ path, value, timeoutMs? }`:
 *   `config.setClusterWide` (no `value` key: delete the path). 200 `{ committed: true, tx, version, votes, acked, attempts }`;
 *   409 `{ committed: false, code, message, tx, votes }` when it aborted or is in doubt; 400 on a
 *   bad body or path; 415 without the JSON content type (a cross-site form cannot send it, and
 *   this server answers no CORS preflight, so a web page cannot post here); 413 over 64 KiB.
 */
import type { IncomingMessage } from 'node:http';
import type { FoundationNode } from '../api.js';
import { FoundationError } from '../errors.js';
import type { ConfigChange, InDoubtTransaction } from '../services/cluster-config/cluster-config.js';
import { REDACTED, redactAt, SECRET_KEY } from '../services/cluster-config/redact.js';

/** Largest `POST /config` body. */
export const MAX_CONFIG_BODY_BYTES = 64 * 1024;

/** Body of `GET /config`. */
export interface ConfigJson {
  node: string;
  version: number;
  synced: boolean;
  /** Effective value of every leaf path, redacted. */
  values: Record<string, unknown>;
  /** Paths this node overrides locally (`config.set`). */
  overrides: string[];
  /** Transactions this node holds prepared without a decision (the blocked case stays here). */
  inDoubt: InDoubtTransaction[];
  /** Recent committed changes, oldest first, values redacted. */
  history: ConfigChange[];
  /** The redaction rule, as applied. */
  redaction: string;
}

type ConfigNode = Pick<FoundationNode, 'id' | 'config'>;
type JsonReply = { status: number; value: unknown };

/** JSON.stringify replacer for config values: the codec's types shown as JSON can show them. */
export function configJsonReplacer(_key: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), x]));
  if (v instanceof Set) return [...v];
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('base64') };
  return v;
}

export function configGet(node: ConfigNode, url: URL): JsonReply {
  const path = url.searchParams.get('path');
  if (path !== null) {
    try {
      const value = node.config.get(path);
      return { status: 200, value: { node: node.id.name, path, value: value === undefined ? null : redactAt(path, value), version: node.config.version() } };
    } catch (err) {
      return { status: 400, value: { error: (err as Error).message } };
    }
  }
  const values: Record<string, unknown> = {};
  for (const [p, v] of node.config.entries()) values[p] = redactAt(p, v);
  const body: ConfigJson = {
    node: node.id.name,
    version: node.config.version(),
    synced: node.config.stats().synced,
    values,
    overrides: node.config.overrides(),
    inDoubt: node.config.inDoubt(),
    history: node.config
      .history()
      .map((c) => ({ ...c, writes: c.writes.map((w) => ({ path: w.path, value: w.value === undefined ? undefined : redactAt(w.path, w.value) })) })),
    redaction: `a value is shown as "${REDACTED}" when a segment of its path, or a key inside it, matches ${SECRET_KEY}`,
  };
  return { status: 200, value: body };
}

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_CONFIG_BODY_BYTES) {
        resolve(undefined);
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export async function configPost(node: ConfigNode, req: IncomingMessage): Promise<JsonReply> {
  const type = String(req.headers['content-type'] ?? '')
    .split(';')[0]
    ?.trim()
    .toLowerCase();
  if (type !== 'application/json') {
    req.resume();
    return { status: 415, value: { error: 'POST /config takes Content-Type: application/json' } };
  }
  const text = await readBody(req);
  if (text === undefined) return { status: 413, value: { error: `body over ${MAX_CONFIG_BODY_BYTES} bytes` } };
  let body: { path?: unknown; value?: unknown; timeoutMs?: unknown };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    return { status: 400, value: { error: 'body is not JSON' } };
  }
  if (typeof body !== 'object' || body === null || typeof body.path !== 'string')
    return { status: 400, value: { error: 'expected { path, value, timeoutMs? }' } };
  const timeoutMs = body.timeoutMs === undefined ? undefined : Number(body.timeoutMs);
  try {
    const r = await node.config.setClusterWide(body.path, 'value' in body ? body.value : undefined, timeoutMs === undefined ? {} : { timeoutMs });
    return { status: 200, value: { committed: true, ...r } };
  } catch (err) {
    if (err instanceof FoundationError && 'votes' in err) {
      const e = err as FoundationError & { tx: string; votes: unknown };
      return { status: 409, value: { committed: false, code: e.code, message: e.message, tx: e.tx, votes: e.votes } };
    }
    if (err instanceof FoundationError) return { status: 400, value: { committed: false, code: err.code, error: err.message } };
    throw err;
  }
}
