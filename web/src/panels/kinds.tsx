// The four panel kinds. Each gets a view (live value + history) and draws it; the frame
// (title, status badge, split view) is Panel.tsx.
import { useMemo, useState } from "preact/hooks";
import { combine, completeSteps, lineSummary, sparkValues, toPlot, type Headline } from "../derive";
import type { View } from "../feeds";
import { formatChange, formatDuration, formatFull, formatLabels, formatTime, formatValue, plural, type Unit } from "../format";
import type { Labels, Status } from "../types";
import { Chart } from "./Chart";
import { Sparkline } from "./Sparkline";
import type { Reference } from "./usePanel";

export const STATUS_TEXT: Record<string, string> = {
  open: "provisional",
  final: "final",
  revised: "revised",
  stale: "stale",
  empty: "no data",
};

export const STATUS_HELP: Record<string, string> = {
  open: "This window is still open: the value can still change",
  final: "The window is closed: the value is final",
  revised: "Late events changed this value after it was final",
  stale: "The connection or the processor is down: the value may be out of date",
  empty: "No value yet",
};

export function Value({ h, unit, size, window }: { h: Headline; unit: Unit; size: "big" | "small"; window?: "full" | "current" }) {
  return (
    <span
      class={`value value-${size}`}
      data-testid="panel-value"
      data-value={h.value === null ? "" : String(h.value)}
      data-window={window ?? "current"}
      title={formatFull(h.value, unit)}
    >
      {formatValue(h.value, unit)}
    </span>
  );
}

function windowCaption(view: View, h: Headline): string {
  // Pipeline stats are running totals and rates sampled each second: no window to name.
  if (view.samples || h.windowStart === null || h.windowEnd === null) return "";
  if (view.info.every_ms !== null) return `${formatTime(h.windowStart)} – ${formatTime(h.windowEnd)} (sliding)`;
  return `${formatTime(h.windowStart)} – ${formatTime(h.windowEnd)}`;
}

export function Stat({ view, h, unit, reference, compact }: { view: View; h: Headline; unit: Unit; reference: Reference | null; compact?: boolean }) {
  // Complete windows only (the open one is the headline, with its window beside it).
  const spark = useMemo(() => sparkValues(completeSteps(toPlot(view), view), view.info.agg === "ratio" ? "ratio" : view.info.agg), [view]);
  let change = null;
  if (reference && reference.value !== null && h.value !== null) {
    const diff = h.value - reference.value;
    const dir = diff > 0 ? "up" : diff < 0 ? "down" : "flat";
    change = (
      <p class={`change change-${dir}`} data-testid="panel-change" title={`${reference.label}: ${formatFull(reference.value, unit)} (${formatTime(reference.t)})`}>
        <span aria-hidden="true">{dir === "up" ? "▲" : dir === "down" ? "▼" : "■"}</span> {formatChange(h.value, reference.value, unit)}{" "}
        <span class="muted">{reference.label} ({formatValue(reference.value, unit)})</span>
      </p>
    );
  }
  if (!change && reference && reference.value === null && h.value !== null) {
    change = (
      <p class="change muted" data-testid="panel-change" title={`Nothing was recorded in the window compared with (${formatTime(reference.t)})`}>
        {reference.missing}
      </p>
    );
  }
  return (
    <div class="stat">
      <Value h={h} unit={unit} size="big" />
      {change ?? <p class="change muted">{"\u00a0"}</p>}
      <p class="caption muted">{windowCaption(view, h)}</p>
      {!compact && <Sparkline values={spark} label={sparkLabel(spark, unit, view)} />}
    </div>
  );
}

/** What a sparkline shows, in words (the same values it draws); null below two points. */
function sparkLabel(values: (number | null)[], unit: Unit, view: View): string | null {
  const sum = lineSummary(values);
  const n = values.filter((v) => v !== null).length;
  if (!sum || n < 2) return null;
  const each = view.samples ? "one sample per second" : view.info.every_ms !== null ? `${formatDuration(view.info.window_ms)} windows` : `complete ${formatDuration(view.stepMs)} steps`;
  return `Trend over the range (${each}): ${plural(n, "point")}, last ${formatValue(sum.last, unit)}, lowest ${formatValue(sum.min, unit)}, highest ${formatValue(sum.max, unit)}`;
}

/** A chart's summary for screen readers: per line, its latest value and its range. */
function chartLabel(title: string, lines: { label: string; ys: (number | null)[] }[], unit: Unit, rangeMs: number): string {
  const parts = lines.slice(0, 6).map((l) => {
    const sum = lineSummary(l.ys);
    return sum ? `${l.label}: latest ${formatValue(sum.last, unit)}, min ${formatValue(sum.min, unit)}, max ${formatValue(sum.max, unit)}` : `${l.label}: no values`;
  });
  const more = lines.length > 6 ? `; and ${plural(lines.length - 6, "more series", "more series")}` : "";
  return `${title}, chart of the last ${formatDuration(rangeMs)}. ${parts.join("; ")}${more}`;
}

export function TimeSeries({ view, unit, title, height, dashed, past, fill }: { view: View; unit: Unit; title: string; height: number; dashed?: boolean; past?: boolean; fill?: boolean }) {
  const plot = useMemo(() => toPlot(view), [view]);
  // An ungrouped metric has one line: name it after the metric rather than "(all)".
  const lines = plot.lines.map((l) => ({ label: Object.keys(l.labels).length ? formatLabels(l.labels) : view.info.name, ys: l.ys, statuses: l.statuses, dashed: !!dashed }));
  if (plot.xs.length === 0) {
    return <div class="chart-empty muted" style={{ height: `${height}px` }}>{!view.loaded ? "Loading…" : past ? "No data in this range" : "No points in this range yet"}<canvas hidden /></div>;
  }
  const step = stepNote(view);
  return (
    <>
      <Chart xs={plot.xs} lines={lines} unit={unit} height={height} xMin={view.now - view.rangeMs} xMax={view.now} ariaLabel={`${chartLabel(title, lines, unit, view.rangeMs)}${step ? ` ${step}.` : ""}`} samples={!!view.samples} {...(fill ? { fill } : {})} />
      {step && (
        <p class="chart-step muted" data-testid="chart-step" data-step-ms={String(view.stepMs)}>
          {step}
        </p>
      )}
    </>
  );
}

/**
 * Long ranges draw steps of several windows (7 days of a per-minute count: one point per hour).
 * Say so, or a per-hour total reads as a per-minute number. Null when a point is one window.
 */
export function stepNote(view: View): string | null {
  if (view.samples || view.stepMs <= view.info.window_ms) return null;
  const step = formatDuration(view.stepMs);
  const n = Math.round(view.stepMs / view.info.window_ms);
  const windows = `${n} windows of ${formatDuration(view.info.window_ms)}`;
  if (view.info.agg === "count" || view.info.agg === "sum") return `Each point: the total per ${step} (${windows} added up)`;
  if (view.info.agg === "ratio") return `Each point: the ratio over ${step} (${windows})`;
  return `Each point: the ${view.info.agg} over ${step} (${windows} merged)`;
}

export interface Row {
  labels: Labels;
  value: number | null;
  status: Status;
  t: number;
}

/** The current window's values per label set; the newest history point if there are none. */
export function rowsByLabel(view: View): Row[] {
  const values = view.current?.values ?? [];
  if (values.length > 0) return values.map((v) => ({ labels: v.labels, value: v.value, status: v.status, t: v.window_start }));
  if (view.stepMs !== view.info.window_ms) return [];
  let t = -Infinity;
  for (const s of view.series) t = Math.max(t, s.points.at(-1)?.t ?? -Infinity);
  const rows: Row[] = [];
  for (const s of view.series) {
    const p = s.points.find((x) => x.t === t);
    if (p) rows.push({ labels: s.labels, value: p.value, status: p.status, t });
  }
  return rows;
}

const BAR_LIMIT = 100;

export function Bars({ view, unit, max, past, stale }: { view: View; unit: Unit; max?: number; past?: boolean; stale?: boolean }) {
  const rows = rowsByLabel(view).sort((a, b) => (b.value ?? -Infinity) - (a.value ?? -Infinity));
  const top = max ?? Math.max(0, ...rows.map((r) => r.value ?? 0));
  if (rows.length === 0) return <p class="muted empty">{!view.loaded ? "Loading…" : past ? "No data in this window" : "No values in this window yet"}</p>;
  return (
    <ul class="bars">
      {rows.slice(0, BAR_LIMIT).map((r) => {
        const label = formatLabels(r.labels);
        const pct = top > 0 && r.value !== null ? Math.max(0, (r.value / top) * 100) : 0;
        return (
          <li key={label} class="bar" data-testid="bar" data-label={label} data-value={r.value === null ? "" : String(r.value)} title={`${label}: ${formatFull(r.value, unit)} (${STATUS_TEXT[stale ? "stale" : r.status]})`}>
            <span class="bar-label">{label}</span>
            <span class="bar-track" aria-hidden="true">
              <span class={`bar-fill status-${stale ? "stale" : r.status}`} style={{ width: `${pct}%` }} />
            </span>
            <span class="bar-value">{formatValue(r.value, unit)}</span>
          </li>
        );
      })}
      {rows.length > BAR_LIMIT && <li class="muted">and {rows.length - BAR_LIMIT} more label sets (a table panel lists them all)</li>}
    </ul>
  );
}

const ROW_HEIGHT = 30;
const OVERSCAN = 6;

type SortKey = string;

/**
 * A table with virtual scrolling: only the rows in view (plus a few) are in the DOM, so 10,000
 * label sets scroll as smoothly as 10. Grouped metrics list label sets; others list windows.
 */
export function Table({ view, unit, height, past, stale }: { view: View; unit: Unit; height: number; past?: boolean; stale?: boolean }) {
  const grouped = view.info.group_by.length > 0 || (view.current?.values.length ?? 0) > 1;
  const [scrollTop, setScrollTop] = useState(0);
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: grouped ? "value" : "time", desc: true });
  const rows: Row[] = useMemo(() => {
    if (grouped) return rowsByLabel(view);
    const out: Row[] = [];
    for (const s of view.series) for (const p of s.points) out.push({ labels: s.labels, value: p.value, status: p.status, t: p.t });
    return out;
  }, [view, grouped]);
  const keys = grouped ? (view.info.group_by.length ? view.info.group_by : Object.keys(rows[0]?.labels ?? {})) : [];
  const sorted = useMemo(() => {
    const dir = sort.desc ? -1 : 1;
    const get = (r: Row): number | string => (sort.key === "value" ? (r.value ?? -Infinity) : sort.key === "time" ? r.t : String(r.labels[sort.key] ?? ""));
    return [...rows].sort((a, b) => {
      const x = get(a);
      const y = get(b);
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
  }, [rows, sort]);
  const columns = [...keys.map((k) => ({ key: k, title: k })), ...(grouped ? [] : [{ key: "time", title: "window" }]), { key: "value", title: "value" }, { key: "status", title: "status" }];
  // The body is as tall as its rows, up to the panel's height; beyond that it scrolls.
  const bodyHeight = Math.min(height - ROW_HEIGHT, Math.max(sorted.length, 1) * ROW_HEIGHT);
  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(sorted.length, Math.ceil((scrollTop + bodyHeight) / ROW_HEIGHT) + OVERSCAN);
  const total = combine(view.info.agg, rows.map((r) => r.value));
  const template = `repeat(${columns.length - 2}, minmax(4rem, 1fr)) minmax(5rem, 1fr) 6.5rem`;
  return (
    <div class="vtable" role="table" aria-rowcount={sorted.length + 1}>
      <div class="vtable-head" role="row" style={{ gridTemplateColumns: template }}>
        {columns.map((c) => (
          <span role="columnheader" key={c.key} aria-sort={sort.key === c.key ? (sort.desc ? "descending" : "ascending") : "none"}>
            {c.key === "status" ? (
              c.title
            ) : (
              <button type="button" class="link" onClick={() => setSort({ key: c.key, desc: sort.key === c.key ? !sort.desc : c.key === "value" })}>
                {c.title} {sort.key === c.key ? (sort.desc ? "↓" : "↑") : ""}
              </button>
            )}
          </span>
        ))}
      </div>
      <div class="vtable-body" tabIndex={0} aria-label={`${sorted.length} rows; scroll for more`} style={{ height: `${bodyHeight}px` }} onScroll={(e) => setScrollTop((e.currentTarget as HTMLElement).scrollTop)}>
        <div style={{ height: `${sorted.length * ROW_HEIGHT}px`, position: "relative" }}>
          {sorted.slice(first, last).map((r, i) => (
            <div
              key={`${first + i}`}
              class="vtable-row"
              role="row"
              data-testid="table-row"
              aria-rowindex={first + i + 2}
              style={{ transform: `translateY(${(first + i) * ROW_HEIGHT}px)`, gridTemplateColumns: template }}
            >
              {keys.map((k) => (
                <span role="cell" key={k}>{r.labels[k] === null || r.labels[k] === undefined ? "(none)" : String(r.labels[k])}</span>
              ))}
              {!grouped && <span role="cell">{formatTime(r.t)}</span>}
              <span role="cell" class="num" title={formatFull(r.value, unit)}>{formatValue(r.value, unit)}</span>
              <span role="cell"><span class={`badge badge-${stale ? "stale" : r.status}`} data-testid="row-status" title={STATUS_HELP[stale ? "stale" : r.status]}>{STATUS_TEXT[stale ? "stale" : r.status]}</span></span>
            </div>
          ))}
        </div>
        {sorted.length === 0 && <p class="muted empty">{!view.loaded ? "Loading…" : past ? "No data in this range" : "No rows yet"}</p>}
      </div>
      {grouped && sorted.length > 1 && (
        <p class="muted caption">
          {sorted.length.toLocaleString()} label sets{view.info.agg === "count" || view.info.agg === "sum" ? ` · total ${formatValue(total, unit)}` : ""}
        </p>
      )}
    </div>
  );
}
