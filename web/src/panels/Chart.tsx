// A uPlot time-series chart (canvas, so thousands of points cost one draw, not one node each).
// The chart is created once and fed new data with setData; it is rebuilt only when the set of
// lines or the theme changes. Open (provisional) points are shaded, revised ones marked.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { formatAxis, formatTime, formatValue, type Unit } from "../format";
import { useSignal } from "../signal";
import { cssVar, seriesColor, theme } from "../theme";
import type { Status } from "../types";

export interface ChartLine {
  label: string;
  ys: (number | null)[];
  statuses?: (Status | null)[];
  dashed?: boolean;
}

interface Props {
  xs: number[];
  lines: ChartLine[];
  unit: Unit;
  height: number;
  /** The x range to show, epoch ms: the panel's range even when the data is sparse. */
  xMin?: number;
  xMax?: number;
  ariaLabel: string;
  /** Pipeline samples: no window statuses to draw or explain. */
  samples?: boolean;
  /** Take the height the layout gives (wall mode: rows share the screen) instead of `height`. */
  fill?: boolean;
}

const STATUS_WORD: Record<string, string> = { open: "provisional, window open", final: "final", revised: "revised by late events" };

/** One rule per axis: every tick in the form of the largest (never "80,000" beside "100K"). */
function axisValues(unit: Unit) {
  return (_u: uPlot, splits: number[]) => {
    const top = Math.max(0, ...splits.map((v) => Math.abs(v)));
    return splits.map((v) => formatAxis(v, unit, top));
  };
}

const INT_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4, 2.5e4, 5e4, 1e5, 2e5, 2.5e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 1e9];
const BYTE_INCRS = Array.from({ length: 41 }, (_, i) => 2 ** i);

/** Ticks at whole numbers for counts, at powers of two for bytes; uPlot's default otherwise. */
function incrsOf(unit: Unit): number[] | undefined {
  return unit === "count" ? INT_INCRS : unit === "bytes" ? BYTE_INCRS : undefined;
}

// Axis labels stay short (24-hour clock, seconds only when ticks are under a minute apart);
// the legend shows the full time of the point under the cursor.
const AXIS_FORMATS = {
  day: new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" }),
  minute: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }),
  second: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }),
};

function timeAxis(_u: uPlot, splits: number[], _axis: number, _space: number, incr: number): string[] {
  const fmt = incr >= 86_400_000 ? AXIS_FORMATS.day : incr >= 60_000 ? AXIS_FORMATS.minute : AXIS_FORMATS.second;
  return splits.map((v) => fmt.format(new Date(v)));
}

/** Shade the span of open windows and ring revised points: the status of values, drawn. */
function statusHook(linesRef: { current: ChartLine[] }) {
  return (u: uPlot) => {
    const xs = u.data[0] as number[];
    const ctx = u.ctx;
    let firstOpen = -1;
    for (const line of linesRef.current) {
      line.statuses?.forEach((s, i) => {
        if (s === "open" && (firstOpen < 0 || i < firstOpen)) firstOpen = i;
      });
    }
    ctx.save();
    // Points just before the range (the partial first step) must not be marked outside the plot.
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    if (firstOpen >= 0) {
      const x0 = u.valToPos(xs[firstOpen] as number, "x", true);
      const x1 = u.bbox.left + u.bbox.width;
      ctx.fillStyle = cssVar("--open-shade");
      ctx.fillRect(Math.max(x0 - 3, u.bbox.left), u.bbox.top, x1 - Math.max(x0 - 3, u.bbox.left), u.bbox.height);
    }
    // A neutral ring (the text colour, hollow) that no series colour can be mistaken for.
    ctx.strokeStyle = cssVar("--marker-revised");
    ctx.fillStyle = cssVar("--surface");
    ctx.lineWidth = 2 * devicePixelRatio;
    linesRef.current.forEach((line, li) => {
      line.statuses?.forEach((s, i) => {
        const y = u.data[li + 1]?.[i];
        if (s !== "revised" || y === null || y === undefined) return;
        const cx = u.valToPos(xs[i] as number, "x", true);
        const cy = u.valToPos(y, "y", true);
        ctx.beginPath();
        ctx.arc(cx, cy, 4.5 * devicePixelRatio, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      });
    });
    ctx.restore();
  };
}

/** The plot's height that fills the host: what is left of it beside uPlot's legend. */
function fillHeight(el: HTMLElement, u: uPlot | null, fallback: number): number {
  const h = el.clientHeight;
  if (h <= 0) return fallback;
  const legend = u?.root.querySelector<HTMLElement>(".u-legend")?.offsetHeight ?? 0;
  return Math.max(60, Math.floor(h - legend - 2));
}

export function Chart({ xs, lines, unit, height, xMin, xMax, ariaLabel, samples, fill }: Props) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const linesRef = useRef<ChartLine[]>(lines);
  const range = useRef<[number | undefined, number | undefined]>([xMin, xMax]);
  const currentTheme = useSignal(theme);
  linesRef.current = lines;
  range.current = [xMin, xMax];
  const shape = `${unit}|${lines.map((l) => `${l.label}:${l.dashed ? 1 : 0}`).join(",")}|${currentTheme}|${fill ? "fill" : height}`;
  const data = [xs, ...lines.map((l) => l.ys)] as uPlot.AlignedData;

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const grid = { stroke: cssVar("--grid"), width: 1 };
    // Axis labels scale with the page's type (larger on wall screens).
    const rootPx = parseFloat(getComputedStyle(document.documentElement).fontSize) || 15;
    const axisPx = Math.round(Math.max(11, rootPx * 0.75));
    const axis = { stroke: cssVar("--muted"), grid, ticks: { show: false }, font: `${axisPx}px ${cssVar("--font")}` };
    const opts: uPlot.Options = {
      width: Math.max(el.clientWidth, 100),
      height: fill ? fillHeight(el, null, height) - 24 : height,
      ms: 1,
      cursor: { y: false, points: { size: 6 } },
      // Solid markers in the series' colour (the default is the fill: a pale, grey-looking box).
      legend: { show: true, live: true, markers: { fill: (_u: uPlot, si: number) => seriesColor(si - 1), width: 0 } },
      scales: {
        x: {
          time: true,
          range: (_u, min, max) => [range.current[0] ?? min, range.current[1] ?? max],
        },
        y: {
          range: (_u, min, max) => {
            // Counts and sums start at 0; a flat line sits in the middle rather than on an edge.
            const lo = Math.min(0, min);
            const hi = max > lo ? max * 1.08 : lo + 1;
            return [lo, hi];
          },
        },
      },
      axes: [
        { ...axis, values: timeAxis, space: axisPx * 6, size: axisPx * 2.6 },
        { ...axis, values: axisValues(unit), size: axisPx * 6, space: axisPx * 2.5, ...(incrsOf(unit) ? { incrs: incrsOf(unit) } : {}) },
      ],
      series: [
        { value: (_u, v) => (v === null ? "–" : formatTime(v)) },
        ...lines.map((l, i) => ({
          label: l.label,
          stroke: seriesColor(i),
          width: 2,
          spanGaps: false,
          ...(l.dashed ? { dash: [6, 4] } : {}),
          fill: lines.length === 1 ? `${seriesColor(i)}22` : undefined,
          points: { show: (_u: uPlot, _si: number) => xs.length < 40, size: 5 },
          // The hover readout says the status of the point under the cursor.
          value: (_u: uPlot, v: number | null, si: number, di: number | null) => {
            const st = di === null ? null : linesRef.current[si - 1]?.statuses?.[di];
            return v === null ? "–" : st && !samples ? `${formatValue(v, unit)} (${STATUS_WORD[st] ?? st})` : formatValue(v, unit);
          },
        })),
      ],
      hooks: { draw: [statusHook(linesRef)] },
    };
    const u = new uPlot(opts, data, el);
    plot.current = u;
    const resize = () => {
      const w = el.clientWidth;
      const h = fill ? fillHeight(el, u, height) : height;
      if (w > 0 && (w !== u.width || h !== u.height)) u.setSize({ width: w, height: h });
    };
    if (fill) resize();
    const ro = new ResizeObserver(resize);
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Rebuilt only when the shape changes; data goes through setData below.
  }, [shape]);

  useEffect(() => {
    plot.current?.setData(data);
  });

  const has = (st: Status) => !samples && lines.some((l) => l.statuses?.some((x) => x === st));
  const open = has("open");
  const revised = has("revised");
  return (
    <div class={`chart-wrap${fill ? " fill" : ""}`}>
      <div class="chart" ref={host} role="img" aria-label={ariaLabel} />
      {(open || revised) && (
        <p class="chart-key muted" aria-hidden="true">
          {open && (
            <span title="Windows still open: their values can still change">
              <i class="key-open" /> open window (provisional)
            </span>
          )}
          {revised && (
            <span title="Values changed by late events after their window was final">
              <i class="key-revised" /> revised by late events
            </span>
          )}
          <span>other points final</span>
        </p>
      )}
    </div>
  );
}
