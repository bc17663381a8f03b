// The settings screen: pairing with a one-time code (docs/pairing.md), a signed configuration
// bundle from a USB stick (docs/fleet-config.md 6), the box's pairing and configuration serial,
// and sign-out.

import { ApiError, request } from "./api.js";
import { byId, setText, setTone, show } from "./dom.js";
import * as fmt from "./format.js";
import { t } from "./i18n.js";
import { bundleReasonText, errorText, pairingReasonText } from "./messages.js";
import { boxView } from "./status.js";
import { configSerialText } from "./words.js";

export const MAX_BUNDLE_BYTES = 16 * 1024 * 1024; // the box's bound (docs/webui.md 2)

function showResult(id, text, tone) {
  const node = byId(id);
  node.textContent = text;
  setTone(node, tone);
  show(node, true);
}

/** `onLogout()` runs after the box was asked to end the session (whatever it answered). */
export function setupSettings(onLogout) {
  byId("pair-form").addEventListener("submit", (event) => {
    event.preventDefault();
    pair();
  });
  byId("bundle-form").addEventListener("submit", (event) => {
    event.preventDefault();
    uploadBundle();
  });
  byId("logout").addEventListener("click", async () => {
    try {
      await request("DELETE", "/api/session");
    } catch {
      // gone already or unreachable: the page forgets the session either way
    }
    onLogout();
  });
}

/**
 * A refused pairing: `pairing_failed` and `already_paired` carry a `reason` code
 * (gateway/pairing_client.py officer_reason, docs/pairing.md 3.3 behind it), shown after a
 * translated lead-in; any other refusal is its error's text.
 */
function pairingRefusal(failure) {
  const explained = ["pairing_failed", "already_paired"];
  if (failure instanceof ApiError && explained.includes(failure.code)) {
    return t("pair.refused", { reason: pairingReasonText(failure) });
  }
  return errorText(failure);
}

async function pair() {
  const input = byId("pair-code");
  const code = input.value.trim();
  if (code === "") {
    showResult("pair-result", t("pair.need_code"), "critical");
    return;
  }
  const submit = byId("pair-submit");
  submit.disabled = true;
  showResult("pair-result", t("pair.busy"), "idle");
  try {
    await request("POST", "/api/pair", { json: { code, re_pair: byId("pair-repair").checked } });
    input.value = ""; // a used code is worthless, and it should not linger on screen
    byId("pair-repair").checked = false;
    showResult("pair-result", t("pair.done"), "ok");
  } catch (failure) {
    showResult("pair-result", pairingRefusal(failure), "critical");
  } finally {
    submit.disabled = false;
  }
}

/** The bundle's refusal: its `reason_code` (422) translated, else the usual error text. */
function bundleRefusal(failure) {
  if (!(failure instanceof ApiError)) {
    return errorText(failure);
  }
  if (failure.status === 422 && failure.body !== null && "reason_code" in failure.body) {
    return t("bundle.refused", { reason: bundleReasonText(failure.body.reason_code) });
  }
  if (failure.status === 409) {
    return t("error.not_paired"); // no trust root to check a bundle against yet
  }
  return errorText(failure);
}

async function uploadBundle() {
  const file = byId("bundle-file").files?.[0];
  if (file === undefined) {
    showResult("bundle-result", t("bundle.need_file"), "critical");
    return;
  }
  if (file.size > MAX_BUNDLE_BYTES) {
    showResult("bundle-result", t("error.too_large"), "critical");
    return;
  }
  const submit = byId("bundle-submit");
  submit.disabled = true;
  showResult("bundle-result", t("bundle.busy"), "idle");
  try {
    const bytes = await file.arrayBuffer();
    const answer = (await request("POST", "/api/config/bundle", { bytes })) ?? {};
    const serial = typeof answer.config_serial === "number" ? answer.config_serial : "?";
    if (answer.deferred === true) {
      // 202: verified and kept; the box applies it by itself once its state allows.
      showResult("bundle-result", t("bundle.deferred", { serial }), "warning");
    } else {
      showResult("bundle-result", t("bundle.applied", { serial }), "ok");
    }
    byId("bundle-file").value = "";
  } catch (failure) {
    showResult("bundle-result", bundleRefusal(failure), "critical");
  } finally {
    submit.disabled = false;
  }
}

/** The facts part, from the status document; `user` is the signed-in account's name. */
export function renderSettings(doc, user) {
  const view = boxView(doc);
  setText("settings-user", fmt.text(user));
  setText("settings-paired", view.paired ? t("box.is_paired") : t("box.not_paired"));
  setText("settings-box-id", fmt.text(view.boxId));
  setText("settings-config-serial", configSerialText(view.configSerial));
  setText(
    "settings-config-refusal",
    view.lastRefusal === null ? t("settings.no_refusal") : bundleReasonText(view.lastRefusalCode),
  );
}

/** Forget the previous officer's inputs and results. */
export function resetSettings() {
  byId("pair-form").reset();
  byId("bundle-form").reset();
  show(byId("pair-result"), false);
  show(byId("bundle-result"), false);
}
