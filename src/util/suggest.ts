/** Did-you-mean suggestions for configuration errors, shared by every layer. */

/** Edit distance, case-insensitive. */
export function levenshtein(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  const row: number[] = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    let diagonal = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= y.length; j++) {
      const above = row[j] as number;
      row[j] = Math.min(above + 1, (row[j - 1] as number) + 1, diagonal + (x[i - 1] === y[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[y.length] as number;
}

/** The closest allowed word, if it is close enough to be a plausible typo. */
export function didYouMean(word: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const a of allowed) {
    const d = levenshtein(word, a);
    if (d < bestDistance) {
      best = a;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}
