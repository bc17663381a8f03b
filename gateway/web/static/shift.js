// The shift screen (RULES R5, R4): start binds the officer and up to 8 bodycams to the box; a
// second officer joins the running shift the same way (a duo patrol: at most two officers, a
// bodycam belongs to one of them) and one of two may leave it; end refuses with 409 reports_missing (and the list) until
// the officer writes the reports or acknowledges, which the box audits.

import { ApiError, request } from "./api.js";
import { byId, el, setText, setTone, show } from "./dom.js";
import * as fmt from "./format.js";
import { key, t } from "./i18n.js";
import { errorText } from "./messages.js";
import { shiftRuns } from "./status.js";
import { triggerText } from "./words.js";

export const MAX_BODYCAMS = 8;
export const BODYCAM_SERIAL = /^[A-Za-z0-9._-]{1,64}$/; // docs/api.yaml BodycamSerial

let shift = null; // the last GET /api/shift answer; null before the first
let missing = null; // the recordings of the last 409 reports_missing, shown until the shift ends
let accountOfficerId = ""; // the logged-in account's service number (GET /api/session)

/** The service number of the account now logged in: whose bodycams the form shows. */
export function setShiftAccount(officerId) {
  accountOfficerId = typeof officerId === "string" ? officerId : "";
}

/**
 * Who works the shift with which bodycams, as one string: the page reloads the shift screen
 * when it changes (a shift started or ended, a partner joined, bodycams changed elsewhere).
 */
export function shiftSignature(doc) {
  if (!shiftRuns(doc)) {
    return "none";
  }
  const running = Array.isArray(doc.shift.officers) ? doc.shift.officers : [];
  const parts = running.map((officer) => {
    const serials = Array.isArray(officer?.bodycam_serials) ? officer.bodycam_serials : [];
    return `${officer?.officer_id}:${serials.join(",")}`;
  });
  return parts.length > 0 ? parts.join(";") : "sealed";
}

/** The officers of the last shift answer, each `{officer_id, bodycam_serials}`. */
function officers() {
  return shift !== null && Array.isArray(shift.officers) ? shift.officers : [];
}

/** What the start form does now: start, join, change (my bodycams), or nothing (full). */
function formMode() {
  if (shift === null || shift.active !== true || officers().length === 0) {
    return "start"; // no shift, or one the box knows only sealed since a restart: resume it
  }
  if (officers().some((officer) => officer?.officer_id === accountOfficerId)) {
    return "change";
  }
  const max = Number.isInteger(shift.max_officers) ? shift.max_officers : 2;
  return officers().length < max ? "join" : "full";
}

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
  byId("shift-leave-submit").addEventListener("click", leaveShift);
}

/** One officer of a duo goes off duty; the colleague works the shift on. */
async function leaveShift() {
  const button = byId("shift-leave-submit");
  button.disabled = true;
  try {
    await request("POST", "/api/shift/leave", { json: {} });
    clearSerials();
    showShiftMessage(t("shift.left"), "ok");
    await loadShift();
  } catch (failure) {
    showShiftMessage(errorText(failure), "critical");
  } finally {
    button.disabled = false;
  }
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

const FORM_KEYS = Object.freeze({
  start: [key("shift.start_title"), key("shift.start")],
  join: [key("shift.join_title"), key("shift.join")],
  change: [key("shift.change_title"), key("shift.change")],
});

/** The headline: no shift, a running one, one known only sealed since a restart, or full. */
function statusText(active, mode) {
  if (!active) {
    return t("shift.none");
  }
  if (officers().length === 0) {
    return t("shift.restarted");
  }
  return mode === "full" ? t("shift.full") : t("shift.active");
}

/** Draws the last known shift (also after a language switch). */
export function renderShift() {
  const active = shift !== null && shift.active === true;
  const mode = formMode();
  setText("shift-status", statusText(active, mode));
  renderOfficers(active);
  setText("shift-since", active ? fmt.moment(shift.since_ms) : fmt.text(null));
  // the same form starts, joins, or changes my bodycams, saying which; a full shift hides it
  show(byId("shift-start-form"), shift !== null && mode !== "full");
  if (mode !== "full") {
    setKey("shift-start-title", FORM_KEYS[mode][0]);
    setKey("shift-start-submit", FORM_KEYS[mode][1]);
  }
  if (mode === "change") {
    const mine = officers().find((officer) => officer?.officer_id === accountOfficerId);
    fillSerials(Array.isArray(mine?.bodycam_serials) ? mine.bodycam_serials : []);
  }
  show(byId("shift-end-form"), active);
  show(byId("shift-leave-submit"), mode === "change" && officers().length > 1);
  if (!active) {
    missing = null;
  }
  renderMissing();
}

/** One row per officer of the shift: the service number and the bodycams they carry. */
function renderOfficers(active) {
  const list = byId("shift-officers");
  const rows = (active ? officers() : []).map((officer) => {
    const serials = Array.isArray(officer?.bodycam_serials) ? officer.bodycam_serials : [];
    return el("li", { className: "row", testid: "shift-officer-item" }, [
      el("span", { className: "row-title", text: fmt.text(officer?.officer_id) }),
      el("span", {
        className: "row-detail",
        testid: "shift-officer-bodycams",
        text: serials.length > 0 ? serials.join(", ") : t("shift.no_bodycams"),
      }),
    ]);
  });
  list.replaceChildren(...rows);
  show(byId("shift-officers-none"), rows.length === 0);
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
  accountOfficerId = "";
  missing = null;
  clearSerials();
  show(byId("shift-start-error"), false);
  show(byId("shift-end-message"), false);
  renderShift();
}
