// Hold-to-stop (issue 16, docs/webui.md 6): Stop acts only after the officer holds it for
// `holdMs` ([webui] hold_to_stop_ms), so a bump or a stray tap in a moving car never ends the
// recording of evidence. 0 ms: a tap acts, as any button.
//
// `holdFraction` is the pure core; HoldButton is the shell: pointer and keyboard (Space or
// Enter held) start the hold, letting go before the end cancels it and says so.

/** How far a hold begun at `startedAtMs` is at `nowMs`: 0..1 (1: done). */
export function holdFraction(startedAtMs, nowMs, holdMs) {
  if (holdMs <= 0) {
    return 1;
  }
  return Math.min(1, Math.max(0, (nowMs - startedAtMs) / holdMs));
}

const HOLD_KEYS = new Set([" ", "Enter"]);

export class HoldButton {
  /** `onHeld()` when the hold completes (or on a click with no hold); `onShort()` when let go
   * early. `progress` is a <progress max="1000"> inside the button. */
  constructor(button, progress, { onHeld, onShort }) {
    this.button = button;
    this.progress = progress;
    this.onHeld = onHeld;
    this.onShort = onShort;
    this.holdMs = 0;
    this.startedAtMs = null;
    this.frame = null;
    button.addEventListener("pointerdown", (event) => {
      if (event.button === 0) {
        button.setPointerCapture(event.pointerId); // a finger sliding off still holds
        this.begin();
      }
    });
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      button.addEventListener(type, () => this.end());
    }
    button.addEventListener("keydown", (event) => {
      if (HOLD_KEYS.has(event.key) && this.holdMs > 0) {
        event.preventDefault(); // no click from the key: the hold decides
        if (!event.repeat) {
          this.begin();
        }
      }
    });
    button.addEventListener("keyup", (event) => {
      if (HOLD_KEYS.has(event.key) && this.holdMs > 0) {
        event.preventDefault();
        this.end();
      }
    });
    button.addEventListener("click", () => {
      if (this.holdMs === 0) {
        this.onHeld();
      }
    });
    button.addEventListener("contextmenu", (event) => event.preventDefault()); // long press
  }

  setHoldMs(holdMs) {
    this.holdMs = Number.isFinite(holdMs) && holdMs > 0 ? holdMs : 0;
  }

  begin() {
    if (this.holdMs === 0 || this.startedAtMs !== null || this.button.disabled) {
      return;
    }
    this.startedAtMs = performance.now();
    this.button.dataset.holding = "true";
    this.frame = requestAnimationFrame(() => this.advance());
  }

  advance() {
    const fraction = holdFraction(this.startedAtMs, performance.now(), this.holdMs);
    this.progress.value = Math.round(fraction * 1000);
    if (fraction >= 1) {
      this.reset();
      this.onHeld();
      return;
    }
    this.frame = requestAnimationFrame(() => this.advance());
  }

  /** Let go: before the end, the hold is cancelled and the officer told. */
  end() {
    if (this.startedAtMs === null) {
      return;
    }
    this.reset();
    this.onShort();
  }

  reset() {
    if (this.frame !== null) {
      cancelAnimationFrame(this.frame);
    }
    this.frame = null;
    this.startedAtMs = null;
    this.progress.value = 0;
    delete this.button.dataset.holding;
  }
}
