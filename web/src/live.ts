// One live connection per page, shared by every panel. WebSocket first; when a WebSocket cannot
// get through while plain HTTP works (a proxy without upgrade support), Server-Sent Events
// instead. Reconnects by itself with exponential backoff and jitter (capped at 10 s), and
// subscribes again to everything still watched, since a new socket starts with no subscriptions.
import { api, authEpoch, liveUrl } from "./api";
import { Signal } from "./signal";
import type { Current, PipelineMessage } from "./types";

export type ConnState = "connecting" | "live" | "reconnecting";
export type Transport = "ws" | "sse";

export const connection = new Signal<{ state: ConnState; transport: Transport }>({
  state: "connecting",
  transport: "ws",
});

type Handler = (body: Current) => void;
type PipelineHandler = (message: PipelineMessage) => void;

/** Any `pipeline.*` name subscribes to the pipeline stream; this one stands for all of them. */
const PIPELINE_NAME = "pipeline.lag_ms";
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10_000;
/** Heartbeats come every 15 s: silence for much longer means the connection is gone. */
const SILENCE_MS = 40_000;
/** WebSocket attempts that fail while HTTP answers before falling back to SSE. */
const WS_FAILURES_BEFORE_SSE = 2;

class LiveHub {
  private handlers = new Map<string, Set<Handler>>();
  private pipelineHandlers = new Set<PipelineHandler>();
  private last = new Map<string, Current>();
  private lastPipeline: PipelineMessage | null = null;
  private ws: WebSocket | null = null;
  private es: EventSource | null = null;
  private transport: Transport = "ws";
  private attempt = 0;
  private wsFailures = 0;
  private everConnected = false;
  /** The connection went down after it had been up: history may have gaps. */
  private lost = false;
  private started = false;
  private retryTimer: number | undefined;
  private silenceTimer: number | undefined;
  private flushQueued = false;
  private sseReopenTimer: number | undefined;
  /** Names sent on the current connection (a new connection starts empty). */
  private sent = new Set<string>();
  /** Names the server refused (unknown metrics): never sent again. */
  private refused = new Set<string>();
  /** Bumped after a reconnection, so feeds fetch the history they may have missed. */
  readonly reconnected = new Signal(0);

  start(): void {
    if (this.started) return;
    this.started = true;
    authEpoch.subscribe(() => this.restart());
    this.connect();
  }

  subscribe(name: string, handler: Handler): () => void {
    let set = this.handlers.get(name);
    if (!set) {
      set = new Set();
      this.handlers.set(name, set);
    }
    set.add(handler);
    const cached = this.last.get(name);
    if (cached) queueMicrotask(() => set.has(handler) && handler(cached));
    this.want();
    return () => {
      set.delete(handler);
    };
  }

  subscribePipeline(handler: PipelineHandler): () => void {
    this.pipelineHandlers.add(handler);
    this.want();
    return () => {
      this.pipelineHandlers.delete(handler);
    };
  }

  latest(name: string): Current | undefined {
    return this.last.get(name);
  }

  latestPipeline(): PipelineMessage | null {
    return this.lastPipeline;
  }

  private wanted(): string[] {
    const names = [...this.handlers].filter(([, s]) => s.size > 0).map(([n]) => n);
    if (this.pipelineHandlers.size > 0) names.push(PIPELINE_NAME);
    return names.filter((n) => !this.refused.has(n));
  }

  /** Batches the subscriptions of one render into one message. */
  private want(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  private flush(): void {
    const missing = this.wanted().filter((n) => !this.sent.has(n));
    if (missing.length === 0) return;
    if (this.transport === "ws") {
      if (this.ws?.readyState === WebSocket.OPEN) {
        for (const n of missing) this.sent.add(n);
        this.ws.send(JSON.stringify({ subscribe: missing }));
      }
    } else {
      // An EventSource's subscriptions are its URL: open a new one for the longer list.
      window.clearTimeout(this.sseReopenTimer);
      this.sseReopenTimer = window.setTimeout(() => this.openSse(), 30);
    }
  }

  private restart(): void {
    this.closeAll();
    this.attempt = 0;
    // A new key: the failures so far may all have been the missing key, so try WebSocket again.
    this.transport = "ws";
    this.wsFailures = 0;
    this.connect();
  }

  private closeAll(): void {
    window.clearTimeout(this.retryTimer);
    window.clearTimeout(this.silenceTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close();
    }
    this.es?.close();
    this.es = null;
    this.sent.clear();
  }

  private connect(): void {
    if (this.transport === "ws") this.openWs();
    else this.openSse();
  }

  private setState(state: ConnState): void {
    connection.set({ state, transport: this.transport });
  }

  private openWs(): void {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let ws: WebSocket;
    try {
      ws = new WebSocket(`${proto}//${location.host}${liveUrl("/v1/live")}`);
    } catch {
      void this.onFailure(false, 0);
      return;
    }
    this.ws = ws;
    const openedAt = Date.now();
    let opened = false;
    let heard = false;
    ws.onopen = () => {
      opened = true;
      this.sent.clear();
      this.onOpen();
      this.flush();
    };
    ws.onmessage = (event) => {
      heard = true;
      this.attempt = 0;
      this.wsFailures = 0;
      this.onMessage(String(event.data));
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      // A socket that closes at once without a word counts as one that never opened: some
      // proxies accept the upgrade and then drop it.
      const usable = opened && (heard || Date.now() - openedAt > 3000);
      void this.onFailure(usable, event.code === 1013 ? 1000 : 0);
    };
  }

  private openSse(): void {
    this.es?.close();
    this.es = null;
    const names = this.wanted();
    this.sent = new Set(names);
    if (names.length === 0) return; // The endpoint needs at least one name.
    const es = new EventSource(liveUrl("/v1/live/sse", { metrics: names.join(",") }));
    this.es = es;
    es.onopen = () => this.onOpen();
    es.onmessage = (event) => {
      this.attempt = 0;
      this.onMessage(String(event.data));
    };
    es.onerror = () => {
      if (this.es !== es) return;
      // Take reconnection over from EventSource, so that state and backoff are ours.
      es.close();
      this.es = null;
      void this.onFailure(true, 0);
    };
  }

  private onOpen(): void {
    this.setState("live");
    this.armSilence();
    // Only after a loss: an EventSource reopened for a longer list of names missed nothing.
    if (this.lost) this.reconnected.set(this.reconnected.value + 1);
    this.lost = false;
    this.everConnected = true;
  }

  private onMessage(data: string): void {
    this.armSilence();
    let msg: unknown;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    const m = msg as Record<string, unknown>;
    if (typeof m.metric === "string") {
      const body = m as unknown as Current;
      this.last.set(body.metric, body);
      for (const h of this.handlers.get(body.metric) ?? []) h(body);
    } else if (m.pipeline && typeof m.pipeline === "object") {
      const pm = m as unknown as PipelineMessage;
      this.lastPipeline = pm;
      for (const h of this.pipelineHandlers) h(pm);
    } else if (typeof m.error === "string") {
      this.onServerError(m.error);
    }
  }

  /** `unknown metrics ['a', 'b']` drops the whole message: resend it without those names. */
  private onServerError(error: string): void {
    const match = /unknown metrics \[(.*)\]/.exec(error);
    if (!match) {
      console.warn("pulseboard live:", error);
      return;
    }
    for (const q of (match[1] ?? "").matchAll(/'([^']*)'/g)) this.refused.add(q[1] ?? "");
    // Whatever else was in that message was not subscribed either: send all again.
    this.sent.clear();
    this.want();
  }

  private armSilence(): void {
    window.clearTimeout(this.silenceTimer);
    this.silenceTimer = window.setTimeout(() => {
      this.closeAll();
      void this.onFailure(true, 0);
    }, SILENCE_MS);
  }

  private async onFailure(wasUsable: boolean, minDelay: number): Promise<void> {
    window.clearTimeout(this.silenceTimer);
    this.sent.clear();
    if (this.everConnected) this.lost = true;
    this.setState(this.everConnected ? "reconnecting" : "connecting");
    if (this.transport === "ws" && !wasUsable) {
      if ((await this.probe()) === "up") this.wsFailures += 1;
      if (this.wsFailures >= WS_FAILURES_BEFORE_SSE) {
        this.transport = "sse";
        this.attempt = 0;
        this.setState(this.everConnected ? "reconnecting" : "connecting");
        this.connect();
        return;
      }
    }
    const exp = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    this.attempt += 1;
    // Full jitter in the upper half, so that a wall of screens does not reconnect in step.
    const delay = Math.max(minDelay, exp * (0.5 + Math.random() * 0.5));
    window.clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => this.connect(), delay);
  }

  /**
   * Does HTTP get through, with our key? "up" means the WebSocket itself is what fails; "auth"
   * means the key is missing or refused (the app asks for one; not a reason to leave WebSocket).
   */
  private async probe(): Promise<"up" | "down" | "auth"> {
    const name = this.wanted().find((n) => !n.startsWith("pipeline."));
    try {
      if (name) await api.current(name);
      else await api.dashboards();
      return "up";
    } catch (e) {
      const status = (e as { status?: number }).status;
      return status === 401 || status === 403 ? "auth" : "down";
    }
  }
}

export const hub = new LiveHub();
