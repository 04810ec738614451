// The pipeline page: throughput, lag, backlog, late events, dead letters, live clients and
// memory, drawn from /v1/pipeline's history (15 min) plus the live `pipeline` messages; and per
// metric, its label sets and state size.
import { useEffect, useMemo, useReducer, useState } from "preact/hooks";
import { pipelineFeed } from "../feeds";
import { formatFull, formatValue, type Unit } from "../format";
import { connection } from "../live";
import { Chart } from "../panels/Chart";
import { useSignal } from "../signal";
import type { PipelineMetric, Sample } from "../types";

const STATS: { key: keyof Sample; label: string; unit: Unit; help: string }[] = [
  { key: "events_per_second", label: "Events in", unit: "rate", help: "Events accepted by ingest per second" },
  { key: "processed_per_second", label: "Processed", unit: "rate", help: "Events aggregated by the processor per second" },
  { key: "lag_ms", label: "Processing lag", unit: "ms", help: "Age of the newest processed batch while a backlog remains" },
  { key: "backlog_events", label: "Backlog", unit: "count", help: "Accepted events not yet processed" },
  { key: "late_events", label: "Late events", unit: "count", help: "Events for windows already final, since the processor started" },
  { key: "reconciled", label: "Reconciled", unit: "count", help: "Late events applied to history by reconciliation (one per metric a late event feeds), since the processor started" },
  { key: "dead_letters", label: "Dead letters", unit: "count", help: "Rejected events kept with their reason, since the server started" },
  { key: "live_clients", label: "Live clients", unit: "count", help: "Connected WebSocket and SSE clients" },
  { key: "memory_bytes", label: "Processor memory", unit: "bytes", help: "Peak resident memory of the processor" },
];

const CHARTS: { title: string; unit: Unit; keys: [keyof Sample, string][] }[] = [
  { title: "Throughput", unit: "rate", keys: [["events_per_second", "accepted"], ["processed_per_second", "processed"], ["rejected_per_second", "rejected"]] },
  { title: "Processing lag", unit: "ms", keys: [["lag_ms", "lag"]] },
  { title: "Backlog", unit: "count", keys: [["backlog_events", "events"]] },
  { title: "Late events and dead letters (cumulative)", unit: "count", keys: [["late_events", "late"], ["reconciled", "reconciled"], ["dead_letters", "dead letters"]] },
  { title: "Live clients", unit: "count", keys: [["live_clients", "clients"]] },
  { title: "Processor memory", unit: "bytes", keys: [["memory_bytes", "peak RSS"]] },
];

function num(s: Sample, k: keyof Sample): number | null {
  const v = s[k];
  return typeof v === "number" ? v : null;
}

export default function Pipeline() {
  const [, bump] = useReducer((n: number) => n + 1, 0);
  const conn = useSignal(connection);
  const [sort, setSort] = useState<{ key: keyof PipelineMetric; desc: boolean }>({ key: "state_bytes", desc: true });
  useEffect(() => {
    document.title = "Pipeline · Pulseboard";
    let queued = false;
    return pipelineFeed.acquire(() => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        bump(1);
      });
    });
  }, []);
  const samples = pipelineFeed.samples;
  const last = pipelineFeed.latest();
  const version = pipelineFeed.version;
  const xs = useMemo(() => samples.map((s) => s.t), [version]);
  const metrics = useMemo(() => {
    const dir = sort.desc ? -1 : 1;
    return [...pipelineFeed.metrics].sort((a, b) => (a[sort.key] < b[sort.key] ? -1 : a[sort.key] > b[sort.key] ? 1 : 0) * dir);
  }, [version, sort]);
  const stale = conn.state === "reconnecting" || (last !== null && !last.processor_up);
  // The x axis spans what the server kept (up to 15 min), not an empty 15 minutes.
  const xMax = last?.t;
  const xMin = samples[0]?.t;

  return (
    <main class="pipeline" data-testid="pipeline">
      <div class="toolbar">
        <h1>Pipeline</h1>
        <div class="toolbar-actions">
          {last ? (
            <span class={`badge ${last.processor_up ? "badge-open" : "badge-stale"}`} title={last.processor_up ? "The processor reports every tick" : "The processor is not reporting: values are stale"}>
              processor {last.processor_up ? "up" : "down"}
            </span>
          ) : null}
          {last && <span class="muted small">tick {formatValue(last.tick_ms, "ms")}</span>}
        </div>
      </div>
      {pipelineFeed.error && <p class="error" role="alert">{pipelineFeed.error}</p>}
      <div class="stats-grid">
        {STATS.map((s) => {
          const v = last ? num(last, s.key) : null;
          return (
            <div class={`pstat${stale ? " is-stale" : ""}`} data-testid="pipeline-stat" data-stat={s.key} data-value={v === null ? "" : String(v)} key={s.key} title={s.help}>
              <span class="pstat-label">{s.label}</span>
              <span class="pstat-value" title={formatFull(v, s.unit)}>
                {formatValue(v, s.unit)}
              </span>
            </div>
          );
        })}
      </div>
      <div class="pgrid">
        {CHARTS.map((c) => (
          <section class="panel" key={c.title}>
            <header class="panel-head">
              <h2 class="panel-title">{c.title}</h2>
            </header>
            {samples.length > 1 ? (
              <Chart xs={xs} lines={c.keys.map(([k, label]) => ({ label, ys: samples.map((s) => num(s, k)) }))} unit={c.unit} height={180} {...(xMin !== undefined ? { xMin } : {})} {...(xMax !== undefined ? { xMax } : {})} ariaLabel={`${c.title}, last 15 minutes`} />
            ) : (
              <p class="muted chart-empty">{pipelineFeed.loaded ? "Waiting for samples…" : "Loading…"}</p>
            )}
          </section>
        ))}
      </div>
      <section class="panel wide">
        <header class="panel-head">
          <h2 class="panel-title">Metrics: series and state</h2>
          <span class="muted small">
            {metrics.length} metrics · {formatValue(metrics.reduce((a, m) => a + m.label_sets, 0), "count")} label sets · {formatValue(metrics.reduce((a, m) => a + m.state_bytes, 0), "bytes")}
          </span>
        </header>
        <table class="table">
          <thead>
            <tr>
              {(
                [
                  ["name", "metric"],
                  ["label_sets", "label sets"],
                  ["state_bytes", "state size"],
                ] as [keyof PipelineMetric, string][]
              ).map(([k, label]) => (
                <th key={k} scope="col" class={k === "name" ? "" : "num"} aria-sort={sort.key === k ? (sort.desc ? "descending" : "ascending") : "none"}>
                  <button type="button" class="link" onClick={() => setSort({ key: k, desc: sort.key === k ? !sort.desc : k !== "name" })}>
                    {label} {sort.key === k ? (sort.desc ? "↓" : "↑") : ""}
                  </button>
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {metrics.map((m) => (
              <tr key={m.name} data-testid="pipeline-metric" data-metric={m.name}>
                <th scope="row">{m.name}</th>
                <td class="num" data-testid="label-sets" data-value={String(m.label_sets)}>
                  {formatValue(m.label_sets, "count")}
                </td>
                <td class="num" data-testid="state-bytes" data-value={String(m.state_bytes)} title={formatFull(m.state_bytes, "bytes")}>
                  {formatValue(m.state_bytes, "bytes")}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </main>
  );
}
