import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, FoundationError, FrameError, SerializationError } from '../../src/errors.js';
import { assertSerializable, decode, decodeRange, encode } from '../../src/mesh/codec.js';

const roundTrip = <T>(value: T): T => decode(encode(value)) as T;

/** Any JSON value the codec sends: an own "__proto__" key is refused on purpose (msgpackr would rename it on decode; see its own test). */
const sendableJson = fc.jsonValue().filter((v) => !JSON.stringify(v).includes('"__proto__"'));

function serializationPath(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SerializationError);
    expect((error as SerializationError).code).toBe(ErrorCodes.NOT_SERIALIZABLE);
    return (error as SerializationError).path;
  }
  throw new Error('expected a SerializationError');
}

describe('codec round-trips', () => {
  it('keeps primitives, including -0, NaN, infinities and undefined', () => {
    for (const v of [0, 1, -1, 127, 128, 2 ** 31, 2 ** 32, 2 ** 53 - 1, -(2 ** 53), 1.5, -1e-300, 'x', '', 'é€😀', true, false, null]) {
      expect(roundTrip(v)).toBe(v);
    }
    expect(Object.is(roundTrip(-0), -0)).toBe(true);
    expect(Object.is(roundTrip({ a: -0 }).a, -0)).toBe(true);
    expect(Object.is(roundTrip([1, -0])[1], -0)).toBe(true);
    expect(roundTrip(Number.NaN)).toBeNaN();
    expect(roundTrip(Number.POSITIVE_INFINITY)).toBe(Number.POSITIVE_INFINITY);
    expect(roundTrip(Number.NEGATIVE_INFINITY)).toBe(Number.NEGATIVE_INFINITY);
    expect(roundTrip(undefined)).toBeUndefined();
  });

  it('keeps undefined inside objects and arrays', () => {
    const out = roundTrip({ a: undefined, b: [undefined, 1, undefined], c: { d: undefined } });
    expect(Object.keys(out)).toEqual(['a', 'b', 'c']);
    expect('a' in out).toBe(true);
    expect(out.b).toStrictEqual([undefined, 1, undefined]);
    expect('d' in out.c).toBe(true);
  });

  it('keeps Date (including pre-epoch, far-future and invalid dates)', () => {
    for (const d of [new Date(0), new Date(1_700_000_000_123), new Date(-123_456_789), new Date(8.64e15)]) {
      const out = roundTrip(d);
      expect(out).toBeInstanceOf(Date);
      expect(out.getTime()).toBe(d.getTime());
    }
    expect(Number.isNaN(roundTrip(new Date(Number.NaN)).getTime())).toBe(true);
  });

  it('keeps Map (any key type) distinct from plain objects', () => {
    const objKey = { k: 1 };
    const m = new Map<unknown, unknown>([
      [1, 'one'],
      ['1', 'string one'],
      [objKey, [1, 2]],
      [10n, new Map([['inner', true]])],
      [null, undefined],
    ]);
    const out = roundTrip({ m, o: { 1: 'x' } });
    expect(out.m).toBeInstanceOf(Map);
    expect(out.m.get(1)).toBe('one');
    expect(out.m.get('1')).toBe('string one');
    expect(out.m.get(10n)).toBeInstanceOf(Map);
    expect([...out.m.keys()][2]).toStrictEqual({ k: 1 });
    expect(out.m.has(null)).toBe(true);
    expect(out.o).not.toBeInstanceOf(Map);
    expect(out.o).toStrictEqual({ 1: 'x' });
    expect(roundTrip(new Map())).toStrictEqual(new Map());
    expect(roundTrip({})).toStrictEqual({});
  });

  it('keeps Set, including Sets holding Maps', () => {
    const s = new Set<unknown>([1, 'a', new Map([[1, 2]]), [3]]);
    const out = roundTrip(s);
    expect(out).toBeInstanceOf(Set);
    expect(out).toStrictEqual(s);
  });

  it('keeps BigInt, beyond 64 bits too', () => {
    const values = [
      0n,
      1n,
      -1n,
      2n ** 63n - 1n,
      -(2n ** 63n),
      2n ** 63n,
      2n ** 64n - 1n,
      2n ** 64n,
      -(2n ** 64n) - 1n,
      2n ** 200n + 12345n,
      -(3n ** 500n),
      2n ** 4000n - 1n,
    ];
    for (const v of values) expect(roundTrip(v)).toBe(v);
    expect(roundTrip({ big: 2n ** 100n }).big).toBe(2n ** 100n);
  });

  it('keeps every typed array type, Buffer, ArrayBuffer and DataView', () => {
    const typed = [
      new Int8Array([-1, 2]),
      new Uint8Array([1, 255]),
      new Uint8ClampedArray([0, 255]),
      new Int16Array([-300, 300]),
      new Uint16Array([65535]),
      new Int32Array([-(2 ** 31)]),
      new Uint32Array([2 ** 32 - 1]),
      new Float32Array([1.5, -0.25]),
      new Float64Array([Math.PI, Number.NaN]),
      new BigInt64Array([-(2n ** 63n), 5n]),
      new BigUint64Array([2n ** 64n - 1n]),
    ];
    for (const t of typed) {
      const out = roundTrip(t);
      expect(out.constructor).toBe(t.constructor);
      expect(out).toStrictEqual(t);
    }
    // A view into a larger buffer carries only its own bytes.
    const backing = new Float64Array([1, 2, 3, 4]);
    const view = new Float64Array(backing.buffer, 8, 2);
    expect(roundTrip(view)).toStrictEqual(new Float64Array([2, 3]));

    const buf = Buffer.from('hello bytes');
    const outBuf = roundTrip(buf);
    expect(Buffer.isBuffer(outBuf)).toBe(true);
    expect(outBuf.equals(buf)).toBe(true);
    const outU8 = roundTrip({ u: new Uint8Array([9, 8, 7]) }).u;
    expect(outU8).toBeInstanceOf(Uint8Array);
    expect([...outU8]).toEqual([9, 8, 7]);

    const ab = new Uint8Array([1, 2, 3]).buffer;
    const outAb = roundTrip(ab);
    expect(outAb).toBeInstanceOf(ArrayBuffer);
    expect([...new Uint8Array(outAb)]).toEqual([1, 2, 3]);
    const dv = roundTrip(new DataView(new Uint8Array([4, 5]).buffer));
    expect(dv).toBeInstanceOf(DataView);
    expect(dv.getUint8(1)).toBe(5);
  });

  it('keeps RegExp', () => {
    const out = roundTrip(/a+b/giu);
    expect(out).toBeInstanceOf(RegExp);
    expect(out.source).toBe('a+b');
    expect(out.flags).toBe('giu');
  });

  it('keeps Error name, message, stack, code, cause and own fields', () => {
    const cause = new TypeError('inner');
    const err = Object.assign(new Error('outer', { cause }), { code: 'E_OUTER', details: { n: 1, when: new Date(5) } });
    const out = roundTrip(err);
    expect(out).toBeInstanceOf(Error);
    expect(out.name).toBe('Error');
    expect(out.message).toBe('outer');
    expect(out.stack).toBe(err.stack);
    expect(out.code).toBe('E_OUTER');
    expect(out.details).toStrictEqual({ n: 1, when: new Date(5) });
    expect(out.cause).toBeInstanceOf(TypeError);
    expect((out.cause as Error).message).toBe('inner');
    expect((out.cause as Error).stack).toBe(cause.stack);
    // No cause given stays no cause.
    expect('cause' in roundTrip(new Error('plain'))).toBe(false);
    // A non-error cause is kept as is.
    expect(roundTrip(new Error('x', { cause: { why: 'because' } })).cause).toStrictEqual({ why: 'because' });
  });

  it('decodes custom Error subclasses as Error with their name, and FoundationErrors with their code', () => {
    class MyError extends Error {
      constructor(message: string) {
        super(message);
        this.name = 'MyError';
      }
    }
    const out = roundTrip({ e: new MyError('mine') }).e;
    expect(out).toBeInstanceOf(Error);
    expect(out.name).toBe('MyError');
    expect(out.message).toBe('mine');
    const fe = roundTrip(new SerializationError('$.x', 'nope')) as unknown as { name: string; code: string; path: string; message: string };
    expect(fe.name).toBe('SerializationError');
    expect(fe.code).toBe(ErrorCodes.NOT_SERIALIZABLE);
    expect(fe.path).toBe('$.x');
    expect(fe.message).toContain('nope');
    for (const E of [RangeError, SyntaxError, ReferenceError, EvalError, URIError]) {
      expect(roundTrip(new E('m'))).toBeInstanceOf(E);
    }
    const agg = roundTrip(new AggregateError([new Error('a'), new RangeError('b')], 'many'));
    expect(agg).toBeInstanceOf(AggregateError);
    expect(agg.errors.map((e: Error) => e.message)).toEqual(['a', 'b']);
    expect(agg.errors[1]).toBeInstanceOf(RangeError);
  });

  it('keeps nested structures and null-prototype objects', () => {
    const nullProto = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1, b: [2] });
    const value = {
      list: [1, 'two', [3, [4, { five: 5 }]]],
      map: new Map([['k', new Set([new Date(1)])]]),
      np: nullProto,
      bytes: Buffer.from([1, 2]),
      nil: null,
    };
    const out = roundTrip(value);
    expect(out.list).toStrictEqual(value.list);
    expect(out.map.get('k')).toStrictEqual(new Set([new Date(1)]));
    expect({ ...out.np }).toStrictEqual({ a: 1, b: [2] });
    expect(out.nil).toBeNull();
  });

  it('accepts 999 levels of nesting and refuses more than 1000', () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < 999; i++) deep = [deep];
    let out = roundTrip(deep);
    for (let i = 0; i < 999; i++) out = (out as unknown[])[0];
    expect(out).toBe('leaf');
    let tooDeep: unknown = 1;
    for (let i = 0; i < 1001; i++) tooDeep = { a: tooDeep };
    expect(serializationPath(() => encode(tooDeep))).toMatch(/^\$(\.a)+$/);
  });

  it('does not mutate the value it encodes', () => {
    const inner = new Map([[1, -0]]);
    const value = { a: { inner }, list: [inner, new Error('e')] };
    encode(value);
    expect(value.a.inner).toBe(inner);
    expect(value.list[0]).toBe(inner);
    expect(value.list[1]).toBeInstanceOf(Error);
  });

  const leaf = fc.oneof(
    fc.constant(undefined),
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.string({ unit: 'grapheme' }),
    fc.bigInt({ min: -(2n ** 300n), max: 2n ** 300n }),
    fc.date({ noInvalidDate: true }),
    fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
    fc.uint8Array({ maxLength: 40 }),
    fc.float32Array({ maxLength: 8 }),
    fc.int32Array({ maxLength: 8 }),
    fc.bigInt64Array({ maxLength: 4 }),
  );
  const { value: arbValue } = fc.letrec<{ value: unknown }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      leaf,
      fc.array(tie('value'), { maxLength: 5 }),
      fc.dictionary(
        fc.string().filter((k) => k !== '__proto__'),
        tie('value'),
        { maxKeys: 5, noNullPrototype: true },
      ),
      fc.array(fc.tuple(tie('value'), tie('value')), { maxLength: 4 }).map((entries) => new Map(entries)),
      fc.array(tie('value'), { maxLength: 4 }).map((items) => new Set(items)),
    ),
  }));

  it('round-trips arbitrary nested values (property)', () => {
    fc.assert(
      fc.property(arbValue, (v) => {
        const out = roundTrip(v);
        expect(out).toStrictEqual(v);
      }),
      { numRuns: 400 },
    );
  });

  it('round-trips arbitrary JSON values exactly like JSON does (property)', () => {
    fc.assert(
      fc.property(sendableJson, (v) => {
        expect(roundTrip(v)).toStrictEqual(v);
      }),
      { numRuns: 300 },
    );
  });
});

describe('codec rejects what cannot cross the wire', () => {
  it('names the path of a function', () => {
    expect(serializationPath(() => encode({ user: { callback: () => 1 } }))).toBe('$.user.callback');
    expect(serializationPath(() => encode([1, 2, function named() {}]))).toBe('$[2]');
    expect(serializationPath(() => encode(() => 1))).toBe('$');
    expect(() => encode({ f() {} })).toThrow(/function f/);
  });

  it('rejects symbols, weak collections, promises and class instances', () => {
    class Point {
      x = 1;
    }
    expect(serializationPath(() => encode({ s: Symbol('x') }))).toBe('$.s');
    expect(serializationPath(() => encode({ a: [new WeakMap()] }))).toBe('$.a[0]');
    expect(serializationPath(() => encode({ w: new WeakSet() }))).toBe('$.w');
    expect(serializationPath(() => encode({ p: Promise.resolve(1) }))).toBe('$.p');
    expect(serializationPath(() => encode({ pt: new Point() }))).toBe('$.pt');
    expect(serializationPath(() => encode({ 'odd key': new Point() }))).toBe('$["odd key"]');
    expect(() => encode(new Point())).toThrow(/Point/);
    expect(() => encode(new (class Arr extends Array {})())).toThrow(SerializationError);
    expect(() => encode(new String('boxed'))).toThrow(SerializationError);
  });

  it('finds bad values inside Maps, Sets and Errors', () => {
    expect(serializationPath(() => encode({ m: new Map([['k', { f: () => 1 }]]) }))).toBe('$.m.get("k").f');
    expect(serializationPath(() => encode(new Map([[() => 1, 1]])))).toMatch(/^\$\.<key #0>$/);
    expect(serializationPath(() => encode({ s: new Set([1, Symbol.iterator]) }))).toBe('$.s.<element #1>');
    expect(serializationPath(() => encode(Object.assign(new Error('e'), { fn: () => 1 })))).toBe('$.fn');
    expect(serializationPath(() => encode(new Error('e', { cause: { cb: () => 1 } })))).toBe('$.cause.cb');
  });

  it('rejects circular references but accepts shared ones', () => {
    const a: Record<string, unknown> = { x: 1 };
    a.self = a;
    expect(serializationPath(() => encode({ root: a }))).toBe('$.root.self');
    const arr: unknown[] = [];
    arr.push({ back: arr });
    expect(serializationPath(() => encode(arr))).toBe('$[0].back');
    const m = new Map<string, unknown>();
    m.set('me', m);
    expect(() => encode(m)).toThrow(/circular/);
    const e = new Error('loop');
    (e as { cause?: unknown }).cause = e;
    expect(() => encode(e)).toThrow(/circular/);
    const shared = { s: 1 };
    expect(roundTrip({ a: shared, b: shared, c: [shared, shared] })).toStrictEqual({ a: { s: 1 }, b: { s: 1 }, c: [{ s: 1 }, { s: 1 }] });
  });

  it('rejects an own __proto__ key instead of letting it change on the way', () => {
    const v = JSON.parse('{"ok":1,"__proto__":{"polluted":true}}') as unknown;
    expect(serializationPath(() => encode(v))).toBe('$.__proto__');
  });

  it('assertSerializable uses the given path prefix and accepts good values', () => {
    expect(() => assertSerializable({ a: 1, m: new Map(), d: new Date() })).not.toThrow();
    let caught: unknown;
    try {
      assertSerializable({ a: { fn: () => 1 } }, 'args[0]');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SerializationError);
    expect(caught).toBeInstanceOf(FoundationError);
    expect((caught as SerializationError).path).toBe('args[0].a.fn');
    expect((caught as Error).message).toContain('args[0].a.fn');
  });

  it('keeps working after a rejection (no state left behind)', () => {
    const a: Record<string, unknown> = {};
    a.a = a;
    expect(() => encode(a)).toThrow(SerializationError);
    const shared = { z: 1 };
    expect(roundTrip({ p: shared, q: shared })).toStrictEqual({ p: { z: 1 }, q: { z: 1 } });
  });
});

describe('codec decode of untrusted bytes', () => {
  function expectFrameInvalid(bytes: Uint8Array): void {
    let caught: unknown;
    try {
      decode(bytes);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(FrameError);
    expect((caught as FrameError).code).toBe(ErrorCodes.FRAME_INVALID);
  }

  it('throws FrameError on empty, truncated and trailing input', () => {
    expectFrameInvalid(new Uint8Array(0));
    const good = encode({ hello: 'world', list: [1, 2, 3] });
    for (let cut = 1; cut < good.length; cut++) expectFrameInvalid(good.subarray(0, cut));
    expectFrameInvalid(Buffer.concat([good, Buffer.from([0x01])]));
  });

  it('throws FrameError on hostile shapes without hanging', () => {
    const start = Date.now();
    // Huge declared array/map/string/binary lengths with no data behind them.
    expectFrameInvalid(Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]));
    expectFrameInvalid(Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff]));
    expectFrameInvalid(Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff, 0x61]));
    expectFrameInvalid(Buffer.from([0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]));
    expectFrameInvalid(Buffer.from([0xc9, 0xff, 0xff, 0xff, 0xff, 0x42]));
    // Absurd nesting (stack overflow inside the decoder).
    expectFrameInvalid(Buffer.alloc(200_000, 0x91));
    // Our own extensions with the wrong contents.
    expectFrameInvalid(Buffer.from([0xd4, 70, 0, 0x91, 0x01])); // Map with an odd entry list
    expectFrameInvalid(Buffer.from([0xd4, 71, 0, 0x01])); // Error that is not an array
    expectFrameInvalid(Buffer.from([0xd4, 71, 0, 0x94, 0x01, 0xa0, 0xc0, 0xc0])); // Error with a numeric name
    // Structured-clone back-references are disabled.
    expectFrameInvalid(Buffer.from([0xd6, 0x70, 0, 0, 0, 1]));
    expect(Date.now() - start).toBeLessThan(2000);
  });

  it('random bytes either decode or throw FrameError, quickly (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), (bytes) => {
        try {
          decode(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(FrameError);
          expect((error as FrameError).code).toBe(ErrorCodes.FRAME_INVALID);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('mutated valid encodings either decode or throw FrameError (property)', () => {
    const base = encode({ a: [1, 'two', new Map([[3, new Set([4n])]])], e: new Error('x'), d: new Date(7), t: new Float64Array([1, 2]) });
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (edits) => {
        const bytes = Buffer.from(base);
        for (const [at, byte] of edits) bytes[at] = byte;
        try {
          decode(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(FrameError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('codec output buffers', () => {
  it('stay valid after later encodes (they may be queued by reference)', () => {
    const first = encode({ keep: 'me', n: [1, 2, 3] });
    const copy = Buffer.from(first);
    for (let i = 0; i < 5000; i++) encode({ other: 'x'.repeat(i % 50), i });
    encode(Buffer.alloc(100_000));
    expect(first.equals(copy)).toBe(true);
    expect(decode(first)).toStrictEqual({ keep: 'me', n: [1, 2, 3] });
  });
});

describe('codec decodeRange', () => {
  it('decodes exactly one value from a range of a larger buffer, as decode does from a copy of it', () => {
    fc.assert(
      fc.property(sendableJson, fc.uint8Array({ maxLength: 16 }), fc.uint8Array({ maxLength: 16 }), (value, before, after) => {
        const body = encode(value);
        const buf = Buffer.concat([before, body, after]);
        expect(decodeRange(buf, before.length, before.length + body.length)).toEqual(decode(Buffer.from(body)));
      }),
    );
  });

  it('refuses an empty range, a truncated value and trailing bytes inside the range', () => {
    const body = encode({ a: [1, 2, 3], s: 'text' });
    const buf = Buffer.concat([Buffer.from([0xc0]), body, Buffer.from([0x01])]);
    for (const [start, end] of [
      [1, 1],
      [1, body.length],
      [1, body.length + 2],
    ] as const) {
      expect(() => decodeRange(buf, start, end)).toThrow(FrameError);
    }
  });
});
