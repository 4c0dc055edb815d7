/**
 * Local supervision of workers, as OTP's one_for_one: each child is restarted on its own
 * according to its restart policy, within a restart intensity.
 *
 * - `permanent`: always restarted;
 * - `transient`: restarted only after an abnormal stop (a crash, `{ error }`);
 * - `temporary`: never restarted.
 *
 * Intensity: more than `maxRestarts` restarts of one child within `windowMs` and the supervisor
 * gives up on that child: it stays stopped, a `gave-up` event carries the last reason, and a line
 * is logged. (OTP gives up on the whole supervisor; here children are independent, placed across
 * the cluster by the layers above, so one crashing child must not take the others down.)
 */
import { EventEmitter } from 'node:events';
import { ConfigError } from '../errors.js';
import type { Logger } from '../util/logger.js';
import { isAbnormal, type StopReason, WorkerInstance, type WorkerSpec } from './worker.js';

/** When a stopped child is started again. */
export type RestartPolicy = 'permanent' | 'transient' | 'temporary';

/** How a child is supervised. */
export interface ChildOptions {
  /** Default `permanent`. */
  restart?: RestartPolicy;
  /** Most restarts within `windowMs` before the supervisor gives up on the child. Default 3. */
  maxRestarts?: number;
  /** The intensity window, in ms. Default 5000. */
  windowMs?: number;
  /** Fencing token handed to the instance's context (quorum singletons). */
  fencingToken?: number;
  /** State handed over by the previous instance on another node: given to the first instance only (`ctx.handoff`), not to restarts. */
  handoff?: unknown;
}

/** Events of a supervisor. */
export interface SupervisorEvents {
  /** An instance of a child started (`restarts`: how many times it was restarted before). */
  started: [e: { name: string; restarts: number }];
  /** An instance stopped. */
  exited: [e: { name: string; reason: StopReason; willRestart: boolean }];
  /** The child crashed too often and stays stopped. */
  'gave-up': [e: { name: string; reason: StopReason; restarts: number; windowMs: number }];
}

interface Child {
  name: string;
  spec: WorkerSpec<unknown, unknown>;
  args: unknown;
  opts: Required<Omit<ChildOptions, 'fencingToken' | 'handoff'>> & { fencingToken?: number };
  /** Handed-over state, until the first instance has taken it. */
  handoff?: unknown;
  instance?: WorkerInstance<unknown, unknown>;
  /** Times of recent restarts (ms), within the window. */
  restartTimes: number[];
  restarts: number;
  /** Set when the child was stopped on purpose: no restart. */
  stopping: boolean;
}

/** Delay before a restart, so a child that crashes at once does not spin the event loop. */
const RESTART_DELAY_MS = 10;

export class Supervisor extends EventEmitter<SupervisorEvents> {
  private readonly children = new Map<string, Child>();
  private closed = false;

  constructor(
    private readonly node: string,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Starts a child under supervision. Rejects if `init` throws (the child is not kept) or the name is taken here. */
  async start<S, A>(name: string, spec: WorkerSpec<S, A>, args: A, opts: ChildOptions = {}): Promise<WorkerInstance<S, A>> {
    if (this.children.has(name)) throw new ConfigError('name', `a worker named "${name}" already runs on this node`);
    const restart = opts.restart ?? 'permanent';
    if (!['permanent', 'transient', 'temporary'].includes(restart)) {
      throw new ConfigError('restart', `expected 'permanent', 'transient' or 'temporary', got ${JSON.stringify(restart)}`);
    }
    const maxRestarts = opts.maxRestarts ?? 3;
    const windowMs = opts.windowMs ?? 5000;
    if (!Number.isInteger(maxRestarts) || maxRestarts < 0) throw new ConfigError('maxRestarts', `expected an integer >= 0, got ${maxRestarts}`);
    if (!Number.isFinite(windowMs) || windowMs <= 0) throw new ConfigError('windowMs', `expected a positive number of ms, got ${windowMs}`);
    const child: Child = {
      name,
      spec: spec as WorkerSpec<unknown, unknown>,
      args,
      opts: { restart, maxRestarts, windowMs, fencingToken: opts.fencingToken },
      handoff: opts.handoff,
      restartTimes: [],
      restarts: 0,
      stopping: false,
    };
    this.children.set(name, child);
    try {
      await this.run(child);
    } catch (err) {
      this.children.delete(name);
      throw err;
    }
    return child.instance as WorkerInstance<S, A>;
  }

  /** The running instance of a child, if any. */
  get(name: string): WorkerInstance | undefined {
    const i = this.children.get(name)?.instance;
    return i?.isAlive ? i : undefined;
  }

  /** Names of supervised children. */
  names(): string[] {
    return [...this.children.keys()];
  }

  /** Restarts so far of a child. */
  restartsOf(name: string): number {
    return this.children.get(name)?.restarts ?? 0;
  }

  /** Stops a child for good (no restart) with `reason`; resolves when `terminate` has run. */
  async stop(name: string, reason: StopReason = 'shutdown'): Promise<StopReason | undefined> {
    const child = this.children.get(name);
    if (!child) return undefined;
    child.stopping = true;
    this.children.delete(name);
    return child.instance?.stop(reason);
  }

  /** Stops every child (`shutdown`). */
  async stopAll(reason: StopReason = 'shutdown'): Promise<void> {
    this.closed = true;
    await Promise.all([...this.children.keys()].map((n) => this.stop(n, reason)));
  }

  private async run(child: Child): Promise<void> {
    const instance = new WorkerInstance(child.spec, child.name, this.node, { fencingToken: child.opts.fencingToken, handoff: child.handoff });
    child.handoff = undefined;
    child.instance = instance;
    await instance.start(child.args);
    this.emit('started', { name: child.name, restarts: child.restarts });
    void instance.exited.then((reason) => this.onExit(child, instance, reason));
  }

  private onExit(child: Child, instance: WorkerInstance, reason: StopReason): void {
    if (child.instance !== instance) return;
    const policy = child.opts.restart;
    const wanted = !child.stopping && !this.closed && (policy === 'permanent' || (policy === 'transient' && isAbnormal(reason)));
    if (!wanted) {
      this.emit('exited', { name: child.name, reason, willRestart: false });
      if (!child.stopping) this.children.delete(child.name);
      return;
    }
    const now = Date.now();
    child.restartTimes = child.restartTimes.filter((t) => now - t < child.opts.windowMs);
    if (child.restartTimes.length >= child.opts.maxRestarts) {
      this.children.delete(child.name);
      this.emit('exited', { name: child.name, reason, willRestart: false });
      this.log.error(
        { worker: child.name, restarts: child.restartTimes.length, windowMs: child.opts.windowMs, reason: describe(reason) },
        'worker restarted too often: giving up on it',
      );
      this.emit('gave-up', { name: child.name, reason, restarts: child.restartTimes.length, windowMs: child.opts.windowMs });
      return;
    }
    this.emit('exited', { name: child.name, reason, willRestart: true });
    child.restartTimes.push(now);
    setTimeout(() => {
      if (child.stopping || this.closed || this.children.get(child.name) !== child) return;
      child.restarts++;
      this.run(child).catch((error) => this.onExit(child, child.instance as WorkerInstance, { error }));
    }, RESTART_DELAY_MS).unref();
  }
}

function describe(reason: StopReason): string {
  if (typeof reason === 'string') return reason;
  const e = reason.error;
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
