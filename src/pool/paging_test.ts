import assert from "node:assert/strict";
import { spreadClaims } from "./paging.ts";

Deno.test("spreadClaims shuffles a window of 3 × free slots at the head and keeps the rest in order", () => {
  const list = Array.from({ length: 20 }, (_, i) => i);
  let seed = 7;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const out = spreadClaims(list, 2, random);
  assert.deepEqual([...out].sort((a, b) => a - b), list, "nothing lost or duplicated");
  assert.deepEqual(out.slice(6), list.slice(6), "beyond the window the order is kept");
  assert.deepEqual(
    [...out.slice(0, 6)].sort((a, b) => a - b),
    [0, 1, 2, 3, 4, 5],
    "the window holds the oldest",
  );
  assert.notDeepEqual(out.slice(0, 6), [0, 1, 2, 3, 4, 5], "the window is shuffled");
  assert.deepEqual(spreadClaims(list, 0, random), list, "no free slot: unchanged");
  assert.deepEqual(spreadClaims([1, 2], 5, () => 0.999).length, 2);
});
