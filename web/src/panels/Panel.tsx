// A panel's frame: title, status badge, headline number, and the kind's body; with `compare`,
// a split view (live half beside the same metric `compare` ago).
import { useEffect } from "preact/hooks";
import { headline, lastFullWindow, panelStatus, type Headline } from "../derive";
import type { View } from "../feeds";
import { formatDuration, formatTime, formatValue, unitOf, windowPhrase, type Unit } from "../format";
import type { Panel as PanelDef } from "../types";
import { Bars, rowsByLabel, Stat, STATUS_HELP, STATUS_TEXT, Table, TimeSeries, Value } from "./kinds";
import { useHistoryHalf, usePanelView, useReference } from "./usePanel";

interface Props {
  panel: PanelDef;
  rangeMs: number;
  connectionDown: boolean;
  /** Called once the panel shows its live value (or knows it has none). */
  onReady?: () => void;
  large?: boolean;
  /** Large screens: the columns this panel takes and its chart height (Dashboard's layout). */
  span?: number;
  chartHeight?: number;
  /** Wall mode: the panel fills its grid cell and charts take the height left. */
  fill?: boolean;
}

export function panelTitle(p: PanelDef): string {
  if (p.title) return p.title;
  return p.divide_by ? `${p.metric} / ${p.divide_by}` : p.metric;
}

function Body({ kind, view, unit, title, height, max, past, fill, stale }: { kind: string; view: View; unit: Unit; title: string; height: number; max?: number; past?: boolean; fill?: boolean; stale?: boolean }) {
  const p = !!past;
  switch (kind) {
    case "timeseries":
      return <TimeSeries view={view} unit={unit} title={title} height={height} past={p} {...(fill ? { fill } : {})} />;
    case "bars":
      return <Bars view={view} unit={unit} past={p} stale={!!stale} {...(max !== undefined ? { max } : {})} />;
    case "table":
      return <Table view={view} unit={unit} height={height} past={p} stale={!!stale} />;
    default:
      return null;
  }
}

export function Panel({ panel, rangeMs, connectionDown, onReady, large, span, chartHeight, fill }: Props) {
  const src = usePanelView(panel.metric, panel.divide_by, rangeMs);
  const view = src.view;
  const h = view ? headline(view) : null;

  const baseAgg = src.num?.agg ?? view?.info.agg ?? "";
  const unit = unitOf(panel.metric, baseAgg, src.num?.field ?? null, !!panel.divide_by);
  const title = panelTitle(panel);
  const isStat = panel.kind === "stat";
  const reference = useReference(src, isStat ? panel.compare : null, isStat ? (h?.windowStart ?? null) : null);
  const half = useHistoryHalf(src, isStat ? null : panel.compare, panel.kind, rangeMs, h?.windowStart ?? null);
  const ready = !!src.error || (!!view && view.known && view.loaded);
  // Time series: the headline is the last complete window; the open one is shown beside it.
  const tumblingSeries = panel.kind === "timeseries" && !!view && !view.samples && view.info.every_ms === null && h?.status === "open";
  const localFull = tumblingSeries && view && h ? lastFullWindow(view, h) : null;
  const needFetch = tumblingSeries && !localFull && view?.stepMs !== view?.info.window_ms;
  const prev = useReference(src, null, needFetch ? (h?.windowStart ?? null) : null);
  let full: Headline | null = localFull;
  if (!full && needFetch && prev && prev.value !== null && view && h?.windowStart === prev.t + view.info.window_ms) {
    full = { value: prev.value, status: prev.status ?? "final", windowStart: prev.t, windowEnd: prev.t + view.info.window_ms };
  }

  useEffect(() => {
    if (ready) onReady?.();
  }, [ready, onReady]);

  // Charts grow with the screen: a wall display has room for taller ones.
  const big = large || window.innerWidth >= 1920;
  const height = chartHeight ?? Math.round(Math.min(big ? 760 : 360, Math.max(180, window.innerHeight * (big ? 0.36 : 0.22))));
  // Bars in a split view share one scale, so the halves compare by length.
  const maxBar =
    panel.kind === "bars" && half?.view && view
      ? Math.max(0, ...rowsByLabel(view).map((r) => r.value ?? 0), ...rowsByLabel(half.view).map((r) => r.value ?? 0))
      : undefined;
  // The badge tells the status of the value shown big: the full window's when that is it.
  const status = panelStatus(view, full ?? h, connectionDown);
  const sample = !!view?.samples;
  // Pipeline stats are samples, not windows: "live" or "stale", never "provisional".
  const statusText = sample && status !== "stale" && status !== "empty" ? "live" : (STATUS_TEXT[status] ?? status);
  const statusHelp = sample
    ? status === "stale"
      ? STATUS_HELP.stale
      : "A sample of the pipeline, taken every second"
    : status === "open" && h?.windowEnd
      ? `This window is still open (until ${formatTime(h.windowEnd)}): the value can still change`
      : STATUS_HELP[status];
  const shown = full ?? h;
  const label = `${title}: ${shown ? formatValue(shown.value, unit) : "loading"}${full ? ` (last full ${formatDuration(view?.info.window_ms ?? 0)})` : ""}, ${statusText}`;

  return (
    <section
      class={`panel kind-${panel.kind}${half ? " split" : ""}${fill ? " fill" : ""}`}
      data-testid="panel"
      data-metric={panel.metric}
      data-kind={panel.kind}
      data-status={status}
      aria-busy={!ready}
      tabIndex={0}
      aria-label={label}
      style={span ? { gridColumn: `span ${span}` } : undefined}
    >
      <header class="panel-head">
        <h2 class="panel-title" data-testid="panel-title" title={panel.divide_by ? `${panel.metric} ÷ ${panel.divide_by}` : panel.metric}>
          {title}
        </h2>
        <span class={`badge badge-${sample && status !== "stale" && status !== "empty" ? "live" : status}`} data-testid="panel-status" title={statusHelp}>
          {statusText}
        </span>
      </header>
      {/* While the connection is down the page says so once (App); a fetch failing then is no news. */}
      {src.error || (view?.error && !connectionDown) ? (
        <p class="error" role="alert">{src.error ?? view?.error}</p>
      ) : null}
      {view && h ? (
        isStat ? (
          <Stat view={view} h={h} unit={unit} reference={reference} />
        ) : (
          <>
            <div class="panel-headline">
              <Value h={shown ?? h} unit={unit} size="small" window={full ? "full" : "current"} />
              {panel.divide_by && <span class="muted"> of {panel.divide_by}</span>}
              {full && view && (
                <span class="muted small headline-note" title={`The window ${formatTime(full.windowStart ?? 0)} – ${formatTime(full.windowEnd ?? 0)}, complete`}>
                  last full {formatDuration(view.info.window_ms)}
                </span>
              )}
              {full && view && (
                <span class="muted small headline-partial" data-testid="panel-partial" data-value={h.value === null ? "" : String(h.value)} title="The open window: it still grows">
                  · so far {windowPhrase(view.info.window_ms)}: {formatValue(h.value, unit)}
                </span>
              )}
            </div>
            <div class={`panel-body${half ? " halves" : ""}`}>
              <div class="half">
                {half && <p class="half-label">now</p>}
                <Body kind={panel.kind} view={view} unit={unit} title={title} height={height} stale={status === "stale"} {...(fill ? { fill } : {})} {...(maxBar !== undefined ? { max: maxBar } : {})} />
              </div>
              {half && (
                <div class="half history" data-testid="panel-history">
                  <p class="half-label">{half.label}</p>
                  {half.view ? (
                    <Body kind={panel.kind} view={half.view} past unit={unit} title={`${title}, ${half.label}`} height={height} {...(fill ? { fill } : {})} {...(maxBar !== undefined ? { max: maxBar } : {})} />
                  ) : (
                    <p class="muted">{half.error ?? "Loading…"}</p>
                  )}
                </div>
              )}
            </div>
          </>
        )
      ) : (
        !src.error && <p class="muted">Loading…</p>
      )}
    </section>
  );
}
