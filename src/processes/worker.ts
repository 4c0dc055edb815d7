/**
 * A worker: the BEAM process of Foundation. One instance runs a user's behaviour (`WorkerSpec`)
 * over its own state, one message at a time, in order, from its mailbox. `call` waits for a
 * reply (with a timeout), `cast` does not. Handlers may be async: the next message waits.
 *
 * An instance ends by `stop(reason)` (its AbortSignal fires, pending calls are rejected,
 * `terminate(reason, state)` runs) or by crashing (a handler or `init` throws: the reason is
 * `{ error }`). What happens next is the supervisor's business (`supervisor.ts`).
 */
import { ConfigError, ErrorCodes, WorkerError } from '../errors.js';
import { Ring } from '../util/ring.js';

/** Why a worker stopped. Strings are normal stops; `{ error }` is a crash. */
export type StopReason = 'normal' | 'shutdown' | 'name_conflict' | 'handoff' | 'lost_quorum' | { error: unknown };

/** True for the reasons that count as abnormal (a `transient` worker is restarted after them). */
export function isAbnormal(reason: StopReason): boolean {
  return typeof reason === 'object';
}

/** What a worker's callbacks get besides their arguments. */
export interface WorkerContext {
  /** The worker's name (its registry name when it is registered). */
  readonly name: string;
  /** This node's name. */
  readonly node: string;
  /** Aborted when the instance stops: hand it to fetch, timers, streams, so async work stops too. */
  readonly signal: AbortSignal;
  /** For singletons in quorum mode: a token that grows with every activation, to fence writes to external systems. */
  readonly fencingToken?: number;
  /**
   * What the previous instance's `handoff(state)` returned, when this instance continues one that
   * was moved off another node gracefully (`node.stop()`, active rebalancing); undefined otherwise
   * (a first start, a restart after a crash, a failover after a node died).
   */
  readonly handoff?: unknown;
  /** Stops this instance from inside (after the current message). */
  stop(reason?: StopReason): void;
}

/** The reply of `handleCall`: `reply` goes to the caller; `state`, when present, replaces the state. */
export interface CallResult<S> {
  reply: unknown;
  state?: S;
}

/**
 * A worker's behaviour, declared once per node by type name. Every callback may be async.
 * - `init(args, ctx)` returns the initial state;
 * - `handleCall(msg, state, ctx)` returns `{ reply, state? }` (no `state`: unchanged);
 * - `handleCast(msg, state, ctx)` returns the next state (`undefined`: unchanged);
 * - `terminate(reason, state, ctx)` runs on every stop, crashes included (not when `init` failed);
 * - `handoff(state)` returns serializable state for the next instance (graceful moves).
 */
export interface WorkerSpec<S = unknown, A = unknown> {
  init(args: A, ctx: WorkerContext): S | Promise<S>;
  handleCall?(msg: unknown, state: S, ctx: WorkerContext): CallResult<S> | Promise<CallResult<S>>;
  handleCast?(msg: unknown, state: S, ctx: WorkerContext): S | undefined | Promise<S | undefined>;
  terminate?(reason: StopReason, state: S, ctx: WorkerContext): void | Promise<void>;
  handoff?(state: S): unknown;
}

type Envelope =
  | { kind: 'call'; msg: unknown; resolve: (v: unknown) => void; reject: (e: Error) => void; timer?: NodeJS.Timeout; settled: boolean }
  | { kind: 'cast'; msg: unknown };

/** One running instance of a worker. */
export class WorkerInstance<S = unknown, A = unknown> {
  private state!: S;
  private readonly mailbox = new Ring<Envelope>();
  private running = false;
  private status: 'starting' | 'running' | 'stopping' | 'stopped' = 'starting';
  private readonly abort = new AbortController();
  private stopRequested?: StopReason;
  private readonly ctx: WorkerContext;
  /** Settles with the reason once the instance has stopped (terminate done). */
  readonly exited: Promise<StopReason>;
  private resolveExit!: (r: StopReason) => void;

  constructor(
    readonly spec: WorkerSpec<S, A>,
    readonly name: string,
    node: string,
    extra: { fencingToken?: number; handoff?: unknown } = {},
  ) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    const self = this;
    this.ctx = {
      name,
      node,
      signal: this.abort.signal,
      ...(extra.fencingToken === undefined ? {} : { fencingToken: extra.fencingToken }),
      ...(extra.handoff === undefined ? {} : { handoff: extra.handoff }),
      stop(reason: StopReason = 'normal') {
        self.stopRequested ??= reason;
        self.schedule();
      },
    };
  }

  /** Messages waiting in the mailbox. */
  get depth(): number {
    return this.mailbox.length;
  }

  get isAlive(): boolean {
    return this.status === 'starting' || this.status === 'running';
  }

  /** Runs `init`. Rejects (and the instance is stopped with `{ error }`) when it throws. */
  async start(args: A): Promise<void> {
    try {
      this.state = await this.spec.init(args, this.ctx);
    } catch (error) {
      this.status = 'stopped';
      this.abort.abort();
      this.failPending(new WorkerError(ErrorCodes.WORKER_STOPPED, `worker "${this.name}" failed to start: ${(error as Error)?.message ?? error}`));
      this.resolveExit({ error });
      throw error;
    }
    if (this.status !== 'starting') return; // stopped while init ran
    this.status = 'running';
    this.schedule();
  }

  /** Sends a message and waits for the reply. Rejects with `FOUNDATION_CALL_TIMEOUT` after `timeoutMs`, `FOUNDATION_WORKER_STOPPED` if the instance stops first. */
  call<T = unknown>(msg: unknown, timeoutMs = 5000): Promise<T> {
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return Promise.reject(new ConfigError('timeoutMs', `expected a positive number, got ${timeoutMs}`));
    if (!this.isAlive) return Promise.reject(new WorkerError(ErrorCodes.WORKER_STOPPED, `worker "${this.name}" is not running`));
    return new Promise<T>((resolve, reject) => {
      const env: Envelope = { kind: 'call', msg, resolve: resolve as (v: unknown) => void, reject, settled: false };
      env.timer = setTimeout(() => {
        if (env.settled) return;
        env.settled = true;
        reject(new WorkerError(ErrorCodes.CALL_TIMEOUT, `call to worker "${this.name}" got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.mailbox.push(env);
      this.schedule();
    });
  }

  /** Sends a message without waiting. Returns false when the instance is not running (the message is dropped). */
  cast(msg: unknown): boolean {
    if (!this.isAlive) return false;
    this.mailbox.push({ kind: 'cast', msg });
    this.schedule();
    return true;
  }

  /** Stops the instance after the message it is handling: pending calls are rejected, `terminate` runs. */
  stop(reason: StopReason = 'normal'): Promise<StopReason> {
    if (this.status === 'stopped') return this.exited;
    this.stopRequested ??= reason;
    this.schedule();
    return this.exited;
  }

  /** The state to hand to the next instance (graceful moves), when the spec has `handoff`. */
  handoffState(): unknown {
    return this.spec.handoff ? this.spec.handoff(this.state) : undefined;
  }

  private schedule(): void {
    if (this.running || this.status === 'starting' || this.status === 'stopped') return;
    this.running = true;
    queueMicrotask(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      while (this.status === 'running') {
        if (this.stopRequested !== undefined) {
          await this.finish(this.stopRequested);
          return;
        }
        const env = this.mailbox.shift();
        if (env === undefined) return;
        if (env.kind === 'call' && env.settled) continue; // timed out while waiting
        try {
          await this.handle(env);
        } catch (error) {
          if (env.kind === 'call' && !env.settled) {
            env.settled = true;
            clearTimeout(env.timer);
            env.reject(
              new WorkerError(ErrorCodes.WORKER_CRASHED, `worker "${this.name}" crashed handling the call: ${(error as Error)?.message ?? error}`, error),
            );
          }
          await this.finish({ error });
          return;
        }
      }
    } finally {
      this.running = false;
      if (this.status === 'running' && (this.mailbox.length > 0 || this.stopRequested !== undefined)) this.schedule();
    }
  }

  private async handle(env: Envelope): Promise<void> {
    if (env.kind === 'cast') {
      if (!this.spec.handleCast) throw new WorkerError(ErrorCodes.WORKER_CRASHED, `worker "${this.name}" has no handleCast`);
      const next = await this.spec.handleCast(env.msg, this.state, this.ctx);
      if (next !== undefined) this.state = next;
      return;
    }
    if (!this.spec.handleCall) throw new WorkerError(ErrorCodes.WORKER_CRASHED, `worker "${this.name}" has no handleCall`);
    const result = await this.spec.handleCall(env.msg, this.state, this.ctx);
    if (typeof result !== 'object' || result === null || !('reply' in result)) {
      throw new WorkerError(ErrorCodes.WORKER_CRASHED, `worker "${this.name}": handleCall must return { reply, state? }`);
    }
    if (result.state !== undefined) this.state = result.state;
    if (!env.settled) {
      env.settled = true;
      clearTimeout(env.timer);
      env.resolve(result.reply);
    }
  }

  private async finish(reason: StopReason): Promise<void> {
    this.status = 'stopping';
    this.abort.abort();
    this.failPending(new WorkerError(ErrorCodes.WORKER_STOPPED, `worker "${this.name}" stopped (${typeof reason === 'string' ? reason : 'crashed'})`));
    try {
      await this.spec.terminate?.(reason, this.state, this.ctx);
    } catch {
      // A terminate that throws does not change why the worker stopped.
    }
    this.status = 'stopped';
    this.resolveExit(reason);
  }

  private failPending(error: WorkerError): void {
    for (let env = this.mailbox.shift(); env !== undefined; env = this.mailbox.shift()) {
      if (env.kind === 'call' && !env.settled) {
        env.settled = true;
        clearTimeout(env.timer);
        env.reject(error);
      }
    }
  }
}
