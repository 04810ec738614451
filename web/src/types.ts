// Shapes of the HTTP API's JSON (see docs/API.md); only what the UI reads.

export type Labels = Record<string, string | number | boolean | null>;
export type Status = "open" | "final" | "revised";

export interface Value {
  labels: Labels;
  value: number | null;
  window_start: number;
  window_end: number;
  status: Status;
}

/** Body of GET /v1/metrics/{name} and of a live metric message. */
export interface Current {
  metric: string;
  agg: string;
  window_ms: number;
  every_ms: number | null;
  as_of: number | null;
  stream_time: number | null;
  stale: boolean;
  values: Value[];
}

export interface MetricDef {
  name: string;
  event: string;
  agg: string;
  field: string | null;
  window_ms: number;
  every_ms: number | null;
  group_by: string[];
  where: string | null;
  current: Current | null;
}

export interface Point {
  t: number;
  value: number | null;
  status: Status;
}

export interface Series {
  labels: Labels;
  points: Point[];
}

export interface SeriesBody {
  metric: string;
  agg: string;
  window_ms: number;
  step_ms: number;
  from: number;
  to: number;
  stale: boolean;
  series: Series[];
}

export type PanelKind = "stat" | "timeseries" | "bars" | "table";

export interface Panel {
  metric: string;
  kind: PanelKind;
  title: string | null;
  compare: string | null;
  divide_by: string | null;
}

export interface Dashboard {
  id: string;
  title: string;
  range: string;
  source: "config" | "user";
  updated_ms: number | null;
  panels: Panel[];
}

export interface Sample {
  t: number;
  events_per_second: number;
  rejected_per_second: number;
  processed_per_second: number;
  backlog_events: number;
  lag_ms: number;
  late_events: number;
  reconciled: number;
  dead_letters: number;
  live_clients: number;
  processor_up: boolean;
  memory_bytes: number;
  tick_ms: number;
}

export interface PipelineMetric {
  name: string;
  label_sets: number;
  state_bytes: number;
}

export interface PipelineBody {
  current: Sample | null;
  history: Sample[];
  metrics: PipelineMetric[];
}

/** A live message on the pipeline stream. */
export interface PipelineMessage {
  pipeline: Sample;
  metrics: PipelineMetric[];
}

export const RANGES = ["5m", "15m", "1h", "6h", "24h", "7d"] as const;
export const COMPARES = ["1h", "1d", "7d"] as const;
export const KINDS: PanelKind[] = ["stat", "timeseries", "bars", "table"];

/** Pipeline stats that can be a panel's metric (`pipeline.<stat>`). */
export const PIPELINE_STATS = [
  "events_per_second",
  "processed_per_second",
  "rejected_per_second",
  "backlog_events",
  "lag_ms",
  "late_events",
  "reconciled",
  "dead_letters",
  "live_clients",
  "memory_bytes",
] as const;
export type PipelineStat = (typeof PIPELINE_STATS)[number];
