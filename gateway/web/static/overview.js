// The overview: under the state and its action (command.js, on every screen) what started the
// recording and Mark as incident, then the tiles: the newest recordings and how far each got,
// cameras, card, upload, GPS, this box. Rendering reads only the status document (status.js).

import { ALERT_TILES } from "./alerts.js";
import { act, isBusy } from "./command.js";
import { byId, el, replaceIfChanged, setText, setTone, show } from "./dom.js";
import * as fmt from "./format.js";
import { currentLanguage, formatNumber, key, t, tn } from "./i18n.js";
import {
  alertsView,
  boxView,
  camerasView,
  gpsView,
  recordingsView,
  recordingView,
  storageView,
  UPLOAD_CLASSES,
  uplinkView,
} from "./status.js";
import { configSerialText, triggerText, uplinkIdleText, waitText } from "./words.js";

const DELIVERY_TEXTS = Object.freeze({
  recording: key("recordings.delivery.recording"),
  on_card: key("recordings.delivery.on_card"),
  uploading: key("recordings.delivery.uploading"),
  at_back_office: key("recordings.delivery.at_back_office"),
  verified: key("recordings.delivery.verified"),
});

const DELIVERY_TONES = Object.freeze({
  recording: "critical",
  on_card: "idle",
  uploading: "warning",
  at_back_office: "warning",
  verified: "ok",
});

const LINK_STATE_TEXTS = Object.freeze({
  up: key("link.up"),
  down: key("link.down"),
  probing: key("link.probing"),
});

const TRANSPORT_TEXTS = Object.freeze({
  https: key("transport.https"),
  h3: key("transport.h3"),
});

const GPS_TEXTS = Object.freeze({
  fix: key("gps.fix"),
  stale: key("gps.stale"),
  no_fix: key("gps.no_fix"),
  no_gpsd: key("gps.no_gpsd"),
});

const TILE_IDS = Object.freeze(["tile-cameras", "tile-card", "tile-uplink", "tile-gps", "tile-box"]);
const FLAG = "/api/record/flag";

/** Wires Mark as incident (once); its answer shows at once, as Start's and Stop's do. */
export function setupOverview() {
  byId("btn-record-flag").addEventListener("click", async () => {
    byId("btn-record-flag").disabled = true;
    await act(FLAG);
    byId("btn-record-flag").disabled = false;
  });
}

/** Draws the whole overview from one status document. */
export function renderOverview(doc) {
  renderRecording(recordingView(doc));
  renderRecordings(recordingsView(doc));
  renderTileTones(alertsView(doc), gpsView(doc));
  renderCameras(camerasView(doc));
  renderStorage(storageView(doc));
  renderUplink(uplinkView(doc));
  renderGps(gpsView(doc));
  renderBox(boxView(doc));
}

/** While a recording runs: what started it, and Mark as incident (until it is one). */
function renderRecording(view) {
  const running = view.state === "recording" || view.state === "postrecord";
  show(byId("rec-detail"), running);
  setText("rec-trigger", t("rec.trigger", { source: triggerText(view.trigger) }));
  show(byId("rec-trigger"), running && view.trigger !== null);
  show(byId("btn-record-flag"), running && !view.flagged);
  byId("btn-record-flag").disabled = isBusy(FLAG);
}

/** The newest recordings, each with how far it got: on the card, uploading (percent), at the
 * back office, verified; incident and held as marks (never why it is held). */
function renderRecordings(recordings) {
  const signature = JSON.stringify([currentLanguage(), recordings]);
  replaceIfChanged(byId("recordings-list"), signature, () => recordings.map(recordingRow));
  show(byId("recordings-none"), recordings.length === 0);
}

function recordingRow(recording) {
  const delivery = t(DELIVERY_TEXTS[recording.delivery], {
    percent: fmt.percent(recording.sentPercent / 100),
  });
  const marks = [
    recording.flagged ? t("recordings.incident") : "",
    recording.held ? t("recordings.held") : "",
  ].filter((mark) => mark !== "");
  return el(
    "li",
    {
      className: "row",
      testid: "recording",
      data: {
        recordingId: recording.recordingId,
        delivery: recording.delivery,
        tone: DELIVERY_TONES[recording.delivery],
      },
    },
    [
      el("span", { className: "row-title", text: fmt.moment(recording.startedAtMs) }),
      el("span", { className: "row-state", testid: "recording-delivery", text: delivery }),
      ...marks.map((mark) => el("span", { className: "chip", text: mark })),
    ],
  );
}

/** Tiles take the tone of their alerts (the box's one judgement); else ok, or idle for GPS
 * while it has no fix but no alert yet (the first 30 s). */
function renderTileTones(alerts, gps) {
  const tones = new Map(TILE_IDS.map((id) => [id, "ok"]));
  if (!gps.fix) {
    tones.set("tile-gps", "idle");
  }
  for (const alert of alerts) {
    for (const tile of ALERT_TILES[alert.code] ?? []) {
      if (tones.get(tile) !== "critical") {
        tones.set(tile, alert.severity);
      }
    }
  }
  for (const [id, tone] of tones) {
    setTone(byId(id), tone);
  }
}

function renderCameras(cameras) {
  const signature = JSON.stringify([currentLanguage(), cameras]);
  replaceIfChanged(byId("cameras-list"), signature, () => cameras.map(cameraRow));
  show(byId("cameras-none"), cameras.length === 0);
}

function cameraRow(camera) {
  const tone = camera.connected ? "ok" : "critical";
  const prerecord =
    camera.prerecordS === null
      ? ""
      : t("cameras.prerecord", {
          filled: fmt.known(camera.prerecordFilledS) ? Math.floor(camera.prerecordFilledS) : 0,
          total: camera.prerecordS,
        });
  const meter = el("meter", {
    className: "prerecord-meter",
    attrs: {
      min: 0,
      max: camera.prerecordS ?? 1,
      value: camera.prerecordFilledS ?? 0,
      "aria-hidden": "true",
    },
  });
  return el("li", { className: "row camera", testid: "camera", data: { camera: camera.name, tone } }, [
    el("span", { className: "row-title", testid: "camera-name", text: camera.name }),
    el("span", {
      className: "row-state",
      testid: "camera-connected",
      text: camera.connected ? t("cameras.connected") : t("cameras.no_video"),
    }),
    el("span", { className: "row-detail", testid: "camera-bitrate", text: fmt.bitrate(camera.bitrateBps) }),
    el("span", { className: "row-detail", testid: "camera-prerecord", text: prerecord }),
    el("span", {
      className: "row-detail",
      testid: "camera-audio",
      text: audioText(camera.audio),
    }),
    meter,
  ]);
}

/** What the camera's sound is doing, in words (issue 15: "beeld en geluid"). */
function audioText(audio) {
  if (audio === "recorded") {
    return t("cameras.audio.recorded");
  }
  if (audio === "off") {
    return t("cameras.audio.off");
  }
  if (audio === "none") {
    return t("cameras.audio.none");
  }
  return "";
}

function renderStorage(view) {
  setText(
    "card-free",
    view.cardBytes === null
      ? fmt.bytes(view.freeBytes)
      : t("card.free_of", { free: fmt.bytes(view.freeBytes), size: fmt.bytes(view.cardBytes) }),
  );
  setText(
    "card-hours",
    view.recordableS === null
      ? t("card.hours_unknown")
      : t("card.hours_left", { duration: fmt.duration(view.recordableS) }),
  );
  const nothingWaits = view.waitingFiles === 0;
  setText(
    "card-waiting",
    nothingWaits
      ? t("card.nothing_waiting")
      : tn("card.files", view.waitingFiles ?? 0, { size: fmt.bytes(view.waitingBytes ?? 0) }),
  );
  setText(
    "card-oldest",
    nothingWaits || view.oldestWaitingS === null
      ? fmt.text(null)
      : t("card.oldest_of", {
          age: fmt.duration(view.oldestWaitingS),
          retention: fmt.duration(view.retentionS),
        }),
  );
  // That recordings are held (RULES S4), never which or why: that is the back office's.
  const held = view.heldRecordings ?? 0;
  setText("card-held", held > 0 ? tn("card.held_count", held) : t("card.none_held"));
}

/** The upload tile's headline: what the officer needs to know first. */
function uplinkHeadline(view) {
  if (view.mode === "not_paired") {
    return t("uplink.not_paired");
  }
  if (view.mode === "idle") {
    return uplinkIdleText(view.state);
  }
  switch (view.state) {
    case "uploading":
      return t("uplink.uploading", {
        link: view.activeLink ?? "",
        transport: transportText(view.transport),
        rate: fmt.bitrate(view.throughputBps),
      });
    case "up":
      return t("uplink.up");
    case "blocked":
      return t("uplink.blocked");
    default:
      return t("uplink.no_link");
  }
}

const UPLINK_TONES = Object.freeze({ uploading: "ok", up: "ok", blocked: "critical" });

function renderUplink(view) {
  show(byId("uplink-details"), view.mode === "running");
  setText("uplink-state", uplinkHeadline(view));
  setTone(byId("uplink-state"), UPLINK_TONES[view.state] ?? "warning");
  const signature = JSON.stringify([currentLanguage(), view.links]);
  replaceIfChanged(byId("uplink-links"), signature, () => view.links.map(linkRow));
  if (view.mode !== "running") {
    return;
  }
  const ids = { P0: "uplink-queue-p0", P1: "uplink-queue-p1", P2: "uplink-queue-p2" };
  for (const name of UPLOAD_CLASSES) {
    const entry = view.queue[name];
    setText(
      ids[name],
      entry.files === null || entry.files === 0
        ? t("uplink.queue_empty")
        : tn("card.files", entry.files, { size: fmt.bytes(entry.bytes ?? 0) }),
    );
  }
  // "All sent in: unknown" says nothing when nothing waits: the row goes.
  const waits = UPLOAD_CLASSES.some((name) => (view.queue[name].files ?? 0) > 0);
  show(byId("uplink-eta-label"), waits);
  show(byId("uplink-eta"), waits);
  setText("uplink-eta", view.etaS === null ? t("uplink.eta_unknown") : fmt.duration(view.etaS));
  setText("uplink-budget", budgetText(view.links));
  setText(
    "uplink-waiting",
    view.waiting.length === 0
      ? t("uplink.waiting_none")
      : view.waiting
          .map((item) => `${waitText(item.code, item.link)} (${formatNumber(item.count)})`)
          .join("; "),
  );
}

function transportText(transport) {
  if (transport === null) {
    return "";
  }
  return Object.hasOwn(TRANSPORT_TEXTS, transport) ? t(TRANSPORT_TEXTS[transport]) : transport;
}

function linkRow(link) {
  let stateText = Object.hasOwn(LINK_STATE_TEXTS, link.state)
    ? t(LINK_STATE_TEXTS[link.state])
    : link.state;
  if (link.pinBlocked) {
    stateText = t("link.not_trusted");
  }
  let tone = link.usable ? "ok" : "idle";
  if (link.pinBlocked) {
    tone = "critical";
  }
  return el("li", { className: "row", testid: "uplink-link", data: { link: link.name, tone } }, [
    el("span", { className: "row-title", text: link.name }),
    el("span", { className: "row-state", text: stateText }),
    el("span", { className: "row-detail", text: transportText(link.transport) }),
    el("span", { className: "row-detail", text: fmt.bitrate(link.throughputBps) }),
  ]);
}

function budgetText(links) {
  const budgets = links.filter((link) => link.budgetBytes !== null);
  if (budgets.length === 0) {
    return t("uplink.no_budget");
  }
  return budgets
    .map((link) =>
      t("uplink.budget_of", {
        link: link.name,
        used: fmt.bytes(link.budgetUsedBytes ?? 0),
        budget: fmt.bytes(link.budgetBytes),
      }),
    )
    .join("; ");
}

function renderGps(view) {
  setText("gps-fix", t(GPS_TEXTS[view.status]));
  setText("gps-age", view.fixAgeS === null ? t("gps.never") : t("gps.ago", { age: fmt.duration(view.fixAgeS) }));
  setText("gps-speed", fmt.speed(view.speedMps));
  setText("gps-position", fmt.position(view.latitudeDeg, view.longitudeDeg));
}

function renderBox(view) {
  setText("box-paired", view.paired ? t("box.is_paired") : t("box.not_paired"));
  setText("box-config-serial", configSerialText(view.configSerial));
  setText("box-vehicle", fmt.text(view.vehicleId));
}
