/**
 * W3C trace-context propagation through pubsub, when the application has installed
 * `@opentelemetry/api` (an optional peer dependency, loaded once at start, lazily).
 *
 * Publishing: if a span is active, its context travels as a `traceparent`
 * (`00-<trace id>-<span id>-<flags>`), written from the span context itself, so no propagator
 * needs to be registered. Receiving: a handler of a message that carries one runs inside a
 * context whose parent is that remote span, so the spans it starts join the publisher's trace.
 * Without the package nothing is loaded, nothing is carried, and handlers run as they are.
 */

/** The slice of `@opentelemetry/api` used here. */
interface SpanContext {
  traceId: string;
  spanId: string;
  traceFlags: number;
  isRemote?: boolean;
}
interface OtelApi {
  context: { active(): unknown; with<T>(ctx: unknown, fn: () => T): T };
  trace: {
    getSpan(ctx: unknown): { spanContext(): SpanContext } | undefined;
    setSpanContext(ctx: unknown, sc: SpanContext): unknown;
    isSpanContextValid(sc: SpanContext): boolean;
  };
  ROOT_CONTEXT: unknown;
}

let otel: OtelApi | null | undefined;

/** Loads `@opentelemetry/api` once; null when it is not installed. */
export async function loadOtel(): Promise<OtelApi | null> {
  if (otel !== undefined) return otel;
  const name = '@opentelemetry/api';
  try {
    const mod = (await import(name)) as Partial<OtelApi> & { default?: Partial<OtelApi> };
    const api = (mod.trace ? mod : mod.default) as OtelApi | undefined;
    otel = api?.trace && api.context ? api : null;
  } catch {
    otel = null;
  }
  return otel;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The `traceparent` of the active span, when OpenTelemetry is loaded and a valid span is active. */
export function activeTraceparent(): string | undefined {
  if (!otel) return undefined;
  const span = otel.trace.getSpan(otel.context.active());
  if (!span) return undefined;
  const sc = span.spanContext();
  if (!otel.trace.isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** True once OpenTelemetry is loaded: handlers then run inside their message's own context. */
export function otelLoaded(): boolean {
  return otel !== undefined && otel !== null;
}

/**
 * Runs `fn` inside the context of one message: the remote span of `traceparent`, or the root
 * context when the message carries none. Each message gets its own context, never the one that
 * happened to be active where the subscriber's queue was scheduled (another message's).
 */
export function runWithTraceparent<T>(traceparent: string | undefined, fn: () => T): T {
  if (!otel) return fn();
  const m = traceparent === undefined ? null : TRACEPARENT.exec(traceparent);
  const sc: SpanContext | undefined = m
    ? { traceId: m[1] as string, spanId: m[2] as string, traceFlags: Number.parseInt(m[3] as string, 16), isRemote: true }
    : undefined;
  const ctx = sc && otel.trace.isSpanContextValid(sc) ? otel.trace.setSpanContext(otel.ROOT_CONTEXT, sc) : otel.ROOT_CONTEXT;
  return otel.context.with(ctx, fn);
}
