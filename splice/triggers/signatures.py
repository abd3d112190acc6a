"""Signature verification of webhook deliveries: GitHub, Stripe, Slack and a generic HMAC.

Every scheme computes an HMAC over the exact raw body bytes, as received, and compares
digests with ``hmac.compare_digest``. A failed check raises ``SignatureError`` with a
``reason`` code and a message that names the header at fault. Messages never contain the
secret, the expected signature or the received one.

``SignatureSettings`` is the YAML block of a webhook trigger that selects a scheme. Its
``secret`` names the config variable that contains each instance's shared secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from splice.errors import ConfigError, SpliceError

__all__ = [
    "DEFAULT_TOLERANCE",
    "SignatureError",
    "SignatureFailure",
    "SignatureSettings",
    "verify",
    "verify_github",
    "verify_hmac",
    "verify_slack",
    "verify_stripe",
]

# Seconds a signed timestamp may lie before or after the receiver's clock. Stripe's and
# Slack's documentation both recommend five minutes.
DEFAULT_TOLERANCE = 300.0

GITHUB_HEADER = "X-Hub-Signature-256"
GITHUB_LEGACY_HEADER = "X-Hub-Signature"
STRIPE_HEADER = "Stripe-Signature"
SLACK_SIGNATURE_HEADER = "X-Slack-Signature"
SLACK_TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"

Algorithm = Literal["sha256", "sha1", "sha512"]
Encoding = Literal["hex", "base64"]
_ALGORITHM_NAMES = {"sha256": "SHA-256", "sha1": "SHA-1", "sha512": "SHA-512"}

# An HTTP field name is a token (RFC 9110, section 5.1).
_FIELD_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_UNIX_SECONDS = re.compile(r"^[0-9]{1,15}$")
_CONFIG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONFIG_EXPRESSION = re.compile(r"^\{\{\s*config\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


class SignatureFailure(StrEnum):
    """The reason a delivery's signature was rejected, as a stable value for logs and tests."""

    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    MISMATCH = "mismatch"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"


class SignatureError(SpliceError):
    """A webhook delivery's signature is missing, malformed, wrong or out of date.

    The sender must act: the server responds with 401 and starts nothing. ``reason`` is the
    failure kind and ``header`` the header at fault.
    """

    def __init__(self, reason: SignatureFailure, header: str, message: str) -> None:
        self.reason = reason
        self.header = header
        super().__init__(message)


class SignatureSettings(BaseModel):
    """Signature settings of a webhook trigger: the scheme, its secret and its options.

    ``secret`` is the name of the config variable that contains the shared secret, so
    each instance has its own. ``header``, ``algorithm``, ``encoding`` and ``prefix``
    apply to the ``hmac`` scheme only; ``tolerance`` to ``stripe`` and ``slack``, whose
    signatures cover a timestamp.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["github", "stripe", "slack", "hmac"]
    secret: str
    header: str | None = None
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    tolerance: float = Field(
        default=DEFAULT_TOLERANCE, gt=0, description="seconds a signed timestamp may be off"
    )

    @field_validator("secret")
    @classmethod
    def _config_variable_name(cls, value: str) -> str:
        expression = _CONFIG_EXPRESSION.match(value)
        if expression:
            raise ValueError(
                f"secret {value!r} is an expression; write the config variable's name "
                f"alone: `secret: {expression.group(1)}`"
            )
        if not _CONFIG_NAME.match(value):
            raise ValueError(
                f"secret {value!r} is not a config variable name; name the secret config "
                "variable that contains the signing secret, such as `secret: webhook_secret`"
            )
        return value

    @field_validator("header")
    @classmethod
    def _field_name(cls, value: str | None) -> str | None:
        if value is not None and not _FIELD_NAME.match(value):
            raise ValueError(
                f"header {value!r} is not a valid HTTP header name; give the name alone, "
                "such as `header: X-Signature`, without a colon or value"
            )
        return value

    @model_validator(mode="after")
    def _options_fit_scheme(self) -> SignatureSettings:
        # Options set to their defaults count as unset, so a dumped model validates again.
        defaults = type(self).model_fields
        explicit = {
            name for name in self.model_fields_set if getattr(self, name) != defaults[name].default
        }
        if self.scheme == "hmac" and self.header is None:
            raise ValueError(
                "scheme hmac needs `header:`, the name of the header that carries the "
                "signature, such as `header: X-Signature`"
            )
        if self.scheme != "hmac":
            for option in ("header", "algorithm", "encoding", "prefix"):
                if option in explicit:
                    raise ValueError(
                        f"`{option}:` applies only to scheme hmac, because scheme "
                        f"{self.scheme} fixes it; remove `{option}:` or use `scheme: hmac`"
                    )
        if self.scheme in ("github", "hmac") and "tolerance" in explicit:
            raise ValueError(
                f"`tolerance:` applies only to schemes stripe and slack, because scheme "
                f"{self.scheme} signs no timestamp; remove `tolerance:`"
            )
        return self


def verify(
    settings: SignatureSettings,
    *,
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
) -> None:
    """Raise SignatureError unless ``body`` carries a valid signature under ``settings``.

    ``secret`` is the value of the config variable that ``settings.secret`` names.
    ``headers`` may use any case in its names. ``now`` is the receiver's clock in Unix
    seconds, used only by the timestamped schemes. An empty secret raises ConfigError.
    """
    if not secret:
        raise ConfigError(
            "is empty, so anyone could sign deliveries for this webhook trigger",
            variable=settings.secret,
            fix="set it to the signing secret that the sender uses",
        )
    if settings.scheme == "github":
        verify_github(secret=secret, headers=headers, body=body)
    elif settings.scheme == "stripe":
        verify_stripe(
            secret=secret, headers=headers, body=body, now=now, tolerance=settings.tolerance
        )
    elif settings.scheme == "slack":
        verify_slack(
            secret=secret, headers=headers, body=body, now=now, tolerance=settings.tolerance
        )
    else:
        assert settings.header is not None  # the model requires it for hmac
        verify_hmac(
            secret=secret,
            headers=headers,
            body=body,
            header=settings.header,
            algorithm=settings.algorithm,
            encoding=settings.encoding,
            prefix=settings.prefix,
        )


def verify_github(*, secret: str | bytes, headers: Mapping[str, str], body: bytes) -> None:
    """Check GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``."""
    lower = _lower_names(headers)
    if GITHUB_HEADER.lower() not in lower and GITHUB_LEGACY_HEADER.lower() in lower:
        raise SignatureError(
            SignatureFailure.MISSING_HEADER,
            GITHUB_HEADER,
            f"the request has only the SHA-1 {GITHUB_LEGACY_HEADER} header and no "
            f"{GITHUB_HEADER}; SHA-1 signatures are not accepted, and GitHub sends "
            f"{GITHUB_HEADER} whenever the webhook has a secret",
        )
    verify_hmac(
        secret=secret,
        headers=lower,
        body=body,
        header=GITHUB_HEADER,
        algorithm="sha256",
        encoding="hex",
        prefix="sha256=",
    )


def verify_stripe(
    *,
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    """Check ``Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]``.

    Each ``v1`` is a hex HMAC-SHA256 of ``b"<t>." + body``. One match is enough, because
    Stripe sends one ``v1`` per active secret while a secret is being rolled. Other
    schemes, such as the ``v0`` signatures of test events, are ignored. The timestamp must
    lie within ``tolerance`` seconds of ``now``, in the past or the future.
    """
    value = _required_header(headers, STRIPE_HEADER)
    timestamp, signatures = _stripe_elements(value)
    signed = timestamp.encode("ascii") + b"." + body
    expected = hmac.digest(_key(secret), signed, "sha256")
    matched = False
    malformed: list[SignatureError] = []
    for signature in signatures:
        try:
            received = _decode_digest(signature, "hex", "sha256", STRIPE_HEADER)
        except SignatureError as error:
            # A malformed v1 beside well-formed ones is skipped, as a non-matching one is.
            malformed.append(error)
            continue
        # Every v1 is compared, so the time taken does not reveal which one matched.
        matched |= hmac.compare_digest(expected, received)
    if len(malformed) == len(signatures):
        raise malformed[0]
    if not matched:
        raise _mismatch(STRIPE_HEADER, "no v1 signature in it matches the body")
    subject = f"the t= timestamp of {STRIPE_HEADER}"
    _check_timestamp(int(timestamp), now, tolerance, STRIPE_HEADER, subject)


def verify_slack(
    *,
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    """Check Slack's ``X-Slack-Signature: v0=<hex>`` over ``b"v0:<timestamp>:" + body``.

    The timestamp comes from ``X-Slack-Request-Timestamp`` and must lie within
    ``tolerance`` seconds of ``now``.
    """
    timestamp = _required_header(headers, SLACK_TIMESTAMP_HEADER).strip()
    if not _UNIX_SECONDS.match(timestamp):
        raise SignatureError(
            SignatureFailure.MALFORMED_HEADER,
            SLACK_TIMESTAMP_HEADER,
            f"{SLACK_TIMESTAMP_HEADER} is not a Unix time in whole seconds",
        )
    signed = b"v0:" + timestamp.encode("ascii") + b":" + body
    _check_signature(
        _required_header(headers, SLACK_SIGNATURE_HEADER),
        signed,
        secret=secret,
        header=SLACK_SIGNATURE_HEADER,
        algorithm="sha256",
        encoding="hex",
        prefix="v0=",
    )
    _check_timestamp(int(timestamp), now, tolerance, SLACK_TIMESTAMP_HEADER, SLACK_TIMESTAMP_HEADER)


def verify_hmac(
    *,
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    header: str,
    algorithm: Algorithm = "sha256",
    encoding: Encoding = "hex",
    prefix: str = "",
) -> None:
    """Check ``header: <prefix><HMAC of the body, hex or base64>``.

    Hex digits may be upper or lower case. Base64 uses the standard alphabet with padding.
    """
    value = _required_header(headers, header)
    _check_signature(
        value,
        body,
        secret=secret,
        header=header,
        algorithm=algorithm,
        encoding=encoding,
        prefix=prefix,
    )


def _check_signature(
    value: str,
    signed: bytes,
    *,
    secret: str | bytes,
    header: str,
    algorithm: Algorithm,
    encoding: Encoding,
    prefix: str,
) -> None:
    value = value.strip()
    if not value.startswith(prefix):
        raise SignatureError(
            SignatureFailure.MALFORMED_HEADER,
            header,
            f"{header} {_describe_prefix(value)} instead of {prefix!r}; the sender signs "
            "with another algorithm or scheme than this trigger expects",
        )
    received = _decode_digest(value[len(prefix) :], encoding, algorithm, header)
    expected = hmac.digest(_key(secret), signed, algorithm)
    if not hmac.compare_digest(expected, received):
        raise _mismatch(header, "the signature does not match the body")


def _describe_prefix(value: str) -> str:
    """Describe the prefix of a header value without quoting any part of a digest."""
    label, equals, _ = value.partition("=")
    # Labels such as sha1 or v1 are short; a longer run before "=" is base64 digest text.
    if equals and label.isalnum() and len(label) <= 16:
        return f"starts with {label + '='!r}"
    return "has no prefix"


def _stripe_elements(value: str) -> tuple[str, list[str]]:
    """Return the ``t`` value and the ``v1`` values of a Stripe-Signature header."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for element in value.split(","):
        key, _, item = element.strip().partition("=")
        if key == "t":
            timestamps.append(item)
        elif key == "v1":
            signatures.append(item)
    if len(timestamps) != 1 or not _UNIX_SECONDS.match(timestamps[0]):
        found = "no t= element" if not timestamps else f"{len(timestamps)} t= elements"
        if len(timestamps) == 1:
            found = "a t= element that is not a Unix time in whole seconds"
        raise SignatureError(
            SignatureFailure.MALFORMED_HEADER,
            STRIPE_HEADER,
            f"{STRIPE_HEADER} has {found}; it needs exactly one t=<Unix seconds>",
        )
    if not signatures:
        raise SignatureError(
            SignatureFailure.MALFORMED_HEADER,
            STRIPE_HEADER,
            f"{STRIPE_HEADER} has no v1= signature; other schemes such as v0 are ignored",
        )
    return timestamps[0], signatures


def _decode_digest(text: str, encoding: Encoding, algorithm: Algorithm, header: str) -> bytes:
    """Decode a received digest, raising SignatureError when it cannot be one."""
    size = hashlib.new(algorithm).digest_size
    name = _ALGORITHM_NAMES[algorithm]
    if encoding == "hex":
        if not _HEX.match(text) or len(text) != 2 * size:
            found = f"has {len(text)} characters" if _HEX.match(text) else "is not hexadecimal"
            raise SignatureError(
                SignatureFailure.MALFORMED_HEADER,
                header,
                f"the signature in {header} {found}; a {name} signature is {2 * size} "
                "hexadecimal digits",
            )
        return bytes.fromhex(text)
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error:
        decoded = b""
    if len(decoded) != size:
        raise SignatureError(
            SignatureFailure.MALFORMED_HEADER,
            header,
            f"the signature in {header} is not the base64 encoding of a "
            f"{name} signature ({size} bytes)",
        )
    return decoded


def _check_timestamp(
    timestamp: int, now: float, tolerance: float, header: str, subject: str
) -> None:
    """Raise SignatureError when ``timestamp`` is more than ``tolerance`` seconds off ``now``."""
    age = now - timestamp
    if age > tolerance:
        raise SignatureError(
            SignatureFailure.TIMESTAMP_TOO_OLD,
            header,
            f"{subject} is {age:.0f} s old, more than the tolerance of {tolerance:g} s; "
            "the delivery was replayed, or the sender's clock is behind",
        )
    if -age > tolerance:
        raise SignatureError(
            SignatureFailure.TIMESTAMP_IN_FUTURE,
            header,
            f"{subject} is {-age:.0f} s in the future, more than the tolerance of "
            f"{tolerance:g} s; check the clocks of the sender and of this server",
        )


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = _lower_names(headers).get(name.lower())
    if value is None:
        raise SignatureError(
            SignatureFailure.MISSING_HEADER,
            name,
            f"the request has no {name} header; configure the sender to sign its "
            "deliveries with the secret this trigger names",
        )
    return value


def _lower_names(headers: Mapping[str, str]) -> Mapping[str, str]:
    if all(name.islower() for name in headers):
        return headers
    return {name.lower(): value for name, value in headers.items()}


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        # An empty key would let anyone compute valid signatures.
        raise ValueError(
            "the webhook signing secret is empty; set the config variable that the "
            "trigger's signature settings name"
        )
    return key


def _mismatch(header: str, detail: str) -> SignatureError:
    return SignatureError(
        SignatureFailure.MISMATCH,
        header,
        f"{header} is invalid: {detail}; the sender and this instance use different "
        "secrets, or the body was changed on the way",
    )
