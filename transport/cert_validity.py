"""Is the back office's certificate within its validity window, judged by trusted time? PURE.

The box's wall clock can be days wrong (no RTC battery, a bad NTP answer: docs/retention.md), and
TLS stacks judge a certificate's notBefore/notAfter by it: a box whose clock stands 40 days behind
would refuse a certificate issued last week and upload nothing. So when the box has a trusted
clock (storage/trusted_time.py), the TLS stack is told not to judge time (OpenSSL's
X509_V_FLAG_NO_CHECK_TIME; the chain's signatures and the host name are still verified) and this
module judges it instead, by trusted time.

Rule: a certificate is refused only when trusted time shows it is *certainly* outside its
window: expired before the earliest trusted now (`low_ms`), or not yet valid after the latest
(`high_ms`). With no bound on one side nothing is refused on that side: the SPKI pin (RULES L1)
and the CA chain still decide whom the box talks to.
"""

from __future__ import annotations

import datetime

from cryptography import x509

from storage.trusted_time import TrustedNow
from transport.errors import PinMismatch

NO_CHECK_TIME = 0x200000
"""OpenSSL's X509_V_FLAG_NO_CHECK_TIME (not named by Python's ssl module)."""


def _ms(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)


def check_validity(der_certificate: bytes, now: TrustedNow) -> None:
    """PinMismatch when trusted time says the certificate is certainly not valid now."""
    certificate = x509.load_der_x509_certificate(der_certificate)
    not_before_ms = _ms(certificate.not_valid_before_utc)
    not_after_ms = _ms(certificate.not_valid_after_utc)
    if now.low_ms is not None and now.low_ms > not_after_ms:
        raise PinMismatch(
            f"the back office certificate expired {certificate.not_valid_after_utc:%Y-%m-%d} by "
            "trusted time; connection dropped"
        )
    if now.high_ms is not None and now.high_ms < not_before_ms:
        raise PinMismatch(
            f"the back office certificate is valid only from "
            f"{certificate.not_valid_before_utc:%Y-%m-%d} by trusted time; connection dropped"
        )
