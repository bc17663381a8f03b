// The status document (docs/webui.md 3, schema in docs/api.yaml) read into what the overview
// shows. Pure: plain objects in, plain objects out; the screens turn these into DOM.
//
// The document comes from the box, so every member is checked before use: a missing or
// malformed member shows as "unknown" (null), never as an exception that blanks the page.

function object(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? value : {};
}

function list(value) {
  return Array.isArray(value) ? value : [];
}

function number(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function string(value) {
  return typeof value === "string" ? value : null;
}

const RECORDING_STATES = new Set(["standby", "recording", "postrecord"]);

export const DEFAULT_HOLD_TO_STOP_MS = 1500; // the box's default ([webui] hold_to_stop_ms)

/** {state, elapsedS, trigger, flagged, holdToStopMs}; state is "unknown" when the box did not
 * say; without a hold time from the box the default holds (a tap never stops by accident). */
export function recordingView(doc) {
  const recording = object(doc.recording);
  const state = string(recording.state) ?? string(doc.state);
  const holdMs = number(recording.hold_to_stop_ms);
  return {
    state: RECORDING_STATES.has(state) ? state : "unknown",
    elapsedS: number(recording.elapsed_s),
    trigger: string(recording.trigger_source),
    flagged: recording.flagged === true,
    holdToStopMs: holdMs !== null && holdMs >= 0 ? holdMs : DEFAULT_HOLD_TO_STOP_MS,
  };
}

const DELIVERIES = new Set(["recording", "on_card", "uploading", "at_back_office", "verified"]);

/** The newest recordings: [{recordingId, startedAtMs, delivery, sentPercent, held, flagged}]
 * in the box's order (newest first); an unknown delivery reads as on_card. */
export function recordingsView(doc) {
  return list(doc.recordings)
    .map(object)
    .filter((item) => typeof item.recording_id === "string")
    .map((item) => ({
      recordingId: item.recording_id,
      startedAtMs: number(item.started_at_ms),
      delivery: DELIVERIES.has(item.delivery) ? item.delivery : "on_card",
      sentPercent: number(item.sent_percent) ?? 0,
      held: item.held === true,
      flagged: item.flagged === true,
    }));
}

/** [{code, severity, detail, ...members}], critical first, in the box's order otherwise. */
export function alertsView(doc) {
  const alerts = list(doc.alerts)
    .map(object)
    .filter((alert) => typeof alert.code === "string")
    .map((alert) => ({
      ...alert,
      severity: alert.severity === "critical" ? "critical" : "warning",
      detail: string(alert.detail) ?? "",
    }));
  const rank = (alert) => (alert.severity === "critical" ? 0 : 1);
  return alerts.sort((a, b) => rank(a) - rank(b));
}

/** [{name, connected, bitrateBps, prerecordFilledS, prerecordS, audio}] sorted by name. */
export function camerasView(doc) {
  const cameras = doc.cameras;
  const entries = Array.isArray(cameras)
    ? cameras.map(object).map((camera) => [string(camera.name) ?? "?", camera])
    : Object.entries(object(cameras)).map(([name, camera]) => [name, object(camera)]);
  return entries
    .map(([name, camera]) => ({
      name,
      connected: camera.connected === true,
      bitrateBps: number(camera.bitrate_bps),
      prerecordFilledS: number(camera.prerecord_filled_s),
      prerecordS: number(camera.prerecord_s),
      audio: ["recorded", "off", "none"].includes(camera.audio) ? camera.audio : null,
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function storageView(doc) {
  const storage = object(doc.storage);
  return {
    cardBytes: number(storage.card_total_bytes),
    freeBytes: number(storage.card_free_bytes),
    waitingFiles: number(storage.waiting_files),
    waitingBytes: number(storage.waiting_bytes),
    oldestWaitingS: number(storage.oldest_waiting_age_s),
    retentionS: number(storage.retention_s),
    heldRecordings: number(storage.held_recordings),
    recordableS: number(storage.recordable_s),
  };
}

export const UPLOAD_CLASSES = Object.freeze(["P0", "P1", "P2"]);
export const NOT_PAIRED = "not paired";
const RUNNING_UPLINK_STATES = new Set(["uploading", "up", "blocked", "down"]);

/** Bits per second from the box's megabits (per link) or bytes (total) per second. */
function megabitsToBps(value) {
  const mbit = number(value);
  return mbit === null ? null : mbit * 1e6;
}

function bytesToBps(value) {
  const perSecond = number(value);
  return perSecond === null ? null : perSecond * 8;
}

/**
 * The upload side. `mode`: "not_paired" (no pairing: nothing can leave the box), "idle" (no
 * uplink runs; `state` says why, as a code) or "running" with `state` uploading | up | blocked |
 * down, the links, the queue by class, throughput, ETA and why files wait (codes with a link).
 */
export function uplinkView(doc) {
  const uplink = object(doc.uplink);
  const state = string(uplink.state) ?? "";
  const empty = { links: [], queue: {}, etaS: null, throughputBps: null, waiting: [] };
  if (state === NOT_PAIRED) {
    return { ...empty, mode: "not_paired", state, reason: null };
  }
  if (!RUNNING_UPLINK_STATES.has(state)) {
    return { ...empty, mode: "idle", state, reason: string(uplink.reason) };
  }
  const uploading = list(uplink.uploading).map(object);
  const transportOf = (name) =>
    string(uploading.find((upload) => upload.link === name)?.transport) ?? null;
  const queue = object(uplink.queue);
  return {
    mode: "running",
    state,
    reason: null,
    links: list(uplink.links)
      .map(object)
      .map((link) => {
        const name = string(link.name) ?? "?";
        return {
          name,
          state: string(link.state) ?? "",
          usable: link.usable === true,
          pinBlocked: link.pin_blocked === true,
          transport: transportOf(name),
          throughputBps: megabitsToBps(link.goodput_mbit_s),
          budgetUsedBytes: number(link.budget_used_bytes),
          budgetBytes: number(link.monthly_cap_bytes),
        };
      }),
    activeLink: string(uplink.active_link),
    transport: string(uplink.transport),
    throughputBps: bytesToBps(uplink.throughput_bytes_per_s),
    queue: Object.fromEntries(
      UPLOAD_CLASSES.map((name) => {
        const entry = object(queue[name]);
        return [name, { files: number(entry.files), bytes: number(entry.bytes) }];
      }),
    ),
    etaS: number(uplink.eta_s),
    waiting: list(uplink.waiting_codes)
      .map(object)
      .filter((item) => string(item.code) !== null && number(item.count) !== null)
      .map((item) => ({ code: item.code, link: string(item.link), count: item.count })),
  };
}

const GPS_STATUSES = new Set(["no_gpsd", "no_fix", "fix", "stale"]);

/** {status, fix, fixAgeS, speedMps, latitudeDeg, longitudeDeg}; status: no_gpsd | no_fix | fix
 * | stale (an unknown one reads as no_fix). */
export function gpsView(doc) {
  const gps = object(doc.gps);
  const position = object(gps.position);
  return {
    status: GPS_STATUSES.has(gps.status) ? gps.status : "no_fix",
    fix: gps.fix === true,
    fixAgeS: number(gps.fix_age_s),
    speedMps: number(gps.speed_mps),
    latitudeDeg: number(position.lat),
    longitudeDeg: number(position.lon),
  };
}

/** Why the box last refused a fleet configuration, in its words; null when it did not. */
function lastRefusal(fleet) {
  const outcome = string(fleet.last_outcome);
  if (outcome !== null && outcome !== "applied") {
    return outcome;
  }
  const check = string(fleet.last_check);
  return check?.startsWith("refused: ") ? check.slice("refused: ".length) : null;
}

/** {paired, boxId, configSerial, lastRefusal, lastRefusalCode, vehicleId}; configSerial 0: none
 * applied; lastRefusal is the box's English (only whether there was one is shown), its code is
 * what the page translates. */
export function boxView(doc) {
  const pairing = object(doc.pairing);
  const fleet = object(doc.fleet);
  const box = object(doc.box);
  return {
    paired: pairing.paired === true,
    boxId: string(pairing.box_id),
    configSerial: number(fleet.applied_serial),
    lastRefusal: lastRefusal(fleet),
    lastRefusalCode: string(fleet.last_refusal_code),
    vehicleId: string(box.vehicle_id),
  };
}

/** Whether a shift runs on the box. */
export function shiftRuns(doc) {
  return object(doc.shift).active === true;
}

/** How many recordings of this shift still need a report (0 when the box did not say). */
export function reportsMissing(doc) {
  return number(object(doc.reports).missing) ?? 0;
}

/** How many of them the officer is asked for now: those that ended (a running recording gets
 * its reminder once it ends, not while the officer is busy with it). */
export function reportsDue(doc) {
  const reports = object(doc.reports);
  return Math.max(0, (number(reports.missing) ?? 0) - (number(reports.running) ?? 0));
}
