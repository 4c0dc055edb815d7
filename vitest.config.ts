import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Multi-process and namespace tests measure detection times on a 2-core machine:
    // running files one at a time keeps those measurements honest.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // The default output, then a list of everything skipped (nothing is skipped silently).
    reporters: ['default', './test/helpers/skip-summary.ts'],
  },
});
