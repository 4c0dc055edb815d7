/**
 * Trace-context propagation with the real @opentelemetry/api and its AsyncLocalStorage context
 * manager (no SDK: a span context is wrapped directly, as an instrumentation would make one).
 */
import { context, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channels, loadOtel } from '../../../src/pubsub/channels.js';
import { Hub, settle } from '../../helpers/pubsub-hub.js';

const manager = new AsyncLocalStorageContextManager();
beforeAll(async () => {
  context.setGlobalContextManager(manager.enable());
  expect(await loadOtel()).not.toBeNull();
});
afterAll(() => {
  context.disable();
});

describe('trace context through channels', () => {
  it('carries the active span as a W3C traceparent, and runs the remote handler inside it', async () => {
    const hub = new Hub();
    const a = await hub.node('a');
    const b = await hub.node('b');
    const seen: Array<{ traceparent?: string; activeTrace?: string; remote?: boolean }> = [];
    new Channels(b).subscribe('events', (_p, meta) => {
      const sc = trace.getSpan(context.active())?.spanContext();
      seen.push({ traceparent: meta.traceparent, activeTrace: sc?.traceId, remote: sc?.isRemote });
    });
    await settle();
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const span = trace.wrapSpanContext({ traceId, spanId: 'b7ad6b7169203331', traceFlags: 1 });
    const ca = new Channels(a);
    context.with(trace.setSpan(ROOT_CONTEXT, span), () => ca.broadcast('events', 'traced'));
    ca.broadcast('events', 'untraced');
    await settle(10);
    expect(seen).toEqual([
      { traceparent: `00-${traceId}-b7ad6b7169203331-01`, activeTrace: traceId, remote: true },
      { traceparent: undefined, activeTrace: undefined, remote: undefined },
    ]);
    await Promise.all([a.stop(), b.stop()]);
  });
});
