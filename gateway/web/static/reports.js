// The reports screen (RULES R4, docs/webui.md 4): the recordings of this shift waiting for a
// report, and the form. A filed report cannot be changed (evidence is never altered), so the
// form checks what it can before sending; the box's 422 answer is shown as it comes.

import { ApiError, request } from "./api.js";
import { byId, el, setText, setTone, show } from "./dom.js";
import * as fmt from "./format.js";
import { formatNumber, key, t, tn } from "./i18n.js";
import { errorText } from "./messages.js";
import { triggerText } from "./words.js";

export const WHAT_MAX_CHARS = 4000;
export const REASON_MAX_CHARS = 1000;

let waiting = null; // the recordings of the last GET /api/reports; null before the first
let selected = null; // the recording the form is for
// A report being written when the session ended (idle timeout): kept in memory only, and given
// back only to the same account after it logs in again; any other login discards it.
let draft = null;

/** Length in Unicode code points, as the box counts (an emoji is one character, not two). */
function chars(text) {
  return [...text].length;
}

/**
 * What is wrong with the form's values, as texts in the current language; empty when it
 * may be sent. Pure: values in, messages out.
 */
export function reportProblems(what, warned, reason) {
  const problems = [];
  if (what.trim() === "") {
    problems.push(t("report.need_what"));
  } else if (chars(what) > WHAT_MAX_CHARS) {
    problems.push(t("report.what_too_long", { max: formatNumber(WHAT_MAX_CHARS) }));
  }
  if (warned === null) {
    problems.push(t("report.need_warned"));
  } else if (!warned && reason.trim() === "") {
    problems.push(t("report.need_reason"));
  } else if (!warned && chars(reason) > REASON_MAX_CHARS) {
    problems.push(t("report.reason_too_long", { max: formatNumber(REASON_MAX_CHARS) }));
  }
  return problems;
}

function warnedChoice() {
  if (byId("report-warned-yes").checked) {
    return true;
  }
  return byId("report-warned-no").checked ? false : null;
}

export function setupReports() {
  const form = byId("report-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    fileReport();
  });
  byId("report-cancel").addEventListener("click", closeForm);
  byId("report-what").addEventListener("input", updateCounters);
  byId("report-reason").addEventListener("input", updateCounters);
  for (const id of ["report-warned-yes", "report-warned-no"]) {
    byId(id).addEventListener("change", () => {
      show(byId("report-reason-row"), warnedChoice() === false);
    });
  }
}

function updateCounters() {
  const what = chars(byId("report-what").value);
  const reason = chars(byId("report-reason").value);
  setText("report-what-count", t("report.count", { n: formatNumber(what), max: formatNumber(WHAT_MAX_CHARS) }));
  setText(
    "report-reason-count",
    t("report.count", { n: formatNumber(reason), max: formatNumber(REASON_MAX_CHARS) }),
  );
}

/** Fetches the waiting recordings and draws the list. */
export async function loadReports() {
  try {
    const answer = (await request("GET", "/api/reports")) ?? {};
    waiting = Array.isArray(answer.missing)
      ? answer.missing.filter((item) => typeof item?.recording_id === "string")
      : [];
  } catch (failure) {
    showFormError(errorText(failure));
    return;
  }
  if (selected !== null && !waiting.some((item) => item.recording_id === selected.recording_id)) {
    closeForm(); // filed from elsewhere (another tablet): nothing left to write here
  }
  renderReports();
  restoreDraft();
}

function restoreDraft() {
  if (draft === null) {
    return;
  }
  const saved = draft;
  draft = null;
  const recording = waiting.find((item) => item.recording_id === saved.recordingId);
  if (recording === undefined) {
    return; // filed meanwhile, or the shift ended
  }
  openForm(recording);
  byId("report-what").value = saved.what;
  byId("report-reason").value = saved.reason;
  byId("report-warned-yes").checked = saved.warned === true;
  byId("report-warned-no").checked = saved.warned === false;
  show(byId("report-reason-row"), saved.warned === false);
  updateCounters();
}

function recordingLabel(recording) {
  return [
    fmt.moment(recording.started_at_ms),
    triggerText(recording.trigger_source),
    recording.duration_s === null ? t("reports.running") : fmt.duration(recording.duration_s),
    recording.held === true ? t("reports.held") : "",
  ]
    .filter((part) => part !== "")
    .join(" \u00b7 ");
}

/** Draws the list (also after a language switch) from the last answer. */
export function renderReports() {
  const list = byId("reports-list");
  const items = (waiting ?? []).map((recording) => {
    const button = el("button", {
      className: "report-item",
      testid: "report-item",
      text: recordingLabel(recording),
      attrs: { type: "button" },
      data: { recordingId: recording.recording_id },
    });
    button.addEventListener("click", () => openForm(recording));
    if (selected?.recording_id === recording.recording_id) {
      button.setAttribute("aria-current", "true");
    }
    return el("li", {}, [button]);
  });
  list.replaceChildren(...items);
  const count = waiting?.length ?? 0;
  setText("reports-missing-count", count > 0 ? tn("reports.missing", count) : "");
  show(byId("reports-missing-count"), count > 0);
  show(byId("reports-empty"), waiting !== null && count === 0);
  if (selected !== null) {
    setText("report-recording", recordingLabel(selected));
  }
  updateCounters();
}

function openForm(recording) {
  selected = recording;
  show(byId("report-done"), false);
  show(byId("report-error"), false);
  show(byId("report-form"), true);
  renderReports();
  byId("report-what").focus();
}

function closeForm() {
  selected = null;
  clearInvalid();
  byId("report-form").reset();
  show(byId("report-reason-row"), false);
  show(byId("report-error"), false);
  show(byId("report-form"), false);
  if (waiting !== null) {
    renderReports();
  }
}

function showFormError(text) {
  const node = byId("report-error");
  node.textContent = text;
  show(node, true);
}

/** The form fields the box may name in a 422 (`field`), with their label's key. */
const FIELDS = Object.freeze({
  what: { input: "report-what", label: key("report.field.what") },
  warned_beforehand: { input: "report-warned-yes", label: key("report.field.warned") },
  not_warned_reason: { input: "report-reason", label: key("report.field.reason") },
});

/** 422: the field at fault (marked, focused) and the box's message about it. */
function showInvalid(failure) {
  const field = FIELDS[failure.body?.field];
  const message = errorText(failure); // what the field needs, in the officer's language
  if (field === undefined) {
    showFormError(message);
    return;
  }
  const input = byId(field.input);
  input.setAttribute("aria-invalid", "true");
  input.focus();
  showFormError(`${t(field.label)}: ${message}`);
}

function clearInvalid() {
  for (const field of Object.values(FIELDS)) {
    byId(field.input).removeAttribute("aria-invalid");
  }
}

async function fileReport() {
  if (selected === null) {
    return;
  }
  const what = byId("report-what").value;
  const warned = warnedChoice();
  const reason = byId("report-reason").value;
  const problems = reportProblems(what, warned, reason);
  if (problems.length > 0) {
    showFormError(problems.join(" "));
    return;
  }
  clearInvalid();
  // not_warned_reason only when not warned: the box refuses a reason next to "yes"
  const body = { what, warned_beforehand: warned };
  if (!warned) {
    body.not_warned_reason = reason;
  }
  const submit = byId("report-submit");
  submit.disabled = true;
  try {
    await request("PUT", `/api/reports/${encodeURIComponent(selected.recording_id)}`, { json: body });
    closeForm();
    const done = byId("report-done");
    done.textContent = t("report.filed");
    setTone(done, "ok");
    show(done, true);
    await loadReports();
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 422) {
      showInvalid(failure);
    } else if (failure instanceof ApiError && (failure.status === 404 || failure.status === 409)) {
      closeForm();
      const done = byId("report-done");
      done.textContent = errorText(failure);
      setTone(done, "warning");
      show(done, true);
      await loadReports();
    } else {
      showFormError(errorText(failure));
    }
  } finally {
    submit.disabled = false;
  }
}

/**
 * Forget everything of the previous officer. `keepDraftOf`: the account whose session ended
 * (not a logout): a report half written is kept for that account's next login.
 */
export function resetReports({ keepDraftOf = null } = {}) {
  if (keepDraftOf === null) {
    draft = null;
  } else if (selected !== null) {
    draft = {
      user: keepDraftOf,
      recordingId: selected.recording_id,
      what: byId("report-what").value,
      warned: warnedChoice(),
      reason: byId("report-reason").value,
    };
  }
  waiting = null;
  closeForm();
  byId("reports-list").replaceChildren();
  show(byId("report-done"), false);
  show(byId("reports-empty"), false);
  show(byId("reports-missing-count"), false);
}

/** After a login: a kept draft survives only for the account that wrote it. */
export function keepDraftFor(user) {
  if (draft !== null && draft.user !== user) {
    draft = null;
  }
}

/** The reminder badge on the navigation: stays while any report is missing. */
export function renderBadge(missingCount) {
  const badge = byId("reports-badge");
  setText("reports-badge", missingCount > 0 ? formatNumber(missingCount) : "");
  badge.setAttribute("aria-label", missingCount > 0 ? tn("reports.missing", missingCount) : "");
  show(badge, missingCount > 0);
}
