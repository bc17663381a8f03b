"""The recorder's policy from a configuration (local file, or with a fleet document applied)."""

from __future__ import annotations

from config.local import LocalConfig
from gateway.recorder import RecorderPolicy, TriggerPolicy


def recorder_policy(config: LocalConfig) -> RecorderPolicy:
    """A `[triggers.X]` table overrides only the keys it names: without `postrecord_s` the
    trigger keeps [recording].postrecord_s (the key a local file or a fleet document set)."""
    rec = config.recording
    triggers = {
        name: TriggerPolicy(
            cameras=frozenset(t.cameras) or None,
            postrecord_s=rec.postrecord_s if t.postrecord_s is None else t.postrecord_s,
            may_stop=t.may_stop,
        )
        for name, t in config.triggers.items()
    }
    return RecorderPolicy(
        prerecord_s=rec.prerecord_s,
        max_continuous_s=rec.max_continuous_s,
        triggers=triggers,
        default_trigger=TriggerPolicy(postrecord_s=rec.postrecord_s),
        officer_stop_postrecord_s=rec.officer_stop_postrecord_s,
    )
