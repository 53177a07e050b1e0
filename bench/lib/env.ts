/** One benchmark environment: a scope, a temp dir, a GMS simulator and the fake CLI. */
import { GmsSimulator, type SimulatorOptions } from "../../test/sim/gms_simulator.ts";
import { type AgentOptions, type BenchAgent, type LaunchContext, startAgent } from "./agent.ts";
import { type Cli, installCli } from "./cli.ts";
import { Scope, tempDir, waitUntil } from "./scope.ts";
import type { ResultWrite } from "../../test/sim/gms_simulator.ts";

export const DISCOVER_OP = "ingestAgentDiscover";

export class BenchEnv implements AsyncDisposable {
  readonly scope: Scope;
  readonly dir: string;
  readonly sim: GmsSimulator;
  readonly cli: Cli;
  readonly bin: string;

  private constructor(scope: Scope, dir: string, sim: GmsSimulator, cli: Cli, bin: string) {
    this.scope = scope;
    this.dir = dir;
    this.sim = sim;
    this.cli = cli;
    this.bin = bin;
  }

  static async create(bin: string, simOptions: SimulatorOptions = {}): Promise<BenchEnv> {
    const scope = new Scope();
    try {
      const dir = await tempDir(scope);
      const sim = await GmsSimulator.start(simOptions);
      scope.defer(() => sim.close());
      const cli = await installCli(dir);
      return new BenchEnv(scope, dir, sim, cli, bin);
    } catch (err) {
      await scope[Symbol.asyncDispose]();
      throw err;
    }
  }

  get launch(): LaunchContext {
    return {
      bin: this.bin,
      sim: this.sim,
      cli: this.cli.path,
      journal: this.cli.journal,
      dir: this.dir,
    };
  }

  startAgent(options: AgentOptions): Promise<BenchAgent> {
    return startAgent(this.scope, this.launch, options);
  }

  /** Waits for the first discovery query received after `since`; returns its log time. */
  async firstDiscover(since: number, timeoutMs = 15_000): Promise<number> {
    return await waitUntil(
      () => this.sim.requests().find((r) => r.at >= since && r.operationName === DISCOVER_OP)?.at,
      timeoutMs,
      "the agent's first discovery query",
    );
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.scope[Symbol.asyncDispose]();
  }
}

export function isTerminal(w: ResultWrite): boolean {
  return w.value.status !== "RUNNING";
}

/**
 * Incremental view of the simulator's accepted result writes (resultWrites() copies the whole
 * list; this keeps per-urn first-RUNNING and terminal writes without rescanning).
 */
export class WriteTracker {
  readonly #sim: GmsSimulator;
  #seen = 0;
  readonly running = new Map<string, ResultWrite>();
  readonly terminal = new Map<string, ResultWrite>();
  readonly terminalDuplicates: string[] = [];

  constructor(sim: GmsSimulator) {
    this.#sim = sim;
  }

  update(): void {
    const all = this.#sim.resultWrites();
    for (let i = this.#seen; i < all.length; i++) {
      const w = all[i]!;
      if (!isTerminal(w)) {
        if (!this.running.has(w.urn)) this.running.set(w.urn, w);
      } else if (this.terminal.has(w.urn)) {
        this.terminalDuplicates.push(w.urn);
      } else {
        this.terminal.set(w.urn, w);
      }
    }
    this.#seen = all.length;
  }
}
