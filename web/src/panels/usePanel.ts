// Hooks that give a panel its data: the live view of its metric (or metric / divide_by), and
// the values it compares with (previous window, or `compare` ago; the split view's history).
import { useEffect, useMemo, useReducer, useState } from "preact/hooks";
import { api } from "../api";
import { metricsStore } from "../catalog";
import { ratioView } from "../derive";
import { chooseStep, isAdditive, lcm, metricFeed, pipelineFeed, type View } from "../feeds";
import { formatDuration, parseDuration } from "../format";
import { useSignal } from "../signal";
import type { MetricDef, Point, Series, Status, Value } from "../types";

export interface PanelSource {
  view: View | null;
  error: string | null;
  num?: MetricDef;
  den?: MetricDef;
}

/** Re-render at most once per animation frame however many feeds changed. */
function useFrameUpdate(): () => void {
  const [, bump] = useReducer((n: number) => n + 1, 0);
  return useMemo(() => {
    let queued = false;
    return () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        bump(1);
      });
    };
  }, []);
}

export function usePanelView(metric: string, divideBy: string | null, rangeMs: number): PanelSource {
  const metrics = useSignal(metricsStore).data;
  const update = useFrameUpdate();
  const isPipeline = metric.startsWith("pipeline.");
  const num = metrics?.find((m) => m.name === metric);
  const den = divideBy ? metrics?.find((m) => m.name === divideBy) : undefined;
  const base = num ? (den ? lcm(num.window_ms, den.window_ms) : num.window_ms) : 0;
  const feeds = useMemo(() => {
    if (isPipeline || !num) return [];
    return den ? [metricFeed(num, base), metricFeed(den, base)] : [metricFeed(num, base)];
  }, [isPipeline, num, den, base]);

  useEffect(() => {
    if (isPipeline) return pipelineFeed.acquire(update);
    const releases = feeds.map((f) => f.acquire(update));
    return () => {
      for (const r of releases) r();
    };
  }, [feeds, isPipeline, update]);

  useEffect(() => {
    for (const f of feeds) f.setRange(rangeMs);
  }, [feeds, rangeMs]);

  if (isPipeline) return { view: pipelineFeed.view(metric, rangeMs), error: null };
  if (!metrics) return { view: null, error: null };
  if (!num) return { view: null, error: `no metric named '${metric}' in the config` };
  if (divideBy && !den) return { view: null, error: `divide_by: no metric named '${divideBy}'` };
  const [a, b] = feeds;
  if (!a) return { view: null, error: null };
  const view = b ? ratioView(a.view(), b.view()) : a.view();
  return { view, error: null, num, ...(den ? { den } : {}) };
}

/**
 * Values of one window per label set: the window of `def` that starts at `t0`. Asked as the last
 * millisecond of that window (the server rounds `from` down to the step, and serves windows that
 * start before `to`), so the request is for one window, not for a long history.
 */
async function windowValues(def: MetricDef, t0: number): Promise<Value[]> {
  const w = def.window_ms;
  const body = await api.series(def.name, t0 + w - 1, t0 + w, w);
  const out: Value[] = [];
  for (const s of body.series) {
    const p = s.points.find((x) => x.t === t0) ?? s.points[0];
    if (p) out.push({ labels: s.labels, value: p.value, window_start: p.t, window_end: p.t + w, status: p.status });
  }
  return out;
}

/** The aligned window of `def` that ends at or before `before` (the previous full window). */
function alignedBefore(def: MetricDef, before: number): number {
  const w = def.window_ms;
  return Math.floor((before - w) / w) * w;
}

export interface Reference {
  value: number | null;
  status: Status | null;
  /** Start of the window compared with. */
  t: number;
  label: string;
  /** What to say when there is no value to compare with. */
  missing: string;
}

/** The window's value; null when the server has no point for it (no data then, not a 0). */
function total(def: MetricDef, values: Value[]): number | null {
  const nums = values.map((v) => v.value).filter((v): v is number => v !== null);
  if (nums.length === 0) return null;
  return isAdditive(def.agg) ? nums.reduce((a, b) => a + b, 0) : (nums[0] as number);
}

/**
 * A stat's reference value: the previous window, or the same window `compare` ago. Fetched again
 * when the window it depends on moves (not on every sliding step), and every minute while the
 * reference window may still change.
 */
export function useReference(src: PanelSource, compare: string | null, windowStart: number | null): Reference | null {
  const [ref, setRef] = useState<Reference | null>(null);
  const [tick, setTick] = useState(0);
  const { num, den } = src;
  const shift = compare ? parseDuration(compare) : null;
  const t0 = num && windowStart !== null ? alignedBefore(num, windowStart - (shift ?? 0) + num.window_ms * (shift ? 1 : 0)) : null;
  useEffect(() => {
    if (!num || t0 === null) return;
    let alive = true;
    const jobs = [windowValues(num, t0)];
    if (den) jobs.push(windowValues(den, alignedBefore(den, t0 + den.window_ms)));
    Promise.all(jobs)
      .then(([a, b]) => {
        if (!alive) return;
        const na = total(num, a ?? []);
        const nb = den ? total(den, b ?? []) : null;
        const value = den ? (na !== null && nb ? na / nb : null) : na;
        const status = (a ?? [])[0]?.status ?? null;
        setRef({
          value,
          status,
          t: t0,
          label: compare ? `vs ${compare} ago` : "vs previous window",
          missing: compare ? `no data ${compare} ago` : "no data in the previous window",
        });
      })
      .catch(() => alive && setRef(null));
    return () => {
      alive = false;
    };
  }, [num, den, t0, compare, tick]);
  useEffect(() => {
    if (ref?.status !== "open" && ref?.status !== undefined && ref?.status !== null) return;
    const id = window.setInterval(() => setTick((n) => n + 1), 60_000);
    return () => window.clearInterval(id);
  }, [ref?.status]);
  return t0 === null ? null : ref;
}

export interface HistoryHalf {
  view: View | null;
  error: string | null;
  label: string;
}

function shiftSeries(series: Series[], by: number): Series[] {
  return series.map((s) => ({ labels: s.labels, points: s.points.map((p: Point) => ({ ...p, t: p.t + by })) }));
}

/**
 * The split view's other half: the same range `compare` ago, as a static view whose times are
 * moved forward by `compare`, so both halves share an axis. Bars and grouped tables show the
 * window `compare` before the current one.
 */
export function useHistoryHalf(src: PanelSource, compare: string | null, kind: string, rangeMs: number, windowStart: number | null): HistoryHalf | null {
  const [half, setHalf] = useState<HistoryHalf | null>(null);
  const { num, den, view } = src;
  const shift = compare ? parseDuration(compare) : null;
  const byWindow = kind === "bars" || (kind === "table" && (num?.group_by.length ?? 0) > 0);
  const t0 = byWindow && num && shift && windowStart !== null ? alignedBefore(num, windowStart - shift + num.window_ms) : null;
  const step = view?.stepMs ?? 0;
  useEffect(() => {
    if (!num || !shift || !view) return;
    if (byWindow && t0 === null) return;
    let alive = true;
    const load = async (def: MetricDef): Promise<View> => {
      const info = { name: def.name, agg: def.agg, window_ms: def.window_ms, every_ms: def.every_ms, field: def.field, group_by: def.group_by };
      const base: View = { info, current: null, known: true, series: [], tail: [], stepMs: step, rangeMs, now: view.now, loaded: true, loading: false, error: null };
      if (byWindow && t0 !== null) {
        const at = def === num ? t0 : alignedBefore(def, t0 + def.window_ms);
        const values = await windowValues(def, at);
        return { ...base, current: { metric: def.name, agg: def.agg, window_ms: def.window_ms, every_ms: null, as_of: at, stream_time: at, stale: false, values } };
      }
      const s = step || chooseStep(rangeMs, def.window_ms);
      const body = await api.series(def.name, `-${formatDuration(rangeMs + shift)}`, `-${formatDuration(shift)}`, s);
      return { ...base, stepMs: s, series: shiftSeries(body.series, shift), now: body.to + shift };
    };
    const jobs = den ? [load(num), load(den)] : [load(num)];
    Promise.all(jobs)
      .then(([a, b]) => {
        if (!alive || !a) return;
        setHalf({ view: b ? ratioView(a, b) : a, error: null, label: `${compare} ago` });
      })
      .catch((e: unknown) => alive && setHalf({ view: null, error: String((e as Error).message ?? e), label: `${compare} ago` }));
    return () => {
      alive = false;
    };
    // `view` changes every tick; the history depends only on what is listed.
  }, [num, den, shift, byWindow, t0, step, rangeMs, compare]);
  return shift ? (half ?? { view: null, error: null, label: `${compare} ago` }) : null;
}
