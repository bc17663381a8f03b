// API errors in the officer's words (docs/webui.md 2: "the page translates the code"). A code
// this page does not know shows the box's own plain-English message.

import { ApiError } from "./api.js";
import { key, t, tn } from "./i18n.js";

const ERROR_TEXTS = Object.freeze({
  network: key("error.network"),
  busy: key("error.busy"),
  csrf: key("error.csrf"),
  forbidden: key("error.forbidden"),
  too_large: key("error.too_large"),
  internal: key("error.internal"),
  wrong_credentials: key("error.wrong_credentials"),
  card_full: key("error.card_full"),
  card_unusable: key("error.card_unusable"),
  not_recording: key("error.not_recording"),
  "not recording": key("error.not_recording"), // the recording routes' older spelling
  no_officer_id: key("error.no_officer_id"),
  shift_active: key("error.shift_active"),
  no_shift: key("error.no_shift"),
  reports_missing: key("error.reports_missing"),
  unknown_recording: key("error.unknown_recording"),
  already_held: key("error.already_held"),
  not_held: key("error.not_held"),
  held_by_fleet: key("error.held_by_fleet"),
  recording_deleted: key("error.recording_deleted"),
  already_filed: key("error.already_filed"),
  not_paired: key("error.not_paired"),
  pairing_busy: key("error.pairing_busy"),
  pairing_not_saved: key("error.pairing_not_saved"),
  box_id_invalid: key("error.box_id_invalid"),
});

/** The text for a failed call: a known code translated, else the box's message, else HTTP. */
export function errorText(error) {
  if (!(error instanceof ApiError)) {
    return t("error.unexpected");
  }
  if (error.status === 423) {
    return lockedText(error.retryAfterS);
  }
  if (Object.hasOwn(ERROR_TEXTS, error.code)) {
    return t(ERROR_TEXTS[error.code]);
  }
  if (error.detail !== "") {
    return error.detail;
  }
  return t("error.http", { status: error.status });
}

/** 423 locked: how long, in whole minutes rounded up (at least one). */
export function lockedText(retryAfterS) {
  if (retryAfterS === null) {
    return t("error.locked");
  }
  return tn("error.locked_minutes", Math.max(1, Math.ceil(retryAfterS / 60)));
}
