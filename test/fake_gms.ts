/**
 * FakeGms: an in-memory `GmsApi` for unit tests, playing GMS for `dataHubExecutionRequest` only.
 * It stores each request's input, result and signal aspects and answers like GMS does
 * (test/sim/aspects.ts is the reference; this fake has no HTTP, no search lag):
 *
 *   - result writes are conditional on `ifVersionMatch` ("-1": the result must not exist); a
 *     mismatch throws GMS_PRECONDITION 412 "Expected version X, actual version Y";
 *   - a result that is SUCCESS / CANCELLED / ABORTED / DUPLICATE is immutable: another status
 *     throws GMS_REJECTED 400 "... immutable state ..." (the same status is a silent no-op);
 *   - a write that changes nothing keeps the version; a change stores version "1", "2", …, with
 *     `systemMetadata.properties` = the write's `options.properties` and `lastObserved` = GMS's
 *     clock (`now()` = host clock + `skewMs`), which `serverNow()` also reports;
 *   - discovery is computed from the store (pending: input and no result, oldest first; running:
 *     status RUNNING, in creation order), paged by `DiscoveryPages`, unless `discoverWith` is set.
 *
 * Faults, one call at a time (`failNext`): "before" throws without applying anything; "after"
 * handles the call first (a write is applied, or refused) and then throws instead of answering,
 * as a proxy losing GMS's answer would. `hold(op)` parks calls until released. Every call is
 * recorded in `calls` (op, urn, value, options, what happened). `setResult` / `setSignal` /
 * `addRequest` play other writers and are not recorded.
 */
import { GmsError } from "../src/errors.ts";
import type {
  Discovery,
  DiscoveryPages,
  GmsApi,
  PageInfo,
  RunningSummary,
  WriteOptions,
} from "../src/gms/client.ts";
import {
  type Candidate,
  idOf,
  isImmutableStatus,
  type RequestInput,
  type RequestState,
  type ResultValue,
  type SignalValue,
  URN_PREFIX,
  type Versioned,
} from "../src/request.ts";

export type FakeOp = "write" | "read" | "discover" | "secrets" | "signals";

export interface FakeCall {
  op: FakeOp;
  /** Host clock (Date.now()) when the call arrived. */
  at: number;
  urn?: string;
  urns?: string[];
  value?: ResultValue;
  options?: WriteOptions;
  pages?: DiscoveryPages;
  /**
   * ok: answered; refused: GMS said no (412, 400); failed: a "before" fault, nothing applied;
   * lost: an "after" fault, handled (applied or refused) and then the answer was lost.
   */
  outcome?: "ok" | "refused" | "failed" | "lost";
  /** Whether a write changed the stored result. */
  applied?: boolean;
  /** The result version after a write (applied or not). */
  version?: string;
  error?: GmsError;
}

export interface FaultOptions {
  /** Default: "before" → GMS_UNAVAILABLE 500, "after" → GMS_UNREACHABLE ECONNRESET. */
  error?: GmsError;
  /** Only calls matching this count (e.g. `(c) => c.value?.status !== "RUNNING"`). */
  when?: (call: FakeCall) => boolean;
  /** How many matching calls fail (default 1; Infinity until `clearFaults`). */
  times?: number;
}

interface Fault extends FaultOptions {
  op: FakeOp;
  kind: "before" | "after";
  left: number;
}

interface Entry {
  urn: string;
  seq: number;
  input: RequestInput | undefined;
  result: Versioned<ResultValue> | undefined;
  signal: Versioned<SignalValue> | undefined;
  /** Every result version stored, oldest first. */
  history: Versioned<ResultValue>[];
}

const OPERATION: Record<FakeOp, string> = {
  write: "writeResult",
  read: "read",
  discover: "discover",
  secrets: "getSecretValues",
  signals: "readSignals",
};

/** GmsErrors as GmsClient raises them, for `failNext(…, { error })`. */
export const gmsError = {
  unavailable: (op = "writeResult", status = 500) =>
    new GmsError("GMS_UNAVAILABLE", op, `HTTP ${status}: Internal Server Error`, { status }),
  unreachable: (op = "writeResult", why = "ECONNRESET") =>
    new GmsError("GMS_UNREACHABLE", op, `cannot reach GMS: ${why}`),
  tooLarge: (op = "writeResult") =>
    new GmsError("GMS_TOO_LARGE", op, "HTTP 413: Payload Too Large", { status: 413 }),
  rejected: (op = "writeResult", message = "Validation Error") =>
    new GmsError("GMS_REJECTED", op, `HTTP 400: ${message}`, { status: 400 }),
  rateLimited: (op = "writeResult", retryAfterMs?: number) =>
    new GmsError("GMS_RATE_LIMITED", op, "HTTP 429: Too Many Requests", {
      status: 429,
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    }),
};

export interface FakeGmsOptions {
  /** GMS's clock minus the host's, in ms (positive: GMS is ahead). */
  skewMs?: number;
  /** writeResult resolves undefined (GMS's answer did not carry the version). */
  answerWithoutVersion?: boolean;
  /** DataHub secrets (getSecretValues). */
  secrets?: Record<string, string>;
}

export class FakeGms implements GmsApi {
  skewMs: number;
  answerWithoutVersion: boolean;
  readonly secrets: Map<string, string>;
  /** Every call, in arrival order. */
  readonly calls: FakeCall[] = [];
  /** Replaces the computed discovery when set. */
  discoverWith: ((executorId: string, pages: DiscoveryPages) => Discovery) | undefined;
  readonly #entries = new Map<string, Entry>();
  #faults: Fault[] = [];
  readonly #holds = new Map<FakeOp, Promise<void>>();
  #seq = 0;

  constructor(options: FakeGmsOptions = {}) {
    this.skewMs = options.skewMs ?? 0;
    this.answerWithoutVersion = options.answerWithoutVersion ?? false;
    this.secrets = new Map(Object.entries(options.secrets ?? {}));
  }

  /** GMS's clock. */
  now(): number {
    return Date.now() + this.skewMs;
  }

  // ---- test side ----

  /** A new pending request (input aspect only); returns its urn. */
  addRequest(
    input: Partial<RequestInput> & { id?: string } = {},
  ): string {
    const { id, ...rest } = input;
    const urn = `${URN_PREFIX}${id ?? `req-${this.#seq + 1}`}`;
    this.#entry(urn).input = {
      task: "RUN_INGEST",
      args: { recipe: "{}" },
      executorId: "default",
      requestedAt: this.now(),
      ...rest,
    };
    return urn;
  }

  /** Stores a result as another writer would (no checks); returns the new version. */
  setResult(
    urn: string,
    value: ResultValue,
    properties: Record<string, string> = {},
    options: { lastObserved?: number } = {},
  ): string {
    const e = this.#entry(urn);
    return this.#store(e, value, properties, options.lastObserved ?? this.now());
  }

  /** Stores a signal aspect (KILL: `{ signal: "KILL" }`). */
  setSignal(urn: string, value: SignalValue): void {
    const e = this.#entry(urn);
    e.signal = {
      value: structuredClone(value),
      version: String(Number(e.signal?.version ?? 0) + 1),
      properties: {},
      lastObserved: this.now(),
    };
  }

  /** Removes a request. */
  remove(urn: string): void {
    this.#entries.delete(urn);
  }

  /** The stored result (a copy). */
  result(urn: string): Versioned<ResultValue> | undefined {
    const r = this.#entries.get(urn)?.result;
    return r && structuredClone(r);
  }

  /** Every result version stored for `urn`, oldest first (copies). */
  history(urn: string): Versioned<ResultValue>[] {
    return structuredClone(this.#entries.get(urn)?.history ?? []);
  }

  /** The recorded calls of one kind, optionally for one urn. */
  callsOf(op: FakeOp, urn?: string): FakeCall[] {
    return this.calls.filter((c) =>
      c.op === op && (urn === undefined || c.urn === urn || (c.urns?.includes(urn) ?? false))
    );
  }

  /** The next matching call(s) of `op` fail: "before" without effect, "after" once handled. */
  failNext(op: FakeOp, kind: "before" | "after", options: FaultOptions = {}): void {
    this.#faults.push({ op, kind, ...options, left: options.times ?? 1 });
  }

  clearFaults(): void {
    this.#faults = [];
  }

  /** Calls of `op` wait until the returned function is called. */
  hold(op: FakeOp): () => void {
    let release!: () => void;
    const p = new Promise<void>((r) => release = r);
    this.#holds.set(op, p);
    return () => {
      if (this.#holds.get(op) === p) this.#holds.delete(op);
      release();
    };
  }

  // ---- GmsApi ----

  async discover(executorId: string, pages: DiscoveryPages): Promise<Discovery> {
    const call = await this.#begin({ op: "discover", pages: { ...pages } });
    if (this.discoverWith) return this.#end(call, this.discoverWith(executorId, pages));
    const routed = (e: Entry) => (e.input?.executorId || "default") === executorId;
    const all = [...this.#entries.values()].sort((a, b) => a.seq - b.seq);
    const pending = all.filter((e) => e.input && !e.result && routed(e))
      .sort((a, b) => (a.input!.requestedAt ?? 0) - (b.input!.requestedAt ?? 0));
    const running = all.filter((e) => e.input && e.result?.value.status === "RUNNING" && routed(e));
    const page = <T>(list: T[], start = 0): [T[], PageInfo] => {
      const items = list.slice(start, start + pages.count);
      return [items, { start, returned: items.length, total: list.length }];
    };
    const [p, pInfo] = page(pending, pages.pendingStart);
    const [r, rInfo] = page(running, pages.runningStart);
    return this.#end(call, {
      pending: p.map((e): Candidate => ({
        urn: e.urn,
        task: e.input!.task,
        executorId: e.input!.executorId || "default",
        requestedAt: e.input!.requestedAt,
      })),
      running: r.map((e): RunningSummary => ({
        urn: e.urn,
        executorId: e.input!.executorId || "default",
        startTimeMs: e.result!.value.startTimeMs,
        durationMs: e.result!.value.durationMs,
      })),
      pages: { pending: pInfo, running: rInfo },
    });
  }

  async readRequest(urn: string): Promise<RequestState | undefined> {
    const call = await this.#begin({ op: "read", urn });
    const e = this.#entries.get(urn);
    return this.#end(
      call,
      e && structuredClone({
        urn,
        id: idOf(urn),
        input: e.input,
        result: e.result,
        signal: e.signal,
      }),
    );
  }

  async readSignals(urns: string[]): Promise<Map<string, Versioned<SignalValue>>> {
    const call = await this.#begin({ op: "signals", urns: [...urns] });
    const out = new Map<string, Versioned<SignalValue>>();
    for (const urn of urns) {
      const s = this.#entries.get(urn)?.signal;
      if (s) out.set(urn, structuredClone(s));
    }
    return this.#end(call, out);
  }

  async writeResult(
    urn: string,
    value: ResultValue,
    options: WriteOptions = {},
  ): Promise<string | undefined> {
    const call = await this.#begin({
      op: "write",
      urn,
      value: structuredClone(value),
      options: structuredClone(options),
    });
    const e = this.#entry(urn);
    const current = e.result;
    let refusal: GmsError | undefined;
    const actual = current ? current.version : "-1";
    if (options.ifVersionMatch !== undefined && options.ifVersionMatch !== actual) {
      refusal = new GmsError(
        "GMS_PRECONDITION",
        "writeResult",
        `HTTP 412: Expected version ${options.ifVersionMatch}, actual version ${actual}`,
        { status: 412 },
      );
    } else if (
      current && isImmutableStatus(current.value.status) &&
      value.status !== current.value.status && value.status !== "ROLLING_BACK"
    ) {
      refusal = new GmsError(
        "GMS_REJECTED",
        "writeResult",
        `HTTP 400: Invalid update to immutable state for aspect dataHubExecutionRequestResult. ` +
          `Execution urn: ${urn} Requested status: ${current.value.status} => ${value.status}. ` +
          "Denied update.",
        { status: 400 },
      );
    }
    if (refusal) {
      call.outcome = "refused";
      call.error = refusal;
      call.version = actual;
      this.#after(call);
      throw refusal;
    }
    const unchanged = current !== undefined &&
      ((isImmutableStatus(current.value.status) && value.status === current.value.status) ||
        sameJson(current.value, value));
    const version = unchanged
      ? current.version
      : this.#store(e, value, options.properties ?? {}, this.now());
    call.applied = !unchanged;
    call.version = version;
    this.#after(call);
    call.outcome = "ok";
    return this.answerWithoutVersion ? undefined : version;
  }

  async secretValues(names: string[]): Promise<Map<string, string>> {
    const call = await this.#begin({ op: "secrets", urns: [...names] });
    const out = new Map<string, string>();
    for (const n of names) {
      const v = this.secrets.get(n);
      if (v !== undefined) out.set(n, v);
    }
    return this.#end(call, out);
  }

  serverNow(): number {
    return this.now();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  // ---- internals ----

  #entry(urn: string): Entry {
    let e = this.#entries.get(urn);
    if (!e) {
      e = {
        urn,
        seq: ++this.#seq,
        input: undefined,
        result: undefined,
        signal: undefined,
        history: [],
      };
      this.#entries.set(urn, e);
    }
    return e;
  }

  #store(e: Entry, value: ResultValue, props: Record<string, string>, at: number): string {
    const version = String(Number(e.result?.version ?? 0) + 1);
    const properties: Record<string, string> = {};
    for (const [k, v] of Object.entries(props)) properties[k] = String(v);
    e.result = { value: structuredClone(value), version, properties, lastObserved: at };
    e.history.push(structuredClone(e.result));
    return version;
  }

  /** Records the call, waits while its op is held, and throws a matching "before" fault. */
  async #begin(fields: Omit<FakeCall, "at">): Promise<FakeCall> {
    const call: FakeCall = { ...fields, at: Date.now() };
    this.calls.push(call);
    // One turn, like a real answer: a caller cannot rely on synchronous resolution.
    await Promise.resolve();
    const held = this.#holds.get(call.op);
    if (held) await held;
    const fault = this.#take(call, "before");
    if (fault) {
      call.outcome = "failed";
      call.error = fault;
      throw fault;
    }
    return call;
  }

  #end<T>(call: FakeCall, value: T): T {
    this.#after(call);
    call.outcome = "ok";
    return value;
  }

  /** Throws a matching "after" fault (the call was handled; its answer is lost). */
  #after(call: FakeCall): void {
    const fault = this.#take(call, "after");
    if (fault) {
      call.outcome = "lost";
      call.error = fault;
      throw fault;
    }
  }

  #take(call: FakeCall, kind: "before" | "after"): GmsError | undefined {
    const f = this.#faults.find((f) =>
      f.op === call.op && f.kind === kind && f.left > 0 && (f.when?.(call) ?? true)
    );
    if (!f) return undefined;
    f.left--;
    if (f.left <= 0) this.#faults = this.#faults.filter((x) => x !== f);
    return f.error ??
      (kind === "before"
        ? gmsError.unavailable(OPERATION[call.op])
        : gmsError.unreachable(OPERATION[call.op]));
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort((
        [a],
        [b],
      ) => a.localeCompare(b)).map(([k, x]) => [k, sortKeys(x)]),
    );
  }
  return v;
}
