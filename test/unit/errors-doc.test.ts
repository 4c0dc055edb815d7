import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, FoundationError } from '../../src/errors.js';
import * as api from '../../src/index.js';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

describe('docs/errors.md', () => {
  it('documents every error code under its own heading', () => {
    const missing = Object.values(ErrorCodes).filter((code) => !doc.includes(`### \`${code}\``));
    expect(missing).toEqual([]);
  });

  it('lists every exported error class', () => {
    const classes = Object.entries(api)
      .filter(([, v]) => typeof v === 'function' && (v === FoundationError || v.prototype instanceof FoundationError))
      .map(([k]) => k);
    expect(classes.length).toBeGreaterThan(5);
    expect(classes.filter((c) => !doc.includes(`| \`${c}\` |`))).toEqual([]);
  });
});
