// The officer's page (docs/webui.md 6): wiring of screens, session, language and live status.
//
// Invariants:
// - the session's CSRF token lives in api.js's memory only; a reload asks GET /api/session;
// - a 401 anywhere (but at login) stops the live feed, forgets the officer's screens and shows
//   the login screen with why (signed out, or the session ended); a bound vehicle display then
//   keeps the overview's state and record buttons (display.js, docs/webui.md 1.4), and a browser
//   that is not one shows nothing from the box;
// - nothing here renders footage (RULES S2): the API has none, and the page asks for none.

import { renderAlerts, resetAlerts, setupAlerts } from "./alerts.js";
import { onUnauthorized, request, setCsrfToken } from "./api.js";
import { renderCommand, resetCommand, setupCommand } from "./command.js";
import { displayBinding, loadDisplayTile, resetDisplayTile, setupDisplay } from "./display.js";
import { byId, show } from "./dom.js";
import {
  applyTranslations,
  chooseLanguage,
  currentLanguage,
  key,
  LANGUAGES,
  storedLanguage,
  t,
  useLanguage,
} from "./i18n.js";
import { LiveFeed } from "./live.js";
import { resetLogin, setupLogin } from "./login.js";
import { renderOverview, setupOverview } from "./overview.js";
import {
  keepDraftFor,
  loadReports,
  renderBadge,
  renderReports,
  resetReports,
  setupReports,
} from "./reports.js";
import { renderSettings, resetSettings, setupSettings } from "./settings.js";
import {
  loadShift,
  renderShift,
  resetShift,
  setShiftAccount,
  setupShift,
  shiftSignature,
} from "./shift.js";
import { alertsView, reportsDue, reportsMissing } from "./status.js";

const SCREENS = Object.freeze(["overview", "shift", "reports", "settings"]);
const DEFAULT_SCREEN = "overview";
// A document built this much before the one shown is an older build overtaken by an action's
// answer (which carries the newest): it is dropped. Beyond it, the box's clock stepped back.
const OVERTAKEN_WINDOW_MS = 5000;

const page = {
  user: null, // the signed-in account's name (shown in settings); null: signed out
  status: null, // the last status document
  missingReports: null, // its report count, to reload the report list when it changes
  shiftSignature: null, // who works the shift with which bodycams: reload its screen on a change
  screen: null,
  display: false, // a bound vehicle display showing the state without a session
  signedOut: null, // the key of why the login screen shows (signed out, session ended), or null
};

const SIGNED_OUT = key("login.signed_out");
const SESSION_ENDED = key("login.session_ended");

const feed = new LiveFeed({ onStatus: receiveStatus, onLost: showConnectionLost });

function screenFromHash() {
  const name = window.location.hash.replace(/^#/, "");
  return SCREENS.includes(name) ? name : DEFAULT_SCREEN;
}

function showScreen(name) {
  if (page.screen !== name) {
    window.scrollTo(0, 0); // a new screen starts at its top, not at the last one's scroll
  }
  page.screen = name;
  for (const screen of ["login", ...SCREENS]) {
    show(byId(`screen-${screen}`), screen === name);
  }
  for (const screen of SCREENS) {
    const link = byId(`nav-${screen}`);
    if (screen === name) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  if (name === "shift") {
    loadShift();
  } else if (name === "reports") {
    loadReports();
  } else if (name === "settings") {
    loadDisplayTile();
  }
}

/** Whether `doc` is older than the document shown (by less than OVERTAKEN_WINDOW_MS). */
function overtaken(shown, doc) {
  const shownMs = shown?.at_ms;
  const docMs = doc?.at_ms;
  if (typeof shownMs !== "number" || typeof docMs !== "number") {
    return false;
  }
  return docMs < shownMs && shownMs - docMs < OVERTAKEN_WINDOW_MS;
}

/** A new status document (from the feed, or an action's answer); the open list screens reload
 * when the box says their list changed (a recording ended, a report was filed, a shift started
 * or a partner joined on another tablet). */
function receiveStatus(doc) {
  if (overtaken(page.status, doc)) {
    return;
  }
  page.status = doc;
  renderStatus();
  const missing = reportsMissing(doc);
  const shift = shiftSignature(doc);
  if (page.missingReports !== null && missing !== page.missingReports && page.screen === "reports") {
    loadReports();
  }
  if (page.shiftSignature !== null && shift !== page.shiftSignature && page.screen === "shift") {
    loadShift();
  }
  page.missingReports = missing;
  page.shiftSignature = shift;
}

function renderStatus() {
  const doc = page.status;
  if (doc === null || (page.user === null && !page.display)) {
    return;
  }
  const due = reportsDue(doc);
  renderCommand(doc);
  renderAlerts(byId("alerts"), alertsView(doc), due);
  renderOverview(doc);
  if (page.user !== null) {
    renderSettings(doc, page.user);
    renderBadge(due);
  }
}

function showConnectionLost(lost) {
  show(byId("banner-connection"), lost);
  document.body.classList.toggle("is-stale", lost); // old facts stay visible, visibly old
}

/** After login or on page load with a live session. */
function enter(session, username) {
  setCsrfToken(session.csrf_token);
  page.display = false;
  show(byId("display-banner"), false);
  showSignedOut(null);
  page.user = typeof session.user === "string" ? session.user : username;
  setShiftAccount(session.officer_id); // whose bodycams the shift screen shows
  keepDraftFor(page.user);
  resetLogin();
  show(byId("nav"), true);
  show(byId("command"), true);
  feed.start();
  showScreen(screenFromHash());
}

/** Why the login screen shows, in words (a key), or nothing. */
function showSignedOut(why) {
  page.signedOut = why;
  const node = byId("login-signed-out");
  node.textContent = why === null ? "" : t(why);
  show(node, why !== null);
}

/**
 * Logout or lost session: forget the officer's data and show the login screen, saying why.
 * `expired`: the box ended the session (401), so a half-written report is kept for the same
 * account. `signedOut`: the officer signed out. Then a bound vehicle display shows the state.
 */
function leave({ expired = false, signedOut = false } = {}) {
  const user = page.user;
  const wasDisplay = page.display;
  if (expired && user === null && !wasDisplay) {
    return; // several calls fail with 401 at once: the first one already left
  }
  feed.stop();
  page.display = false;
  show(byId("display-banner"), false);
  resetDisplayTile();
  setCsrfToken(null);
  page.user = null;
  page.status = null;
  page.missingReports = null;
  page.shiftSignature = null;
  show(byId("nav"), false);
  show(byId("command"), false);
  resetCommand();
  resetAlerts(byId("alerts"));
  renderBadge(0);
  resetShift();
  resetReports({ keepDraftOf: expired ? user : null });
  resetSettings();
  page.screen = "login";
  for (const screen of SCREENS) {
    show(byId(`screen-${screen}`), false);
  }
  show(byId("screen-login"), true);
  showSignedOut(expired && user !== null ? SESSION_ENDED : signedOut ? SIGNED_OUT : null);
  byId("login-username").focus();
  if (!wasDisplay) {
    enterDisplayIfBound(); // a display whose binding ended (401 as a display) stays at login
  }
}

/** A bound vehicle display without a session: the overview's state and record buttons. */
async function enterDisplayIfBound() {
  const binding = await displayBinding();
  if (binding === null || page.user !== null) {
    return;
  }
  setCsrfToken(binding.csrf_token);
  page.display = true;
  show(byId("nav"), false);
  show(byId("command"), true); // the top bar: the state and its primary action stay at hand
  show(byId("display-banner"), true);
  showDisplayOverview();
  feed.start();
}

function showDisplayOverview() {
  page.screen = "overview";
  for (const screen of ["login", ...SCREENS]) {
    show(byId(`screen-${screen}`), screen === "overview");
  }
}

async function switchLanguage(language) {
  await useLanguage(language, { remember: true });
  renderLanguage();
}

/** Every text again in the current language: static texts, then what data produced. */
function renderLanguage() {
  applyTranslations(document);
  for (const language of LANGUAGES) {
    byId(`lang-${language}`).setAttribute("aria-pressed", String(language === currentLanguage()));
  }
  renderStatus();
  if (page.signedOut !== null) {
    showSignedOut(page.signedOut);
  }
  if (page.user !== null) {
    renderShift();
    renderReports();
  }
}

async function restoreSession() {
  try {
    const session = await request("GET", "/api/session", { expect401: true });
    enter(session ?? {}, null);
  } catch {
    leave(); // 401 (no session), or the box is unreachable: the login form says why on submit
  }
}

async function main() {
  await useLanguage(chooseLanguage(storedLanguage(), navigator.languages));
  renderLanguage();
  for (const language of LANGUAGES) {
    byId(`lang-${language}`).addEventListener("click", () => switchLanguage(language));
  }
  onUnauthorized(() => leave({ expired: true }));
  setupLogin(enter);
  setupCommand(receiveStatus);
  setupAlerts(renderStatus);
  setupOverview();
  setupShift();
  setupReports();
  setupSettings(() => leave({ signedOut: true }));
  setupDisplay();
  byId("display-sign-in").addEventListener("click", () => {
    show(byId("screen-overview"), false);
    show(byId("screen-login"), true);
    page.screen = "login";
    byId("login-username").focus();
  });
  window.addEventListener("hashchange", () => {
    if (page.user !== null) {
      showScreen(screenFromHash());
    }
  });
  await restoreSession();
}

main();
