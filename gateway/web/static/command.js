// The top of every screen once signed in (issue 16, docs/webui.md 6): the recording indicator
// (state, elapsed time, incident, no shift) and under it the state's one primary action, full
// width: Start in stand-by, Stop (held) while recording. A refusal shows right under the
// action. The answer to an action carries the status document built after it, which the page
// shows at once instead of waiting for the next status of its feed.

import { request } from "./api.js";
import { byId, setText, setTone, show } from "./dom.js";
import * as fmt from "./format.js";
import { HoldButton } from "./hold.js";
import { formatNumber, key, t } from "./i18n.js";
import { errorText } from "./messages.js";
import { recordingView, shiftRuns } from "./status.js";

const STATE_TEXTS = Object.freeze({
  standby: key("rec.state.standby"),
  recording: key("rec.state.recording"),
  postrecord: key("rec.state.postrecord"),
  unknown: key("rec.state.unknown"),
});

/** The one action a state offers: Stop while recording; else Start (in post-record a new
 * start continues the recording; with no known state the box decides). */
export function primaryAction(state) {
  return state === "recording" ? "stop" : "start";
}

const busy = new Set(); // paths whose request is under way: one press, one request
let receive = () => {};
let hold = null;
let shownHoldMs = 0;

/** Wires Start and the held Stop (once); `receiveStatus(doc)` takes an action's status. */
export function setupCommand(receiveStatus) {
  receive = receiveStatus;
  byId("btn-record-start").addEventListener("click", () => act("/api/record/start"));
  hold = new HoldButton(byId("btn-record-stop"), byId("hold-progress"), {
    onHeld: () => act("/api/record/stop"),
    onShort: () =>
      showMessage(t("rec.hold_short", { seconds: seconds(shownHoldMs) }), "warning"),
  });
}

/** POSTs an action; its answer's status document is shown at once, a refusal under the
 * action. Used by the overview's incident button too. */
export async function act(path) {
  if (busy.has(path)) {
    return;
  }
  show(byId("record-message"), false);
  busy.add(path);
  updateDisabled();
  try {
    const answer = await request("POST", path);
    if (answer !== null && typeof answer.status === "object" && answer.status !== null) {
      receive(answer.status);
    }
  } catch (error) {
    showMessage(errorText(error), "critical");
  } finally {
    busy.delete(path);
    updateDisabled();
  }
}

export function isBusy(path) {
  return busy.has(path);
}

function updateDisabled() {
  byId("btn-record-start").disabled = busy.has("/api/record/start");
  byId("btn-record-stop").disabled = busy.has("/api/record/stop");
}

function showMessage(text, tone) {
  const node = byId("record-message");
  node.textContent = text;
  setTone(node, tone);
  show(node, true);
}

function seconds(holdMs) {
  return formatNumber(holdMs / 1000, { maximumFractionDigits: 1 });
}

/** Draws the indicator and the primary action from one status document. */
export function renderCommand(doc) {
  const view = recordingView(doc);
  byId("rec-panel").dataset.state = view.state;
  setText("rec-state", t(STATE_TEXTS[view.state]));
  const running = view.state === "recording" || view.state === "postrecord";
  setText("rec-elapsed", fmt.clock(view.elapsedS));
  show(byId("rec-elapsed"), running);
  show(byId("rec-flagged"), running && view.flagged);
  show(byId("rec-noshift"), !shiftRuns(doc));
  const action = primaryAction(view.state);
  show(byId("btn-record-start"), action === "start");
  show(byId("btn-record-stop"), action === "stop");
  shownHoldMs = view.holdToStopMs;
  hold?.setHoldMs(shownHoldMs);
  const stop = byId("btn-record-stop");
  stop.dataset.holdMs = String(shownHoldMs);
  setText("hold-hint", shownHoldMs > 0 ? t("rec.hold_hint", { seconds: seconds(shownHoldMs) }) : "");
  show(byId("hold-hint"), shownHoldMs > 0);
  updateDisabled();
}

/** Signed out: nothing of the box shows, no message stays. */
export function resetCommand() {
  show(byId("record-message"), false);
  byId("rec-panel").dataset.state = "unknown";
}
