/**
 * The value codec of the mesh: MessagePack (msgpackr) with a few extensions so that the
 * usual JavaScript values survive a trip between processes.
 *
 * Round-trips: primitives (including `undefined` inside objects/arrays, `-0`, NaN, ±Infinity),
 * BigInt of any size (beyond 64 bits through msgpackr's bigint extension), Date, RegExp, Map
 * (any key type), Set, Buffer, Uint8Array and every other typed array, DataView, ArrayBuffer,
 * Error (name, message, stack, cause, `code` and other own enumerable fields; AggregateError
 * keeps `errors`), plain and null-prototype objects (null-prototype ones decode as plain
 * objects), arrays (holes decode as `undefined`). Strings are UTF-8, so a lone surrogate
 * decodes as U+FFFD.
 *
 * Subclasses of the supported built-ins (a `class X extends Map`, a custom `Error`) are accepted
 * and decode as the base built-in; for errors the `name` is kept. Anything else that is not
 * plain data (functions, symbols, promises, weak collections, class instances, cycles) is
 * rejected by `encode` with a `SerializationError` naming where it sits.
 */
import { addExtension, Packr } from 'msgpackr';
import { ErrorCodes, FrameError, SerializationError } from '../errors.js';

// Extension type codes (msgpackr leaves 1..100 to applications). msgpackr's registry is
// process-global, so the codes are picked away from the low numbers other code tends to use.
const EXT_MAP = 70;
const EXT_ERROR = 71;
const EXT_NEGATIVE_ZERO = 72;

/**
 * msgpackr writes an exact `Map` as a MessagePack map before it looks at extensions, which
 * makes it indistinguishable from a plain object once `useRecords` is off. The pre-encode
 * walk swaps every Map for this box so it gets its own tag.
 */
class MapBox {
  /** Keys and values alternating: [k0, v0, k1, v1, ...], already prepared for encoding. */
  constructor(readonly flat: unknown[]) {}
}

/**
 * msgpackr's built-in Error extension only carries name, message and cause; the wire needs
 * stack and `code` too, so errors are swapped for this box by the pre-encode walk.
 */
class ErrorBox {
  /** [name, message, stack, props] or [name, message, stack, props, cause]. */
  constructor(readonly fields: unknown[]) {}
}

/** msgpackr writes -0 as the integer 0; a tiny extension keeps the sign. */
class NegativeZero {}
const NEGATIVE_ZERO = new NegativeZero();
const EMPTY_BYTES = new Uint8Array(0);

const BUILTIN_ERRORS: Record<string, ErrorConstructor | undefined> = {
  Error,
  EvalError,
  RangeError,
  ReferenceError,
  SyntaxError,
  TypeError,
  URIError,
};

function invalid(message: string): never {
  throw new Error(message);
}

function mapFromFlat(data: unknown): Map<unknown, unknown> {
  if (!Array.isArray(data) || data.length % 2 !== 0) invalid('Map extension does not hold key/value pairs');
  const map = new Map<unknown, unknown>();
  for (let i = 0; i < data.length; i += 2) map.set(data[i], data[i + 1]);
  return map;
}

function defineHidden(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, configurable: true, enumerable: false });
}

function errorFromFields(data: unknown): Error {
  if (!Array.isArray(data) || data.length < 4 || data.length > 5) invalid('Error extension has the wrong shape');
  const [name, message, stack, props] = data as [unknown, unknown, unknown, unknown];
  if (typeof name !== 'string' || typeof message !== 'string') invalid('Error extension has a non-string name or message');
  if (stack !== null && typeof stack !== 'string') invalid('Error extension has a non-string stack');
  if (props !== null && (typeof props !== 'object' || Array.isArray(props))) invalid('Error extension has bad fields');
  const hasCause = data.length === 5;
  const options = hasCause ? { cause: data[4] } : undefined;
  const fields = props as Record<string, unknown> | null;
  let error: Error;
  if (name === 'AggregateError' && fields !== null && Array.isArray(fields.errors)) {
    error = new AggregateError(fields.errors, message, options);
  } else {
    const Ctor = Object.hasOwn(BUILTIN_ERRORS, name) ? BUILTIN_ERRORS[name] : undefined;
    error = Ctor ? new Ctor(message, options) : new Error(message, options);
    if (!Ctor) defineHidden(error, 'name', name);
  }
  // The stack is the remote one: a local stack pointing into the decoder would only mislead.
  defineHidden(error, 'stack', stack ?? undefined);
  if (fields !== null) {
    for (const key of Object.keys(fields)) {
      if (key === 'errors' && error instanceof AggregateError) continue;
      // defineProperty, not assignment: a field named like an accessor must not run setters.
      Object.defineProperty(error, key, { value: fields[key], writable: true, configurable: true, enumerable: true });
    }
  }
  return error;
}

addExtension({ Class: MapBox, type: EXT_MAP, write: (box: MapBox) => box.flat, read: mapFromFlat });
addExtension({ Class: ErrorBox, type: EXT_ERROR, write: (box: ErrorBox) => box.fields, read: errorFromFields });
addExtension({
  Class: NegativeZero,
  type: EXT_NEGATIVE_ZERO,
  pack: () => EMPTY_BYTES,
  unpack: () => -0,
});

const packr = new Packr({
  // Records would make a payload depend on structures seen earlier; peers must decode every
  // message on its own.
  useRecords: false,
  // Objects decode as objects; Maps come back through EXT_MAP.
  mapsAsObjects: true,
  moreTypes: true,
  useBigIntExtension: true,
  int64AsType: 'bigint',
  // Untrusted peers must not be able to make the decoder chase back-references.
  structuredClone: false,
  // A class's toJSON is never reached (class instances are rejected) and a plain object's
  // `toJSON` function is rejected too; this just keeps msgpackr from ever calling user code.
  useToJSON: false,
});

// ---------------------------------------------------------------------------------------------
// Pre-encode walk: one pass that both validates (msgpackr would silently write a function as
// `undefined`) and swaps Maps/Errors/-0 for their boxes. It copies only the containers on the
// path to a swapped value, so common data (no Map, Error or -0) is walked and never copied.
// Path strings are only built when something is wrong: the walk keeps raw keys per depth.
// ---------------------------------------------------------------------------------------------

/** Deeper than this is refused: msgpackr (and the peer's decoder) recurse per level. */
const MAX_DEPTH = 1000;

const SEG_PROP = 0;
const SEG_INDEX = 1;
const SEG_MAP_KEY = 2;
const SEG_MAP_VALUE = 3;
const SEG_SET = 4;

const ancestors: object[] = [];
const segKinds: number[] = [];
const segKeys: unknown[] = [];
let basePath = '$';

const IDENT = /^[A-Za-z_$][\w$]*$/;

function renderKey(key: unknown): string {
  if (typeof key === 'string') return JSON.stringify(key);
  if (typeof key === 'bigint') return `${key}n`;
  if (typeof key === 'number' || typeof key === 'boolean' || key == null) return String(key);
  return `<${describe(key)}>`;
}

function buildPath(depth: number): string {
  let path = basePath;
  for (let i = 0; i < depth; i++) {
    const key = segKeys[i];
    switch (segKinds[i]) {
      case SEG_PROP:
        path += typeof key === 'string' && IDENT.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
        break;
      case SEG_INDEX:
        path += `[${key as number}]`;
        break;
      case SEG_MAP_KEY:
        path += `.<key #${key as number}>`;
        break;
      case SEG_MAP_VALUE:
        path += `.get(${renderKey(key)})`;
        break;
      case SEG_SET:
        path += `.<element #${key as number}>`;
        break;
    }
  }
  return path;
}

function describe(value: unknown): string {
  if (typeof value === 'function') return value.name ? `function ${value.name}` : 'function';
  if (typeof value === 'symbol') return value.toString();
  if (value === null || typeof value !== 'object') return typeof value;
  const ctor = (value as { constructor?: { name?: unknown } }).constructor;
  const name = ctor && typeof ctor.name === 'string' && ctor.name ? ctor.name : 'object';
  return `instance of ${name}`;
}

function fail(depth: number, why: string): never {
  const path = buildPath(depth);
  ancestors.length = 0;
  throw new SerializationError(path, why);
}

function enter(value: object, depth: number): void {
  for (let i = 0; i < depth; i++) {
    if (ancestors[i] === value) fail(depth, 'circular reference');
  }
  if (depth >= MAX_DEPTH) fail(depth, `nested more than ${MAX_DEPTH} levels deep`);
  ancestors[depth] = value;
}

const hasOwn = Object.prototype.hasOwnProperty;
const ObjectProto = Object.prototype;
const ArrayProto = Array.prototype;
const TypedArrayProto = Object.getPrototypeOf(Uint8Array.prototype) as object;

function walk(value: unknown, depth: number): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
    case 'bigint':
    case 'undefined':
      return value;
    case 'number':
      return value === 0 && 1 / value < 0 ? NEGATIVE_ZERO : value;
    case 'object':
      return value === null ? null : walkObject(value, depth);
    case 'function':
      return fail(depth, `${describe(value)} cannot be sent; send data, not behaviour`);
    case 'symbol':
      return fail(depth, `${describe(value)} cannot be sent`);
    default:
      return fail(depth, `unsupported type ${typeof value}`);
  }
}

function walkObject(value: object, depth: number): unknown {
  const proto = Object.getPrototypeOf(value) as object | null;
  if (proto === ObjectProto || proto === null) return walkPlain(value as Record<string, unknown>, depth);
  if (proto === ArrayProto) return walkArray(value as unknown[], depth);
  // Leaves msgpackr encodes natively (moreTypes). Checked by prototype first because it is
  // cheaper than instanceof for the common exact built-ins.
  if (proto === Uint8Array.prototype || proto === Buffer.prototype || value instanceof Date) return value;
  if (Object.getPrototypeOf(proto) === TypedArrayProto || ArrayBuffer.isView(value)) return value;
  if (value instanceof ArrayBuffer || value instanceof RegExp) return value;
  if (value instanceof Map) return walkMap(value, depth);
  if (value instanceof Set) return walkSet(value, depth);
  if (value instanceof Error) return walkError(value, depth);
  if (value instanceof Promise) return fail(depth, 'a Promise cannot be sent; await it first');
  if (value instanceof WeakMap || value instanceof WeakSet || value instanceof WeakRef) {
    return fail(depth, `${describe(value)} cannot be sent (weak collections are not enumerable)`);
  }
  if (Array.isArray(value)) return fail(depth, `${describe(value)} (an Array subclass) cannot be sent; use a plain array`);
  return fail(depth, `${describe(value)} cannot be sent; only plain objects and supported built-ins cross the wire`);
}

function walkPlain(obj: Record<string, unknown>, depth: number): unknown {
  enter(obj, depth);
  let copy: Record<string, unknown> | undefined;
  const child = depth + 1;
  for (const key in obj) {
    if (!hasOwn.call(obj, key)) continue;
    if (key === '__proto__') {
      segKinds[depth] = SEG_PROP;
      segKeys[depth] = key;
      // msgpackr's decoder renames this key (prototype-pollution guard): refuse rather than
      // let the receiver see different data.
      fail(depth + 1, 'an own property named "__proto__" cannot be sent');
    }
    const v = obj[key];
    // Inlined fast path for the most common leaves: no call.
    const t = typeof v;
    if (t === 'string' || t === 'boolean' || t === 'undefined' || (t === 'number' && v !== 0)) continue;
    segKinds[depth] = SEG_PROP;
    segKeys[depth] = key;
    const out = walk(v, child);
    if (out !== v) {
      copy ??= { ...obj };
      copy[key] = out;
    }
  }
  ancestors[depth] = undefined as unknown as object;
  segKeys[depth] = undefined;
  return copy ?? obj;
}

function walkArray(arr: unknown[], depth: number): unknown {
  enter(arr, depth);
  let copy: unknown[] | undefined;
  const child = depth + 1;
  for (let i = 0; i < arr.length; i++) {
    const v = arr[i];
    const t = typeof v;
    if (t === 'string' || t === 'boolean' || t === 'undefined' || (t === 'number' && v !== 0)) continue;
    segKinds[depth] = SEG_INDEX;
    segKeys[depth] = i;
    const out = walk(v, child);
    if (out !== v) {
      if (copy === undefined) copy = arr.slice();
      copy[i] = out;
    }
  }
  ancestors[depth] = undefined as unknown as object;
  return copy ?? arr;
}

function walkMap(map: Map<unknown, unknown>, depth: number): MapBox {
  enter(map, depth);
  const flat: unknown[] = new Array(map.size * 2);
  const child = depth + 1;
  let i = 0;
  for (const [k, v] of map) {
    segKinds[depth] = SEG_MAP_KEY;
    segKeys[depth] = i >> 1;
    flat[i++] = walk(k, child);
    segKinds[depth] = SEG_MAP_VALUE;
    segKeys[depth] = k;
    flat[i++] = walk(v, child);
  }
  ancestors[depth] = undefined as unknown as object;
  segKeys[depth] = undefined;
  return new MapBox(flat);
}

function walkSet(set: Set<unknown>, depth: number): unknown {
  enter(set, depth);
  let changed = false;
  const out: unknown[] = new Array(set.size);
  const child = depth + 1;
  let i = 0;
  for (const v of set) {
    segKinds[depth] = SEG_SET;
    segKeys[depth] = i;
    const w = walk(v, child);
    if (w !== v) changed = true;
    out[i++] = w;
  }
  ancestors[depth] = undefined as unknown as object;
  // A Set subclass is written by msgpackr as a Set too, so only a changed member needs a copy.
  return changed ? new Set(out) : set;
}

function walkError(err: Error, depth: number): ErrorBox {
  enter(err, depth);
  const child = depth + 1;
  let props: Record<string, unknown> | null = null;
  for (const key of Object.keys(err)) {
    if (key === 'name' || key === 'message' || key === 'stack' || key === 'cause') continue;
    segKinds[depth] = SEG_PROP;
    segKeys[depth] = key;
    props ??= {};
    Object.defineProperty(props, key, {
      value: walk((err as unknown as Record<string, unknown>)[key], child),
      writable: true,
      enumerable: true,
      configurable: true,
    });
  }
  if (err instanceof AggregateError && Array.isArray(err.errors) && !(props && hasOwn.call(props, 'errors'))) {
    segKinds[depth] = SEG_PROP;
    segKeys[depth] = 'errors';
    props ??= {};
    props.errors = walk(err.errors, child);
  }
  const stack = typeof err.stack === 'string' ? err.stack : null;
  const fields: unknown[] = [String(err.name), String(err.message), stack, props];
  if (hasOwn.call(err, 'cause')) {
    segKinds[depth] = SEG_PROP;
    segKeys[depth] = 'cause';
    fields.push(walk(err.cause, child));
  }
  ancestors[depth] = undefined as unknown as object;
  segKeys[depth] = undefined;
  return new ErrorBox(fields);
}

function prepare(value: unknown, path: string): unknown {
  basePath = path;
  try {
    return walk(value, 0);
  } catch (error) {
    ancestors.length = 0;
    if (error instanceof SerializationError) throw error;
    // A getter that throws, or a stack overflow from a pathological value.
    throw new SerializationError(path, `reading the value failed: ${(error as Error)?.message ?? String(error)}`);
  }
}

/**
 * Throws `SerializationError` (code `FOUNDATION_NOT_SERIALIZABLE`) if `value` cannot cross the
 * wire: functions, symbols, promises, weak collections, class instances other than the
 * supported built-ins, circular references, nesting deeper than 1000 levels, and an own
 * property named `__proto__` (the decoder would rename it).
 * The error's `path` says where, e.g. `$.user.callback` or `$.items[3]`.
 * @param path Prefix of the reported path (defaults to `$`).
 */
export function assertSerializable(value: unknown, path = '$'): void {
  prepare(value, path);
}

/**
 * Encodes a value to MessagePack. Checks it first (see `assertSerializable`), so a bad value
 * fails here, at the sender's call site, and never turns into `{}` on the receiver.
 * The returned Buffer may share its ArrayBuffer with other encodings: do not write to it.
 */
export function encode(value: unknown): Buffer {
  const prepared = prepare(value, '$');
  try {
    return packr.pack(prepared);
  } catch (error) {
    throw new SerializationError('$', (error as Error)?.message ?? String(error));
  }
}

/**
 * Decodes bytes produced by `encode` (on any node). Bytes from the network are untrusted: any
 * malformed input (truncated, trailing bytes, unknown or ill-formed extension, absurd nesting)
 * throws `FrameError` with code `FOUNDATION_FRAME_INVALID`. Decoded Buffers/Uint8Arrays may be
 * views into `buf`.
 */
export function decode(buf: Uint8Array): unknown {
  return decodeRange(buf, 0, buf.length);
}

/**
 * `decode` of the bytes `buf[start..end)`, which must be exactly one value. Decoding many values
 * out of one buffer this way (a pubsub batch) spares a view object per value, and msgpackr's
 * DataView, which it caches on the buffer it is given, is made once for all of them.
 */
export function decodeRange(buf: Uint8Array, start: number, end: number): unknown {
  if (end <= start) throw new FrameError(ErrorCodes.FRAME_INVALID, 'Cannot decode an empty payload');
  try {
    return packr.unpack(buf, { start, end });
  } catch (error) {
    throw new FrameError(ErrorCodes.FRAME_INVALID, `Malformed payload: ${(error as Error)?.message ?? String(error)}`);
  }
}
