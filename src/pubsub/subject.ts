/**
 * Topic names of the pubsub layer: validation, and the NATS subject rules for wildcards.
 *
 * A topic is a string of `.`-separated tokens (`rooms.42.messages`); a topic without dots
 * (`room:lobby`, Phoenix style) is one token. A subscription pattern may use `*` for exactly
 * one token and `>` (last token only) for one or more remaining tokens, as NATS does.
 * Wildcards are whole tokens: `room*` is refused rather than silently taken literally (NATS
 * takes it literally; that surprise is not worth keeping).
 */
import { ErrorCodes, PubSubError } from '../errors.js';

/** Longest topic, in UTF-8 bytes: the mesh carries topics of up to 255 bytes, and ours travel inside a system topic. */
export const MAX_TOPIC_BYTES = 255;

/** A subscription pattern, split once into tokens. */
export interface ParsedPattern {
  readonly pattern: string;
  readonly tokens: readonly string[];
  /** True when the pattern has a `*` or `>` token: it cannot take the exact-topic fast path. */
  readonly wildcard: boolean;
}

function checkCommon(topic: unknown, what: 'topic' | 'pattern'): asserts topic is string {
  if (typeof topic !== 'string') {
    throw new PubSubError(ErrorCodes.TOPIC_INVALID, `a ${what} must be a string, got ${topic === null ? 'null' : typeof topic}`);
  }
  if (topic.length === 0) throw new PubSubError(ErrorCodes.TOPIC_INVALID, `a ${what} must not be empty`);
  // Length check in bytes without allocating for the common short ASCII case.
  if (topic.length > MAX_TOPIC_BYTES || Buffer.byteLength(topic, 'utf8') > MAX_TOPIC_BYTES) {
    throw new PubSubError(
      ErrorCodes.TOPIC_INVALID,
      `${what} "${topic.slice(0, 40)}..." is ${Buffer.byteLength(topic, 'utf8')} bytes in UTF-8; the limit is ${MAX_TOPIC_BYTES}`,
    );
  }
}

/** Cache of topics already checked: publishers repeat the same few topics on every message. */
const checkedTopics = new Set<string>();
const CHECKED_TOPICS_LIMIT = 65_536;

/**
 * Checks a topic a message is published to: non-empty, at most 255 UTF-8 bytes, no empty token,
 * and no wildcard token (a publish goes to one topic; NATS refuses the same).
 */
export function assertPublishTopic(topic: string): void {
  if (checkedTopics.has(topic)) return;
  checkCommon(topic, 'topic');
  const tokens = topic.split('.');
  for (const t of tokens) {
    if (t.length === 0) throw new PubSubError(ErrorCodes.TOPIC_INVALID, `topic "${topic}" has an empty token (leading, trailing or doubled ".")`);
    if (t === '*' || t === '>') {
      throw new PubSubError(
        ErrorCodes.TOPIC_INVALID,
        `topic "${topic}" holds the wildcard "${t}": wildcards are for subscriptions; publish to a concrete topic`,
      );
    }
  }
  // Past the bound the oldest entry goes, not the whole set: a workload cycling through more
  // topics than fit pays the check again for some, never for all at once.
  if (checkedTopics.size >= CHECKED_TOPICS_LIMIT) checkedTopics.delete(checkedTopics.values().next().value as string);
  checkedTopics.add(topic);
}

/** Checks and parses a subscription pattern. */
export function parsePattern(pattern: string): ParsedPattern {
  checkCommon(pattern, 'pattern');
  const tokens = pattern.split('.');
  let wildcard = false;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (t.length === 0) throw new PubSubError(ErrorCodes.TOPIC_INVALID, `pattern "${pattern}" has an empty token (leading, trailing or doubled ".")`);
    if (t === '*') wildcard = true;
    else if (t === '>') {
      if (i !== tokens.length - 1) throw new PubSubError(ErrorCodes.TOPIC_INVALID, `pattern "${pattern}": ">" must be the last token`);
      wildcard = true;
    } else if (t.includes('*') || t.includes('>')) {
      throw new PubSubError(ErrorCodes.TOPIC_INVALID, `pattern "${pattern}": "*" and ">" must be whole tokens (got "${t}")`);
    }
  }
  return { pattern, tokens, wildcard };
}

/**
 * Reference semantics of one pattern against one topic (both already valid). The index in
 * `subject-index.ts` must agree with it; the property tests compare the two.
 */
export function patternMatches(pattern: readonly string[], topic: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i];
    if (p === '>') return topic.length > i;
    if (i >= topic.length) return false;
    if (p !== '*' && p !== topic[i]) return false;
  }
  return pattern.length === topic.length;
}
