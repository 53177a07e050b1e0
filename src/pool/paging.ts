/**
 * Which candidates an agent tries first, and which discovery pages it asks for next.
 */
import type { Discovery, PageInfo } from "../gms/client.ts";

/**
 * The pending page stays at the head (oldest first) unless a whole full page gave nothing to
 * claim while slots were free (requests of another executor in list mode, unreadable ones):
 * then the next poll looks at the next page, wrapping at the end. The running page walks
 * through every RUNNING request, one page per poll.
 */
export function nextPages(
  pages: Discovery["pages"],
  claimedOrBusy: boolean,
): { pending: number; running: number } {
  const next = (p: PageInfo) => {
    const end = p.start + p.returned;
    return p.returned > 0 && end < p.total ? end : 0;
  };
  return { pending: claimedOrBusy ? 0 : next(pages.pending), running: next(pages.running) };
}

/** How many requests are pending, and the oldest one's age in seconds (when the page shows it). */
export function pendingOf(found: Discovery, serverNow: number): { total: number; ageS?: number } {
  const total = Math.max(found.pages.pending.total, found.pending.length);
  // The page is oldest first: its head is the oldest pending request when it starts at 0.
  const head = found.pages.pending.start === 0 ? found.pending[0]?.requestedAt : undefined;
  if (head !== undefined) {
    return { total, ageS: Math.max(0, Math.round((serverNow - head) / 1000)) };
  }
  return total === 0 ? { total, ageS: 0 } : { total };
}

/**
 * Agents of a pool see the same oldest-first list; if all went for its head they would mostly
 * collide (lost claims cost a read and a write each). Each agent shuffles a window of about three
 * times its free slots at the head of the list, so they spread, and keeps the rest in order.
 */
export function spreadClaims<T>(candidates: T[], free: number, random = Math.random): T[] {
  const window = Math.min(candidates.length, Math.max(0, free) * 3);
  const head = candidates.slice(0, window);
  for (let i = head.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [head[i], head[j]] = [head[j]!, head[i]!];
  }
  return [...head, ...candidates.slice(window)];
}
