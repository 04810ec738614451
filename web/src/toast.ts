// One transient message at a time (e.g. "Deleted — Undo"), announced to screen readers.
import { Signal } from "./signal";

export interface Toast {
  text: string;
  action?: { label: string; run: () => void };
}

export const toast = new Signal<Toast | null>(null);
let timer: number | undefined;

export function showToast(t: Toast, ms = 8000): void {
  window.clearTimeout(timer);
  toast.set(t);
  timer = window.setTimeout(() => toast.set(null), ms);
}
