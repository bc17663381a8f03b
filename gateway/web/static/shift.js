// The shift screen (RULES R5, R4): start binds the officer and up to 8 bodycams to the box;
// end refuses with 409 reports_missing (and the list) until the officer writes the reports or
// acknowledges, which the box audits.

import { ApiError, request } from "./api.js";
import { byId, el, setText, setTone, show } from "./dom.js";
import * as fmt from "./format.js";
import { key, t } from "./i18n.js";
import { errorText } from "./messages.js";
import { triggerText } from "./words.js";

export const MAX_BODYCAMS = 8;
export const BODYCAM_SERIAL = /^[A-Za-z0-9._-]{1,64}$/; // docs/api.yaml BodycamSerial

let shift = null; // the last GET /api/shift answer; null before the first
let missing = null; // the recordings of the last 409 reports_missing, shown until the shift ends

function serialInput(index) {
  return byId(`shift-serial-${index}`);
}

/** The serials typed in, trimmed, without blanks and repeats, in the order typed. */
function typedSerials() {
  const serials = [];
  for (let index = 0; index < MAX_BODYCAMS; index += 1) {
    const value = serialInput(index).value.trim();
    if (value !== "" && !serials.includes(value)) {
      serials.push(value);
    }
  }
  return serials;
}

export function setupShift() {
  byId("shift-serial-add").addEventListener("click", revealNextSerial);
  byId("shift-start-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startShift();
  });
  byId("shift-end-form").addEventListener("submit", (event) => {
    event.preventDefault();
    endShift();
  });
}

function revealNextSerial() {
  for (let index = 1; index < MAX_BODYCAMS; index += 1) {
    const input = serialInput(index);
    if (input.hidden) {
      show(input, true);
      input.focus();
      show(byId("shift-serial-add"), index < MAX_BODYCAMS - 1);
      return;
    }
  }
}

async function startShift() {
  const error = byId("shift-start-error");
  show(error, false);
  const serials = typedSerials();
  if (!serials.every((serial) => BODYCAM_SERIAL.test(serial))) {
    error.textContent = t("shift.serial_invalid");
    show(error, true);
    return;
  }
  const submit = byId("shift-start-submit");
  submit.disabled = true;
  try {
    await request("POST", "/api/shift/start", { json: { bodycam_serials: serials } });
    await loadShift();
  } catch (failure) {
    error.textContent = errorText(failure);
    show(error, true);
  } finally {
    submit.disabled = false;
  }
}

async function endShift() {
  const message = byId("shift-end-message");
  show(message, false);
  const submit = byId("shift-end-submit");
  submit.disabled = true;
  const acknowledge = missing !== null && byId("shift-ack").checked;
  try {
    await request("POST", "/api/shift/end", { json: { acknowledge_missing_reports: acknowledge } });
    missing = null;
    clearSerials(); // the next officer types their own bodycams
    showShiftMessage(t("shift.ended"), "ok");
    await loadShift();
  } catch (failure) {
    if (failure instanceof ApiError && failure.code === "reports_missing") {
      missing = await missingRecordings(failure.body);
      renderMissing();
      showShiftMessage(t("shift.reports_first"), "warning");
    } else {
      showShiftMessage(errorText(failure), "critical");
    }
  } finally {
    submit.disabled = false;
  }
}

/**
 * The recordings the 409 names (`missing`: their ids), with time, trigger and duration from
 * GET /api/reports; an id the list does not have (yet) still shows, as its id.
 */
async function missingRecordings(body) {
  const ids = Array.isArray(body?.missing) ? body.missing.filter((id) => typeof id === "string") : [];
  let known = [];
  try {
    const answer = (await request("GET", "/api/reports")) ?? {};
    known = Array.isArray(answer.missing) ? answer.missing : [];
  } catch {
    // the ids alone still tell the officer how many are missing
  }
  return ids.map((id) => known.find((item) => item?.recording_id === id) ?? { recording_id: id });
}

function showShiftMessage(text, tone) {
  const node = byId("shift-end-message");
  node.textContent = text;
  setTone(node, tone);
  show(node, true);
}

/** Fetches the shift and draws it; failures show on the screen, 401 goes to login (api.js). */
export async function loadShift() {
  try {
    shift = (await request("GET", "/api/shift")) ?? {};
  } catch (failure) {
    showShiftMessage(errorText(failure), "critical");
    return;
  }
  renderShift();
}

/** Draws the last known shift (also after a language switch). */
export function renderShift() {
  const active = shift !== null && shift.active === true;
  setText("shift-status", active ? t("shift.active") : t("shift.none"));
  setText("shift-officer", active ? fmt.text(shift.officer_id) : fmt.text(null));
  setText("shift-since", active ? fmt.moment(shift.since_ms) : fmt.text(null));
  const serials = active && Array.isArray(shift.bodycam_serials) ? shift.bodycam_serials : [];
  setText("shift-bodycams", serials.length > 0 ? serials.join(", ") : fmt.text(null));
  // a running shift's officer may change the bodycams: the same form, saying so
  show(byId("shift-start-form"), shift !== null);
  setKey("shift-start-title", active ? key("shift.change_title") : key("shift.start_title"));
  setKey("shift-start-submit", active ? key("shift.change") : key("shift.start"));
  if (active) {
    fillSerials(serials);
  }
  show(byId("shift-end-form"), active);
  if (!active) {
    missing = null;
  }
  renderMissing();
}

/** Shows `name`'s text and remembers the key, so a language switch translates it again. */
function setKey(id, name) {
  const node = byId(id);
  node.dataset.i18n = name;
  node.textContent = t(name);
}

/** The running shift's serials in the inputs, unless the officer is typing there already. */
function fillSerials(serials) {
  const typing = [...Array(MAX_BODYCAMS).keys()].some((i) => serialInput(i).value !== "");
  if (typing) {
    return;
  }
  serials.slice(0, MAX_BODYCAMS).forEach((serial, index) => {
    serialInput(index).value = serial;
    show(serialInput(index), true);
  });
  show(byId("shift-serial-add"), serialInput(MAX_BODYCAMS - 1).hidden);
}

function renderMissing() {
  const list = byId("shift-missing");
  const items = (missing ?? []).map((recording) =>
    el("li", { className: "row", testid: "shift-missing-item" }, [
      el("span", {
        className: "row-title",
        text:
          recording.started_at_ms === undefined
            ? recording.recording_id
            : fmt.moment(recording.started_at_ms),
      }),
      el("span", { className: "row-detail", text: triggerText(recording.trigger_source) }),
      el("span", { className: "row-detail", text: fmt.duration(recording.duration_s) }),
    ]),
  );
  list.replaceChildren(...items);
  show(list, missing !== null);
  show(byId("shift-ack-row"), missing !== null);
  if (missing === null) {
    byId("shift-ack").checked = false;
  }
}

function clearSerials() {
  for (let index = 0; index < MAX_BODYCAMS; index += 1) {
    serialInput(index).value = "";
    show(serialInput(index), index === 0);
  }
  show(byId("shift-serial-add"), true);
}

/** Forget everything of the previous officer (logout, lost session). */
export function resetShift() {
  shift = null;
  missing = null;
  clearSerials();
  show(byId("shift-start-error"), false);
  show(byId("shift-end-message"), false);
  renderShift();
}
