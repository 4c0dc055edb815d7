import { describe, expect, it } from 'vitest';
import { Supervisor } from '../../../src/processes/supervisor.js';
import { type StopReason, WorkerInstance, type WorkerSpec } from '../../../src/processes/worker.js';
import { silentLogger } from '../../helpers/pubsub-hub.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A counter: casts add, calls read (slowly when asked), 'boom' crashes. */
function counter(log: string[] = []): WorkerSpec<{ n: number }, { start: number }> {
  return {
    init: ({ start }) => ({ n: start }),
    handleCast: async (msg, s) => {
      if (msg === 'boom') throw new Error('cast boom');
      await sleep(1);
      log.push(`cast ${String(msg)}`);
      return { n: s.n + (msg as number) };
    },
    handleCall: async (msg, s) => {
      if (msg === 'boom') throw new Error('call boom');
      if (msg === 'slow') await sleep(200);
      log.push(`call ${String(msg)}`);
      return { reply: s.n };
    },
    terminate: (reason) => {
      log.push(`terminate ${typeof reason === 'string' ? reason : 'error'}`);
    },
  };
}

describe('worker instance', () => {
  it('handles one message at a time, in order, async handlers included', async () => {
    const log: string[] = [];
    const w = new WorkerInstance(counter(log), 'c', 'n1');
    await w.start({ start: 10 });
    w.cast(1);
    const r1 = w.call('a');
    w.cast(2);
    const r2 = w.call('b');
    expect(await r1).toBe(11);
    expect(await r2).toBe(13);
    expect(log).toEqual(['cast 1', 'call a', 'cast 2', 'call b']);
  });

  it('a call times out with FOUNDATION_CALL_TIMEOUT, and a timed-out queued call is skipped', async () => {
    const log: string[] = [];
    const w = new WorkerInstance(counter(log), 'c', 'n1');
    await w.start({ start: 0 });
    const slow = w.call('slow', 1000);
    const queued = w.call('queued', 50);
    await expect(queued).rejects.toMatchObject({ code: 'FOUNDATION_CALL_TIMEOUT', name: 'WorkerError' });
    expect(await slow).toBe(0);
    await sleep(5);
    expect(log).toEqual(['call slow']);
  });

  it('stop runs terminate with the reason, aborts the signal and rejects what waits', async () => {
    const log: string[] = [];
    let signal: AbortSignal | undefined;
    const spec = {
      ...counter(log),
      init: (_a: { start: number }, ctx: { signal: AbortSignal }) => {
        signal = ctx.signal;
        return { n: 0 };
      },
    };
    const w = new WorkerInstance(spec, 'c', 'n1');
    await w.start({ start: 0 });
    const slow = w.call('slow');
    const waiting = w.call('after');
    const waitingResult = waiting.catch((e: unknown) => e);
    await sleep(20); // 'slow' is being handled now
    const exited = w.stop('shutdown');
    expect(await slow).toBe(0); // the message being handled completes
    expect(await waitingResult).toMatchObject({ code: 'FOUNDATION_WORKER_STOPPED' });
    expect(await exited).toBe('shutdown');
    expect(signal?.aborted).toBe(true);
    expect(log).toEqual(['call slow', 'terminate shutdown']);
    expect(w.cast(1)).toBe(false);
    await expect(w.call('x')).rejects.toMatchObject({ code: 'FOUNDATION_WORKER_STOPPED' });
  });

  it('a crash rejects the call with FOUNDATION_WORKER_CRASHED (cause kept) and exits with { error }', async () => {
    const log: string[] = [];
    const w = new WorkerInstance(counter(log), 'c', 'n1');
    await w.start({ start: 0 });
    const err = await w.call('boom').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FOUNDATION_WORKER_CRASHED' });
    expect((err as Error).cause).toBeInstanceOf(Error);
    const reason = (await w.exited) as { error: Error };
    expect(reason.error.message).toBe('call boom');
    expect(log).toEqual(['terminate error']);
  });

  it('init that throws rejects start', async () => {
    const w = new WorkerInstance({ init: () => Promise.reject(new Error('no db')) }, 'c', 'n1');
    await expect(w.start(undefined)).rejects.toThrow('no db');
    expect(w.isAlive).toBe(false);
  });

  it('handleCall must return { reply }', async () => {
    const w = new WorkerInstance({ init: () => 0, handleCall: () => 42 as never }, 'c', 'n1');
    await w.start(undefined);
    await expect(w.call('x')).rejects.toMatchObject({ code: 'FOUNDATION_WORKER_CRASHED', message: expect.stringContaining('{ reply, state? }') });
  });
});

describe('supervisor', () => {
  it('restarts a permanent child after a crash, with fresh state', async () => {
    const sup = new Supervisor('n1', silentLogger);
    const w = await sup.start('c', counter(), { start: 5 });
    w.cast(3);
    expect(await w.call('read')).toBe(8);
    w.cast('boom');
    await w.exited;
    await sleep(50);
    const again = sup.get('c');
    expect(again).toBeDefined();
    expect(again).not.toBe(w);
    expect(await again?.call('read')).toBe(5);
    expect(sup.restartsOf('c')).toBe(1);
    await sup.stopAll();
  });

  it('transient restarts only after a crash; temporary never; stop() never restarts', async () => {
    const sup = new Supervisor('n1', silentLogger);
    const exits: Array<{ name: string; reason: StopReason; willRestart: boolean }> = [];
    sup.on('exited', (e) => exits.push(e));
    const t = await sup.start('t', counter(), { start: 0 }, { restart: 'transient' });
    const tmp = await sup.start('tmp', counter(), { start: 0 }, { restart: 'temporary' });
    const p = await sup.start('p', counter(), { start: 0 });
    t.cast('boom');
    tmp.cast('boom');
    await Promise.all([t.exited, tmp.exited]);
    await sleep(50);
    expect(sup.get('t')).toBeDefined();
    expect(sup.get('tmp')).toBeUndefined();
    sup.get('t')?.stop('normal');
    await sleep(50);
    expect(sup.get('t')).toBeUndefined();
    await sup.stop('p');
    await sleep(50);
    expect(sup.get('p')).toBeUndefined();
    expect(p.isAlive).toBe(false);
    expect(exits.map((e) => `${e.name}:${e.willRestart}`)).toEqual(['t:true', 'tmp:false', 't:false', 'p:false']);
    await sup.stopAll();
  });

  it('gives up after maxRestarts within the window, with an event and a logged reason', async () => {
    const lines: string[] = [];
    const logger = { ...silentLogger, error: (_o: object, msg?: string) => void lines.push(msg ?? '') };
    const sup = new Supervisor('n1', logger);
    const gaveUp = new Promise<{ restarts: number }>((resolve) => sup.once('gave-up', resolve));
    const crashing: WorkerSpec<null, null> = {
      init: () => null,
      handleCast: () => {
        throw new Error('always');
      },
    };
    await sup.start('x', crashing, null, { maxRestarts: 2, windowMs: 10_000 });
    const crashLoop = setInterval(() => sup.get('x')?.cast('go'), 5);
    const e = await gaveUp;
    clearInterval(crashLoop);
    expect(e.restarts).toBe(2);
    expect(sup.get('x')).toBeUndefined();
    expect(sup.names()).toEqual([]);
    expect(lines).toEqual(['worker restarted too often: giving up on it']);
  });

  it('refuses bad options by key', async () => {
    const sup = new Supervisor('n1', silentLogger);
    await expect(sup.start('a', counter(), { start: 0 }, { restart: 'sometimes' as never })).rejects.toMatchObject({ key: 'restart' });
    await expect(sup.start('a', counter(), { start: 0 }, { maxRestarts: -1 })).rejects.toMatchObject({ key: 'maxRestarts' });
    await sup.start('a', counter(), { start: 0 });
    await expect(sup.start('a', counter(), { start: 0 })).rejects.toMatchObject({ key: 'name' });
    await sup.stopAll();
  });
});
