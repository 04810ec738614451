// Number and time formatting for people: thousands separators, units picked from the metric's
// name or field (ms, bytes, per second), ratios as percentages, compact large numbers.

export type Unit = "count" | "ms" | "bytes" | "rate" | "ratio" | "number";

const cache = new Map<string, Intl.NumberFormat>();
function nf(options: Intl.NumberFormatOptions): Intl.NumberFormat {
  const key = JSON.stringify(options);
  let f = cache.get(key);
  if (!f) {
    f = new Intl.NumberFormat(undefined, options);
    cache.set(key, f);
  }
  return f;
}

/** The unit a metric's values are in, guessed from its definition (names say it here). */
export function unitOf(metric: string, agg: string, field: string | null, ratio = false): Unit {
  if (ratio) return "ratio";
  const name = `${metric} ${field ?? ""}`;
  if (/bytes/.test(name)) return "bytes";
  if (agg !== "count" && agg !== "distinct" && /(_ms\b|latency|\blag)/.test(name)) return "ms";
  if (/_ms\b/.test(metric)) return "ms";
  if (/per_second/.test(name)) return "rate";
  if (agg === "count" || agg === "distinct") return "count";
  return "number";
}

function plain(v: number, maxFraction: number): string {
  return nf({ maximumFractionDigits: maxFraction }).format(v);
}

/** Full precision for tooltips and tables. */
export function formatFull(v: number | null | undefined, unit: Unit): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  switch (unit) {
    case "ratio":
      return nf({ style: "percent", maximumFractionDigits: 3 }).format(v);
    case "ms":
      return `${plain(v, 2)} ms`;
    case "bytes":
      return `${plain(v, 0)} B`;
    case "rate":
      return `${plain(v, 2)}/s`;
    default:
      return plain(v, Math.abs(v) < 1000 ? 3 : 2);
  }
}

/** A short form for headlines, axes and bars. */
export function formatValue(v: number | null | undefined, unit: Unit): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  switch (unit) {
    case "ratio":
      return nf({ style: "percent", maximumFractionDigits: a < 0.1 ? 2 : 1 }).format(v);
    case "ms":
      if (a >= 60_000) return `${plain(v / 60_000, 1)} min`;
      if (a >= 1000) return `${plain(v / 1000, 2)} s`;
      return `${plain(v, a < 10 ? 2 : a < 100 ? 1 : 0)} ms`;
    case "bytes":
      return formatBytes(v);
    case "rate":
      return `${compact(v)}/s`;
    default:
      return compact(v);
  }
}

/**
 * An axis tick, in the form the axis' largest tick takes: compact for all once it reaches
 * 100,000 (ticks "50K 100K 150K", not "50,000 100K").
 */
export function formatAxis(v: number, unit: Unit, top: number): string {
  if (top >= 100_000 && (unit === "count" || unit === "number" || unit === "rate")) {
    const s = nf({ notation: "compact", maximumFractionDigits: 1 }).format(v);
    return unit === "rate" ? `${s}/s` : s;
  }
  return formatValue(v, unit);
}

/** Thousands separators up to 100,000, then 1.2M style; small non-integers keep 2 decimals. */
export function compact(v: number): string {
  const a = Math.abs(v);
  if (a >= 100_000) return nf({ notation: "compact", maximumFractionDigits: 1 }).format(v);
  if (Number.isInteger(v)) return plain(v, 0);
  return plain(v, a < 10 ? 2 : a < 1000 ? 1 : 0);
}

export function formatBytes(v: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let x = v;
  let i = 0;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${plain(x, i === 0 ? 0 : x < 10 ? 2 : 1)} ${units[i]}`;
}

/**
 * A change between two values: relative ("+12.5 %"), or the absolute difference ("+1,146")
 * when the earlier value is 0 or under a tenth of the current one; ratios in points.
 */
export function formatChange(now: number, before: number, unit: Unit): string {
  if (unit === "ratio") {
    const pts = (now - before) * 100;
    return `${pts >= 0 ? "+" : "−"}${plain(Math.abs(pts), 2)} pts`;
  }
  // A base under a tenth of the value (a window that began before data existed, a few stray
  // backdated events) makes a meaningless "+25,700 %": say the absolute difference instead.
  if (before === 0 || Math.abs(before) < Math.abs(now) / 10) {
    const diff = now - before;
    return diff === 0 ? "±0" : `${diff > 0 ? "+" : "−"}${formatValue(Math.abs(diff), unit)}`;
  }
  const rel = (now - before) / Math.abs(before);
  const sign = rel > 0 ? "+" : rel < 0 ? "−" : "±";
  return `${sign}${nf({ style: "percent", maximumFractionDigits: Math.abs(rel) < 0.1 ? 1 : 0 }).format(Math.abs(rel))}`;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "5m" → 300000; null when it is not a duration. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * (UNIT_MS[m[2] as string] ?? 0);
}

/** 300000 → "5m"; 90000 → "90s": the largest unit that divides evenly. */
export function formatDuration(ms: number): string {
  for (const u of ["d", "h", "m", "s"]) {
    const size = UNIT_MS[u] as number;
    if (ms >= size && ms % size === 0) return `${ms / size}${u}`;
  }
  return `${ms}ms`;
}

// A 24-hour clock everywhere (stats, tooltips, tables, pipeline, axes).
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

/** A time for people: only the clock for today, else with the date. */
export function formatTime(ms: number): string {
  const d = new Date(ms);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
}

/** A label set for people: the values joined ("eu", "web · 500"); "(all)" without labels. */
export function formatLabels(labels: Record<string, unknown>): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return "(all)";
  return keys.map((k) => (labels[k] === null ? "(none)" : String(labels[k]))).join(" · ");
}

/** A stable key for a label set (object key order from the server is stable per metric). */
export function labelKey(labels: Record<string, unknown>): string {
  return JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));
}

/** "this minute", "this hour", "this 5m window": the open window, for people. */
export function windowPhrase(ms: number): string {
  if (ms === 60_000) return "this minute";
  if (ms === 3_600_000) return "this hour";
  if (ms === 86_400_000) return "today";
  return `this ${formatDuration(ms)} window`;
}

/** "1 point", "2 points". */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}
