// The reports screen (RULES R4, R7, R8; docs/webui.md 4): the recordings of this shift waiting
// for a report, what was filed (reports and warnings), and one form in three modes: the first
// report of a recording, a warning without a recording, a correction of a filed entry. A filed
// report cannot be changed (evidence is never altered): a correction is a later report, the
// first stays. The form checks what it can before sending (report_form.js); the box decides.

import { ApiError, request } from "./api.js";
import { byId, el, setText, setTone, show } from "./dom.js";
import * as fmt from "./format.js";
import { formatNumber, key, t, tn } from "./i18n.js";
import { errorText } from "./messages.js";
import {
  PRIVATE_PREMISES,
  REASON_MAX_CHARS,
  WHAT_MAX_CHARS,
  asksWarned,
  chars,
  formProblems,
  reportBody,
} from "./report_form.js";
import { triggerText } from "./words.js";

const PREMISES = Object.freeze(["public", "home", "private_premises"]);
const GROUNDS = Object.freeze(["consent", "warrant", "none"]);
const STRICTEST = Object.freeze(["informed_afterwards", "premises"]);

let waiting = null; // the recordings of the last GET /api/reports; null before the first
let filed = []; // the reports and warnings filed this shift (last GET)
let required = STRICTEST; // the members the box requires (last GET)
// The form's subject: null (closed), or { mode: "report" | "warning" | "correction", entry }
// (entry: the book entry, null for a new warning).
let form = null;
// A report being written when the session ended (idle timeout): kept in memory only, and given
// back only to the same account after it logs in again; any other login discards it.
let draft = null;

function checkedOf(name, codes) {
  return codes.find((code) => byId(`report-${name}-${code}`).checked) ?? null;
}

function yesNo(name) {
  if (byId(`report-${name}-yes`).checked) {
    return true;
  }
  return byId(`report-${name}-no`).checked ? false : null;
}

/** The tablet's local time typed in the form, as ms since 1970; null when empty or invalid. */
function momentMs(text) {
  const value = text === "" ? Number.NaN : new Date(text).getTime();
  return Number.isFinite(value) ? value : null;
}

function formValues() {
  return {
    what: byId("report-what").value,
    warned: yesNo("warned"),
    reason: byId("report-reason").value,
    informed: yesNo("informed"),
    informedAt: byId("report-informed-at").value,
    informedAtMs: momentMs(byId("report-informed-at").value),
    premises: checkedOf("premises", PREMISES),
    ground: checkedOf("ground", GROUNDS),
    correctionReason: byId("report-correction-reason").value,
  };
}

function setValues(values) {
  byId("report-what").value = values.what;
  byId("report-reason").value = values.reason;
  byId("report-warned-yes").checked = values.warned === true;
  byId("report-warned-no").checked = values.warned === false;
  byId("report-informed-yes").checked = values.informed === true;
  byId("report-informed-no").checked = values.informed === false;
  byId("report-informed-at").value = values.informedAt;
  for (const code of PREMISES) {
    byId(`report-premises-${code}`).checked = values.premises === code;
  }
  for (const code of GROUNDS) {
    byId(`report-ground-${code}`).checked = values.ground === code;
  }
  byId("report-correction-reason").value = values.correctionReason;
}

function entryKind() {
  return form?.entry?.kind ?? "warning";
}

/** Shows the rows the form's mode and its answers so far ask for. */
function updateRows() {
  const values = formValues();
  const warnedAsked = form !== null && asksWarned(form.mode, entryKind());
  show(byId("report-warned-row"), warnedAsked);
  show(byId("report-reason-row"), warnedAsked && values.warned === false);
  show(byId("report-informed-row"), warnedAsked && values.warned === false);
  show(byId("report-informed-at-row"), warnedAsked && values.warned === false && values.informed === true);
  show(byId("report-ground-row"), PRIVATE_PREMISES.includes(values.premises));
  show(byId("report-correction-row"), form?.mode === "correction");
  show(byId("report-informed-optional"), !required.includes("informed_afterwards"));
  show(byId("report-premises-optional"), !required.includes("premises"));
}

export function setupReports() {
  byId("report-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submitForm();
  });
  byId("report-cancel").addEventListener("click", closeForm);
  byId("report-warning-new").addEventListener("click", () => openForm("warning", null));
  byId("report-what").addEventListener("input", updateCounters);
  byId("report-reason").addEventListener("input", updateCounters);
  for (const name of ["warned", "informed", "premises", "ground"]) {
    for (const input of document.querySelectorAll(`#report-form input[name=${name}]`)) {
      input.addEventListener("change", updateRows);
    }
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

function entriesOf(list) {
  return Array.isArray(list) ? list.filter((item) => typeof item?.recording_id === "string") : [];
}

/** Fetches the book and draws the lists. */
export async function loadReports() {
  try {
    const answer = (await request("GET", "/api/reports")) ?? {};
    waiting = entriesOf(answer.missing);
    filed = entriesOf(answer.filed);
    required = Array.isArray(answer.required) ? answer.required : STRICTEST;
  } catch (failure) {
    showFormError(errorText(failure));
    return;
  }
  const subject = form?.entry?.recording_id ?? null;
  const book = form?.mode === "report" ? waiting : filed;
  if (subject !== null && !book.some((item) => item.recording_id === subject)) {
    closeForm(); // filed from elsewhere, or the shift ended (another tablet): nothing to write
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
  const book = saved.mode === "report" ? waiting : filed;
  const entry = book.find((item) => item.recording_id === saved.recordingId) ?? null;
  if (saved.mode !== "warning" && entry === null) {
    return; // filed meanwhile, or the shift ended
  }
  openForm(saved.mode, entry);
  setValues(saved.values);
  updateRows();
  updateCounters();
}

/** A recording the box never saw end (a power cut) reads as cut off, never as still running. */
function durationText(recording) {
  if (recording.duration_s !== null) {
    return fmt.duration(recording.duration_s);
  }
  return recording.interrupted === true ? t("reports.interrupted") : t("reports.running");
}

function entryLabel(entry) {
  const parts =
    entry.kind === "warning"
      ? [t("reports.warning_label"), fmt.moment(entry.started_at_ms)]
      : [fmt.moment(entry.started_at_ms), triggerText(entry.trigger_source), durationText(entry)];
  if (entry.held === true) {
    parts.push(t("reports.held"));
  }
  if (entry.corrections > 0) {
    parts.push(tn("reports.corrections", entry.corrections));
  }
  return parts.join(" \u00b7 ");
}

function renderWaiting() {
  const items = (waiting ?? []).map((recording) => {
    const button = el("button", {
      className: "report-item",
      testid: "report-item",
      text: entryLabel(recording),
      attrs: { type: "button" },
      data: { recordingId: recording.recording_id },
    });
    button.addEventListener("click", () => openForm("report", recording));
    if (form?.entry?.recording_id === recording.recording_id) {
      button.setAttribute("aria-current", "true");
    }
    return el("li", {}, [button]);
  });
  byId("reports-list").replaceChildren(...items);
}

function renderFiled() {
  const items = filed.map((entry) => {
    const correct = el("button", {
      className: "btn btn-secondary",
      testid: "report-correct",
      text: t("report.correct"),
      attrs: { type: "button" },
    });
    correct.addEventListener("click", () => openForm("correction", entry));
    return el(
      "li",
      { className: "report-filed", testid: "report-filed", data: { recordingId: entry.recording_id, kind: entry.kind } },
      [el("span", { text: entryLabel(entry) }), correct],
    );
  });
  byId("reports-filed").replaceChildren(...items);
  show(byId("reports-filed-title"), filed.length > 0);
}

const TITLES = Object.freeze({
  report: { title: key("report.title"), submit: key("report.submit"), hint: null },
  warning: { title: key("report.warning_title"), submit: key("report.submit_warning"), hint: key("report.warning_hint") },
  correction: {
    title: key("report.correction_title"),
    submit: key("report.submit_correction"),
    hint: key("report.correction_hint"),
  },
});

/** Draws the lists and the form's words (also after a language switch) from the last answer. */
export function renderReports() {
  renderWaiting();
  renderFiled();
  const count = waiting?.length ?? 0;
  setText("reports-missing-count", count > 0 ? tn("reports.missing", count) : "");
  show(byId("reports-missing-count"), count > 0);
  show(byId("reports-empty"), waiting !== null && count === 0);
  if (form !== null) {
    const words = TITLES[form.mode];
    setText("report-title", t(words.title));
    setText("report-submit", t(words.submit));
    setText("report-hint", words.hint === null ? "" : t(words.hint));
    show(byId("report-hint"), words.hint !== null);
    setText("report-recording", form.entry === null ? "" : entryLabel(form.entry));
    byId("report-form").dataset.mode = form.mode;
  }
  updateCounters();
}

function openForm(mode, entry) {
  closeForm();
  form = { mode, entry };
  show(byId("report-done"), false);
  show(byId("report-form"), true);
  renderReports();
  updateRows();
  byId("report-what").focus();
}

function closeForm() {
  form = null;
  clearInvalid();
  byId("report-form").reset();
  delete byId("report-form").dataset.mode;
  show(byId("report-error"), false);
  show(byId("report-form"), false);
  updateRows();
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
  informed_afterwards: { input: "report-informed-yes", label: key("report.field.informed") },
  informed_at_ms: { input: "report-informed-at", label: key("report.field.informed_at") },
  premises: { input: "report-premises-public", label: key("report.field.premises") },
  premises_ground: { input: "report-ground-consent", label: key("report.field.ground") },
  correction_reason: { input: "report-correction-reason", label: key("report.field.correction_reason") },
});

/** 422: the field at fault (marked, focused) and what it needs, in the officer's language. */
function showInvalid(failure) {
  const field = FIELDS[failure.body?.field];
  const message = errorText(failure); // what the field needs (messages.js FIELD_TEXTS)
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

function target() {
  const id = form.entry === null ? null : encodeURIComponent(form.entry.recording_id);
  if (form.mode === "warning") {
    return { method: "POST", path: "/api/warnings" };
  }
  if (form.mode === "correction") {
    return { method: "POST", path: `/api/reports/${id}/corrections` };
  }
  return { method: "PUT", path: `/api/reports/${id}` };
}

function doneText(mode, answer) {
  if (mode === "warning") {
    const placed = answer?.position_known === true;
    return t(placed ? key("report.warning_filed_place") : key("report.warning_filed_no_place"));
  }
  return t(mode === "correction" ? key("report.correction_filed") : key("report.filed"));
}

function showDone(text, tone) {
  const done = byId("report-done");
  done.textContent = text;
  setTone(done, tone);
  show(done, true);
}

async function submitForm() {
  if (form === null) {
    return;
  }
  const { mode } = form;
  const values = formValues();
  const problems = formProblems(mode, entryKind(), values, required);
  if (problems.length > 0) {
    showFormError(problems.join(" "));
    return;
  }
  clearInvalid();
  const { method, path } = target();
  const submit = byId("report-submit");
  submit.disabled = true;
  try {
    const answer = await request(method, path, { json: reportBody(mode, entryKind(), values) });
    closeForm();
    showDone(doneText(mode, answer), "ok");
    await loadReports();
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 422) {
      showInvalid(failure);
    } else if (failure instanceof ApiError && (failure.status === 404 || failure.status === 409)) {
      closeForm();
      showDone(errorText(failure), "warning");
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
  } else if (form !== null) {
    draft = {
      user: keepDraftOf,
      mode: form.mode,
      recordingId: form.entry?.recording_id ?? null,
      values: formValues(),
    };
  }
  waiting = null;
  filed = [];
  required = STRICTEST;
  closeForm();
  byId("reports-list").replaceChildren();
  byId("reports-filed").replaceChildren();
  show(byId("reports-filed-title"), false);
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
