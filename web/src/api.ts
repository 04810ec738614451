// Same-origin JSON API client. Adds the API key (when one is stored) and turns a 401 into the
// key prompt: `authNeeded` flips on and the app shows a small form instead of failing silently.
import { Signal } from "./signal";
import type { Current, Dashboard, MetricDef, PipelineBody, SeriesBody } from "./types";

const KEY_STORAGE = "pulseboard.key";

export function getKey(): string | null {
  try {
    return localStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

export function setKey(key: string | null): void {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Private mode without storage: the key lasts for this page only.
  }
  sessionKey = key;
}

let sessionKey: string | null = getKey();

/** Set when the server answered 401: the app asks for a key; holds the server's message. */
export const authNeeded = new Signal<string | null>(null);
/** Bumped after a new key is entered, so pages fetch again with it. */
export const authEpoch = new Signal(0);

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function request<T>(method: string, path: string, body?: unknown, extra?: Record<string, string>): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...extra };
  if (sessionKey) headers.Authorization = `Bearer ${sessionKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? null : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "the server does not answer (is it running?)");
  }
  if (res.status === 204) return undefined as T;
  let data: unknown = null;
  try {
    data = await res.json();
  } catch {
    // A non-JSON error page (a proxy in between): report the status alone.
  }
  if (!res.ok) {
    const message =
      data && typeof data === "object" && "error" in data
        ? String((data as { error: unknown }).error)
        : `${res.status} ${res.statusText}`;
    if (res.status === 401) authNeeded.set(message);
    throw new ApiError(res.status, message);
  }
  return data as T;
}

export const api = {
  dashboards: () => request<{ dashboards: Dashboard[] }>("GET", "/v1/dashboards"),
  dashboard: (id: string) => request<Dashboard>("GET", `/v1/dashboards/${encodeURIComponent(id)}`),
  /**
   * Save a dashboard. `create`: only if no dashboard has that id yet (`If-None-Match: *`); the
   * server answers 412 rather than overwrite one. Without it, an existing user dashboard is
   * replaced (saving it under its own id).
   */
  saveDashboard: (id: string, body: Omit<Dashboard, "id" | "source" | "updated_ms">, create: boolean) =>
    request<Dashboard>("PUT", `/v1/dashboards/${encodeURIComponent(id)}`, body, create ? { "If-None-Match": "*" } : undefined),
  deleteDashboard: (id: string) =>
    request<void>("DELETE", `/v1/dashboards/${encodeURIComponent(id)}`),
  metrics: () => request<{ metrics: MetricDef[] }>("GET", "/v1/metrics"),
  current: (name: string) => request<Current>("GET", `/v1/metrics/${encodeURIComponent(name)}`),
  series: (name: string, from: string | number, to: string | number, stepMs: number) =>
    [from, to, stepMs].some((x) => typeof x === "number" && !Number.isFinite(x))
      ? Promise.reject(new ApiError(0, "internal: a history request without a valid time range"))
      : request<SeriesBody>(
      "GET",
      `/v1/metrics/${encodeURIComponent(name)}/series?from=${encodeURIComponent(String(from))}` +
        `&to=${encodeURIComponent(String(to))}&step=${stepMs}`,
    ),
  pipeline: (from: string) =>
    request<PipelineBody>("GET", `/v1/pipeline?from=${encodeURIComponent(from)}`),
};

/** A live URL (WebSocket or SSE) with the key as `?key=`, the only way browsers can send it. */
export function liveUrl(path: string, params: Record<string, string> = {}): string {
  const q = new URLSearchParams(params);
  if (sessionKey) q.set("key", sessionKey);
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}
