// A dashboard: its panels on a responsive grid, a range selector (progressive loading: the
// dashboard's range first, longer history only when widened), and the first-values mark.
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { connection } from "../live";
import { Panel } from "../panels/Panel";
import { useSignal } from "../signal";
import { parseDuration } from "../format";
import { replaceHashParams } from "../router";
import { RANGES, type Dashboard as DashboardDef } from "../types";

/** A panel's share of a row: charts, tables and split views take two columns. */
function spanOf(p: DashboardDef["panels"][number]): number {
  return p.kind === "timeseries" || p.kind === "table" || p.compare !== null && p.kind !== "stat" ? 2 : 1;
}

interface Layout {
  cols: number;
  spans: number[];
  rows: number;
  chartHeight?: number;
}

/** Wall mode fits a dashboard of up to this many rows on the screen (no scrolling). */
const FIT_ROWS = 3;

/**
 * Large screens (≥ 1920 px) and wall mode: as many columns as fill the width in few rows, the
 * last panel widened to close the last row, and chart heights that share the viewport's height
 * between the rows, so a wall screen is filled rather than half empty. Null: the CSS grid.
 */
function wallLayout(panels: DashboardDef["panels"], wall: boolean, w: number, h: number): Layout | null {
  if (w < 1100 || panels.length === 0) return null;
  const big = wall || w >= 1920;
  const spans = panels.map(spanOf);
  const units = spans.reduce((a, b) => a + b, 0);
  // Laptops: the columns the CSS grid would make (330 px panels, 14 px gaps, 18 px padding).
  // Wall mode: few rows, so each is tall enough to read (at most 3 rows for 6 panels).
  const cols = big ? Math.min(Math.max(2, Math.floor(w / 380)), Math.max(2, Math.ceil(units / (wall ? FIT_ROWS - 1 : 2)))) : Math.max(1, Math.floor((w - 36 + 14) / (330 + 14)));
  for (let i = 0; i < spans.length; i += 1) spans[i] = Math.min(spans[i] as number, cols);
  // A panel that does not fit in a row's rest starts the next row; the one before it widens
  // to close the row, so no row has a hole.
  let used = 0;
  let rows = 1;
  for (let i = 0; i < spans.length; i += 1) {
    const s = spans[i] as number;
    if (used + s > cols) {
      if (i > 0) spans[i - 1] = (spans[i - 1] as number) + (cols - used);
      rows += 1;
      used = 0;
    }
    used += s;
  }
  if (used < cols) spans[spans.length - 1] = (spans.at(-1) as number) + (cols - used);
  if (!big) return { cols, spans, rows };
  const chrome = wall ? 100 : 160;
  const perRow = (h - chrome) / Math.min(rows, 3);
  const chartHeight = Math.round(Math.max(200, Math.min(900, perRow - 200)));
  return { cols, spans, rows, chartHeight };
}

function useViewport(): [number, number] {
  const [size, setSize] = useState<[number, number]>([window.innerWidth, window.innerHeight]);
  useEffect(() => {
    const on = () => setSize([window.innerWidth, window.innerHeight]);
    window.addEventListener("resize", on);
    return () => window.removeEventListener("resize", on);
  }, []);
  return size;
}

let firstDashboard: string | null = null;
let marked = false;

function validRange(r: string | null | undefined): string | null {
  return r && (RANGES as readonly string[]).includes(r) ? r : null;
}

/**
 * One dashboard. The App mounts a new one per dashboard id (`key`), so a dashboard always opens
 * on its own range (or the address's `?range=`), never on the one widened on another.
 */
export function Dashboard({ dashboard, urlRange, wall, onToggleWall }: { dashboard: DashboardDef; urlRange: string | null; wall: boolean; onToggleWall: () => void }) {
  const [range, setRangeState] = useState(() => validRange(urlRange) ?? validRange(dashboard.range) ?? "5m");
  const setRange = (r: string) => {
    setRangeState(r);
    replaceHashParams({ range: r });
  };
  const conn = useSignal(connection);
  const down = conn.state === "reconnecting";
  const ready = useRef(new Set<number>());
  // Set while rendering, not in an effect: panels' effects (which report ready) run first.
  firstDashboard ??= dashboard.id;

  useEffect(() => {
    document.title = `${dashboard.title} · Pulseboard`;
  }, [dashboard.title]);
  // The address's range was changed by hand (or Back/Forward): follow it.
  useEffect(() => {
    const r = validRange(urlRange);
    if (r) setRangeState(r);
  }, [urlRange]);

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
  const [vw, vh] = useViewport();
  const layout = wallLayout(dashboard.panels, wall, vw, vh);
  // Wall mode: the whole dashboard on the screen, its rows sharing the height left below the
  // toolbar (measured, since type sizes grow with the screen).
  const gridRef = useRef<HTMLDivElement>(null);
  const [gridTop, setGridTop] = useState(0);
  const fit = wall && !!layout && layout.rows <= FIT_ROWS;
  useLayoutEffect(() => {
    if (!fit || !gridRef.current) return;
    setGridTop(gridRef.current.getBoundingClientRect().top + window.scrollY);
  }, [fit, vw, vh, dashboard.id]);
  const gridHeight = fit && gridTop > 0 ? Math.max(300, vh - gridTop - 14) : 0;
  const rowHeight = gridHeight && layout ? (gridHeight - 16 * (layout.rows - 1)) / layout.rows : 0;
  const gridStyle: Record<string, string> = {};
  if (layout) gridStyle.gridTemplateColumns = `repeat(${layout.cols}, minmax(0, 1fr))`;
  if (gridHeight && layout) {
    gridStyle.height = `${gridHeight}px`;
    gridStyle.gridTemplateRows = `repeat(${layout.rows}, minmax(0, 1fr))`;
  }
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
        <div ref={gridRef} class={`grid${layout ? " grid-wall" : ""}${fit ? " grid-fit" : ""}`} style={layout ? gridStyle : undefined}>
          {dashboard.panels.map((p, i) => (
            <Panel
              key={`${dashboard.id}:${i}:${p.metric}:${p.kind}:${p.divide_by}:${p.compare}`}
              panel={p}
              rangeMs={rangeMs}
              connectionDown={down}
              onReady={readyFor(i)}
              large={wall}
              {...(layout ? { span: layout.spans[i] ?? 1 } : {})}
              {...(rowHeight ? { chartHeight: Math.max(120, Math.round(rowHeight - 150)), fill: true } : layout?.chartHeight ? { chartHeight: layout.chartHeight } : {})}
            />
          ))}
        </div>
      )}
    </main>
  );
}
