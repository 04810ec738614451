// The dashboard editor (#/new, #/d/{id}/edit): id, title, range, and panels (metric, kind,
// title, compare, divide_by). Config dashboards are read-only, so editing one saves a copy
// under a new id. The server validates; its message is shown as is.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { dashboardsStore, loadDashboards, metricsStore } from "../catalog";
import { dashboardHref, navigate, replaceRoute, setLeaveGuard, type Route } from "../router";
import { useSignal } from "../signal";
import { showToast } from "../toast";
import { COMPARES, KINDS, PIPELINE_STATS, RANGES, type Dashboard, type Panel, type PanelKind } from "../types";

interface Draft {
  id: string;
  title: string;
  range: string;
  panels: (Panel & { key: number })[];
}

let nextKey = 1;

/** A draft without the rows' React keys: what "changed" compares. */
function strip(d: Draft): unknown {
  return { ...d, panels: d.panels.map(({ key: _key, ...p }) => p) };
}

/** What the server accepts as a dashboard id: 1–63 characters, a lowercase letter first. */
export const ID_PATTERN = "[a-z][a-z0-9_]{0,62}";
const ID_RE = new RegExp(`^${ID_PATTERN}$`);
const ID_MAX = 63;
const ID_RULE = "1–63 characters: lowercase letters, digits and _, starting with a letter (e.g. sales_overview)";

/** An id from a title: "Sales — EU 2024" → "sales_eu_2024"; "2024 plan" → "d_2024_plan". */
export function slug(title: string): string {
  const s = title
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "_")
    .replace(/^_+|_+$/g, "");
  if (!s) return "";
  const id = /^[a-z]/.test(s) ? s : `d_${s}`;
  return id.slice(0, ID_MAX).replace(/_+$/, "");
}

/** `base`, or `base_2`, `base_3`… when taken; always within 63 characters. */
function freeId(base: string, taken: Set<string>): string {
  const fit = (b: string, suffix: string) => `${b.slice(0, ID_MAX - suffix.length).replace(/_+$/, "")}${suffix}`;
  let id = fit(base, "");
  for (let n = 2; taken.has(id); n += 1) id = fit(base, `_${n}`);
  return id;
}

/** Why an id would be refused, or null when the server will take it. */
export function idProblem(id: string): string | null {
  if (!id) return `Give the dashboard an id: ${ID_RULE}.`;
  if (ID_RE.test(id)) return null;
  if (id.length > ID_MAX) return `The id is ${id.length} characters long; at most ${ID_MAX}.`;
  if (/[A-Z]/.test(id) && ID_RE.test(id.toLowerCase())) return `Ids are lowercase: try “${id.toLowerCase()}”.`;
  return `“${id}” is not a valid id: ${ID_RULE}.`;
}

/** The live warning for an id in use: saving would be refused, so say where that dashboard is. */
function takenMessage(id: string, other: Dashboard | undefined): string {
  const what = other ? `“${other.title}”${other.source === "config" ? " (from the config file)" : ""}` : "another dashboard";
  return `The id “${id}” is taken by ${what}: choose another id, or open that dashboard to edit it.`;
}

export default function Editor({ route }: { route: Route }) {
  const dashboards = useSignal(dashboardsStore).data;
  const metrics = useSignal(metricsStore).data;
  const editingId = route.page === "edit" ? route.id : null;
  const existing = editingId ? dashboards?.find((d) => d.id === editingId) : undefined;
  const readOnly = existing?.source === "config";
  const taken = useMemo(() => new Set((dashboards ?? []).map((d) => d.id)), [dashboards]);

  const [draft, setDraft] = useState<Draft | null>(null);
  const [idTouched, setIdTouched] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);

  // Unsaved changes: the draft differs from what it started as. Leaving then asks first (a
  // reload or closing the tab through beforeunload, a link or Back through hashchange).
  const initial = useRef<string | null>(null);
  const leaving = useRef(false);
  const dirty = draft !== null && initial.current !== null && JSON.stringify(strip(draft)) !== initial.current;
  const dirtyRef = useRef(false);
  dirtyRef.current = dirty;
  useEffect(() => {
    const onUnload = (e: BeforeUnloadEvent) => {
      if (!dirtyRef.current || leaving.current) return;
      e.preventDefault();
      e.returnValue = "";
    };
    window.addEventListener("beforeunload", onUnload);
    setLeaveGuard(() => !dirtyRef.current || leaving.current || window.confirm("Leave the editor? Your changes are not saved."));
    return () => {
      window.removeEventListener("beforeunload", onUnload);
      setLeaveGuard(null);
    };
  }, []);

  // Start from the dashboard once it is known (the list may still be loading).
  useEffect(() => {
    if (editingId && !existing) return;
    setError(null);
    setIdTouched(!!existing);
    if (!existing) {
      const blank: Draft = { id: "", title: "", range: "5m", panels: [] };
      initial.current = JSON.stringify(strip(blank));
      setDraft(blank);
      document.title = "New dashboard · Pulseboard";
      return;
    }
    document.title = `Edit ${existing.title} · Pulseboard`;
    const start: Draft = {
      id: existing.source === "config" ? freeId(`${slug(existing.id) || "dashboard"}_copy`, taken) : existing.id,
      title: existing.source === "config" ? `${existing.title} (copy)` : existing.title,
      range: existing.range || "5m",
      panels: existing.panels.map((p) => ({ ...p, key: nextKey++ })),
    };
    initial.current = JSON.stringify(strip(start));
    setDraft(start);
    // Only when the dashboard being edited changes, not when the list reloads.
  }, [editingId, !!existing]);

  if (editingId && dashboards && !existing) {
    return (
      <main class="empty-page">
        <h1>No dashboard “{editingId}”</h1>
        <p>
          <a href="#/new">Create a new one</a>
        </p>
      </main>
    );
  }
  if (!draft || !metrics) return <p class="muted page-loading">Loading…</p>;

  const update = (patch: Partial<Draft>) => setDraft({ ...draft, ...patch });
  const updatePanel = (i: number, patch: Partial<Panel>) =>
    update({ panels: draft.panels.map((p, j) => (j === i ? { ...p, ...patch } : p)) });
  const move = (i: number, by: number) => {
    const panels = [...draft.panels];
    const [p] = panels.splice(i, 1);
    if (p) panels.splice(i + by, 0, p);
    update({ panels });
  };
  const addPanel = () => {
    const first = metrics[0]?.name ?? "pipeline.events_per_second";
    update({ panels: [...draft.panels, { key: nextKey++, metric: first, kind: "stat", title: null, compare: null, divide_by: null }] });
    // Focus the new row's metric select, so keyboard users carry on where they are.
    requestAnimationFrame(() => {
      const rows = document.querySelectorAll<HTMLSelectElement>("[data-testid=editor-metric]");
      rows[rows.length - 1]?.focus();
    });
  };

  const save = async (e: Event) => {
    e.preventDefault();
    const id = draft.id.trim();
    const problem = idProblem(id);
    if (problem) {
      setError(problem);
      document.querySelector<HTMLInputElement>("[data-testid=editor-id]")?.focus();
      return;
    }
    setSaving(true);
    setError(null);
    try {
      const body = {
        title: draft.title.trim() || id,
        range: draft.range,
        panels: draft.panels.map(({ metric, kind, title, compare, divide_by }) => ({
          metric,
          kind,
          title: title?.trim() ? title.trim() : null,
          compare: compare || null,
          divide_by: divide_by || null,
        })),
      };
      // Creating (a new dashboard, a copy, or an edit under another id) must never replace a
      // dashboard that has this id already: the server refuses with 412 then.
      const create = !existing || readOnly || id !== existing.id;
      await api.saveDashboard(id, body, create);
      await loadDashboards();
      // The saved dashboard replaces the editor in the history: Back does not reopen an
      // editor (an empty "New dashboard" after a save).
      leaving.current = true;
      replaceRoute(dashboardHref(id));
    } catch (err) {
      // The server's own message (a 409 or 412 says what to do about it already).
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setSaving(false);
    }
  };

  const remove = async () => {
    if (!existing || readOnly) return;
    setError(null);
    try {
      await api.deleteDashboard(existing.id);
      await loadDashboards();
      leaving.current = true;
      replaceRoute("#/");
      const copy: Dashboard = existing;
      showToast({
        text: `Deleted “${copy.title}”.`,
        action: {
          label: "Undo",
          run: () => {
            void api
              .saveDashboard(copy.id, { title: copy.title, range: copy.range, panels: copy.panels }, true)
              .then(loadDashboards)
              .then(() => navigate(dashboardHref(copy.id)));
          },
        },
      });
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };

  const metricNames = metrics.map((m) => m.name);
  // Saving under an id that another dashboard has would be refused (412): say so while typing.
  const idTrim = draft.id.trim();
  const idTaken = idTrim !== "" && taken.has(idTrim) && (!existing || readOnly || idTrim !== existing.id);
  const idError = idTrim !== "" ? (idProblem(idTrim) ?? (idTaken ? takenMessage(idTrim, dashboards?.find((d) => d.id === idTrim)) : null)) : null;
  return (
    <main class="editor">
      <form onSubmit={save} aria-labelledby="editor-heading" noValidate>
        <div class="toolbar">
          <h1 id="editor-heading">
            {existing ? (readOnly ? `Copy of “${existing.title}”` : `Edit “${existing.title}”`) : "New dashboard"}
            {dirty && <span class="muted small unsaved"> · unsaved changes</span>}
          </h1>
          <div class="toolbar-actions">
            {existing && (
              <a class="btn" href={dashboardHref(existing.id)}>
                Cancel
              </a>
            )}
            {existing && !readOnly && (
              <button type="button" class="btn danger" data-testid="editor-delete" onClick={() => void remove()}>
                Delete
              </button>
            )}
            <button type="submit" class="btn primary" data-testid="editor-save" disabled={saving}>
              {saving ? "Saving…" : readOnly ? "Save as copy" : "Save"}
            </button>
          </div>
        </div>
        {readOnly && (
          <p class="notice" role="note">
            “{existing?.title}” comes from the config file and is read-only here. Saving creates a copy under the id below.
          </p>
        )}
        {error && (
          <p class="error" role="alert" data-testid="editor-error">
            {error}
          </p>
        )}
        <div class="editor-fields">
          <label class="field">
            <span>Title</span>
            <input
              data-testid="editor-title"
              value={draft.title}
              required
              onInput={(e) => {
                const title = (e.currentTarget as HTMLInputElement).value;
                update(idTouched ? { title } : { title, id: slug(title) });
              }}
            />
          </label>
          <label class="field">
            <span>Id</span>
            <input
              data-testid="editor-id"
              value={draft.id}
              pattern={ID_PATTERN}
              maxLength={ID_MAX}
              aria-invalid={idError !== null}
              spellcheck={false}
              aria-describedby="id-help"
              onInput={(e) => {
                setIdTouched(true);
                update({ id: (e.currentTarget as HTMLInputElement).value });
              }}
            />
            <small id="id-help" class="muted">
              {idError ? <span class="field-error" data-testid="editor-id-problem">{idError}</span> : existing && !readOnly ? `A new id saves a copy; the original stays. ${ID_RULE}.` : `Used in the address (#/d/id). ${ID_RULE}.`}
            </small>
          </label>
          <label class="field">
            <span>Initial range</span>
            <select data-testid="editor-range" value={draft.range} onChange={(e) => update({ range: (e.currentTarget as HTMLSelectElement).value })}>
              {RANGES.map((r) => (
                <option key={r} value={r}>
                  last {r}
                </option>
              ))}
            </select>
          </label>
        </div>
        <h2 class="section-title">Panels</h2>
        {draft.panels.length === 0 && <p class="muted">No panels yet.</p>}
        <ol class="editor-panels">
          {draft.panels.map((p, i) => (
            <li key={p.key} class="editor-panel" data-testid="editor-panel">
              <span class="editor-index" aria-hidden="true">
                {i + 1}
              </span>
              <label class="field">
                <span>Metric</span>
                <select data-testid="editor-metric" value={p.metric} onChange={(e) => updatePanel(i, { metric: (e.currentTarget as HTMLSelectElement).value })}>
                  <optgroup label="Metrics">
                    {metricNames.map((n) => (
                      <option key={n} value={n}>
                        {n}
                      </option>
                    ))}
                  </optgroup>
                  <optgroup label="Pipeline">
                    {PIPELINE_STATS.map((s) => (
                      <option key={s} value={`pipeline.${s}`}>
                        pipeline.{s}
                      </option>
                    ))}
                  </optgroup>
                  {!metricNames.includes(p.metric) && !p.metric.startsWith("pipeline.") && <option value={p.metric}>{p.metric} (unknown)</option>}
                </select>
              </label>
              <label class="field">
                <span>Kind</span>
                <select data-testid="editor-kind" value={p.kind} onChange={(e) => updatePanel(i, { kind: (e.currentTarget as HTMLSelectElement).value as PanelKind })}>
                  {KINDS.map((k) => (
                    <option key={k} value={k}>
                      {k === "timeseries" ? "time series" : k}
                    </option>
                  ))}
                </select>
              </label>
              <label class="field grow">
                <span>Title</span>
                <input data-testid="editor-panel-title" value={p.title ?? ""} placeholder={p.metric} onInput={(e) => updatePanel(i, { title: (e.currentTarget as HTMLInputElement).value })} />
              </label>
              <label class="field">
                <span>Compare with</span>
                <select data-testid="editor-compare" value={p.compare ?? ""} onChange={(e) => updatePanel(i, { compare: (e.currentTarget as HTMLSelectElement).value || null })}>
                  <option value="">—</option>
                  {COMPARES.map((c) => (
                    <option key={c} value={c}>
                      {c} ago
                    </option>
                  ))}
                </select>
              </label>
              <label class="field">
                <span>Divide by</span>
                <select data-testid="editor-divide-by" value={p.divide_by ?? ""} onChange={(e) => updatePanel(i, { divide_by: (e.currentTarget as HTMLSelectElement).value || null })}>
                  <option value="">— (none)</option>
                  {metricNames.map((n) => (
                    <option key={n} value={n}>
                      {n}
                    </option>
                  ))}
                </select>
              </label>
              <div class="editor-row-actions">
                <button type="button" class="btn icon" disabled={i === 0} onClick={() => move(i, -1)} aria-label={`Move panel ${i + 1} up`}>
                  ↑
                </button>
                <button type="button" class="btn icon" disabled={i === draft.panels.length - 1} onClick={() => move(i, 1)} aria-label={`Move panel ${i + 1} down`}>
                  ↓
                </button>
                <button type="button" class="btn icon danger" data-testid="editor-remove" onClick={() => update({ panels: draft.panels.filter((_, j) => j !== i) })} aria-label={`Remove panel ${i + 1}`}>
                  ✕
                </button>
              </div>
            </li>
          ))}
        </ol>
        <button type="button" class="btn" data-testid="editor-add-panel" onClick={addPanel}>
          + Add panel
        </button>
      </form>
    </main>
  );
}
