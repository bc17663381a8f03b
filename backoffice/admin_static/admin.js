// The fleet admin page (docs/fleet-admin.md 7.2). Plain ES module, no build step, no third-party
// code. Every word comes from i18n/{nl,en}.json; the server sends codes (errors, alarms, GPS
// states, upload classes) and this page translates them. What boxes report is put on the page
// with textContent only, never as HTML.

const LANG_KEY = "mvb-admin-lang";
const REFRESH_MS = 10000;
const words = {};
let lang = "nl";
let csrf = "";
let fleet = null;
let timer = null;
let lastPair = null; // the code shown once, kept in memory only to redraw it in the other language
const shownErrors = new Map(); // element id -> the refused answer it shows (redrawn on a switch)

const $ = (id) => document.getElementById(id);

function t(key, params = {}) {
  const text = (words[lang] && words[lang][key]) || key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : ""));
}

async function loadWords(which) {
  if (!words[which]) {
    const answer = await fetch(`/static/i18n/${which}.json`);
    words[which] = await answer.json();
  }
}

async function setLanguage(which) {
  lang = which === "en" ? "en" : "nl";
  localStorage.setItem(LANG_KEY, lang);
  await loadWords(lang);
  document.documentElement.lang = lang;
  document.title = t("title");
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const [id, answer] of shownErrors) $(id).textContent = errorText(answer);
  if (lastPair) drawPair(lastPair);
  if (fleet) render(fleet);
}

function showError(id, answer) {
  if (answer === null) {
    shownErrors.delete(id);
    $(id).textContent = "";
  } else {
    shownErrors.set(id, answer);
    $(id).textContent = errorText(answer);
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  let answer;
  try {
    answer = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { status: 0, body: { error: "network" }, retryAfter: null };
  }
  let parsed = {};
  try {
    parsed = await answer.json();
  } catch {
    parsed = {};
  }
  return { status: answer.status, body: parsed, retryAfter: answer.headers.get("Retry-After") };
}

function errorText(answer) {
  const code = (answer.body && answer.body.error) || "network";
  if (code === "locked") {
    const minutes = Math.max(1, Math.ceil(Number(answer.retryAfter || 60) / 60));
    return t("error.locked", { minutes });
  }
  const key = `error.${code}`;
  return words[lang][key] ? t(key) : t("error.code", { code });
}

function show(signedIn) {
  $("login").hidden = signedIn;
  $("fleet").hidden = !signedIn;
  $("logout").hidden = !signedIn;
  if (timer) clearInterval(timer);
  timer = signedIn ? setInterval(refresh, REFRESH_MS) : null;
}

async function refresh() {
  const answer = await api("GET", "/api/fleet");
  if (answer.status === 401) {
    csrf = "";
    fleet = null;
    show(false);
    showError("login-error", answer);
    return;
  }
  if (answer.status !== 200) {
    showError("fleet-error", answer);
    return;
  }
  showError("fleet-error", null);
  fleet = answer.body;
  render(fleet);
}

// --- formatting ----------------------------------------------------------------------------

function age(seconds) {
  if (seconds === null || seconds === undefined) return t("unknown");
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size) return t(`age.${unit}`, { n: Math.floor(seconds / size) });
  }
  return t("age.s", { n: seconds });
}

function bytes(count) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = unit === 0 ? 0 : 1;
  return `${new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(value)} ${units[unit]}`;
}

function alarmText(code) {
  if (words[lang][`alarm.${code}`]) return t(`alarm.${code}`);
  if (code.startsWith("uplink_file_")) return t("alarm.upload_blocked");
  if (code.startsWith("camera_refused_")) {
    return t("alarm.camera_refused", { name: code.slice("camera_refused_".length) });
  }
  if (code.startsWith("camera_")) return t("alarm.camera", { name: code.slice("camera_".length) });
  return t("alarm.code", { code });
}

function outcomeText(outcome) {
  if (!outcome) return t("outcome.none");
  if (outcome === "applied") return t("outcome.applied");
  return t("outcome.refused", { reason: outcome }); // the box's own reason, as it reported it
}

function gpsText(box) {
  const key = `gps.${box.gps_status}`;
  const status = words[lang][key] ? t(key) : t("gps.code", { code: box.gps_status });
  return box.gps_fix_age_s === null ? status : `${status}, ${t("age.ago", { age: age(box.gps_fix_age_s) })}`;
}

function queueText(queue) {
  const parts = [];
  for (const name of ["P0", "P1", "P2"]) {
    const entry = queue[name];
    if (entry && entry.files > 0) {
      parts.push(t("queue.class", { class: t(`class.${name}`), files: entry.files, bytes: bytes(entry.bytes) }));
    }
  }
  return parts.length ? parts.join("; ") : t("queue.empty");
}

function cardText(box) {
  if (!box.card_total_bytes) return t("card.none");
  const used = box.card_total_bytes - box.card_free_bytes;
  return t("card.fill", { percent: Math.round((100 * used) / box.card_total_bytes) });
}

function clockText(offsetMs) {
  if (offsetMs === null) return t("unknown");
  const seconds = offsetMs / 1000;
  return `${seconds >= 0 ? "+" : ""}${new Intl.NumberFormat(lang, { maximumFractionDigits: 1 }).format(seconds)} s`;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function badge(parent, text, kind) {
  const span = document.createElement("span");
  span.className = `badge ${kind}`;
  span.textContent = text;
  parent.append(span);
}

// --- drawing -------------------------------------------------------------------------------

function render(view) {
  const boxes = view.boxes;
  const stale = boxes.filter((box) => box.stale).length;
  const alarmed = boxes.filter((box) => box.alarms.length > 0).length;
  $("summary").textContent = t("summary", { boxes: boxes.length, stale, alarmed });
  renderBoxes(boxes);
  renderAlarms(boxes);
  renderVersions(view.groups);
  const waiting = view.check_now_waiting;
  $("checknow").textContent = waiting.length ? waiting.join(", ") : t("checknow.none");
  $("pair-button").disabled = !view.pairing;
}

function renderBoxes(boxes) {
  const body = $("boxes").tBodies[0];
  body.replaceChildren();
  for (const box of boxes) {
    const row = body.insertRow();
    row.dataset.box = box.box_id;
    if (box.stale) row.className = "stale";
    const name = cell(row, box.box_id);
    if (box.stale) badge(name, t("stale"), "bad");
    cell(row, t("age.ago", { age: age(box.seen_age_s) }));
    cell(row, box.software_version);
    const pending = box.config_pending_serial;
    cell(row, pending === null ? String(box.config_applied_serial)
      : t("serial.pending", { serial: box.config_applied_serial, pending }));
    cell(row, outcomeText(box.config_last_outcome));
    cell(row, cardText(box));
    cell(row, queueText(box.queue));
    cell(row, box.oldest_waiting_age_s === null ? t("none") : age(box.oldest_waiting_age_s));
    cell(row, String(box.blocked_files));
    const alarms = cell(row, box.alarms.length ? "" : t("none"));
    for (const code of box.alarms) badge(alarms, alarmText(code), "warn");
    cell(row, gpsText(box));
    cell(row, clockText(box.clock_offset_ms));
    const actions = cell(row, "");
    const check = document.createElement("button");
    check.type = "button";
    check.className = "check-now";
    check.textContent = t("checknow.button");
    check.addEventListener("click", () => checkNow(box.box_id));
    actions.append(check);
  }
}

async function checkNow(boxId) {
  showError("checknow-error", null);
  const answer = await api("POST", "/api/check-now", { box_id: boxId });
  if (answer.status !== 200) {
    showError("checknow-error", answer);
    return;
  }
  await refresh();
}

function renderAlarms(boxes) {
  const list = $("alarms");
  list.replaceChildren();
  const alarmed = boxes.filter((box) => box.alarms.length > 0);
  if (!alarmed.length) {
    const item = document.createElement("li");
    item.textContent = t("alarms.none");
    list.append(item);
  }
  for (const box of alarmed) {
    const item = document.createElement("li");
    item.dataset.box = box.box_id;
    item.textContent = `${box.box_id}: ${box.alarms.map(alarmText).join(", ")}`;
    list.append(item);
  }
}

function renderVersions(groups) {
  const body = $("versions").tBodies[0];
  body.replaceChildren();
  for (const group of groups) {
    const row = body.insertRow();
    cell(row, group.no_group ? t("group.none") : group.group);
    const counts = Object.entries(group.versions).map(([version, count]) => t("versions.count", { version, count }));
    cell(row, counts.join(", "));
    cell(row, group.target_version === null ? t("target.none") : group.target_version);
  }
}

// --- actions -------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  showError("login-error", null);
  const answer = await api("POST", "/api/session", {
    username: $("username").value,
    password: $("password").value,
  });
  $("password").value = "";
  if (answer.status !== 200) {
    showError("login-error", answer);
    return;
  }
  csrf = answer.body.csrf_token;
  show(true);
  await refresh();
}

async function logout() {
  await api("DELETE", "/api/session");
  csrf = "";
  fleet = null;
  lastPair = null;
  $("pair-result").hidden = true;
  show(false);
}

async function pair(event) {
  event.preventDefault();
  showError("pair-error", null);
  lastPair = null;
  $("pair-result").hidden = true;
  const box = $("pair-box").value.trim();
  const answer = await api("POST", "/api/pairing-codes", { box_id: box, re_pair: $("pair-repair").checked });
  if (answer.status !== 200) {
    showError("pair-error", answer);
    return;
  }
  lastPair = answer.body;
  drawPair(lastPair);
}

function drawPair(issued) {
  const minutes = Math.round(issued.valid_s / 60);
  const key = issued.re_pair ? "pair.for_repair" : "pair.for";
  $("pair-for").textContent = t(key, { box: issued.box_id, minutes });
  $("pair-code").textContent = issued.code;
  $("pair-result").hidden = false;
}

async function start() {
  const stored = localStorage.getItem(LANG_KEY);
  const browser = (navigator.language || "nl").toLowerCase().startsWith("nl") ? "nl" : "en";
  await setLanguage(stored || browser);
  $("lang-nl").addEventListener("click", () => setLanguage("nl"));
  $("lang-en").addEventListener("click", () => setLanguage("en"));
  $("logout").addEventListener("click", logout);
  $("login-form").addEventListener("submit", login);
  $("pair-form").addEventListener("submit", pair);
  const session = await api("GET", "/api/session");
  if (session.status === 200) {
    csrf = session.body.csrf_token;
    show(true);
    await refresh();
  } else {
    show(false);
  }
}

start();
