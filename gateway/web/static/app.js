// The officer's page (docs/webui.md 6): wiring of screens, session, language and live status.
//
// Invariants:
// - the session's CSRF token lives in api.js's memory only; a reload asks GET /api/session;
// - a 401 anywhere (but at login) stops the live feed, forgets the officer's screens and shows
//   the login screen;
// - nothing here renders footage (RULES S2): the API has none, and the page asks for none.

import { renderAlerts } from "./alerts.js";
import { onUnauthorized, request, setCsrfToken } from "./api.js";
import { byId, show } from "./dom.js";
import {
  applyTranslations,
  chooseLanguage,
  currentLanguage,
  LANGUAGES,
  storedLanguage,
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
import { alertsView, reportsMissing } from "./status.js";

const SCREENS = Object.freeze(["overview", "shift", "reports", "settings"]);
const DEFAULT_SCREEN = "overview";

const page = {
  user: null, // the signed-in account's name (shown in settings); null: signed out
  status: null, // the last status document
  missingReports: null, // its report count, to reload the report list when it changes
  shiftSignature: null, // who works the shift with which bodycams: reload its screen on a change
  screen: null,
};

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
  }
}

/** A new status document; the open list screens reload when the box says their list changed
 * (a recording ended, a report was filed, a shift started or a partner joined on another
 * tablet). */
function receiveStatus(doc) {
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
  if (doc === null || page.user === null) {
    return;
  }
  const missing = reportsMissing(doc);
  renderAlerts(byId("alerts"), alertsView(doc), missing);
  renderOverview(doc);
  renderSettings(doc, page.user);
  renderBadge(missing);
}

function showConnectionLost(lost) {
  show(byId("banner-connection"), lost);
  document.body.classList.toggle("is-stale", lost); // old facts stay visible, visibly old
}

/** After login or on page load with a live session. */
function enter(session, username) {
  setCsrfToken(session.csrf_token);
  page.user = typeof session.user === "string" ? session.user : username;
  setShiftAccount(session.officer_id); // whose bodycams the shift screen shows
  keepDraftFor(page.user);
  resetLogin();
  show(byId("nav"), true);
  feed.start();
  showScreen(screenFromHash());
}

/**
 * Logout or lost session: forget the officer's data and show the login screen. `expired`: the
 * box ended the session (401), so a half-written report is kept for the same account.
 */
function leave({ expired = false } = {}) {
  const user = page.user;
  if (expired && user === null) {
    return; // several calls fail with 401 at once: the first one already left
  }
  feed.stop();
  setCsrfToken(null);
  page.user = null;
  page.status = null;
  page.missingReports = null;
  page.shiftSignature = null;
  show(byId("nav"), false);
  show(byId("alerts"), false);
  byId("alerts").replaceChildren();
  delete byId("alerts").dataset.signature;
  renderBadge(0);
  resetShift();
  resetReports({ keepDraftOf: expired ? user : null });
  resetSettings();
  page.screen = "login";
  for (const screen of SCREENS) {
    show(byId(`screen-${screen}`), false);
  }
  show(byId("screen-login"), true);
  byId("login-username").focus();
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
  setupOverview();
  setupShift();
  setupReports();
  setupSettings(() => leave());
  window.addEventListener("hashchange", () => {
    if (page.user !== null) {
      showScreen(screenFromHash());
    }
  });
  await restoreSession();
}

main();
