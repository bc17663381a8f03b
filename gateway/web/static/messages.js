// The box's refusals in the officer's words (docs/webui.md 2: "the page translates the code").
//
// Invariants:
// - the box's own English (`message`, `reason`) never reaches the screen: every code the API can
//   send has its text here (tests/gateway/web/test_refusal_codes.py finds the codes in the box's
//   code and checks these tables and both languages); a code this page does not know yet shows
//   a translated sentence naming the code;
// - a 422 `invalid` names its `field`: the text says what that field needs.

import { ApiError } from "./api.js";
import { key, t, tn } from "./i18n.js";

/** The `error` codes of the API, each with its text. */
const ERROR_TEXTS = Object.freeze({
  already_filed: key("error.already_filed"),
  already_held: key("error.already_held"),
  already_paired: key("error.already_paired"),
  bad_json: key("error.bad_json"),
  bad_request: key("error.bad_request"),
  bodycam_taken: key("error.bodycam_taken"),
  box_id_invalid: key("error.box_id_invalid"),
  busy: key("error.busy"),
  card_full: key("error.card_full"),
  card_unusable: key("error.card_unusable"),
  csrf: key("error.csrf"),
  forbidden: key("error.forbidden"),
  held_by_fleet: key("error.held_by_fleet"),
  internal: key("error.internal"),
  invalid: key("error.invalid"),
  last_officer: key("error.last_officer"),
  login_required: key("error.login_required"),
  method_not_allowed: key("error.method_not_allowed"),
  no_officer_id: key("error.no_officer_id"),
  no_shift: key("error.no_shift"),
  not_filed: key("error.not_filed"),
  not_found: key("error.not_found"),
  not_held: key("error.not_held"),
  not_paired: key("error.not_paired"),
  not_recording: key("error.not_recording"),
  pairing_busy: key("error.pairing_busy"),
  pairing_failed: key("error.pairing_failed"),
  pairing_not_saved: key("error.pairing_not_saved"),
  recording_deleted: key("error.recording_deleted"),
  reports_missing: key("error.reports_missing"),
  shift_full: key("error.shift_full"),
  shift_required: key("error.shift_required"),
  stopping: key("error.stopping"),
  too_large: key("error.too_large"),
  too_many_corrections: key("error.too_many_corrections"),
  unauthorized: key("error.unauthorized"),
  unknown_recording: key("error.unknown_recording"),
  unknown_upload: key("error.unknown_upload"),
  unsupported_media_type: key("error.unsupported_media_type"),
  uplink_not_running: key("error.uplink_not_running"),
  wrong_credentials: key("error.wrong_credentials"),
});

/** What a field named by a 422 `invalid` needs. */
const FIELD_TEXTS = Object.freeze({
  acknowledge_missing_reports: key("error.invalid.acknowledge_missing_reports"),
  all_blocked: key("error.invalid.all_blocked"),
  bodycam_serials: key("error.invalid.bodycam_serials"),
  code: key("error.invalid.code"),
  correction_reason: key("error.invalid.correction_reason"),
  file_ids: key("error.invalid.file_ids"),
  informed_afterwards: key("error.invalid.informed_afterwards"),
  informed_at_ms: key("error.invalid.informed_at_ms"),
  not_warned_reason: key("error.invalid.not_warned_reason"),
  officer_id: key("error.invalid.officer_id"),
  premises: key("error.invalid.premises"),
  premises_ground: key("error.invalid.premises_ground"),
  re_pair: key("error.invalid.re_pair"),
  reason: key("error.invalid.reason"),
  warned_beforehand: key("error.invalid.warned_beforehand"),
  what: key("error.invalid.what"),
});

/** Why pairing did not happen (`reason` of 409 `already_paired` and 422 `pairing_failed`). */
const PAIR_REASON_TEXTS = Object.freeze({
  already_paired_here: key("pair.reason.already_paired_here"),
  code_typo: key("pair.reason.code_typo"),
  failed: key("pair.reason.failed"),
  grant_rejected: key("pair.reason.grant_rejected"),
  not_a_code: key("pair.reason.not_a_code"),
  refused_already_paired: key("pair.reason.refused_already_paired"),
  refused_box_id_mismatch: key("pair.reason.refused_box_id_mismatch"),
  refused_code_expired: key("pair.reason.refused_code_expired"),
  refused_code_reused: key("pair.reason.refused_code_reused"),
  refused_code_unknown: key("pair.reason.refused_code_unknown"),
  refused_code_withdrawn: key("pair.reason.refused_code_withdrawn"),
  refused_csr_invalid: key("pair.reason.refused_csr_invalid"),
  refused_malformed_request: key("pair.reason.refused_malformed_request"),
  refused_other: key("pair.reason.refused_other"),
  refused_proof_invalid: key("pair.reason.refused_proof_invalid"),
  refused_rate_limited: key("pair.reason.refused_rate_limited"),
  unreachable: key("pair.reason.unreachable"),
  wrong_server_key: key("pair.reason.wrong_server_key"),
});

/** Why a configuration was not applied (`reason_code`, gateway/fleet_refusals.py). */
const BUNDLE_REASON_TEXTS = Object.freeze({
  already_applied: key("bundle.reason.already_applied"),
  bad_bundle: key("bundle.reason.bad_bundle"),
  deferred: key("bundle.reason.deferred"),
  document_too_large: key("bundle.reason.document_too_large"),
  expired: key("bundle.reason.expired"),
  invalid_document: key("bundle.reason.invalid_document"),
  not_for_this_box: key("bundle.reason.not_for_this_box"),
  not_signed: key("bundle.reason.not_signed"),
  rolled_back: key("bundle.reason.rolled_back"),
  serial_rollback: key("bundle.reason.serial_rollback"),
  tampered: key("bundle.reason.tampered"),
  untrusted: key("bundle.reason.untrusted"),
  version_rollback: key("bundle.reason.version_rollback"),
  wrong_box: key("bundle.reason.wrong_box"),
  release_downgrade: key("bundle.reason.release_downgrade"),
  release_failed_health: key("bundle.reason.release_failed_health"),
  release_not_delegated: key("bundle.reason.release_not_delegated"),
  release_mismatch: key("bundle.reason.release_mismatch"),
  release_missing: key("bundle.reason.release_missing"),
  release_refused: key("bundle.reason.release_refused"),
  release_tampered: key("bundle.reason.release_tampered"),
  release_wrong_seal_key: key("bundle.reason.release_wrong_seal_key"),
  release_no_key: key("bundle.reason.release_no_key"),
  release_install_failed: key("bundle.reason.release_install_failed"),
  no_trust_anchor: key("bundle.reason.no_trust_anchor"),
  release_not_previous: key("bundle.reason.release_not_previous"),
  inbox_item_invalid: key("bundle.reason.inbox_item_invalid"),
});

function lookup(table, code, fallback) {
  return typeof code === "string" && Object.hasOwn(table, code) ? table[code] : fallback;
}

/** The text for a failed call: its code translated, never the box's English. */
export function errorText(error) {
  if (!(error instanceof ApiError)) {
    return t("error.unexpected");
  }
  if (error.status === 423) {
    return lockedText(error.retryAfterS);
  }
  if (error.code === "invalid") {
    return t(lookup(FIELD_TEXTS, error.body?.field, key("error.invalid")));
  }
  if (error.code === "network") {
    return t("error.network");
  }
  if (error.code === "http") {
    return t("error.http", { status: error.status }); // an answer without a JSON body
  }
  const name = lookup(ERROR_TEXTS, error.code, null);
  return name === null ? t("error.untranslated", { code: error.code }) : t(name);
}

/** Why pairing did not happen, from the refusal's `reason` code; else the error's text. */
export function pairingReasonText(error) {
  const reason = error instanceof ApiError ? error.body?.reason : undefined;
  const name = lookup(PAIR_REASON_TEXTS, reason, null);
  return name === null ? errorText(error) : t(name);
}

/** Why a configuration was not applied, from its `reason_code`. */
export function bundleReasonText(code) {
  return t(lookup(BUNDLE_REASON_TEXTS, code, key("bundle.reason.other")));
}

/** 423 locked: how long, in whole minutes rounded up (at least one). */
export function lockedText(retryAfterS) {
  if (retryAfterS === null) {
    return t("error.locked");
  }
  return tn("error.locked_minutes", Math.max(1, Math.ceil(retryAfterS / 60)));
}
