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
