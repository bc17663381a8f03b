// The login screen (docs/webui.md 1.1): 401 wrong_credentials for a wrong name and a wrong
// password alike; 423 locked with Retry-After. The password never leaves this form's field and
// the request; the field is emptied after every attempt.

import { ApiError, request } from "./api.js";
import { byId, show } from "./dom.js";
import { t } from "./i18n.js";
import { errorText } from "./messages.js";

/** `onSession(session, username)` runs after a successful login with the box's answer. */
export function setupLogin(onSession) {
  const form = byId("login-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = byId("login-username").value.trim();
    const password = byId("login-password");
    if (username === "" || password.value === "") {
      showLoginError(t("login.missing"));
      return;
    }
    const submit = byId("login-submit");
    submit.disabled = true;
    try {
      const session = await request("POST", "/api/session", {
        json: { username, password: password.value },
        expect401: true,
      });
      show(byId("login-error"), false);
      await onSession(session ?? {}, username);
    } catch (error) {
      showLoginError(loginErrorText(error));
    } finally {
      password.value = "";
      submit.disabled = false;
    }
  });
}

function loginErrorText(error) {
  if (error instanceof ApiError && error.status === 401) {
    return t("error.wrong_credentials");
  }
  return errorText(error); // 423 locked (with minutes), network, anything else
}

function showLoginError(text) {
  const node = byId("login-error");
  node.textContent = text;
  show(node, true);
}

/** The login screen as the officer should find it: empty, no old error. */
export function resetLogin() {
  byId("login-password").value = "";
  show(byId("login-error"), false);
}
