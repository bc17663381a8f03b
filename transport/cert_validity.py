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

Over HTTPS OpenSSL verifies the chain with time unchecked and `check_validity` judges the leaf
after the handshake. Over HTTP/3 aioquic judges every date by the wall clock and has no such flag,
so the box turns aioquic's own verification off and `verify_chain_by_trusted_time` does all of
it (chain, host name, dates) inside the handshake, before the box's certificate goes out
(transport/quic_peer.py).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

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


def verify_chain_by_trusted_time(
    leaf_der: bytes,
    intermediates_der: Sequence[bytes],
    ca_pem: bytes,
    server_name: str,
    now: TrustedNow,
) -> None:
    """PinMismatch unless `leaf_der` (with `intermediates_der`) chains to a CA of `ca_pem`, names
    `server_name`, and the whole chain may be valid at one moment trusted time allows.

    For each CA the chain is verified (cryptography's web PKI verifier, the profile
    backoffice/pki.py issues) at one moment: the earliest that lies in every certificate's
    window (the CA's too) and within trusted time's bounds. Such a moment exists exactly when
    trusted time does not show the chain certainly invalid now, so the rule is the one of
    `check_validity`.
    """
    check_validity(leaf_der, now)  # the leaf's dates, with the clearest message
    leaf = x509.load_der_x509_certificate(leaf_der)
    intermediates = [x509.load_der_x509_certificate(der) for der in intermediates_der]
    reasons: list[str] = []
    for root in x509.load_pem_x509_certificates(ca_pem):
        moment = _common_moment([leaf, *intermediates, root], now)
        if moment is None:
            reasons.append("not valid together at any moment trusted time allows")
            continue
        try:
            verifier = (
                PolicyBuilder()
                .store(Store([root]))
                .time(moment)
                .build_server_verifier(_subject(server_name))
            )
            verifier.verify(leaf, intermediates)
            return
        except (VerificationError, ValueError) as exc:
            reasons.append(str(exc))
    raise PinMismatch(
        f"the back office certificate chain or host name did not verify "
        f"({'; '.join(reasons) or 'no CA'}); connection dropped"
    )


def _common_moment(chain: Sequence[x509.Certificate], now: TrustedNow) -> datetime.datetime | None:
    """The earliest moment inside every certificate's window and trusted time's bounds."""
    earliest_ms = max(_ms(c.not_valid_before_utc) for c in chain)
    latest_ms = min(_ms(c.not_valid_after_utc) for c in chain)
    if now.low_ms is not None:
        earliest_ms = max(earliest_ms, now.low_ms)
    if now.high_ms is not None:
        latest_ms = min(latest_ms, now.high_ms)
    if earliest_ms > latest_ms:
        return None
    return datetime.datetime.fromtimestamp(earliest_ms / 1000, datetime.UTC)


def _subject(server_name: str) -> x509.DNSName | x509.IPAddress:
    """The name the verifier checks: an IP address literal or a DNS name, as aioquic checks."""
    try:
        return x509.IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        return x509.DNSName(server_name)
