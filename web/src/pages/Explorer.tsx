// The metric explorer: every metric with its definition and its current value, live; a metric
// can be opened as a chart right here, to look before putting it on a dashboard.
import { useEffect, useMemo, useReducer, useState } from "preact/hooks";
import { loadMetrics, metricsStore } from "../catalog";
import { combine } from "../derive";
import { formatDuration, formatFull, formatValue, parseDuration, unitOf } from "../format";
import { connection, hub } from "../live";
import { Panel } from "../panels/Panel";
import { STATUS_TEXT } from "../panels/kinds";
import { useSignal } from "../signal";
import { RANGES, type Current, type MetricDef } from "../types";

function currentOf(m: MetricDef): Current | null {
  return hub.latest(m.name) ?? m.current;
}

export default function Explorer() {
  const metrics = useSignal(metricsStore);
  const conn = useSignal(connection);
  const [, bump] = useReducer((n: number) => n + 1, 0);
  const [filter, setFilter] = useState("");
  const [open, setOpen] = useState<string | null>(null);
  const [range, setRange] = useState("15m");

  useEffect(() => {
    document.title = "Metrics · Pulseboard";
    void loadMetrics();
  }, []);

  const names = (metrics.data ?? []).map((m) => m.name).join(",");
  useEffect(() => {
    let queued = false;
    const update = () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        bump(1);
      });
    };
    const stops = names ? names.split(",").map((n) => hub.subscribe(n, update)) : [];
    return () => {
      for (const s of stops) s();
    };
  }, [names]);

  const shown = useMemo(() => {
    const q = filter.trim().toLowerCase();
    return (metrics.data ?? []).filter((m) => !q || `${m.name} ${m.event} ${m.agg} ${m.field ?? ""} ${m.group_by.join(" ")} ${m.where ?? ""}`.toLowerCase().includes(q));
  }, [metrics.data, filter]);

  return (
    <main class="explorer">
      <div class="toolbar">
        <h1>Metrics</h1>
        <div class="toolbar-actions">
          <label class="field-inline">
            <span>Filter</span>
            <input type="search" value={filter} placeholder="name, event, field…" onInput={(e) => setFilter((e.currentTarget as HTMLInputElement).value)} />
          </label>
        </div>
      </div>
      {metrics.error && <p class="error" role="alert">{metrics.error}</p>}
      {!metrics.data && !metrics.error && <p class="muted">Loading…</p>}
      <div class="table-wrap">
        <table class="table">
          <thead>
            <tr>
              <th scope="col">metric</th>
              <th scope="col">event</th>
              <th scope="col">aggregation</th>
              <th scope="col">window</th>
              <th scope="col">every</th>
              <th scope="col">group by</th>
              <th scope="col">filter</th>
              <th scope="col" class="num">current</th>
              <th scope="col">status</th>
              <th scope="col">
                <span class="sr-only">actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {shown.map((m) => {
              const cur = currentOf(m);
              const unit = unitOf(m.name, m.agg, m.field);
              const value = cur ? combine(m.agg, cur.values.map((v) => v.value)) : null;
              const shownValue = cur && cur.values.length === 0 && (m.agg === "count" || m.agg === "sum" || m.agg === "distinct") ? 0 : value;
              const status = !cur ? "empty" : cur.stale || conn.state === "reconnecting" ? "stale" : cur.values.length ? (cur.values[0]?.status ?? "open") : "open";
              const isOpen = open === m.name;
              return [
                <tr key={m.name} data-testid="metric-row" data-metric={m.name}>
                  <th scope="row">
                    <code>{m.name}</code>
                  </th>
                  <td>{m.event}</td>
                  <td>
                    {m.agg}
                    {m.field ? <span class="muted">({m.field})</span> : null}
                  </td>
                  <td>{formatDuration(m.window_ms)}</td>
                  <td>{m.every_ms ? formatDuration(m.every_ms) : <span class="muted">tumbling</span>}</td>
                  <td>{m.group_by.length ? m.group_by.join(", ") : <span class="muted">—</span>}</td>
                  <td>{m.where ? <code>{m.where}</code> : <span class="muted">—</span>}</td>
                  <td class="num" data-testid="metric-value" data-value={shownValue === null ? "" : String(shownValue)} title={formatFull(shownValue, unit)}>
                    {formatValue(shownValue, unit)}
                    {cur && cur.values.length > 1 ? <span class="muted small"> ({cur.values.length} label sets)</span> : null}
                  </td>
                  <td>
                    <span class={`badge badge-${status}`}>{STATUS_TEXT[status]}</span>
                  </td>
                  <td>
                    <button type="button" class="btn small" aria-expanded={isOpen} onClick={() => setOpen(isOpen ? null : m.name)}>
                      {isOpen ? "Hide" : "Chart"}
                    </button>
                  </td>
                </tr>,
                isOpen ? (
                  <tr key={`${m.name}-chart`} class="explorer-chart">
                    <td colSpan={10}>
                      <label class="field-inline">
                        <span>Range</span>
                        <select value={range} onChange={(e) => setRange((e.currentTarget as HTMLSelectElement).value)}>
                          {RANGES.map((r) => (
                            <option key={r} value={r}>
                              last {r}
                            </option>
                          ))}
                        </select>
                      </label>
                      <Panel panel={{ metric: m.name, kind: "timeseries", title: null, compare: null, divide_by: null }} rangeMs={parseDuration(range) ?? 900_000} connectionDown={conn.state === "reconnecting"} />
                    </td>
                  </tr>
                ) : null,
              ];
            })}
            {metrics.data && shown.length === 0 && (
              <tr>
                <td colSpan={10} class="muted empty-row" role="status">
                  {filter.trim() ? `No metric matches “${filter.trim()}”.` : "The config defines no metrics."}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </main>
  );
}
