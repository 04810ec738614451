// A panel's frame: title, status badge, headline number, and the kind's body; with `compare`,
// a split view (live half beside the same metric `compare` ago).
import { useEffect } from "preact/hooks";
import { headline, panelStatus } from "../derive";
import type { View } from "../feeds";
import { unitOf, type Unit } from "../format";
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
}

export function panelTitle(p: PanelDef): string {
  if (p.title) return p.title;
  return p.divide_by ? `${p.metric} / ${p.divide_by}` : p.metric;
}

function Body({ kind, view, unit, title, height, max }: { kind: string; view: View; unit: Unit; title: string; height: number; max?: number }) {
  switch (kind) {
    case "timeseries":
      return <TimeSeries view={view} unit={unit} title={title} height={height} />;
    case "bars":
      return <Bars view={view} unit={unit} {...(max !== undefined ? { max } : {})} />;
    case "table":
      return <Table view={view} unit={unit} height={height} />;
    default:
      return null;
  }
}

export function Panel({ panel, rangeMs, connectionDown, onReady, large }: Props) {
  const src = usePanelView(panel.metric, panel.divide_by, rangeMs);
  const view = src.view;
  const h = view ? headline(view) : null;
  const status = panelStatus(view, h, connectionDown);
  const baseAgg = src.num?.agg ?? view?.info.agg ?? "";
  const unit = unitOf(panel.metric, baseAgg, src.num?.field ?? null, !!panel.divide_by);
  const title = panelTitle(panel);
  const isStat = panel.kind === "stat";
  const reference = useReference(src, isStat ? panel.compare : null, isStat ? (h?.windowStart ?? null) : null);
  const half = useHistoryHalf(src, isStat ? null : panel.compare, panel.kind, rangeMs, h?.windowStart ?? null);
  const ready = !!src.error || (!!view && view.known && view.loaded);

  useEffect(() => {
    if (ready) onReady?.();
  }, [ready, onReady]);

  // Charts grow with the screen: a wall display has room for taller ones.
  const height = Math.round(Math.min(large ? 420 : 340, Math.max(180, window.innerHeight * (large ? 0.3 : 0.2))));
  // Bars in a split view share one scale, so the halves compare by length.
  const maxBar =
    panel.kind === "bars" && half?.view && view
      ? Math.max(0, ...rowsByLabel(view).map((r) => r.value ?? 0), ...rowsByLabel(half.view).map((r) => r.value ?? 0))
      : undefined;
  const statusText = STATUS_TEXT[status] ?? status;

  return (
    <section
      class={`panel kind-${panel.kind}${half ? " split" : ""}`}
      data-testid="panel"
      data-metric={panel.metric}
      data-kind={panel.kind}
      data-status={status}
      aria-busy={!ready}
    >
      <header class="panel-head">
        <h2 class="panel-title" data-testid="panel-title" title={panel.divide_by ? `${panel.metric} ÷ ${panel.divide_by}` : panel.metric}>
          {title}
        </h2>
        <span class={`badge badge-${status}`} data-testid="panel-status" title={STATUS_HELP[status]}>
          {statusText}
        </span>
      </header>
      {src.error || view?.error ? (
        <p class="error" role="alert">{src.error ?? view?.error}</p>
      ) : null}
      {view && h ? (
        isStat ? (
          <Stat view={view} h={h} unit={unit} reference={reference} />
        ) : (
          <>
            <div class="panel-headline">
              <Value h={h} unit={unit} size="small" />
              {panel.divide_by && <span class="muted"> of {panel.divide_by}</span>}
            </div>
            <div class={half ? "halves" : ""}>
              <div class="half">
                {half && <p class="half-label">now</p>}
                <Body kind={panel.kind} view={view} unit={unit} title={title} height={height} {...(maxBar !== undefined ? { max: maxBar } : {})} />
              </div>
              {half && (
                <div class="half history" data-testid="panel-history">
                  <p class="half-label">{half.label}</p>
                  {half.view ? (
                    <Body kind={panel.kind} view={half.view} unit={unit} title={`${title}, ${half.label}`} height={height} {...(maxBar !== undefined ? { max: maxBar } : {})} />
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
