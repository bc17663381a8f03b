"""The recorder's policy from a configuration (local file, or with a fleet document applied)."""

from __future__ import annotations

from config.local import LocalConfig
from gateway.recorder import RecorderPolicy, TriggerPolicy


def recorder_policy(config: LocalConfig) -> RecorderPolicy:
    rec = config.recording
    triggers = {
        name: TriggerPolicy(
            cameras=frozenset(t.cameras) or None, postrecord_s=t.postrecord_s, may_stop=t.may_stop
        )
        for name, t in config.triggers.items()
    }
    return RecorderPolicy(
        prerecord_s=rec.prerecord_s,
        max_continuous_s=rec.max_continuous_s,
        triggers=triggers,
        default_trigger=TriggerPolicy(postrecord_s=rec.postrecord_s),
    )
