// Hash routes: #/d/{id}, #/d/{id}/edit, #/new, #/pipeline, #/metrics; "#/" opens the first
// dashboard. Hash routing needs nothing from the server beyond index.html at "/".
import { Signal } from "./signal";

export type Route =
  | { page: "home" }
  | { page: "dashboard"; id: string }
  | { page: "edit"; id: string }
  | { page: "new" }
  | { page: "pipeline" }
  | { page: "metrics" }
  | { page: "notfound"; path: string };

/** The part of the hash after "?": `#/d/operations?range=1h&wall=1`. */
export function hashParams(hash: string = location.hash): URLSearchParams {
  const i = hash.indexOf("?");
  return new URLSearchParams(i >= 0 ? hash.slice(i + 1) : "");
}

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, "").split("?")[0] || "/";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { page: "home" };
  if (parts[0] === "d" && parts.length === 2) return { page: "dashboard", id: parts[1] as string };
  if (parts[0] === "d" && parts.length === 3 && parts[2] === "edit") return { page: "edit", id: parts[1] as string };
  if (parts[0] === "new" && parts.length === 1) return { page: "new" };
  if (parts[0] === "pipeline" && parts.length === 1) return { page: "pipeline" };
  if (parts[0] === "metrics" && parts.length === 1) return { page: "metrics" };
  return { page: "notfound", path };
}

export const route = new Signal<Route>(parseRoute(location.hash));

/** A page with unsaved work can veto leaving it (return false to stay). */
let leaveGuard: (() => boolean) | null = null;
export function setLeaveGuard(guard: (() => boolean) | null): void {
  leaveGuard = guard;
}

let shownHash = location.hash;

/**
 * Each history entry of the app carries its position (`history.state.idx`), so that a refused
 * Back or Forward can be undone by moving the other way, instead of rewriting the entry the
 * user came from (which would lose it: Back again would not reach the previous page).
 */
function entryIndex(): number | null {
  const st = history.state as { idx?: unknown } | null;
  return st && typeof st.idx === "number" ? st.idx : null;
}
let shownIndex = entryIndex() ?? 0;
if (entryIndex() === null) history.replaceState({ ...(history.state as object | null), idx: shownIndex }, "");
/** Set while the app moves back to the entry shown: that hashchange is not a navigation. */
let restoring = false;

window.addEventListener("hashchange", () => {
  const next = parseRoute(location.hash);
  const cur = route.value;
  const idx = entryIndex();
  if (restoring) {
    restoring = false;
    shownHash = location.hash;
    return;
  }
  const samePage = next.page === cur.page && ("id" in next ? next.id : "") === ("id" in cur ? cur.id : "");
  if (!samePage && leaveGuard && !leaveGuard()) {
    // Stay: return to the entry shown. Back/Forward moved to a numbered entry: go the other
    // way by as much; a link or a typed address made a new entry: step back onto ours.
    restoring = true;
    if (idx !== null && idx !== shownIndex) history.go(shownIndex - idx);
    else if (idx === null) history.back();
    else {
      restoring = false;
      history.replaceState(history.state, "", shownHash || "#/");
    }
    return;
  }
  // A new entry (a link, a typed address) gets the next position.
  if (idx === null) {
    shownIndex += 1;
    history.replaceState({ ...(history.state as object | null), idx: shownIndex }, "");
  } else shownIndex = idx;
  shownHash = location.hash;
  route.set(next);
});

export function navigate(hash: string): void {
  if (location.hash === hash) route.set(parseRoute(hash));
  else location.hash = hash;
}

export const dashboardHref = (id: string) => `#/d/${encodeURIComponent(id)}`;

/**
 * Rewrite the hash's parameters in place (no new history entry, no hashchange): the range and
 * wall mode of a dashboard live in its address, so a bookmark or a reload keeps them.
 */
export function replaceHashParams(patch: Record<string, string | null>): void {
  const hash = location.hash || "#/";
  const i = hash.indexOf("?");
  const path = i >= 0 ? hash.slice(0, i) : hash;
  const params = hashParams(hash);
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) params.delete(k);
    else params.set(k, v);
  }
  const qs = params.toString();
  history.replaceState(history.state, "", `${path}${qs ? `?${qs}` : ""}`);
  shownHash = location.hash;
}

/** Go to `hash` in place of the current history entry (Back then skips the page left). */
export function replaceRoute(hash: string): void {
  history.replaceState(history.state, "", hash);
  shownHash = hash;
  route.set(parseRoute(hash));
}
