/**
 * Globs over registry names (`registry.select`), and the sorted view of the names that lets a
 * glob with a literal prefix (`service:users:*`, `room:*`) read only the names under that prefix
 * instead of testing every name in the cluster: `services.discover` is such a select, on every
 * call.
 */

/** Compiles a glob into a RegExp (anchored; `*` any run, `?` one character, everything else literal). */
export function globToRegExp(glob: string): RegExp {
  let src = '';
  for (const ch of glob) {
    if (ch === '*') src += '.*';
    else if (ch === '?') src += '.';
    else src += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(`^${src}$`, 's');
}

/** The literal characters a glob starts with, before its first wildcard: every match starts with them. */
export function literalPrefix(glob: string): string {
  const star = glob.indexOf('*');
  const any = glob.indexOf('?');
  const end = star < 0 ? any : any < 0 ? star : Math.min(star, any);
  return end < 0 ? glob : glob.slice(0, end);
}

/** Most globs kept compiled. */
const MAX_COMPILED = 256;

/** Compiled globs, reused across calls (a select names the same few patterns over and over). */
export class GlobCache {
  private readonly compiled = new Map<string, RegExp>();

  get(glob: string): RegExp {
    let re = this.compiled.get(glob);
    if (!re) {
      if (this.compiled.size >= MAX_COMPILED) this.compiled.clear();
      re = globToRegExp(glob);
      this.compiled.set(glob, re);
    }
    return re;
  }
}

/** Past this many names, a change drops the sorted view (rebuilt by the next prefix read) rather than splicing it. */
const MAX_SPLICED = 20_000;

/**
 * The names in sorted order (string order, as `select` returns them), built on the first prefix
 * read and kept up to date by `add` and `remove` (or dropped, for a large table, and rebuilt on
 * the next read).
 */
export class SortedNames {
  private sorted: string[] | null = null;

  constructor(
    /** Every name, for a rebuild. */
    private readonly source: () => Iterable<string>,
  ) {}

  /** Index of the first name >= `name`. */
  private lowerBound(arr: string[], name: string): number {
    let lo = 0;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((arr[mid] as string) < name) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** A name now resolves (a no-op when it already did). */
  add(name: string): void {
    const arr = this.sorted;
    if (!arr) return;
    if (arr.length >= MAX_SPLICED) {
      this.sorted = null;
      return;
    }
    const i = this.lowerBound(arr, name);
    if (arr[i] !== name) arr.splice(i, 0, name);
  }

  /** A name no longer resolves. */
  remove(name: string): void {
    const arr = this.sorted;
    if (!arr) return;
    if (arr.length >= MAX_SPLICED) {
      this.sorted = null;
      return;
    }
    const i = this.lowerBound(arr, name);
    if (arr[i] === name) arr.splice(i, 1);
  }

  /** The names that start with `prefix`, in order. */
  withPrefix(prefix: string): string[] {
    if (!this.sorted) this.sorted = [...this.source()].sort();
    const arr = this.sorted;
    const from = this.lowerBound(arr, prefix);
    // The names under a prefix are contiguous in sorted order: find where they end by bisection too.
    let lo = from;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((arr[mid] as string).startsWith(prefix)) lo = mid + 1;
      else hi = mid;
    }
    return arr.slice(from, lo);
  }
}
