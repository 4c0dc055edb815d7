/**
 * Vitest reporter (added next to the default one in vitest.config.ts): at the end of a run, lists
 * every skipped suite and test, so a skip is never silent in a long log. The reasons are printed
 * by the gates when a file loads (`!!! SKIPPING ...`, see requires.ts and netns.ts); a test
 * skipped with `ctx.skip(reason)` shows its reason here too.
 */
import { relative } from 'node:path';
import type { Reporter, TestCase, TestModule } from 'vitest/node';

/** `suite > nested suite` of a test, or '' for a test at the top of its file. */
function suitePath(test: TestCase): string {
  const names: string[] = [];
  let p = test.parent;
  while (p.type === 'suite') {
    names.unshift(p.name);
    p = p.parent;
  }
  return names.join(' > ');
}

export default class SkipSummary implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const lines: string[] = [];
    for (const m of testModules) {
      const file = relative(process.cwd(), m.moduleId);
      // Tests skipped without a note are grouped by suite; a note is shown per test.
      const bySuite = new Map<string, number>();
      for (const t of m.children.allTests('skipped')) {
        const r = t.result();
        const note = r.state === 'skipped' ? r.note : undefined;
        if (note) lines.push(`  ${file} > ${t.fullName}: ${note}`);
        else bySuite.set(suitePath(t), (bySuite.get(suitePath(t)) ?? 0) + 1);
      }
      for (const [suite, n] of bySuite) lines.push(`  ${file}${suite ? ` > ${suite}` : ''}: ${n} test${n === 1 ? '' : 's'}`);
    }
    if (lines.length === 0) return;
    process.stdout.write(`\nSkipped (the reasons are printed as "!!! SKIPPING" above):\n${lines.join('\n')}\n`);
  }
}
