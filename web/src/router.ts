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

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, "") || "/";
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
window.addEventListener("hashchange", () => route.set(parseRoute(location.hash)));

export function navigate(hash: string): void {
  if (location.hash === hash) route.set(parseRoute(hash));
  else location.hash = hash;
}

export const dashboardHref = (id: string) => `#/d/${encodeURIComponent(id)}`;
