// A sparkline drawn straight on a canvas: a stat needs no axes or legend, so no chart library.
import { useEffect, useRef } from "preact/hooks";
import { useSignal } from "../signal";
import { cssVar, theme } from "../theme";

export function Sparkline({ values, label }: { values: (number | null)[]; label: string | null }) {
  const ref = useRef<HTMLCanvasElement>(null);
  const t = useSignal(theme);
  useEffect(() => {
    const canvas = ref.current;
    if (!canvas) return;
    const draw = () => {
      const dpr = devicePixelRatio || 1;
      const w = canvas.clientWidth;
      const h = canvas.clientHeight;
      if (w === 0 || h === 0) return;
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
      const ctx = canvas.getContext("2d");
      if (!ctx) return;
      ctx.scale(dpr, dpr);
      ctx.clearRect(0, 0, w, h);
      const nums = values.filter((v): v is number => v !== null);
      if (nums.length < 2) return;
      const lo = Math.min(0, ...nums);
      const hi = Math.max(...nums);
      const span = hi - lo || 1;
      const x = (i: number) => (i / (values.length - 1)) * (w - 2) + 1;
      const y = (v: number) => h - 2 - ((v - lo) / span) * (h - 4);
      ctx.beginPath();
      let started = false;
      values.forEach((v, i) => {
        if (v === null) {
          started = false;
          return;
        }
        if (started) ctx.lineTo(x(i), y(v));
        else ctx.moveTo(x(i), y(v));
        started = true;
      });
      const accent = cssVar("--accent");
      ctx.strokeStyle = accent;
      ctx.lineWidth = 1.5;
      ctx.lineJoin = "round";
      ctx.stroke();
      // The last point: where "now" is.
      const lastIndex = values.length - 1 - [...values].reverse().findIndex((v) => v !== null);
      const last = values[lastIndex];
      if (last !== null && last !== undefined) {
        ctx.fillStyle = accent;
        ctx.beginPath();
        ctx.arc(x(lastIndex), y(last), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    };
    draw();
    const ro = new ResizeObserver(draw);
    ro.observe(canvas);
    return () => ro.disconnect();
  }, [values, t]);
  // Fewer than two points draw nothing: nothing to announce either.
  return label ? <canvas class="sparkline" ref={ref} role="img" aria-label={label} /> : <canvas class="sparkline" ref={ref} aria-hidden="true" />;
}
