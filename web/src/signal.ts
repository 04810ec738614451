// A tiny observable value: the app's few pieces of global state (connection, auth, theme)
// live outside components, so that the live hub and fetches can update them directly.
import { useEffect, useState } from "preact/hooks";

export class Signal<T> {
  private listeners = new Set<(v: T) => void>();
  constructor(private current: T) {}
  get value(): T {
    return this.current;
  }
  set(v: T): void {
    if (Object.is(v, this.current)) return;
    this.current = v;
    for (const l of [...this.listeners]) l(v);
  }
  subscribe(listener: (v: T) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export function useSignal<T>(signal: Signal<T>): T {
  const [, setTick] = useState(0);
  useEffect(() => signal.subscribe(() => setTick((n) => n + 1)), [signal]);
  return signal.value;
}
