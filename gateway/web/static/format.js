// Numbers, sizes and durations as the officer reads them, in the chosen language. Pure apart
// from reading the current dictionary; every function takes plain numbers with units in the
// parameter name and returns a string; null/undefined becomes the "unknown" dash.

import { currentLocale, formatNumber, t } from "./i18n.js";

const KILO = 1000; // decimal units, as printed on the memory card
const UNKNOWN = "\u2014"; // an em dash: a fact the box did not report

export function known(value) {
  return typeof value === "number" && Number.isFinite(value);
}

/** Elapsed recording time: mm:ss under an hour, h:mm:ss from then on. */
export function clock(seconds) {
  if (!known(seconds) || seconds < 0) {
    return "00:00";
  }
  const whole = Math.floor(seconds);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const secs = whole % 60;
  const mmss = `${String(minutes).padStart(2, "0")}:${String(secs).padStart(2, "0")}`;
  return hours > 0 ? `${hours}:${mmss}` : mmss;
}

/**
 * A duration in the largest two units that matter, the smaller left out when zero: "45 s",
 * "12 min", "3 h 5 min", "3 h", "2 d 4 h", "28 d".
 */
export function duration(seconds) {
  if (!known(seconds)) {
    return UNKNOWN;
  }
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) {
    return t("fmt.seconds", { n: whole });
  }
  if (whole < 3600) {
    return t("fmt.minutes", { n: Math.floor(whole / 60) });
  }
  if (whole < 86400) {
    const hours = Math.floor(whole / 3600);
    const minutes = Math.floor((whole % 3600) / 60);
    return minutes === 0 ? t("fmt.hours", { h: hours }) : t("fmt.hours_minutes", { h: hours, m: minutes });
  }
  const days = Math.floor(whole / 86400);
  const hours = Math.floor((whole % 86400) / 3600);
  return hours === 0 ? t("fmt.days", { d: days }) : t("fmt.days_hours", { d: days, h: hours });
}

/** Bytes in decimal units, one decimal from GB on or below 10: "3.2 GB", "640 MB". */
export function bytes(count) {
  if (!known(count)) {
    return UNKNOWN;
  }
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= KILO && unit < units.length - 1) {
    value /= KILO;
    unit += 1;
  }
  const digits = unit >= 3 || (unit > 0 && value < 10) ? 1 : 0;
  const number = formatNumber(value, { maximumFractionDigits: digits });
  return `${number} ${units[unit]}`;
}

export function bitrate(bitsPerSecond) {
  if (!known(bitsPerSecond)) {
    return UNKNOWN;
  }
  if (bitsPerSecond >= 1e6) {
    const number = formatNumber(bitsPerSecond / 1e6, { maximumFractionDigits: 1 });
    return t("fmt.mbit_s", { n: number });
  }
  return t("fmt.kbit_s", { n: formatNumber(Math.round(bitsPerSecond / 1e3)) });
}

export function speed(metresPerSecond) {
  if (!known(metresPerSecond)) {
    return UNKNOWN;
  }
  return t("fmt.km_h", { n: formatNumber(Math.round(metresPerSecond * 3.6)) });
}

/** Degrees with 5 decimals (about a metre): what an officer would read out on the radio. */
export function position(latitudeDeg, longitudeDeg) {
  if (!known(latitudeDeg) || !known(longitudeDeg)) {
    return UNKNOWN;
  }
  const options = { minimumFractionDigits: 5, maximumFractionDigits: 5 };
  return `${formatNumber(latitudeDeg, options)}  ${formatNumber(longitudeDeg, options)}`;
}

export function percent(fraction) {
  if (!known(fraction)) {
    return UNKNOWN;
  }
  return formatNumber(fraction, { style: "percent", maximumFractionDigits: 0 });
}

/** A wall-clock moment (ISO 8601 or epoch ms) as local date and time. */
export function moment(value) {
  const date = typeof value === "number" ? new Date(value) : new Date(String(value ?? ""));
  if (Number.isNaN(date.getTime())) {
    return UNKNOWN;
  }
  return new Intl.DateTimeFormat(currentLocale(), {
    dateStyle: "short",
    timeStyle: "short",
  }).format(date);
}

export function text(value) {
  return typeof value === "string" && value !== "" ? value : UNKNOWN;
}
