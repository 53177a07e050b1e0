import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Discovery, DiscoveryPages, GmsApi } from "../gms/client.ts";
import { newIdentity } from "../identity.ts";
import { createLogger } from "../observe/log.ts";
import type { AgentEvents } from "../pool/agent.ts";
import type { Candidate, RequestState } from "../request.ts";
import { OnceWork } from "./once.ts";

const log = createLogger({ level: "error", format: "json", write: () => {} });
const identity = newIdentity("default");

/** A GMS with `total` pending requests (oldest first), served in pages; reads from `states`. */
function gmsWith(total: number, states = new Map<string, RequestState | undefined>()) {
  const all: Candidate[] = Array.from({ length: total }, (_, i) => ({
    urn: `urn:li:dataHubExecutionRequest:r${i}`,
    task: "RUN_INGEST",
    executorId: "default",
    requestedAt: i,
  }));
  const asked: DiscoveryPages[] = [];
  const gms = {
    discover: (_id: string, pages: DiscoveryPages): Promise<Discovery> => {
      asked.push(pages);
      const start = pages.pendingStart ?? 0;
      const pending = all.slice(start, start + pages.count);
      return Promise.resolve({
        pending,
        running: [],
        pages: {
          pending: { start, returned: pending.length, total: all.length },
          running: { start: 0, returned: 0, total: 0 },
        },
      });
    },
    readRequest: (urn: string) => Promise.resolve(states.get(urn)),
  } as unknown as GmsApi;
  return { gms, all, asked };
}

class FakeAgent extends EventEmitter<AgentEvents> {
  busy = false;
}

Deno.test("once: the work set is every pending page at start; the agent sees only that set", async () => {
  const { gms, all, asked } = gmsWith(250);
  const work = new OnceWork({ gms, identity, log });
  assert.equal(await work.collect(), 250);
  assert.deepEqual(asked.map((p) => p.pendingStart), [0, 100, 200]);
  all.push({
    urn: "urn:li:dataHubExecutionRequest:late",
    task: "RUN_INGEST",
    executorId: "default",
    requestedAt: 999,
  });
  const seen = await work.narrowed().discover("default", { count: 1000 });
  assert.equal(seen.pending.length, 250, "the late request is not part of it");
  assert.equal(seen.pages.pending.total, 251, "pages still show GMS's totals");
});

Deno.test("once: follow resolves when every request ended or left; the exit code counts only ours", async () => {
  const states = new Map<string, RequestState | undefined>();
  const { gms } = gmsWith(3, states);
  const work = new OnceWork({ gms, identity, log });
  await work.collect();
  const agent = new FakeAgent();
  const stop = new AbortController();
  let resolved = false;
  const following = work.follow(agent, stop.signal).then(() => resolved = true);
  agent.emit("finished", {
    urn: "urn:li:dataHubExecutionRequest:r0",
    task: "RUN_INGEST",
    status: "SUCCESS",
  });
  // r1 was run by another agent; r2 still pending (no result) while the agent is idle.
  states.set("urn:li:dataHubExecutionRequest:r1", {
    urn: "urn:li:dataHubExecutionRequest:r1",
    id: "r1",
    input: { task: "RUN_INGEST", args: {}, executorId: "default" } as never,
    result: {
      value: { status: "SUCCESS" },
      version: "3",
      properties: { agentInstance: "someone-else" },
    } as never,
    signal: undefined,
  });
  states.set("urn:li:dataHubExecutionRequest:r2", {
    urn: "urn:li:dataHubExecutionRequest:r2",
    id: "r2",
    input: { task: "RUN_INGEST", args: {}, executorId: "default" } as never,
    result: undefined,
    signal: undefined,
  });
  agent.emit("polled", { pending: 1, running: 0 });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(resolved, false, "r2 is still pending: not done");
  agent.emit("finished", {
    urn: "urn:li:dataHubExecutionRequest:r2",
    task: "RUN_INGEST",
    status: "FAILURE",
  });
  await following;
  assert.equal(work.finish(0), 1, "r2 failed here");
});

Deno.test("once: all ours succeeded → 0; a signal that leaves requests unrun → 1; undelivered → 1", async () => {
  const { gms } = gmsWith(2);
  const work = new OnceWork({ gms, identity, log });
  await work.collect();
  const agent = new FakeAgent();
  const stop = new AbortController();
  const following = work.follow(agent, stop.signal);
  agent.emit("finished", {
    urn: "urn:li:dataHubExecutionRequest:r0",
    task: "RUN_INGEST",
    status: "SUCCESS",
  });
  stop.abort();
  await following;
  assert.equal(work.finish(0), 1, "r1 left pending by the signal");
  // A run that ends during the drain still counts.
  agent.emit("finished", {
    urn: "urn:li:dataHubExecutionRequest:r1",
    task: "RUN_INGEST",
    status: "SUCCESS",
  });
  assert.equal(work.finish(0), 0);
  assert.equal(work.finish(1), 1, "a result left undelivered");
  const none = new OnceWork({ gms: gmsWith(0).gms, identity, log });
  assert.equal(await none.collect(), 0);
  assert.equal(none.finish(0), 0);
});
