// The vehicle display (docs/webui.md 1.4): a tablet the officer bound for the shift keeps the
// status and the record buttons after the session ended. The binding is an HttpOnly cookie the
// page cannot read: it asks GET /api/display, which also hands it the display's CSRF token.
//
// Invariants:
// - only a logged-in officer binds (settings); the box decides what a display may call;
// - without a session and without a binding the page shows nothing from the box.

import { request } from "./api.js";
import { byId, setTone, show } from "./dom.js";
import { t } from "./i18n.js";
import { errorText } from "./messages.js";

/** The binding of this browser: {bound, csrf_token} when bound, else null (also offline). */
export async function displayBinding() {
  try {
    const binding = await request("GET", "/api/display", { expect401: true });
    return binding?.bound === true ? binding : null;
  } catch {
    return null;
  }
}

function showResult(text, tone) {
  const node = byId("display-result");
  node.textContent = text;
  setTone(node, tone);
  show(node, true);
}

function showBound(bound) {
  show(byId("display-bind"), !bound);
  show(byId("display-unbind"), bound);
}

/** The settings tile: bind or unbind this browser. */
export function setupDisplay() {
  byId("display-bind").addEventListener("click", async () => {
    try {
      await request("POST", "/api/display");
      showBound(true);
      showResult(t("display.bound"), "ok");
    } catch (error) {
      showResult(errorText(error), "critical");
    }
  });
  byId("display-unbind").addEventListener("click", async () => {
    try {
      await request("DELETE", "/api/display");
      showBound(false);
      showResult(t("display.unbound"), "ok");
    } catch (error) {
      showResult(errorText(error), "critical");
    }
  });
}

/** The settings tile as the box sees this browser now. */
export async function loadDisplayTile() {
  showBound((await displayBinding()) !== null);
}

export function resetDisplayTile() {
  show(byId("display-result"), false);
  showBound(false);
}
