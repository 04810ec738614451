// Data feeds behind the panels. A MetricFeed holds one metric's live value (from the shared
// live hub) and its history at the step the dashboard's range needs, fetched progressively:
// the dashboard's range first, and older history only when the range is widened. Feeds are
// shared by every panel showing the same metric, so a page asks for each series once.
import { api, ApiError, authEpoch } from "./api";
import { formatDuration, labelKey } from "./format";
import { hub } from "./live";
import type { Current, MetricDef, PipelineMessage, PipelineMetric, Sample, Series, SeriesBody, Value } from "./types";

/** What a panel needs to know of a metric to ask for and draw its values. */
export interface MetricInfo {
  name: string;
  agg: string;
  window_ms: number;
  every_ms: number | null;
  field: string | null;
  group_by: string[];
}

export interface View {
  info: MetricInfo;
  /** The latest live body; null before the first one. */
  current: Current | null;
  /** True once we know the live value, even if it is "no value yet". */
  known: boolean;
  /** History at `stepMs`, points sorted by time, within the range (plus the partial first step). */
  series: Series[];
  /** Sliding metrics: the live value per label set, drawn at its window_end after the history. */
  tail: Value[];
  stepMs: number;
  rangeMs: number;
  /** Estimated server clock (epoch ms) when this view was built. */
  now: number;
  loaded: boolean;
  loading: boolean;
  error: string | null;
  /** Pipeline stats: samples taken every tick, not windows (no open/final/revised). */
  samples?: boolean;
}

const MAX_POINTS = 300;
const LADDER_MS = [
  1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3,
  10800e3, 21600e3, 43200e3, 86400e3,
];

/** The smallest "round" step that is a multiple of `baseMs` and gives at most ~300 points. */
export function chooseStep(rangeMs: number, baseMs: number): number {
  for (const s of LADDER_MS) {
    if (s >= baseMs && s % baseMs === 0 && rangeMs / s <= MAX_POINTS) return s;
  }
  return baseMs * Math.max(1, Math.ceil(rangeMs / (MAX_POINTS * baseMs)));
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
export function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

/** Aggregates whose window values add up: a step of several windows is their sum. */
export function isAdditive(agg: string): boolean {
  return agg === "count" || agg === "sum";
}

interface Bucket {
  step: number;
  series: Map<string, Series>;
  coveredFrom: number;
  fetchedTo: number;
  /** Additive metrics with step > window: live value already counted, by labels + window. */
  seen: Map<string, number>;
}

type Listener = () => void;

abstract class Feed {
  protected listeners = new Set<Listener>();
  private disposeTimer: number | undefined;
  private running = false;
  version = 0;

  acquire(listener: Listener): () => void {
    window.clearTimeout(this.disposeTimer);
    this.listeners.add(listener);
    if (!this.running) {
      this.running = true;
      this.start();
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) {
        // Keep a feed running a while after its last panel leaves: going back costs nothing.
        window.clearTimeout(this.disposeTimer);
        this.disposeTimer = window.setTimeout(() => {
          this.running = false;
          this.stop();
        }, 60_000);
      }
    };
  }

  protected notify(): void {
    this.version += 1;
    for (const l of [...this.listeners]) l();
  }

  protected abstract start(): void;
  protected abstract stop(): void;
}

export class MetricFeed extends Feed {
  private current: Current | null;
  private known: boolean;
  private buckets = new Map<number, Bucket>();
  private active: Bucket | null = null;
  private rangeMs = 0;
  private offset = 0;
  private loaded = false;
  private loading = false;
  private error: string | null = null;
  private gen = 0;
  private stops: (() => void)[] = [];
  private refreshTimer: number | undefined;

  constructor(
    readonly info: MetricInfo,
    private readonly baseMs: number,
    seed: Current | null,
  ) {
    super();
    this.current = seed;
    // /v1/metrics says `current: null` when the processor has no value yet: known, and empty.
    this.known = true;
  }

  protected start(): void {
    this.stops.push(hub.subscribe(this.info.name, (body) => this.onLive(body)));
    this.stops.push(hub.reconnected.subscribe(() => this.refetch()));
    this.stops.push(authEpoch.subscribe(() => this.refetch()));
    this.refreshTimer = window.setInterval(() => this.refreshTail(), 30_000);
    // Stopped for a while: what we hold has gaps, so read the range again.
    if (this.rangeMs) this.refetch();
  }

  protected stop(): void {
    for (const s of this.stops.splice(0)) s();
    window.clearInterval(this.refreshTimer);
  }

  private serverNow(): number {
    return Date.now() + this.offset;
  }

  setRange(rangeMs: number): void {
    if (rangeMs === this.rangeMs) return;
    const wider = rangeMs > this.rangeMs;
    this.rangeMs = rangeMs;
    const step = chooseStep(rangeMs, this.baseMs);
    let bucket = this.buckets.get(step);
    const fresh = !bucket;
    if (!bucket) {
      bucket = { step, series: new Map(), coveredFrom: Infinity, fetchedTo: 0, seen: new Map() };
      this.buckets.set(step, bucket);
    }
    this.active = bucket;
    // A bucket whose first answer has not come yet covers nothing: ask for the whole range
    // (answers overlap harmlessly). Never ask with a time that is not a number.
    if (fresh || !Number.isFinite(bucket.coveredFrom)) {
      void this.fetch(bucket, `-${formatDuration(rangeMs)}`, "now", true);
    } else {
      // History at this step was fetched before: add what is older (only when widening) and
      // what came since.
      const from = this.serverNow() - rangeMs;
      if (wider && from < bucket.coveredFrom) void this.fetch(bucket, from, bucket.coveredFrom, false);
      void this.fetch(bucket, Math.max(bucket.coveredFrom, bucket.fetchedTo - 2 * step), "now", false);
      this.notify();
    }
  }

  private refetch(): void {
    this.buckets.clear();
    const r = this.rangeMs;
    this.rangeMs = 0;
    if (r) this.setRange(r);
  }

  /** Every 30 s: open windows close and late events revise them; fetch the recent past again. */
  private refreshTail(): void {
    const b = this.active;
    if (!b || !this.loaded || document.hidden) return;
    if (!Number.isFinite(b.coveredFrom)) return;
    const span = Math.max(3 * b.step, 2 * this.info.window_ms + 90_000);
    void this.fetch(b, Math.max(b.coveredFrom, b.fetchedTo - span), "now", false);
  }

  private async fetch(b: Bucket, from: string | number, to: string | number, first: boolean): Promise<void> {
    if ((typeof from === "number" && !Number.isFinite(from)) || (typeof to === "number" && !Number.isFinite(to))) return;
    if (typeof from === "number" && typeof to === "number" && from >= to) return;
    const gen = this.gen;
    if (first) this.loading = true;
    let body: SeriesBody;
    try {
      body = await api.series(this.info.name, from, to, b.step);
    } catch (e) {
      if (gen !== this.gen) return;
      this.error = e instanceof ApiError ? e.message : String(e);
      this.loading = false;
      this.loaded = true;
      this.notify();
      return;
    }
    if (gen !== this.gen) return;
    this.error = null;
    if (to === "now") {
      this.offset = body.to - Date.now();
      b.fetchedTo = Math.max(b.fetchedTo, body.to);
    }
    b.coveredFrom = Math.min(b.coveredFrom, body.from);
    mergeSeries(b.series, body, body.from, to === "now" ? Infinity : body.to);
    // The answer holds the open window as it was then; the live value we have may be newer.
    if (this.current) this.applyLive(b, this.current, true);
    if (b === this.active) {
      this.loading = false;
      this.loaded = true;
    }
    this.notify();
  }

  private onLive(body: Current): void {
    // Values can arrive twice (the seed, a resubscription): keep the newest.
    if (this.current?.as_of && body.as_of && body.as_of < this.current.as_of) return;
    this.current = body;
    this.known = true;
    if (body.as_of) this.offset = Math.max(this.offset, body.as_of - Date.now());
    for (const b of this.buckets.values()) this.applyLive(b, body, false);
    this.notify();
  }

  /** Live values update the point of the current window (tumbling metrics only). */
  private applyLive(b: Bucket, body: Current, afterFetch: boolean): void {
    if (body.every_ms !== null || this.info.every_ms !== null) return; // sliding: drawn as a tail
    const window = this.info.window_ms;
    for (const v of body.values) {
      if (v.value === null) continue;
      const key = labelKey(v.labels);
      let s = b.series.get(key);
      if (!s) {
        s = { labels: v.labels, points: [] };
        b.series.set(key, s);
      }
      const t = Math.floor(v.window_start / b.step) * b.step;
      const i = findPoint(s.points, t);
      const p = i >= 0 ? s.points[i] : undefined;
      if (b.step === window || !p) {
        if (p) {
          p.value = v.value;
          p.status = v.status;
        } else insertPoint(s.points, { t, value: v.value, status: v.status });
        b.seen.set(`${key}|${v.window_start}`, v.value);
      } else if (isAdditive(this.info.agg) && p.value !== null) {
        // A step of several windows: add what this window gained since we last counted it.
        const seenKey = `${key}|${v.window_start}`;
        const before = b.seen.get(seenKey);
        if (afterFetch || before === undefined) {
          // The fetched point already counts this window as the server saw it.
          b.seen.set(seenKey, v.value);
          if (!afterFetch && before === undefined && v.window_start >= b.fetchedTo) p.value += v.value;
        } else {
          p.value += v.value - before;
          b.seen.set(seenKey, v.value);
        }
        p.status = "open";
      }
      // Other aggregates over several windows cannot be merged here: the tail refresh does it.
    }
  }

  view(): View {
    const b = this.active;
    const now = this.serverNow();
    const from = now - this.rangeMs - (b?.step ?? 0);
    const series: Series[] = [];
    if (b) {
      for (const s of b.series.values()) {
        const points = s.points.filter((p) => p.t >= from);
        if (points.length > 0) series.push({ labels: s.labels, points });
      }
      series.sort((x, y) => labelKey(x.labels).localeCompare(labelKey(y.labels)));
    }
    const tail = this.info.every_ms !== null && this.current ? this.current.values : [];
    return {
      info: this.info,
      current: this.current,
      known: this.known,
      series,
      tail,
      stepMs: b?.step ?? this.info.window_ms,
      rangeMs: this.rangeMs,
      now,
      loaded: this.loaded,
      loading: this.loading,
      error: this.error,
    };
  }
}

function findPoint(points: { t: number }[], t: number): number {
  for (let i = points.length - 1; i >= 0; i -= 1) {
    const pt = points[i] as { t: number };
    if (pt.t === t) return i;
    if (pt.t < t) return -1;
  }
  return -1;
}

function insertPoint<P extends { t: number }>(points: P[], p: P): void {
  let i = points.length;
  while (i > 0 && (points[i - 1] as P).t > p.t) i -= 1;
  points.splice(i, 0, p);
}

/** Replace the points in [from, to) by the answer's (a missing point means no events). */
function mergeSeries(into: Map<string, Series>, body: SeriesBody, from: number, to: number): void {
  for (const s of into.values()) s.points = s.points.filter((p) => p.t < from || p.t >= to);
  for (const s of body.series) {
    const key = labelKey(s.labels);
    const have = into.get(key);
    if (!have) {
      into.set(key, { labels: s.labels, points: [...s.points] });
    } else {
      for (const p of s.points) insertPoint(have.points, { ...p });
    }
  }
}

// ---- The pipeline's own numbers -------------------------------------------------------------

const PIPELINE_KEEP_MS = 16 * 60_000;

export class PipelineFeed extends Feed {
  samples: Sample[] = [];
  metrics: PipelineMetric[] = [];
  loaded = false;
  error: string | null = null;
  private stops: (() => void)[] = [];

  protected start(): void {
    this.stops.push(hub.subscribePipeline((m) => this.onLive(m)));
    this.stops.push(hub.reconnected.subscribe(() => void this.load()));
    this.stops.push(authEpoch.subscribe(() => void this.load()));
    void this.load();
  }

  protected stop(): void {
    for (const s of this.stops.splice(0)) s();
  }

  private async load(): Promise<void> {
    try {
      const body = await api.pipeline("-15m");
      const live = this.samples.filter((s) => s.t > (body.history.at(-1)?.t ?? 0));
      this.samples = [...body.history, ...live];
      if (body.current && !this.samples.some((s) => s.t === body.current?.t)) {
        insertPoint(this.samples, body.current);
      }
      this.metrics = body.metrics;
      this.error = null;
    } catch (e) {
      this.error = e instanceof ApiError ? e.message : String(e);
    }
    this.loaded = true;
    this.notify();
  }

  private onLive(m: PipelineMessage): void {
    const last = this.samples.at(-1);
    if (!last || m.pipeline.t > last.t) this.samples.push(m.pipeline);
    const cut = m.pipeline.t - PIPELINE_KEEP_MS;
    if ((this.samples[0]?.t ?? cut) < cut) this.samples = this.samples.filter((s) => s.t >= cut);
    this.metrics = m.metrics;
    this.notify();
  }

  latest(): Sample | null {
    return this.samples.at(-1) ?? null;
  }

  /** One stat (`pipeline.lag_ms`) as a metric view, so any panel kind can show it. */
  view(name: string, rangeMs: number): View {
    const stat = name.slice("pipeline.".length) as keyof Sample;
    const last = this.latest();
    const now = last?.t ?? Date.now();
    const tick = 1000;
    const info: MetricInfo = { name, agg: "gauge", window_ms: tick, every_ms: null, field: null, group_by: [] };
    const num = (s: Sample): number | null => {
      const v = s[stat];
      return typeof v === "number" ? v : null;
    };
    const current: Current | null = last
      ? {
          metric: name,
          agg: "gauge",
          window_ms: tick,
          every_ms: null,
          as_of: last.t,
          stream_time: last.t,
          stale: !last.processor_up,
          values: [{ labels: {}, value: num(last), window_start: last.t, window_end: last.t + tick, status: "open" }],
        }
      : null;
    const points = this.samples
      .filter((s) => s.t >= now - rangeMs)
      .map((s) => ({ t: s.t, value: num(s), status: "final" as const }));
    return {
      info,
      current,
      known: this.loaded,
      series: points.length ? [{ labels: {}, points }] : [],
      tail: [],
      stepMs: tick,
      rangeMs,
      now,
      loaded: this.loaded,
      loading: !this.loaded,
      error: this.error,
      samples: true,
    };
  }
}

// ---- Sharing ----------------------------------------------------------------------------------

const metricFeeds = new Map<string, MetricFeed>();
export const pipelineFeed = new PipelineFeed();

export function infoOf(def: MetricDef): MetricInfo {
  return {
    name: def.name,
    agg: def.agg,
    window_ms: def.window_ms,
    every_ms: def.every_ms,
    field: def.field,
    group_by: def.group_by,
  };
}

/** The feed of a metric whose steps are multiples of `baseMs` (its window, or an lcm for ratios). */
export function metricFeed(def: MetricDef, baseMs: number): MetricFeed {
  const key = `${def.name}|${baseMs}`;
  let feed = metricFeeds.get(key);
  if (!feed) {
    feed = new MetricFeed(infoOf(def), baseMs, hub.latest(def.name) ?? def.current);
    metricFeeds.set(key, feed);
  }
  return feed;
}
