/**
 * An index from subscription patterns to values (local subscriptions, or the names of nodes
 * interested in a pattern), answering "who matches this topic?".
 *
 * Exact patterns sit in one Map (the fast path: one lookup per publish); wildcard patterns in a
 * token trie, walked once per topic. A value may sit under several patterns; `match` returns
 * each matching value once.
 */
import type { ParsedPattern } from './subject.js';

interface TrieNode<T> {
  children: Map<string, TrieNode<T>>;
  /** The `*` child. */
  star?: TrieNode<T>;
  /** Values of patterns ending here with `>` (matches one or more further tokens). */
  rest?: Map<T, number>;
  /** Values of patterns ending exactly here. */
  here?: Map<T, number>;
}

function node<T>(): TrieNode<T> {
  return { children: new Map() };
}

/** Adds one reference of `value` to a counted set. */
function addRef<T>(m: Map<T, number>, value: T): void {
  m.set(value, (m.get(value) ?? 0) + 1);
}

/** Drops one reference; returns false if `value` was not there. */
function dropRef<T>(m: Map<T, number> | undefined, value: T): boolean {
  const n = m?.get(value);
  if (!m || n === undefined) return false;
  if (n <= 1) m.delete(value);
  else m.set(value, n - 1);
  return true;
}

export class SubjectIndex<T> {
  private readonly exact = new Map<string, Map<T, number>>();
  private readonly root: TrieNode<T> = node();
  private wildcards = 0;
  private entries = 0;

  /** Number of (pattern, value) references held. */
  get size(): number {
    return this.entries;
  }

  /** True when at least one wildcard pattern is indexed. */
  get hasWildcards(): boolean {
    return this.wildcards > 0;
  }

  /** Adds `value` under `p`. Adding the same pair twice needs two removes (reference counted). */
  add(p: ParsedPattern, value: T): void {
    this.entries++;
    if (!p.wildcard) {
      let m = this.exact.get(p.pattern);
      if (!m) {
        m = new Map();
        this.exact.set(p.pattern, m);
      }
      addRef(m, value);
      return;
    }
    this.wildcards++;
    let n = this.root;
    const last = p.tokens.length - 1;
    for (let i = 0; i <= last; i++) {
      const t = p.tokens[i] as string;
      if (t === '>') {
        n.rest ??= new Map();
        addRef(n.rest, value);
        return;
      }
      let next = t === '*' ? n.star : n.children.get(t);
      if (!next) {
        next = node();
        if (t === '*') n.star = next;
        else n.children.set(t, next);
      }
      n = next;
    }
    n.here ??= new Map();
    addRef(n.here, value);
  }

  /** Removes one reference of `value` under `p`; returns false if there was none. Prunes empty trie nodes. */
  remove(p: ParsedPattern, value: T): boolean {
    if (!p.wildcard) {
      const m = this.exact.get(p.pattern);
      if (!dropRef(m, value)) return false;
      if (m && m.size === 0) this.exact.delete(p.pattern);
      this.entries--;
      return true;
    }
    const path: Array<[TrieNode<T>, string]> = [];
    let n: TrieNode<T> | undefined = this.root;
    let removed = false;
    for (let i = 0; i < p.tokens.length && n; i++) {
      const t = p.tokens[i] as string;
      if (t === '>') {
        removed = dropRef(n.rest, value);
        if (n.rest?.size === 0) n.rest = undefined;
        n = undefined;
        break;
      }
      path.push([n, t]);
      n = t === '*' ? n.star : n.children.get(t);
    }
    if (n) {
      removed = dropRef(n.here, value);
      if (n.here?.size === 0) n.here = undefined;
    }
    if (!removed) return false;
    this.wildcards--;
    this.entries--;
    // Prune nodes left with nothing, deepest first, so churn of distinct patterns cannot grow the trie.
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, t] = path[i] as [TrieNode<T>, string];
      const child = t === '*' ? parent.star : parent.children.get(t);
      if (!child || child.here || child.rest || child.star || child.children.size > 0) break;
      if (t === '*') parent.star = undefined;
      else parent.children.delete(t);
    }
    return true;
  }

  /** Calls `visit` once for each distinct value whose pattern matches `topic`. */
  match(topic: string, visit: (value: T) => void): void {
    const exact = this.exact.get(topic);
    if (this.wildcards === 0) {
      if (exact) for (const v of exact.keys()) visit(v);
      return;
    }
    const seen = new Set<T>();
    if (exact) for (const v of exact.keys()) seen.add(v);
    this.walk(this.root, topic.split('.'), 0, seen);
    for (const v of seen) visit(v);
  }

  /** The distinct values matching `topic`. */
  matchAll(topic: string): T[] {
    const out: T[] = [];
    this.match(topic, (v) => out.push(v));
    return out;
  }

  /** True if any pattern matches `topic`. */
  hasMatch(topic: string): boolean {
    if (this.exact.has(topic)) return true;
    if (this.wildcards === 0) return false;
    let found = false;
    this.match(topic, () => {
      found = true;
    });
    return found;
  }

  private walk(n: TrieNode<T>, tokens: string[], i: number, out: Set<T>): void {
    if (i === tokens.length) {
      if (n.here) for (const v of n.here.keys()) out.add(v);
      return;
    }
    if (n.rest) for (const v of n.rest.keys()) out.add(v);
    const child = n.children.get(tokens[i] as string);
    if (child) this.walk(child, tokens, i + 1, out);
    if (n.star) this.walk(n.star, tokens, i + 1, out);
  }
}
