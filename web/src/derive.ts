// Pure functions from feed views to what panels show: the headline number and its status,
// ratios (divide_by), and points ready to plot.
import { isAdditive, type View } from "./feeds";
import { labelKey } from "./format";
import type { Current, Labels, Point, Series, Status, Value } from "./types";

export type PanelStatus = Status | "stale" | "empty";

export interface Headline {
  value: number | null;
  status: Status | "empty";
  windowStart: number | null;
  windowEnd: number | null;
}

/** A view of metric / divide_by, with the two parts kept for the headline. */
export interface RatioView extends View {
  parts: [View, View];
}

function zeroWhenEmpty(agg: string): boolean {
  return isAdditive(agg) || agg === "distinct";
}

const STATUS_RANK: Record<Status, number> = { final: 0, revised: 1, open: 2 };
function worst(statuses: Status[]): Status {
  let s: Status = "final";
  for (const x of statuses) if (STATUS_RANK[x] > STATUS_RANK[s]) s = x;
  return s;
}

/** Sum over label sets for count/sum, else the first: the headline number (what tests read as data-value). */
export function combine(agg: string, values: (number | null)[]): number | null {
  const nums = values.filter((v): v is number => v !== null);
  if (nums.length === 0) return null;
  return isAdditive(agg) ? nums.reduce((a, b) => a + b, 0) : (nums[0] as number);
}

export function headline(view: View): Headline {
  if ("parts" in view) {
    const [a, b] = (view as RatioView).parts;
    const ha = headline(a);
    const hb = headline(b);
    const value = ha.value !== null && hb.value ? ha.value / hb.value : null;
    const status = ha.status === "empty" || hb.status === "empty" ? "empty" : ha.status;
    return { value: status === "empty" ? null : value, status, windowStart: ha.windowStart, windowEnd: ha.windowEnd };
  }
  // No values means no value yet, even for a count: status `empty` (a window without
  // events has no entry in `values`).
  const cur = view.current;
  const agg = view.info.agg;
  if (cur && cur.values.length > 0) {
    const first = cur.values[0] as Value;
    return {
      value: combine(agg, cur.values.map((v) => v.value)),
      status: worst(cur.values.map((v) => v.status)),
      windowStart: first.window_start,
      windowEnd: first.window_end,
    };
  }
  // No live value: the newest history point, when a point is one window.
  if (view.stepMs === view.info.window_ms) {
    let t = -Infinity;
    for (const s of view.series) t = Math.max(t, s.points.at(-1)?.t ?? -Infinity);
    if (t > -Infinity) {
      const points = view.series.map((s) => s.points.find((p) => p.t === t)).filter((p): p is Point => !!p);
      return {
        value: combine(agg, points.map((p) => p.value)),
        status: worst(points.map((p) => p.status)),
        windowStart: t,
        windowEnd: t + view.info.window_ms,
      };
    }
  }
  return { value: null, status: "empty", windowStart: null, windowEnd: null };
}

/** The badge: stale wins (connection down or the server says so), then the value's own status. */
export function panelStatus(view: View | null, h: Headline | null, connectionDown: boolean): PanelStatus {
  if (!view || !h) return "empty";
  const stale = connectionDown || !!view.current?.stale || ("parts" in view && (view as RatioView).parts.some((p) => !!p.current?.stale));
  if (stale && view.known) return "stale";
  return h.status;
}

/** The divisor for a label set: same labels, else the ungrouped value. */
function divisorFor<T>(byKey: Map<string, T>, labels: Labels): T | undefined {
  return byKey.get(labelKey(labels)) ?? byKey.get(labelKey({})) ?? (byKey.size === 1 ? [...byKey.values()][0] : undefined);
}

function ratioValues(a: Value[], b: Value[]): Value[] {
  const byKey = new Map(b.map((v) => [labelKey(v.labels), v]));
  const out: Value[] = [];
  for (const v of a) {
    const d = divisorFor(byKey, v.labels);
    out.push({ ...v, value: v.value !== null && d?.value ? v.value / d.value : null });
  }
  return out;
}

function ratioSeries(a: Series[], b: Series[], agg: string): Series[] {
  const byKey = new Map(b.map((s) => [labelKey(s.labels), s]));
  const out: Series[] = [];
  const pairs: [Labels, Series | undefined, Series][] = [];
  for (const s of a) {
    const d = divisorFor(byKey, s.labels);
    if (d) pairs.push([s.labels, s, d]);
  }
  if (a.length === 0 && zeroWhenEmpty(agg)) for (const d of b) pairs.push([d.labels, undefined, d]);
  for (const [labels, num, den] of pairs) {
    const byT = new Map((num?.points ?? []).map((p) => [p.t, p]));
    const points: Point[] = [];
    // The divisor says where a ratio exists; a missing count there is 0.
    for (const dp of den.points) {
      const np = byT.get(dp.t);
      const n = np ? np.value : zeroWhenEmpty(agg) ? 0 : null;
      points.push({
        t: dp.t,
        value: n !== null && dp.value ? n / dp.value : null,
        status: np ? worst([np.status, dp.status]) : dp.status,
      });
    }
    out.push({ labels, points });
  }
  return out;
}

export function ratioView(a: View, b: View): RatioView {
  const agg = a.info.agg;
  const current: Current | null =
    a.current && b.current
      ? { ...a.current, agg: "ratio", stale: a.current.stale || b.current.stale, values: ratioValues(a.current.values, b.current.values) }
      : null;
  return {
    ...a,
    info: { ...a.info, agg: "ratio" },
    current,
    known: a.known && b.known,
    series: ratioSeries(a.series, b.series, agg),
    tail: ratioValues(a.tail, b.tail),
    loaded: a.loaded && b.loaded,
    loading: a.loading || b.loading,
    error: a.error ?? b.error,
    parts: [a, b],
  };
}

export interface Plot {
  xs: number[];
  lines: { labels: Labels; ys: (number | null)[]; statuses: (Status | null)[] }[];
}

/**
 * Points on one time axis, one line per label set. Tumbling windows are drawn at their start;
 * a sliding metric's full windows at their end, followed by its live value at its window_end.
 * A missing point of a count or sum is 0 (no events); of anything else, a gap.
 */
export function toPlot(view: View, maxLines = 12): Plot {
  const sliding = view.info.every_ms !== null;
  const shift = sliding ? view.info.window_ms : 0;
  const zero = zeroWhenEmpty(view.info.agg) && view.info.agg !== "ratio";
  const series = [...view.series];
  // Too many label sets make an unreadable chart: keep the largest.
  if (series.length > maxLines) {
    const size = (s: Series) => s.points.reduce((a, p) => a + Math.abs(p.value ?? 0), 0);
    series.sort((x, y) => size(y) - size(x));
    series.length = maxLines;
  }
  const xsSet = new Set<number>();
  const step = view.stepMs;
  if (zero && series.length > 0 && !sliding) {
    // A regular grid over the range, so that quiet steps show as 0 rather than a straight line.
    // It starts at the first point: before any data existed there is no line, not a 0 line.
    const firstT = Math.min(...series.map((s) => s.points[0]?.t ?? Infinity));
    const start = Math.max(Math.ceil((view.now - view.rangeMs) / step) * step, firstT);
    const lastT = Math.max(...series.map((s) => s.points.at(-1)?.t ?? 0));
    for (let t = start; t <= Math.max(lastT, view.now - step); t += step) xsSet.add(t);
  }
  for (const s of series) for (const p of s.points) xsSet.add(p.t + shift);
  const tails = new Map(view.tail.map((v) => [labelKey(v.labels), v]));
  for (const v of view.tail) xsSet.add(v.window_end);
  // Nothing before the range: a point off the chart's left edge would draw a line in from nowhere.
  const lo = view.now - view.rangeMs;
  const xs = [...xsSet].filter((x) => x >= lo).sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const lines = series.map((s) => {
    const ys: (number | null)[] = xs.map(() => (zero ? 0 : null));
    const statuses: (Status | null)[] = xs.map(() => null);
    for (const p of s.points) {
      const i = index.get(p.t + shift);
      if (i === undefined) continue;
      ys[i] = p.value;
      statuses[i] = p.status;
    }
    const tail = tails.get(labelKey(s.labels));
    const ti = tail ? index.get(tail.window_end) : undefined;
    if (tail && ti !== undefined) {
      ys[ti] = tail.value;
      statuses[ti] = tail.status;
    }
    if (zero && sliding) {
      // Sliding: no grid, so only fill between the first and last points we have.
      for (let i = 0; i < ys.length; i += 1) if (statuses[i] === null) ys[i] = null;
    }
    return { labels: s.labels, ys, statuses };
  });
  // Label sets with only a live value (new this window) still get a line.
  for (const v of view.tail) {
    if (!series.some((s) => labelKey(s.labels) === labelKey(v.labels))) {
      const ys: (number | null)[] = xs.map((x) => (x === v.window_end ? v.value : null));
      lines.push({ labels: v.labels, ys, statuses: xs.map((x) => (x === v.window_end ? v.status : null)) });
    }
  }
  return { xs, lines };
}

/**
 * Only the complete steps of a plot: a tumbling metric's last step is still filling (a new
 * hour 40 s old), so drawn beside full ones it looks like a collapse. Sliding windows always
 * span their full length and pipeline samples are point values: those keep every point.
 */
export function completeSteps(plot: Plot, view: View): Plot {
  if (view.samples || view.info.every_ms !== null) return plot;
  const keep = plot.xs.map((x) => x + view.stepMs <= view.now);
  return {
    xs: plot.xs.filter((_, i) => keep[i]),
    lines: plot.lines.map((l) => ({ labels: l.labels, ys: l.ys.filter((_, i) => keep[i]), statuses: l.statuses.filter((_, i) => keep[i]) })),
  };
}

/** One line for a sparkline: the combined value per x (sum for count/sum, else the first). */
export function sparkValues(plot: Plot, agg: string): (number | null)[] {
  if (plot.lines.length === 0) return [];
  if (!isAdditive(agg)) return (plot.lines[0] as Plot["lines"][number]).ys;
  return plot.xs.map((_, i) => combine(agg, plot.lines.map((l) => l.ys[i] ?? null)));
}

/**
 * The last complete window before the headline's (open) one, for time series: a partial window
 * is a misleading headline ("208 orders per minute" ten seconds into the minute). Read from the
 * history when a point is one window; null when unknown (no history yet, or steps of several
 * windows: the panel then asks the server). A count with earlier points but none in that window
 * had no events: 0.
 */
export function lastFullWindow(view: View, h: Headline): Headline | null {
  if (view.samples || view.info.every_ms !== null || h.windowStart === null || h.status === "empty") return null;
  if (view.stepMs !== view.info.window_ms) return null;
  const w = view.info.window_ms;
  const t = h.windowStart - w;
  const points = view.series.map((s) => s.points.find((p) => p.t === t)).filter((p): p is Point => !!p);
  if (points.length > 0) {
    return { value: combine(view.info.agg, points.map((p) => p.value)), status: worst(points.map((p) => p.status)), windowStart: t, windowEnd: t + w };
  }
  const earlier = view.series.some((s) => s.points.some((p) => p.t < t));
  if (earlier && zeroWhenEmpty(view.info.agg) && view.info.agg !== "ratio") return { value: 0, status: "final", windowStart: t, windowEnd: t + w };
  return null;
}

/** Lowest, highest and latest value of a plotted line, for screen readers. */
export function lineSummary(ys: (number | null)[]): { min: number; max: number; last: number } | null {
  let min = Infinity;
  let max = -Infinity;
  let last: number | null = null;
  for (const y of ys) {
    if (y === null || !Number.isFinite(y)) continue;
    min = Math.min(min, y);
    max = Math.max(max, y);
    last = y;
  }
  return last === null ? null : { min, max, last };
}
