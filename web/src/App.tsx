// The shell: navigation, connection indicator, theme toggle, API-key prompt, and the routes.
// Editor, pipeline and explorer pages are loaded on demand to keep the first load small.
import type { ComponentType } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { authEpoch, authNeeded, setKey } from "./api";
import { dashboardsStore, loadDashboards, loadMetrics, metricsStore } from "./catalog";
import { connection } from "./live";
import { Dashboard } from "./pages/Dashboard";
import { dashboardHref, hashParams, navigate, replaceHashParams, route, type Route } from "./router";
import { useSignal } from "./signal";
import { theme, toggleTheme } from "./theme";
import { toast } from "./toast";
import type { Dashboard as DashboardDef } from "./types";

type Loader = () => Promise<{ default: ComponentType<{ route: Route }> }>;
const pages: Record<string, Loader> = {
  edit: () => import("./pages/Editor"),
  new: () => import("./pages/Editor"),
  pipeline: () => import("./pages/Pipeline"),
  metrics: () => import("./pages/Explorer"),
};
const loaded = new Map<string, ComponentType<{ route: Route }>>();

function LazyPage({ r }: { r: Route }) {
  const [, setN] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const Page = loaded.get(r.page);
  useEffect(() => {
    const load = pages[r.page];
    if (Page || !load) return;
    load()
      .then((m) => {
        loaded.set(r.page, m.default);
        setN((n) => n + 1);
      })
      .catch((e: unknown) => setError(String(e)));
  }, [r.page, Page]);
  if (error) return <p class="error" role="alert">Could not load this page: {error}</p>;
  return Page ? <Page route={r} /> : <p class="muted page-loading">Loading…</p>;
}

const byTitle = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

/** Config dashboards first, then those made in the UI; each group in natural order ("Board 2" before "Board 10"). */
function sortDashboards(list: DashboardDef[]): DashboardDef[] {
  const rank = (d: DashboardDef) => (d.source === "config" ? 0 : 1);
  // Config dashboards keep the config file's order.
  return [...list].sort((a, b) => rank(a) - rank(b) || (rank(a) === 0 ? 0 : byTitle.compare(a.title, b.title) || byTitle.compare(a.id, b.id)));
}

/**
 * The dashboards: a strip of links that scrolls sideways when there are many (the current one
 * kept in view), and beside it a list of them all ("All 14 ▾") whenever some are out of view;
 * on a phone, the list alone. A title used twice shows its id.
 */
function DashboardLinks({ list: unsorted, currentId }: { list: DashboardDef[]; currentId: string | undefined }) {
  const list = sortDashboards(unsorted);
  const strip = useRef<HTMLUListElement>(null);
  const [overflow, setOverflow] = useState(false);
  const counts = new Map<string, number>();
  for (const d of list) counts.set(d.title, (counts.get(d.title) ?? 0) + 1);
  const name = (d: DashboardDef) => ((counts.get(d.title) ?? 0) > 1 ? `${d.title} (${d.id})` : d.title);
  useEffect(() => {
    const el = strip.current;
    if (!el) return;
    const check = () => setOverflow(el.scrollWidth > el.clientWidth + 1);
    check();
    const ro = new ResizeObserver(check);
    ro.observe(el);
    // Keep the current dashboard's link in view (the strip scrolls, not the page).
    const cur = el.querySelector<HTMLElement>('[aria-current="page"]');
    if (cur) el.scrollLeft = cur.offsetLeft - (el.clientWidth - cur.offsetWidth) / 2;
    return () => ro.disconnect();
  }, [list.map((d) => d.id).join(","), currentId]);
  return (
    <>
      <ul class={`nav-dashboards${overflow ? " overflowing" : ""}`} ref={strip} aria-label={`Dashboards (${list.length})`}>
        {list.map((d, i) => (
          <li key={d.id} class={i > 0 && d.source !== list[i - 1]?.source ? "first-user" : undefined}>
            <a href={dashboardHref(d.id)} data-testid={`nav-dashboard-${d.id}`} aria-current={currentId === d.id ? "page" : undefined} title={`${d.title} (${d.id}) · ${d.source === "config" ? "from the config file (read-only)" : "made in the UI"}`}>
              {d.title}
              {(counts.get(d.title) ?? 0) > 1 && <span class="nav-id"> {d.id}</span>}
            </a>
          </li>
        ))}
      </ul>
      {list.length > 0 && (
        <select
          class={`nav-all${overflow ? " needed" : ""}`}
          data-testid="nav-all"
          aria-label="Open a dashboard"
          value={currentId && list.some((d) => d.id === currentId) ? currentId : ""}
          onChange={(e) => {
            const id = (e.currentTarget as HTMLSelectElement).value;
            if (id) navigate(dashboardHref(id));
          }}
        >
          <option value="" disabled>
            Dashboards ({list.length})
          </option>
          {list.map((d) => (
            <option key={d.id} value={d.id}>
              {name(d)}
            </option>
          ))}
        </select>
      )}
    </>
  );
}

const CONN_TEXT = { connecting: "Connecting", live: "Live", reconnecting: "Reconnecting" };

function ConnectionIndicator() {
  const c = useSignal(connection);
  const how = c.transport === "ws" ? "WebSocket" : "server-sent events";
  return (
    <span class={`conn conn-${c.state}`} data-testid="connection" data-state={c.state} data-transport={c.transport} role="status" title={`${CONN_TEXT[c.state]} (${how})`}>
      <span class="dot" aria-hidden="true" />
      {CONN_TEXT[c.state]}
      <span class="conn-transport">{c.transport === "sse" ? " · SSE" : ""}</span>
    </span>
  );
}

/** While the connection is down: one notice for the page (panels keep their last values, badged stale). */
function OutageNotice() {
  const c = useSignal(connection);
  if (c.state !== "reconnecting") return null;
  return (
    <p class="banner outage" role="status" data-testid="outage-notice">
      The server does not answer; showing the last values. Reconnecting by itself…
    </p>
  );
}

function KeyPrompt({ message }: { message: string }) {
  const [value, setValue] = useState("");
  return (
    <div class="modal-backdrop">
      <div class="modal" role="dialog" aria-modal="true" aria-labelledby="key-title" data-testid="key-prompt">
      <form
        class="modal-form"
        onSubmit={(e) => {
          e.preventDefault();
          if (!value.trim()) return;
          setKey(value.trim());
          authNeeded.set(null);
          authEpoch.set(authEpoch.value + 1);
        }}
      >
        <h2 id="key-title">API key needed</h2>
        <p class="muted">{message}</p>
        <label class="field">
          <span>API key (read scope)</span>
          <input data-testid="key-input" type="password" autoComplete="off" autoFocus placeholder="pb_…" value={value} onInput={(e) => setValue((e.currentTarget as HTMLInputElement).value)} />
        </label>
        <p class="muted small">Kept in this browser only (localStorage). Create one with <code>pulseboard keys create --scope read</code>.</p>
        <button type="submit" class="btn primary" data-testid="key-submit">
          Use this key
        </button>
      </form>
      </div>
    </div>
  );
}

/** Wall mode lives in the address only (`?wall=1`, for a bookmarked TV): plain addresses never open in it. */
function readWall(): boolean {
  return hashParams().get("wall") === "1";
}

// Earlier versions remembered wall mode in the browser; forget it.
try {
  localStorage.removeItem("pulseboard.wall");
} catch {
  // no storage
}

export function App() {
  const r = useSignal(route);
  const dashboards = useSignal(dashboardsStore);
  const metrics = useSignal(metricsStore);
  const auth = useSignal(authNeeded);
  const epoch = useSignal(authEpoch);
  const t = useSignal(theme);
  const note = useSignal(toast);
  const [wall, setWall] = useState(readWall);

  useEffect(() => {
    void loadDashboards();
    void loadMetrics();
  }, [epoch]);

  // The address changed (a link, by hand, a bookmark): it alone says whether wall mode is on.
  useEffect(() => {
    setWall(readWall());
  }, [r]);

  useEffect(() => {
    document.documentElement.classList.toggle("wall", wall);
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== "Escape" || !wall || e.defaultPrevented) return;
      replaceHashParams({ wall: null });
      setWall(false);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [wall]);

  const list = dashboards.data;
  let content;
  if (r.page === "home" || r.page === "dashboard") {
    const d = r.page === "home" ? list?.[0] : list?.find((x) => x.id === r.id);
    const toggleWall = () => {
      replaceHashParams({ wall: wall ? null : "1" });
      setWall(!wall);
    };
    if (d) content = <Dashboard key={d.id} dashboard={d} urlRange={hashParams().get("range")} wall={wall} onToggleWall={toggleWall} />;
    else if (!list) content = dashboards.error ? <p class="error" role="alert">Could not load dashboards: {dashboards.error}</p> : <p class="muted page-loading">Loading…</p>;
    else if (r.page === "home")
      content = (
        <main class="empty-page">
          <h1>No dashboards yet</h1>
          <p>
            <a class="btn primary" href="#/new">Create a dashboard</a> or look at the <a href="#/metrics">metrics</a>.
          </p>
        </main>
      );
    else
      content = (
        <main class="empty-page">
          <h1>No dashboard “{r.id}”</h1>
          <p>
            <a href="#/">Open the first dashboard</a>
          </p>
        </main>
      );
  } else if (r.page === "notfound") {
    content = (
      <main class="empty-page">
        <h1>Nothing at {r.path}</h1>
        <p>
          <a href="#/">Back to the dashboards</a>
        </p>
      </main>
    );
  } else {
    content = <LazyPage r={r} />;
  }

  const currentId = r.page === "dashboard" || r.page === "edit" ? r.id : r.page === "home" ? list?.[0]?.id : undefined;
  return (
    <div class="app" data-testid="app" key={epoch}>
      <a class="skip" href="#content" onClick={(e) => { e.preventDefault(); document.getElementById("content")?.focus(); }}>
        Skip to content
      </a>
      <header class="topbar">
        <a class="brand" href="#/" aria-label="Pulseboard: first dashboard">
          <span class="logo" aria-hidden="true">◆</span> Pulseboard
        </a>
        <nav aria-label="Dashboards and pages" class="mainnav">
          <DashboardLinks list={list ?? []} currentId={r.page !== "edit" ? currentId : undefined} />
          <ul class="nav-fixed">
            <li>
              <a href="#/new" data-testid="nav-new" aria-current={r.page === "new" ? "page" : undefined}>
                + New
              </a>
            </li>
            <li class="sep" aria-hidden="true" />
            <li>
              <a href="#/pipeline" data-testid="nav-pipeline" aria-current={r.page === "pipeline" ? "page" : undefined}>
                Pipeline
              </a>
            </li>
            <li>
              <a href="#/metrics" data-testid="nav-metrics" aria-current={r.page === "metrics" ? "page" : undefined}>
                Metrics
              </a>
            </li>
          </ul>
        </nav>
        <div class="topbar-end">
          <ConnectionIndicator />
          <button type="button" class="btn icon" data-testid="theme-toggle" onClick={toggleTheme} aria-label={`Switch to the ${t === "dark" ? "light" : "dark"} theme`} title={`Switch to the ${t === "dark" ? "light" : "dark"} theme`}>
            <span aria-hidden="true">{t === "dark" ? "☀" : "☾"}</span>
          </button>
        </div>
      </header>
      {metrics.error && metrics.status !== 401 && (
        <p class="banner error" role="alert">
          Could not load the metrics: {metrics.error}
        </p>
      )}
      <OutageNotice />
      <div id="content" tabIndex={-1} class="content">
        {content}
      </div>
      {note && (
        <div class="toast" role="status">
          {note.text}
          {note.action && (
            <button
              type="button"
              class="btn"
              onClick={() => {
                note.action?.run();
                toast.set(null);
              }}
            >
              {note.action.label}
            </button>
          )}
        </div>
      )}
      {auth !== null && <KeyPrompt message={auth} />}
    </div>
  );
}

export { navigate };
