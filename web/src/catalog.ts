// The config's metrics and the dashboards, loaded once per page (and again after a save or a
// new API key). Panels read metric definitions (window, step) from here.
import { api, ApiError } from "./api";
import { Signal } from "./signal";
import type { Dashboard, MetricDef } from "./types";

export interface Loadable<T> {
  data: T | null;
  error: string | null;
  status?: number;
}

export const metricsStore = new Signal<Loadable<MetricDef[]>>({ data: null, error: null });
export const dashboardsStore = new Signal<Loadable<Dashboard[]>>({ data: null, error: null });

function fail(e: unknown): { error: string; status: number } {
  return e instanceof ApiError ? { error: e.message, status: e.status } : { error: String(e), status: 0 };
}

export async function loadMetrics(): Promise<void> {
  try {
    const body = await api.metrics();
    metricsStore.set({ data: body.metrics, error: null });
  } catch (e) {
    metricsStore.set({ data: metricsStore.value.data, ...fail(e) });
  }
}

export async function loadDashboards(): Promise<void> {
  try {
    const body = await api.dashboards();
    dashboardsStore.set({ data: body.dashboards, error: null });
  } catch (e) {
    dashboardsStore.set({ data: dashboardsStore.value.data, ...fail(e) });
  }
}

export function metricByName(name: string): MetricDef | undefined {
  return metricsStore.value.data?.find((m) => m.name === name);
}
