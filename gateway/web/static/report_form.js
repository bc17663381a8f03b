// The report form's rules on the page (docs/webui.md 4): what the officer must still fill in,
// and the request body, from the form's values. Pure: values in, texts and bodies out. The box
// decides (gateway/officer/reports_form.py); this only spares the officer a round trip.

import { formatNumber, key, t } from "./i18n.js";

export const WHAT_MAX_CHARS = 4000;
export const REASON_MAX_CHARS = 1000;
export const PRIVATE_PREMISES = Object.freeze(["home", "private_premises"]);

/** Length in Unicode code points, as the box counts (an emoji is one character, not two). */
export function chars(text) {
  return [...text].length;
}

/**
 * The form's modes: the first report of a recording, a warning without a recording, or a
 * correction of an entry (`kind` "recording" or "warning") filed earlier.
 */
export function asksWarned(mode, kind) {
  return mode === "report" || (mode === "correction" && kind === "recording");
}

function textProblems(text, needKey, tooLongKey, max) {
  if (text.trim() === "") {
    return [t(needKey)];
  }
  return chars(text) > max ? [t(tooLongKey, { max: formatNumber(max) })] : [];
}

function warnedProblems(values, required) {
  if (values.warned === null) {
    return [t("report.need_warned")];
  }
  if (values.warned) {
    return [];
  }
  const problems = textProblems(values.reason, key("report.need_reason"), key("report.reason_too_long"), REASON_MAX_CHARS);
  if (values.informed === null && required.includes("informed_afterwards")) {
    problems.push(t("report.need_informed"));
  } else if (values.informed === true && values.informedAtMs === null) {
    problems.push(t("report.need_informed_at"));
  }
  return problems;
}

function premisesProblems(values, required) {
  if (values.premises === null) {
    return required.includes("premises") ? [t("report.need_premises")] : [];
  }
  if (PRIVATE_PREMISES.includes(values.premises) && values.ground === null) {
    return [t("report.need_ground")];
  }
  return [];
}

/**
 * What is wrong with the form's `values` in `mode` (see `reportBody`), as texts in the current
 * language; empty when it may be sent. `required`: the members the box requires
 * (GET /api/reports `required`).
 */
export function formProblems(mode, kind, values, required) {
  const problems = textProblems(values.what, key("report.need_what"), key("report.what_too_long"), WHAT_MAX_CHARS);
  if (asksWarned(mode, kind)) {
    problems.push(...warnedProblems(values, required));
  }
  problems.push(...premisesProblems(values, required));
  if (mode === "correction") {
    problems.push(
      ...textProblems(
        values.correctionReason,
        key("report.need_correction_reason"),
        key("report.correction_reason_too_long"),
        REASON_MAX_CHARS,
      ),
    );
  }
  return problems;
}

/**
 * The request body. `values`: `what`, `warned` (true, false, null), `reason`, `informed` (true,
 * false, null), `informedAtMs` (a number or null), `premises` and `ground` (codes or null),
 * `correctionReason`. Members are sent only in their case: the box refuses them elsewhere.
 */
export function reportBody(mode, kind, values) {
  const body = { what: values.what };
  if (asksWarned(mode, kind)) {
    body.warned_beforehand = values.warned;
    if (!values.warned) {
      body.not_warned_reason = values.reason;
      if (values.informed !== null) {
        body.informed_afterwards = values.informed;
      }
      if (values.informed === true) {
        body.informed_at_ms = values.informedAtMs;
      }
    }
  }
  if (values.premises !== null) {
    body.premises = values.premises;
    if (PRIVATE_PREMISES.includes(values.premises)) {
      body.premises_ground = values.ground;
    }
  }
  if (mode === "correction") {
    body.correction_reason = values.correctionReason;
  }
  return body;
}
