// Alerts under the recording state on every screen (docs/webui.md 3, 6): each code in plain
// words with what to do, the most urgent first (critical, then the box's order); beyond the
// first ALERTS_SHOWN the rest wait behind one button, so that alerts never push the page's
// content away. A code this page does not know shows a translated sentence naming the code,
// never the box's own English `detail` (tests/gateway/web/test_refusal_codes.py checks every
// code has its text).

import { byId, el, replaceIfChanged, show } from "./dom.js";
import { currentLanguage, key, t, tn } from "./i18n.js";

/** Codes with a fixed text; report_missing, camera_down and camera_refused take a parameter. */
const TEXTS = Object.freeze({
  pin_mismatch: key("alert.pin_mismatch"),
  credentials_withdrawn: key("alert.credentials_withdrawn"),
  card_full: key("alert.card_full"),
  card_missing: key("alert.card_missing"),
  card_read_only: key("alert.card_read_only"),
  card_write_failed: key("alert.card_write_failed"),
  gps_stale: key("alert.gps_stale"),
  report_not_sent: key("alert.report_not_sent"),
  upload_blocked: key("alert.upload_blocked"),
  not_paired: key("alert.not_paired"),
  upload_behind: key("alert.upload_behind"),
  recording_long: key("alert.recording_long"),
  retention_imminent: key("alert.retention_imminent"),
  retention_near: key("alert.retention_near"),
  retention_time_unknown: key("alert.retention_time_unknown"),
  time_conflict: key("alert.time_conflict"),
  evidence_suspect: key("alert.evidence_suspect"),
  unpaired: key("alert.unpaired"),
  no_shift: key("alert.no_shift"),
});

/** Which overview tiles an alert concerns, so those tiles show the alert's tone too. */
export const ALERT_TILES = Object.freeze({
  pin_mismatch: ["tile-uplink"],
  credentials_withdrawn: ["tile-uplink", "tile-box"],
  card_full: ["tile-card"],
  card_missing: ["tile-card"],
  card_read_only: ["tile-card"],
  card_write_failed: ["tile-card"],
  camera_down: ["tile-cameras"],
  camera_refused: ["tile-cameras"],
  gps_stale: ["tile-gps"],
  report_not_sent: ["tile-box"],
  upload_blocked: ["tile-uplink", "tile-card"],
  not_paired: ["tile-uplink", "tile-box"],
  upload_behind: ["tile-card", "tile-uplink"],
  retention_imminent: ["tile-card", "tile-uplink"],
  retention_near: ["tile-card", "tile-uplink"],
  retention_time_unknown: ["tile-card", "tile-gps"],
  time_conflict: ["tile-gps"],
  evidence_suspect: ["tile-card"],
  unpaired: ["tile-uplink", "tile-box"],
});

/** The officer's sentence for one alert; `missingReports` is the status document's count. */
export function alertText(alert, missingReports) {
  if (alert.code === "report_missing") {
    // the count comes from the same document; a detail-only alert still says something
    return missingReports > 0
      ? tn("alert.report_missing", missingReports)
      : t("alert.report_missing_unknown");
  }
  if (alert.code === "camera_down") {
    const camera = typeof alert.camera === "string" ? alert.camera : alert.detail;
    return t("alert.camera_down", { camera });
  }
  if (alert.code === "camera_refused") {
    return t("alert.camera_refused", { camera: alert.detail });
  }
  if (Object.hasOwn(TEXTS, alert.code)) {
    return t(TEXTS[alert.code]);
  }
  return t("alert.other", { code: alert.code }); // never the box's English `detail`
}

export const ALERTS_SHOWN = 2;
let expanded = false; // the officer asked to see every alert

/** Wires the "more alerts" button (once); `rerender()` draws the alerts again. */
export function setupAlerts(rerender) {
  byId("alerts-more").addEventListener("click", () => {
    expanded = !expanded;
    rerender();
  });
}

/** Signed out: the next officer starts with the short list. */
export function resetAlerts(list) {
  expanded = false;
  show(list, false);
  list.replaceChildren();
  delete list.dataset.signature;
  show(byId("alerts-more"), false);
}

/** Replaces the alert list when it changed; hidden when there is nothing to say. */
export function renderAlerts(list, alerts, missingReports) {
  const shown = alerts.map((alert) => ({
    code: alert.code,
    severity: alert.severity,
    text: alertText(alert, missingReports),
  }));
  const folded = expanded ? 0 : Math.max(0, shown.length - ALERTS_SHOWN);
  replaceIfChanged(list, JSON.stringify([currentLanguage(), shown, folded]), () =>
    shown.map((alert, index) => {
      const item = el(
        "li",
        {
          className: "alert",
          testid: "alert",
          data: { code: alert.code, severity: alert.severity, tone: alert.severity },
        },
        [
          el("span", { className: "alert-severity", text: severityLabel(alert.severity) }),
          el("span", { className: "alert-text", text: alert.text }),
        ],
      );
      show(item, index < shown.length - folded);
      return item;
    }),
  );
  show(list, shown.length > 0);
  const more = byId("alerts-more");
  const foldable = shown.length > ALERTS_SHOWN;
  show(more, foldable);
  more.setAttribute("aria-expanded", String(expanded && foldable));
  more.textContent = expanded
    ? t("alerts.less")
    : tn("alerts.more", Math.max(0, shown.length - ALERTS_SHOWN));
}

function severityLabel(severity) {
  return severity === "critical" ? t("alert.severity.critical") : t("alert.severity.warning");
}
