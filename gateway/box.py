"""Opening the box's durable parts from its configuration: device key, audit log, evidence store.

The order matters: the device key signs recovery records, and the audit log must be open before
recovery so that every repair it makes is an audit event (RULES S5).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from common.alarms import Alarms
from common.durable import make_dirs, sweep_tmp_files
from config.local import LocalConfig
from gateway.startup import CardUnusable
from storage.audit_io import AuditLog
from storage.card_health import condition_of
from storage.devicekey import DeviceKey
from storage.envelope import RecipientKeyError, RecipientPublicKey, RecipientSet
from storage.recovery import RecoveryReport
from storage.retention import RetentionPolicy
from storage.space import SpacePolicy
from storage.store import EvidenceStore, StoreSettings
from storage.trusted_time_io import TrustedClock

AUDIT_LOG_NAME = "audit.jsonl"


@dataclass(slots=True)
class Box:
    config: LocalConfig
    device_key: DeviceKey
    audit: AuditLog
    store: EvidenceStore
    recovery: RecoveryReport

    @property
    def alarms(self) -> Alarms:
        """The box's one Alarms (common/alarms.py), owned by the store it was opened with."""
        return self.store.alarms

    @property
    def trusted(self) -> TrustedClock:
        """Trusted time (docs/retention.md), owned by the store whose retention it decides."""
        return self.store.trusted

    @property
    def facts(self) -> dict[str, str]:
        """Recording facts from configuration (RULES R5); they go inside the encryption."""
        return {
            "device_serial": self.config.box.device_serial,
            "vehicle_id": self.config.box.vehicle_id,
        }

    def close(self) -> None:
        self.store.close()
        self.trusted.close()
        self.alarms.close()
        self.audit.close()


def store_settings(config: LocalConfig) -> StoreSettings:
    s = config.storage
    return StoreSettings(
        card_dir=config.card_dir,
        chunk_max_bytes=s.chunk_max_bytes,
        file_target_s=s.file_target_s,
        file_target_bytes=s.file_target_bytes,
        space=SpacePolicy(
            reserve_bytes=s.card_reserve_bytes, min_free_to_start_bytes=s.min_free_to_start_bytes
        ),
        retention=RetentionPolicy(retention_days=s.retention_days),
        time_unknown_alarm_after_s=s.time_unknown_alarm_after_s,
    )


def recipients_of(config: LocalConfig) -> RecipientSet:
    """The recording keys every recording is wrapped to, with the threshold (four-eyes: 2)."""
    keys = tuple(RecipientPublicKey.load(p) for p in config.recipient_key_paths)
    try:
        return RecipientSet(keys, config.box.recipient_threshold)
    except ValueError as exc:  # the same key under two file names
        raise RecipientKeyError(f"{config.source}: box.recipient_keys: {exc}") from None


def open_box(config: LocalConfig) -> Box:
    make_dirs(config.state_dir, mode=0o700)
    # Nothing writes to the state directory yet: a tmp file there is a write a power cut
    # interrupted (its name is random, so no later write would replace it).
    sweep_tmp_files(config.state_dir)
    device_key = DeviceKey.load_or_create(config.state_dir)
    audit = AuditLog.open(config.state_dir / AUDIT_LOG_NAME, device_key)
    recipients = recipients_of(config)
    alarms = Alarms.load(config.state_dir, audit.append)
    settings = store_settings(config)
    trusted = TrustedClock.open(config.state_dir, alarms=alarms, audit=audit.append)
    try:
        store, report = EvidenceStore.open(
            settings, recipients, device_key, audit, alarms=alarms, trusted=trusted
        )
    except (OSError, sqlite3.Error) as exc:
        # The card passed its check and failed the open (its catalog unreadable, a read error):
        # the service runs degraded (gateway/degraded.py) instead of exiting.
        condition = condition_of(exc)
        trusted.close()
        alarms.close()
        audit.close()
        if condition is None:
            raise
        raise CardUnusable(f"the card at {config.card_dir} failed: {exc}", condition) from exc
    return Box(config, device_key, audit, store, report)
