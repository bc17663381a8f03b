// Texts shared by several screens for values the box sends as codes or numbers.

import { formatNumber, key, t } from "./i18n.js";

/** Trigger sources the fleets configure most; any other name shows as the box sends it. */
const TRIGGER_TEXTS = Object.freeze({
  officer: key("trigger.officer"),
  lights: key("trigger.lights"),
  siren: key("trigger.siren"),
  crash: key("trigger.crash"),
  speed: key("trigger.speed"),
  door: key("trigger.door"),
  button: key("trigger.button"),
  bodycam: key("trigger.bodycam"),
});

/** Who or what started a recording; "" when the box did not say. */
export function triggerText(source) {
  if (typeof source !== "string" || source === "") {
    return "";
  }
  return Object.hasOwn(TRIGGER_TEXTS, source) ? t(TRIGGER_TEXTS[source]) : source;
}

/** The applied fleet configuration's serial, or that none arrived yet (serial 0). */
export function configSerialText(serial) {
  return serial === null || serial === 0
    ? t("box.no_config")
    : t("box.config_number", { serial: formatNumber(serial, { useGrouping: false }) });
}

/** Why files wait to upload (the status document's `waiting_codes`, transport/wait_reasons.py).
 * Every code the box can send has its text (tests/gateway/web/test_refusal_codes.py). */
const WAIT_TEXTS = Object.freeze({
  uploading: key("wait.uploading"),
  starting_shortly: key("wait.starting_shortly"),
  waiting_for_slot: key("wait.waiting_for_slot"),
  budget_used_up: key("wait.budget_used_up"),
  budget_used_up_then_wifi: key("wait.budget_used_up_then_wifi"),
  too_large_for_link: key("wait.too_large_for_link"),
  waiting_for_wifi: key("wait.waiting_for_wifi"),
  waiting_for_uplink: key("wait.waiting_for_uplink"),
  retrying: key("wait.retrying"),
  back_office_waits: key("wait.back_office_waits"),
  unattested: key("wait.unattested"),
  blocked: key("wait.blocked"),
  not_yet_queued: key("wait.not_yet_queued"),
  uplink_not_running: key("wait.uplink_not_running"),
});

/** One wait reason in the officer's words, with the link it names; never the box's English. */
export function waitText(code, link) {
  const name = Object.hasOwn(WAIT_TEXTS, code) ? WAIT_TEXTS[code] : key("wait.other");
  return t(name, { link: link ?? "" });
}

/** Why no uplink runs (the status document's idle `uplink.state`). */
const UPLINK_IDLE_TEXTS = Object.freeze({
  "not paired": key("uplink.idle.not_paired"),
  off: key("uplink.idle.off"),
  "no service endpoint": key("uplink.idle.no_service_endpoint"),
  "pairing unreadable": key("uplink.idle.pairing_unreadable"),
});

export function uplinkIdleText(state) {
  return t(Object.hasOwn(UPLINK_IDLE_TEXTS, state) ? UPLINK_IDLE_TEXTS[state] : key("uplink.idle.other"));
}
