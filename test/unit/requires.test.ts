import { afterEach, describe, expect, it } from 'vitest';
import { findTool, missingTools, requireBuild, requireTools } from '../helpers/requires.js';

const NONE = 'fdn-no-such-tool-7f3a';

describe('requireTools (test gate for external tools)', () => {
  const saved = { require: process.env.FOUNDATION_REQUIRE_NETNS, optional: process.env.FOUNDATION_OPTIONAL_TOOLS };
  afterEach(() => {
    for (const [k, v] of [
      ['FOUNDATION_REQUIRE_NETNS', saved.require],
      ['FOUNDATION_OPTIONAL_TOOLS', saved.optional],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it('finds a tool every machine has and reports one nobody has', () => {
    expect(findTool('sh')).toMatch(/\/sh$/);
    expect(missingTools(['sh', NONE])).toEqual([NONE]);
  });

  it('returns no reason when everything is installed', () => {
    delete process.env.FOUNDATION_REQUIRE_NETNS;
    expect(requireTools(['sh'], 'a suite')).toBeUndefined();
  });

  it('returns the reason, naming the tool, when one is missing', () => {
    delete process.env.FOUNDATION_REQUIRE_NETNS;
    expect(requireTools([NONE, 'sh'], 'a suite')).toBe(`needs ${NONE}, not installed`);
  });

  it('throws under FOUNDATION_REQUIRE_NETNS=1, unless the tool is listed as optional', () => {
    process.env.FOUNDATION_REQUIRE_NETNS = '1';
    delete process.env.FOUNDATION_OPTIONAL_TOOLS;
    expect(() => requireTools([NONE], 'a suite')).toThrow(/a suite needs fdn-no-such-tool-7f3a.*FOUNDATION_REQUIRE_NETNS=1/);
    process.env.FOUNDATION_OPTIONAL_TOOLS = `promtool, ${NONE}`;
    expect(requireTools([NONE], 'a suite')).toBe(`needs ${NONE}, not installed`);
  });

  it('requireBuild: no reason once dist/ is built (npm run test:unit builds first)', () => {
    expect(requireBuild('a suite')).toBeUndefined();
  });
});
