// Light and dark themes: the system's preference until the user picks one with the toggle,
// which is remembered. index.html applies it before the first paint (no flash).
import { Signal } from "./signal";

export type Theme = "light" | "dark";
const KEY = "pulseboard.theme";
const media = window.matchMedia("(prefers-color-scheme: dark)");

function stored(): Theme | null {
  try {
    const v = localStorage.getItem(KEY);
    return v === "light" || v === "dark" ? v : null;
  } catch {
    return null;
  }
}

export const theme = new Signal<Theme>(stored() ?? (media.matches ? "dark" : "light"));

function apply(t: Theme): void {
  document.documentElement.dataset.theme = t;
}
apply(theme.value);
theme.subscribe(apply);

media.addEventListener("change", () => {
  if (!stored()) theme.set(media.matches ? "dark" : "light");
});

export function toggleTheme(): void {
  const next: Theme = theme.value === "dark" ? "light" : "dark";
  try {
    localStorage.setItem(KEY, next);
  } catch {
    // No storage: the choice lasts for this page.
  }
  theme.set(next);
}

/** Colours for canvases, read from the CSS custom properties of the current theme. */
export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export const PALETTE_SIZE = 8;
export function seriesColor(i: number): string {
  return cssVar(`--c${i % PALETTE_SIZE}`);
}
