// Live status (docs/webui.md 2, 6): follow GET /api/events (event `status`, at least every
// 0.5 s); when the stream fails, poll GET /api/status every second and try the stream again;
// say "connection lost" when neither has delivered a status for 3 s.
//
// `step` is the pure core: (state, event) -> {state, actions}, with time passed in as numbers
// (milliseconds of a monotonic clock). LiveFeed is the thin shell that owns the EventSource,
// the fetches and the timer, and carries out the actions.

import { ApiError, request } from "./api.js";

export const POLL_INTERVAL_MS = 1000;
export const STREAM_RETRY_MS = 5000;
export const LOST_AFTER_MS = 3000;
// The stream sends at least every 0.5 s: silence this long is a failure even without an error
// event (a stalled proxy, a half-open TCP connection).
export const STREAM_STALL_MS = 2000;
const TICK_MS = 250; // the timer only has to be finer than the intervals above

/** The feed before it starts: counts as fresh, so the banner does not flash at login. */
export function initialState(nowMs) {
  return {
    streamOpen: false, // an EventSource exists (connecting or delivering)
    streaming: false, // the stream has delivered since it opened: no need to poll
    streamHeardAtMs: nowMs, // when the open stream was opened or last delivered
    pollDueAtMs: null, // null: not polling
    pollInFlight: false,
    streamRetryAtMs: null,
    lastStatusAtMs: nowMs,
    lost: false,
  };
}

/**
 * One transition. Events: start, stream-status, stream-error, poll-ok, poll-failed, tick (all
 * with `nowMs`); a tick also drops a stream that was silent for STREAM_STALL_MS. Actions:
 * open-stream, close-stream, poll, lost, found.
 * Invariant: polling runs exactly while the stream is not delivering.
 */
export function step(state, event) {
  const now = event.nowMs;
  const next = { ...state };
  const actions = [];
  switch (event.kind) {
    case "start":
      openStream(next, now, actions);
      break;
    case "stream-status":
      next.streaming = true;
      next.streamHeardAtMs = now;
      next.pollDueAtMs = null;
      next.lastStatusAtMs = now;
      break;
    case "stream-error":
      dropStream(next, now, actions);
      break;
    case "poll-ok":
      next.pollInFlight = false;
      next.lastStatusAtMs = now;
      next.pollDueAtMs = next.streaming ? null : now + POLL_INTERVAL_MS;
      break;
    case "poll-failed":
      next.pollInFlight = false;
      next.pollDueAtMs = next.streaming ? null : now + POLL_INTERVAL_MS;
      break;
    case "tick":
      if (next.streamOpen && now - next.streamHeardAtMs >= STREAM_STALL_MS) {
        dropStream(next, now, actions);
      }
      if (next.pollDueAtMs !== null && now >= next.pollDueAtMs && !next.pollInFlight) {
        next.pollInFlight = true;
        actions.push("poll");
      }
      if (!next.streamOpen && next.streamRetryAtMs !== null && now >= next.streamRetryAtMs) {
        openStream(next, now, actions);
      }
      break;
    default:
      throw new Error(`unknown feed event ${event.kind}`);
  }
  const lost = now - next.lastStatusAtMs >= LOST_AFTER_MS;
  if (lost !== state.lost) {
    actions.push(lost ? "lost" : "found");
  }
  next.lost = lost;
  return { state: next, actions };
}

function openStream(state, now, actions) {
  state.streamOpen = true;
  state.streamHeardAtMs = now;
  state.streamRetryAtMs = null;
  actions.push("open-stream");
}

function dropStream(state, now, actions) {
  state.streamOpen = false;
  state.streaming = false;
  state.pollDueAtMs = state.pollDueAtMs ?? now; // poll at once, unless polling already
  state.streamRetryAtMs = now + STREAM_RETRY_MS;
  actions.push("close-stream");
}

/** The shell: `onStatus(document)`, `onLost(boolean)`; 401 is handled by api.js. */
export class LiveFeed {
  constructor({ onStatus, onLost }) {
    this.onStatus = onStatus;
    this.onLost = onLost;
    this.state = null;
    this.source = null;
    this.timer = null;
  }

  start() {
    this.stop();
    this.state = initialState(performance.now());
    this.timer = window.setInterval(() => this.dispatch({ kind: "tick" }), TICK_MS);
    this.dispatch({ kind: "start" });
  }

  stop() {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
    this.closeStream();
    if (this.state?.lost) {
      this.onLost(false);
    }
    this.state = null;
  }

  dispatch(event) {
    if (this.state === null) {
      return; // stopped: late answers of a previous session change nothing
    }
    const result = step(this.state, { ...event, nowMs: performance.now() });
    this.state = result.state;
    for (const action of result.actions) {
      this.perform(action);
    }
  }

  perform(action) {
    switch (action) {
      case "open-stream":
        this.openStream();
        break;
      case "close-stream":
        this.closeStream();
        break;
      case "poll":
        this.poll();
        break;
      case "lost":
        this.onLost(true);
        break;
      case "found":
        this.onLost(false);
        break;
      default:
        throw new Error(`unknown feed action ${action}`);
    }
  }

  openStream() {
    this.closeStream();
    const source = new EventSource("/api/events");
    source.addEventListener("status", (message) => {
      if (source !== this.source) {
        return;
      }
      const document = parseDocument(message.data);
      if (document !== null) {
        this.dispatch({ kind: "stream-status" });
        this.onStatus(document);
      }
    });
    // EventSource would reconnect by itself, but without telling us when it gives up; we close
    // it and fall back to polling, which also notices a lost session (401).
    source.addEventListener("error", () => {
      if (source === this.source) {
        this.dispatch({ kind: "stream-error" });
      }
    });
    this.source = source;
  }

  closeStream() {
    if (this.source !== null) {
      this.source.close();
      this.source = null;
    }
  }

  async poll() {
    try {
      const document = await request("GET", "/api/status");
      this.dispatch({ kind: "poll-ok" });
      if (this.state !== null && document !== null) {
        this.onStatus(document);
      }
    } catch (error) {
      if (!(error instanceof ApiError)) {
        throw error;
      }
      this.dispatch({ kind: "poll-failed" });
    }
  }
}

function parseDocument(text) {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" ? value : null;
  } catch {
    return null; // a garbled event: the next one (0.5 s later) will do
  }
}
