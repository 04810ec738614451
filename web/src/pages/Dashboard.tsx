// A dashboard: its panels on a responsive grid, a range selector (progressive loading: the
// dashboard's range first, longer history only when widened), and the first-values mark.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { connection } from "../live";
import { Panel } from "../panels/Panel";
import { useSignal } from "../signal";
import { parseDuration } from "../format";
import { RANGES, type Dashboard as DashboardDef } from "../types";

let firstDashboard: string | null = null;
let marked = false;

export function Dashboard({ dashboard, wall, onToggleWall }: { dashboard: DashboardDef; wall: boolean; onToggleWall: () => void }) {
  const [range, setRange] = useState(dashboard.range || "5m");
  const conn = useSignal(connection);
  const down = conn.state === "reconnecting";
  const ready = useRef(new Set<number>());
  // Set while rendering, not in an effect: panels' effects (which report ready) run first.
  firstDashboard ??= dashboard.id;

  useEffect(() => {
    setRange(dashboard.range || "5m");
    ready.current = new Set();
    document.title = `${dashboard.title} · Pulseboard`;
  }, [dashboard.id, dashboard.range, dashboard.title]);

  // The timing mark (read by pulseboard bench web): once, for the first dashboard shown, when every panel shows
  // its live value (or knows it has none).
  const onReady = useCallback(
    (i: number) => {
      ready.current.add(i);
      if (!marked && firstDashboard === dashboard.id && ready.current.size >= dashboard.panels.length) {
        marked = true;
        performance.mark("pulseboard:first-values");
      }
    },
    [dashboard.id, dashboard.panels.length],
  );
  const readyFns = useRef<Map<string, () => void>>(new Map());
  const readyFor = (i: number) => {
    const key = `${dashboard.id}:${i}`;
    let fn = readyFns.current.get(key);
    if (!fn) {
      fn = () => onReady(i);
      readyFns.current.set(key, fn);
    }
    return fn;
  };
  useEffect(() => {
    if (!marked && firstDashboard === dashboard.id && dashboard.panels.length === 0) {
      marked = true;
      performance.mark("pulseboard:first-values");
    }
  }, [dashboard.id, dashboard.panels.length]);

  const rangeMs = parseDuration(range) ?? 300_000;
  return (
    <main class="dashboard" data-testid="dashboard" data-id={dashboard.id}>
      <div class="toolbar">
        <h1 data-testid="dashboard-title">{dashboard.title}</h1>
        <div class="toolbar-actions">
          <label class="field-inline">
            <span>Range</span>
            <select data-testid="range" value={range} onChange={(e) => setRange((e.currentTarget as HTMLSelectElement).value)}>
              {RANGES.map((r) => (
                <option value={r} key={r}>
                  last {r}
                </option>
              ))}
            </select>
          </label>
          <button type="button" class="btn" aria-pressed={wall} onClick={onToggleWall} title="Wall-screen layout: hide the navigation, larger type (Esc leaves)">
            {wall ? "Exit wall" : "Wall"}
          </button>
          <a class="btn" data-testid="edit-dashboard" href={`#/d/${encodeURIComponent(dashboard.id)}/edit`}>
            {dashboard.source === "config" ? "Edit a copy" : "Edit"}
          </a>
        </div>
      </div>
      {dashboard.panels.length === 0 ? (
        <p class="muted">
          This dashboard has no panels yet. <a href={`#/d/${encodeURIComponent(dashboard.id)}/edit`}>Add some</a>.
        </p>
      ) : (
        <div class="grid">
          {dashboard.panels.map((p, i) => (
            <Panel key={`${dashboard.id}:${i}:${p.metric}:${p.kind}:${p.divide_by}:${p.compare}`} panel={p} rangeMs={rangeMs} connectionDown={down} onReady={readyFor(i)} large={wall} />
          ))}
        </div>
      )}
    </main>
  );
}
