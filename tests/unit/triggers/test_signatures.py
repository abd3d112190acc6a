"""Tests of webhook signature verification: GitHub, Stripe, Slack, generic HMAC, settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from pydantic import ValidationError

from splice.errors import ConfigError
from splice.triggers.signatures import (
    SignatureError,
    SignatureFailure,
    SignatureSettings,
    verify,
    verify_github,
    verify_hmac,
    verify_slack,
    verify_stripe,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "github-webhooks"
GITHUB_PAYLOADS = sorted(FIXTURES.glob("*.json"))
SECRET = "test-secret-\u00e9-7f3a"
NOW = 1_700_000_000.0
GITHUB = SignatureSettings(scheme="github", secret="github_secret")
STRIPE = SignatureSettings(scheme="stripe", secret="stripe_secret")
SLACK = SignatureSettings(scheme="slack", secret="slack_secret")


def github_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """Headers of a delivery signed the way GitHub signs it."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def stripe_v1(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def slack_headers(body: bytes, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    signed = f"v0:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {"X-Slack-Signature": f"v0={digest}", "X-Slack-Request-Timestamp": str(timestamp)}


def reason_of(error: pytest.ExceptionInfo[SignatureError]) -> SignatureFailure:
    return error.value.reason


# GitHub


def test_github_documented_example() -> None:
    """The test values in GitHub's "Validating webhook deliveries" guide verify."""
    headers = {
        "x-hub-signature-256": "sha256="
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    }
    verify_github(secret="It's a Secret to Everybody", headers=headers, body=b"Hello, World!")


def test_github_fixtures_copied() -> None:
    """Ten payloads are there to sign, so the parametrized tests below cannot pass empty."""
    assert 10 == len(GITHUB_PAYLOADS)


@pytest.mark.parametrize("path", GITHUB_PAYLOADS, ids=lambda path: path.name)
def test_github_payload_verifies(path: Path) -> None:
    """Each real payload, signed as GitHub signs it, verifies over its exact bytes."""
    body = path.read_bytes()
    verify(GITHUB, secret=SECRET, headers=github_headers(body), body=body, now=NOW)


@pytest.mark.parametrize("path", GITHUB_PAYLOADS, ids=lambda path: path.name)
def test_github_payload_flipped_byte(path: Path) -> None:
    """One flipped bit in the middle of the body is a mismatch."""
    body = path.read_bytes()
    headers = github_headers(body)
    tampered = bytearray(body)
    tampered[len(body) // 2] ^= 0x01
    with pytest.raises(SignatureError) as error:
        verify(GITHUB, secret=SECRET, headers=headers, body=bytes(tampered), now=NOW)
    assert SignatureFailure.MISMATCH == reason_of(error)


def test_github_wrong_secret() -> None:
    """A delivery signed with another secret is a mismatch."""
    body = GITHUB_PAYLOADS[0].read_bytes()
    headers = github_headers(body, secret="another-secret")
    with pytest.raises(SignatureError) as error:
        verify(GITHUB, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MISMATCH == reason_of(error)
    assert "X-Hub-Signature-256" == error.value.header


def test_github_missing_header() -> None:
    """A delivery without X-Hub-Signature-256 fails with its own reason."""
    body = b'{"zen": "Keep it logically awesome."}'
    with pytest.raises(SignatureError) as error:
        verify(
            GITHUB, secret=SECRET, headers={"Content-Type": "application/json"}, body=body, now=NOW
        )
    assert SignatureFailure.MISSING_HEADER == reason_of(error)
    assert "no X-Hub-Signature-256 header" in str(error.value)


def test_github_only_legacy_sha1_header() -> None:
    """The SHA-1 X-Hub-Signature alone is rejected, and the message names SHA-1."""
    body = b"{}"
    digest = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    headers = {"X-Hub-Signature": f"sha1={digest}"}
    with pytest.raises(SignatureError) as error:
        verify(GITHUB, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MISSING_HEADER == reason_of(error)
    assert "SHA-1" in str(error.value)


def test_github_sha1_prefix() -> None:
    """A sha1= value in X-Hub-Signature-256 is malformed, whatever its digest."""
    body = b"{}"
    digest = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha1={digest}"}
    with pytest.raises(SignatureError) as error:
        verify(GITHUB, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)
    assert "'sha1='" in str(error.value)


def test_github_truncated_hex() -> None:
    """A signature one hex digit short is malformed."""
    body = b"{}"
    headers = github_headers(body)
    headers["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"][:-1]
    with pytest.raises(SignatureError) as error:
        verify(GITHUB, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)
    assert "63 characters" in str(error.value)


def test_github_header_names_any_case() -> None:
    """Header names match whatever their case."""
    body = b'{"action": "opened"}'
    signature = github_headers(body)["X-Hub-Signature-256"]
    for name in ("x-hub-signature-256", "X-HUB-SIGNATURE-256", "X-Hub-Signature-256"):
        verify(GITHUB, secret=SECRET, headers={name: signature}, body=body, now=NOW)


def test_github_uppercase_hex() -> None:
    """Upper-case hex digits decode to the same digest."""
    body = b'{"action": "opened"}'
    signature = github_headers(body)["X-Hub-Signature-256"]
    headers = {"X-Hub-Signature-256": "sha256=" + signature.removeprefix("sha256=").upper()}
    verify(GITHUB, secret=SECRET, headers=headers, body=body, now=NOW)


def test_github_non_ascii_body() -> None:
    """A UTF-8 body is signed and verified as its bytes, not as re-encoded text."""
    body = '{"title": "Caf\u00e9 \u2615"}'.encode()
    verify(GITHUB, secret=SECRET, headers=github_headers(body), body=body, now=NOW)


def test_errors_hide_secret_and_signatures() -> None:
    """No failure message contains the secret, the expected or the received digest."""
    body = b'{"a": 1}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    received = hmac.new(b"other", body, hashlib.sha256).hexdigest()
    cases = [
        {"X-Hub-Signature-256": f"sha256={received}"},
        {"X-Hub-Signature-256": f"sha256={received[:-2]}"},
        {"X-Hub-Signature-256": f"sha1={received}"},
        {"X-Hub-Signature-256": base64.b64encode(bytes.fromhex(received)).decode()},
        {},
    ]
    for headers in cases:
        with pytest.raises(SignatureError) as error:
            verify(GITHUB, secret=SECRET, headers=headers, body=body, now=NOW)
        message = str(error.value)
        assert SECRET not in message
        assert expected not in message
        assert received[:-2] not in message
        assert base64.b64encode(bytes.fromhex(received)).decode()[:20] not in message


def test_empty_secret_is_config_error() -> None:
    """An empty secret would accept forged deliveries, so it names the config variable."""
    body = b"{}"
    with pytest.raises(ConfigError) as error:
        verify(GITHUB, secret="", headers=github_headers(body, secret="x"), body=body, now=NOW)
    assert "github_secret" == error.value.variable


# Stripe


def test_stripe_valid() -> None:
    """A signature made at the receiver's time verifies."""
    body = b'{"id": "evt_1", "type": "invoice.paid"}'
    t = int(NOW)
    headers = {"Stripe-Signature": f"t={t},v1={stripe_v1(body, t)}"}
    verify(STRIPE, secret=SECRET, headers=headers, body=body, now=NOW)


def test_stripe_several_v1() -> None:
    """One matching v1 among several is enough, in any position."""
    body = b'{"id": "evt_2"}'
    t = int(NOW)
    good = stripe_v1(body, t)
    old = stripe_v1(body, t, secret="rolled-secret")
    for value in (f"t={t},v1={old},v1={good}", f"t={t},v1={good},v1={old}", f"v1={good},t={t}"):
        verify(STRIPE, secret=SECRET, headers={"Stripe-Signature": value}, body=body, now=NOW)


def test_stripe_v0_ignored() -> None:
    """A v0 test signature next to a valid v1 is ignored; alone it is not enough."""
    body = b'{"id": "evt_3"}'
    t = int(NOW)
    v0 = stripe_v1(body, t)
    headers = {"Stripe-Signature": f"t={t},v1={stripe_v1(body, t)},v0={v0}"}
    verify(STRIPE, secret=SECRET, headers=headers, body=body, now=NOW)
    with pytest.raises(SignatureError) as error:
        verify(
            STRIPE,
            secret=SECRET,
            headers={"Stripe-Signature": f"t={t},v0={v0}"},
            body=body,
            now=NOW,
        )
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)


def test_stripe_malformed_extra_v1() -> None:
    """A malformed v1 beside a matching one is skipped; alone it is malformed."""
    body = b'{"id": "evt_11"}'
    t = int(NOW)
    headers = {"Stripe-Signature": f"t={t},v1=zz,v1={stripe_v1(body, t)}"}
    verify(STRIPE, secret=SECRET, headers=headers, body=body, now=NOW)
    with pytest.raises(SignatureError) as error:
        verify(
            STRIPE, secret=SECRET, headers={"Stripe-Signature": f"t={t},v1=zz"}, body=body, now=NOW
        )
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)


def test_stripe_no_v1_matches() -> None:
    """Several v1 values, none made with this secret, are a mismatch."""
    body = b'{"id": "evt_4"}'
    t = int(NOW)
    value = f"t={t},v1={stripe_v1(body, t, 'a')},v1={stripe_v1(body, t, 'b')}"
    with pytest.raises(SignatureError) as error:
        verify(STRIPE, secret=SECRET, headers={"Stripe-Signature": value}, body=body, now=NOW)
    assert SignatureFailure.MISMATCH == reason_of(error)


def test_stripe_old_timestamp() -> None:
    """A correctly signed timestamp older than the tolerance is rejected."""
    body = b'{"id": "evt_5"}'
    t = int(NOW) - 301
    headers = {"Stripe-Signature": f"t={t},v1={stripe_v1(body, t)}"}
    with pytest.raises(SignatureError) as error:
        verify(STRIPE, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.TIMESTAMP_TOO_OLD == reason_of(error)
    assert "301 s old" in str(error.value)


def test_stripe_future_timestamp() -> None:
    """A correctly signed timestamp further ahead than the tolerance is rejected."""
    body = b'{"id": "evt_6"}'
    t = int(NOW) + 301
    headers = {"Stripe-Signature": f"t={t},v1={stripe_v1(body, t)}"}
    with pytest.raises(SignatureError) as error:
        verify(STRIPE, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.TIMESTAMP_IN_FUTURE == reason_of(error)


def test_stripe_tolerance_edges() -> None:
    """Timestamps exactly at the tolerance, either side, are accepted."""
    body = b'{"id": "evt_7"}'
    for t in (int(NOW) - 300, int(NOW) + 300):
        headers = {"Stripe-Signature": f"t={t},v1={stripe_v1(body, t)}"}
        verify(STRIPE, secret=SECRET, headers=headers, body=body, now=NOW)


def test_stripe_custom_tolerance() -> None:
    """The settings' tolerance replaces the default of 300 seconds."""
    body = b'{"id": "evt_8"}'
    t = int(NOW) - 60
    headers = {"Stripe-Signature": f"t={t},v1={stripe_v1(body, t)}"}
    strict = SignatureSettings(scheme="stripe", secret="stripe_secret", tolerance=30)
    with pytest.raises(SignatureError) as error:
        verify(strict, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.TIMESTAMP_TOO_OLD == reason_of(error)


def test_stripe_missing_timestamp() -> None:
    """A header without t= is malformed."""
    body = b'{"id": "evt_9"}'
    headers = {"Stripe-Signature": f"v1={stripe_v1(body, int(NOW))}"}
    with pytest.raises(SignatureError) as error:
        verify(STRIPE, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)
    assert "no t= element" in str(error.value)


def test_stripe_bad_timestamps() -> None:
    """Two t= elements, or one that is not whole seconds, are malformed."""
    body = b"{}"
    t = int(NOW)
    v1 = stripe_v1(body, t)
    for value in (f"t={t},t={t},v1={v1}", f"t={t}.5,v1={v1}", f"t=-{t},v1={v1}", f"t=,v1={v1}"):
        with pytest.raises(SignatureError) as error:
            verify(STRIPE, secret=SECRET, headers={"Stripe-Signature": value}, body=body, now=NOW)
        assert SignatureFailure.MALFORMED_HEADER == reason_of(error), value


def test_stripe_timestamp_is_signed() -> None:
    """Moving t= to now without re-signing is a mismatch, not an accepted delivery."""
    body = b'{"id": "evt_10"}'
    signed_at = int(NOW) - 3600
    headers = {"Stripe-Signature": f"t={int(NOW)},v1={stripe_v1(body, signed_at)}"}
    with pytest.raises(SignatureError) as error:
        verify(STRIPE, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MISMATCH == reason_of(error)


def test_stripe_missing_header() -> None:
    """A request without Stripe-Signature fails with its own reason."""
    with pytest.raises(SignatureError) as error:
        verify_stripe(secret=SECRET, headers={}, body=b"{}", now=NOW)
    assert SignatureFailure.MISSING_HEADER == reason_of(error)


def test_stripe_spaces_between_elements() -> None:
    """Whitespace around elements, as after joining repeated headers, is tolerated."""
    body = b"{}"
    t = int(NOW)
    headers = {"stripe-signature": f"t={t}, v1={stripe_v1(body, t)}"}
    verify_stripe(secret=SECRET, headers=headers, body=body, now=NOW)


# Slack


def test_slack_documented_example() -> None:
    """The worked example of Slack's request-verification guide verifies at its own time."""
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com"
        b"%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    verify_slack(
        secret="8f742231b10e8888abcd99yyyzzz85a5", headers=headers, body=body, now=1531420618
    )


def test_slack_valid() -> None:
    """A signature made at the receiver's time verifies."""
    body = b'{"type": "event_callback"}'
    headers = slack_headers(body, int(NOW))
    verify(SLACK, secret=SECRET, headers=headers, body=body, now=NOW)


def test_slack_old_timestamp() -> None:
    """A correctly signed request older than the tolerance is rejected."""
    body = b'{"type": "event_callback"}'
    headers = slack_headers(body, int(NOW) - 600)
    with pytest.raises(SignatureError) as error:
        verify(SLACK, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.TIMESTAMP_TOO_OLD == reason_of(error)
    assert "X-Slack-Request-Timestamp" == error.value.header


def test_slack_future_timestamp() -> None:
    """A correctly signed request from too far ahead is rejected."""
    body = b"{}"
    headers = slack_headers(body, int(NOW) + 600)
    with pytest.raises(SignatureError) as error:
        verify(SLACK, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.TIMESTAMP_IN_FUTURE == reason_of(error)


def test_slack_missing_timestamp() -> None:
    """A signature without X-Slack-Request-Timestamp fails with its own reason."""
    body = b"{}"
    headers = slack_headers(body, int(NOW))
    del headers["X-Slack-Request-Timestamp"]
    with pytest.raises(SignatureError) as error:
        verify(SLACK, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MISSING_HEADER == reason_of(error)
    assert "X-Slack-Request-Timestamp" == error.value.header


def test_slack_bad_timestamp() -> None:
    """A timestamp that is not whole seconds is malformed."""
    body = b"{}"
    headers = slack_headers(body, int(NOW))
    headers["X-Slack-Request-Timestamp"] = "soon"
    with pytest.raises(SignatureError) as error:
        verify(SLACK, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)


def test_slack_wrong_version() -> None:
    """A signature without the v0= prefix is malformed."""
    body = b"{}"
    headers = slack_headers(body, int(NOW))
    headers["X-Slack-Signature"] = headers["X-Slack-Signature"].replace("v0=", "v1=")
    with pytest.raises(SignatureError) as error:
        verify(SLACK, secret=SECRET, headers=headers, body=body, now=NOW)
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)


# Generic HMAC

HMAC_CASES = [
    ("sha256", "hex", ""),
    ("sha256", "base64", ""),
    ("sha1", "hex", "sha1="),
    ("sha512", "hex", "sha512="),
    ("sha512", "base64", ""),
]


def encode_digest(body: bytes, algorithm: str, encoding: str) -> str:
    digest = hmac.digest(SECRET.encode(), body, algorithm)
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@pytest.mark.parametrize(("algorithm", "encoding", "prefix"), HMAC_CASES)
def test_hmac_valid(algorithm: str, encoding: str, prefix: str) -> None:
    """Each algorithm and encoding verifies a body it signed."""
    settings = SignatureSettings.model_validate(
        {
            "scheme": "hmac",
            "secret": "shop_secret",
            "header": "X-Shop-Hmac",
            "algorithm": algorithm,
            "encoding": encoding,
            "prefix": prefix,
        }
    )
    body = b'{"order": 17}'
    headers = {"x-shop-hmac": prefix + encode_digest(body, algorithm, encoding)}
    verify(settings, secret=SECRET, headers=headers, body=body, now=NOW)


@pytest.mark.parametrize(("algorithm", "encoding", "prefix"), HMAC_CASES)
def test_hmac_mismatch(algorithm: str, encoding: str, prefix: str) -> None:
    """Each algorithm and encoding rejects a body changed after signing."""
    body = b'{"order": 17}'
    value = prefix + encode_digest(body, algorithm, encoding)
    with pytest.raises(SignatureError) as error:
        verify_hmac(
            secret=SECRET,
            headers={"X-Shop-Hmac": value},
            body=b'{"order": 18}',
            header="X-Shop-Hmac",
            algorithm=algorithm,  # type: ignore[arg-type]
            encoding=encoding,  # type: ignore[arg-type]
            prefix=prefix,
        )
    assert SignatureFailure.MISMATCH == reason_of(error)


def test_hmac_bad_base64() -> None:
    """Text that is not base64, or decodes to the wrong length, is malformed."""
    body = b"{}"
    good = encode_digest(body, "sha256", "base64")
    for value in ("not base64!", good[:-4], good.rstrip("=")):
        with pytest.raises(SignatureError) as error:
            verify_hmac(
                secret=SECRET,
                headers={"X-Sig": value},
                body=body,
                header="X-Sig",
                encoding="base64",
            )
        assert SignatureFailure.MALFORMED_HEADER == reason_of(error), value


def test_hmac_hex_with_non_hex() -> None:
    """A hex signature with a non-hex character is malformed."""
    body = b"{}"
    value = "g" + encode_digest(body, "sha256", "hex")[1:]
    with pytest.raises(SignatureError) as error:
        verify_hmac(secret=SECRET, headers={"X-Sig": value}, body=body, header="X-Sig")
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)
    assert "is not hexadecimal" in str(error.value)


def test_hmac_missing_prefix() -> None:
    """A configured prefix must be there."""
    body = b"{}"
    value = encode_digest(body, "sha256", "hex")
    with pytest.raises(SignatureError) as error:
        verify_hmac(
            secret=SECRET, headers={"X-Sig": value}, body=body, header="X-Sig", prefix="sha256="
        )
    assert SignatureFailure.MALFORMED_HEADER == reason_of(error)
    assert "has no prefix" in str(error.value)


def test_hmac_missing_header() -> None:
    """A request without the configured header fails with its own reason."""
    with pytest.raises(SignatureError) as error:
        verify_hmac(secret=SECRET, headers={"X-Other": "x"}, body=b"{}", header="X-Sig")
    assert SignatureFailure.MISSING_HEADER == reason_of(error)
    assert "X-Sig" == error.value.header


def test_hmac_bytes_secret() -> None:
    """A secret given as bytes is used as the key unchanged."""
    body = b"{}"
    key = bytes(range(32))
    value = hmac.digest(key, body, "sha256").hex()
    verify_hmac(secret=key, headers={"X-Sig": value}, body=body, header="X-Sig")


# Settings


def settings_error(**fields: object) -> str:
    with pytest.raises(ValidationError) as error:
        SignatureSettings.model_validate(fields)
    return str(error.value)


def test_settings_defaults() -> None:
    """Defaults: sha256, hex, no prefix, 300 seconds of tolerance."""
    settings = SignatureSettings(scheme="hmac", secret="s", header="X-Sig")
    assert ("sha256", "hex", "", 300.0) == (
        settings.algorithm,
        settings.encoding,
        settings.prefix,
        settings.tolerance,
    )


def test_settings_hmac_needs_header() -> None:
    """Scheme hmac without a header names the missing setting."""
    message = settings_error(scheme="hmac", secret="s")
    assert "scheme hmac needs `header:`" in message


def test_settings_header_only_for_hmac() -> None:
    """A header for github names the option and the fix."""
    message = settings_error(scheme="github", secret="s", header="X-Hub-Signature-256")
    assert "`header:` applies only to scheme hmac" in message
    assert "remove `header:`" in message


def test_settings_algorithm_only_for_hmac() -> None:
    """An algorithm for stripe is rejected: Stripe fixes SHA-256."""
    message = settings_error(scheme="stripe", secret="s", algorithm="sha1")
    assert "`algorithm:` applies only to scheme hmac" in message


def test_settings_tolerance_needs_timestamp() -> None:
    """A tolerance for github is rejected: GitHub signs no timestamp."""
    message = settings_error(scheme="github", secret="s", tolerance=60)
    assert "remove `tolerance:`" in message


def test_settings_tolerance_positive() -> None:
    """A tolerance of zero is rejected on the tolerance field."""
    message = settings_error(scheme="slack", secret="s", tolerance=0)
    assert "tolerance" in message
    assert "greater than 0" in message


def test_settings_secret_expression() -> None:
    """An expression in secret is rejected with the bare name to write instead."""
    message = settings_error(scheme="github", secret="{{ config.gh_secret }}")
    assert "`secret: gh_secret`" in message


def test_settings_secret_not_a_name() -> None:
    """A value that cannot be a config variable name is rejected."""
    message = settings_error(scheme="github", secret="my secret!")
    assert "is not a config variable name" in message


def test_settings_unknown_scheme() -> None:
    """An unknown scheme lists the known ones."""
    message = settings_error(scheme="gitlab", secret="s")
    assert "'github', 'stripe', 'slack' or 'hmac'" in message


def test_settings_bad_header_name() -> None:
    """A header written with its value is rejected."""
    message = settings_error(scheme="hmac", secret="s", header="X-Sig: sha256")
    assert "is not a valid HTTP header name" in message


def test_settings_unknown_field() -> None:
    """A misspelt option is rejected, not ignored."""
    message = settings_error(scheme="github", secret="s", secrte="t")
    assert "secrte" in message
