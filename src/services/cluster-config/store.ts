/**
 * The values of `node.config`: a store of dotted paths in two layers, the cluster layer (changed
 * only by committed transactions and by repairs, carrying the cluster config version, the last
 * transaction and a bounded history) and this node's local overrides (`config.set`), which win
 * over the cluster layer in reads and are never replicated.
 *
 * A path is a dotted key (`db.pool.size`). A path holds either a value or children: writing a
 * path removes the values stored at its ancestors and under it. Reading a path gives its value,
 * or the part of an ancestor's object value at that path, or an object assembled from the values
 * under it.
 */
import { createHash } from 'node:crypto';
import { ConfigError } from '../../errors.js';
import { encode } from '../../mesh/codec.js';
import type { ConfigWrite } from './two-phase.js';

/** One committed change, as `history()` lists it. */
export interface ConfigChange {
  /** The cluster config version this commit made. */
  version: number;
  /** The transaction id (`coordinator:incarnation:sequence`). */
  tx: string;
  /** The node that coordinated it (where `setClusterWide` was called). */
  coordinator: string;
  /** When this node applied it (ms since epoch, this node's clock). */
  at: number;
  /** The paths written and their new values (`undefined`: deleted). */
  writes: ConfigWrite[];
}

/** The cluster layer as one node sends it to another (bootstrap, repair). */
export interface ConfigSnapshot {
  version: number;
  tx: string;
  values: Array<[path: string, value: unknown]>;
  history: ConfigChange[];
}

/** Longest path, in UTF-8 bytes. */
export const MAX_PATH_BYTES = 512;
/** Committed changes kept by `history()`. */
export const HISTORY_KEPT = 100;

/** Throws `ConfigError` (key `path`) unless `path` is a dotted key of non-empty segments. */
export function checkPath(path: unknown, key = 'path'): asserts path is string {
  if (typeof path !== 'string' || path.length === 0) throw new ConfigError(key, `a config path is a non-empty dotted string, got ${JSON.stringify(path)}`);
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) throw new ConfigError(key, `a config path is at most ${MAX_PATH_BYTES} bytes in UTF-8`);
  for (const seg of path.split('.')) {
    if (seg.length === 0) throw new ConfigError(key, `"${path}" has an empty segment (two dots, or a dot at an end)`);
    if (seg === '__proto__' || seg === 'constructor' || seg === 'prototype') throw new ConfigError(key, `"${path}": the segment "${seg}" is not allowed`);
  }
}

/** True when `a` is `b`, an ancestor of `b`, or a descendant of `b`. */
export function pathsOverlap(a: string, b: string): boolean {
  return a === b || a.startsWith(`${b}.`) || b.startsWith(`${a}.`);
}

/** `prefix` is empty (everything), `path` itself, or an ancestor of it. */
export function underPrefix(path: string, prefix: string): boolean {
  return prefix === '' || path === prefix || path.startsWith(`${prefix}.`);
}

/** Writes `value` at `path` in a layer: ancestors' and descendants' values go. Returns the leaf paths removed or set. */
function writeLayer(layer: Map<string, unknown>, path: string, value: unknown): string[] {
  const touched: string[] = [];
  for (const k of [...layer.keys()]) {
    if (k !== path && pathsOverlap(k, path)) {
      layer.delete(k);
      touched.push(k);
    }
  }
  if (value === undefined) {
    if (layer.delete(path)) touched.push(path);
  } else {
    layer.set(path, value);
    touched.push(path);
  }
  return touched;
}

function readLayer(layer: Map<string, unknown>, path: string): unknown {
  if (layer.has(path)) return layer.get(path);
  // An ancestor holding an object value.
  const segs = path.split('.');
  for (let i = segs.length - 1; i > 0; i--) {
    const anc = segs.slice(0, i).join('.');
    if (!layer.has(anc)) continue;
    let v: unknown = layer.get(anc);
    for (const seg of segs.slice(i)) {
      if (typeof v !== 'object' || v === null || !Object.hasOwn(v, seg)) return undefined;
      v = (v as Record<string, unknown>)[seg];
    }
    return v;
  }
  // Values under it, assembled.
  const prefix = `${path}.`;
  let out: Record<string, unknown> | undefined;
  for (const [k, v] of layer) {
    if (!k.startsWith(prefix)) continue;
    out ??= {};
    let at = out;
    const rest = k.slice(prefix.length).split('.');
    for (const seg of rest.slice(0, -1)) {
      const next = at[seg];
      if (typeof next !== 'object' || next === null) at[seg] = {};
      at = at[seg] as Record<string, unknown>;
    }
    at[rest[rest.length - 1] as string] = v;
  }
  return out;
}

export class ConfigStore {
  private readonly cluster = new Map<string, unknown>();
  private readonly local = new Map<string, unknown>();
  private changes: ConfigChange[] = [];
  /** The cluster config version: the number of the last commit applied here. */
  version = 0;
  /** The last transaction applied here ('' before any). */
  tx = '';
  /** `digest()` until the cluster layer changes. */
  private digestCache: string | undefined;

  /** The value at `path`: this node's override if it has one there, else the cluster's. */
  get(path: string): unknown {
    const own = readLayer(this.local, path);
    const shared = readLayer(this.cluster, path);
    if (own === undefined) return shared;
    if (shared === undefined || !isPlainObject(own) || !isPlainObject(shared) || this.local.has(path)) return own;
    // Both layers hold values under `path`: the overrides win leaf by leaf.
    return mergeDeep(shared, own);
  }

  /** The cluster layer's value at `path` (overrides ignored). */
  getCluster(path: string): unknown {
    return readLayer(this.cluster, path);
  }

  /** Sets (or, with `undefined`, removes) this node's override at `path`. Returns the leaf paths touched. */
  setLocal(path: string, value: unknown): string[] {
    return writeLayer(this.local, path, value);
  }

  /** Applies a committed transaction: the cluster layer goes to `version`. Returns the leaf paths touched. */
  applyCommit(tx: string, writes: ConfigWrite[], version: number, coordinator: string, at: number): string[] {
    const touched: string[] = [];
    for (const w of writes) touched.push(...writeLayer(this.cluster, w.path, w.value));
    this.version = version;
    this.tx = tx;
    this.digestCache = undefined;
    this.changes.push({ version, tx, coordinator, at, writes });
    if (this.changes.length > HISTORY_KEPT) this.changes = this.changes.slice(-HISTORY_KEPT);
    return touched;
  }

  /** Recent committed changes, oldest first. */
  history(): ConfigChange[] {
    return this.changes.slice();
  }

  /** The cluster layer, to send to a peer. */
  snapshot(): ConfigSnapshot {
    return { version: this.version, tx: this.tx, values: [...this.cluster].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)), history: this.history() };
  }

  /** Replaces the cluster layer with a peer's. Returns the leaf paths whose value changed or went. */
  install(s: ConfigSnapshot): string[] {
    const before = new Map(this.cluster);
    this.cluster.clear();
    for (const [k, v] of s.values) this.cluster.set(k, v);
    this.version = s.version;
    this.tx = s.tx;
    this.digestCache = undefined;
    this.changes = s.history.slice(-HISTORY_KEPT);
    const touched = new Set<string>();
    for (const [k, v] of before) if (!this.cluster.has(k) || digestOf(this.cluster.get(k)) !== digestOf(v)) touched.add(k);
    for (const k of this.cluster.keys()) if (!before.has(k)) touched.add(k);
    return [...touched];
  }

  /** A digest of the cluster layer (version, last transaction and every value), to compare nodes cheaply. */
  digest(): string {
    this.digestCache ??= digestOf([this.version, this.tx, [...this.cluster].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
    return this.digestCache;
  }

  /** Every effective leaf (overrides applied), sorted by path. */
  entries(): Array<[string, unknown]> {
    const merged = new Map(this.cluster);
    for (const [k, v] of this.local) writeLayer(merged, k, v);
    return [...merged].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Paths holding an override on this node. */
  overrides(): string[] {
    return [...this.local.keys()].sort();
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

function mergeDeep(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? mergeDeep(b, v) : v;
  }
  return out;
}

function digestOf(v: unknown): string {
  return createHash('sha256').update(encode(v)).digest('base64url').slice(0, 22);
}
