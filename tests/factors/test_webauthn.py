"""The WebAuthn factor without a browser: which levels a credential meets, what the options
ask of the authenticator, and how malformed responses are refused."""

from __future__ import annotations

import json

import pytest
from webauthn.helpers import bytes_to_base64url

from stepup.config import DEFAULT_LEVELS, WebAuthn
from stepup.factors import webauthn
from stepup.models import Factor

MFA, PHR, PHRH = DEFAULT_LEVELS.values()
RP = WebAuthn(rp_id="localhost", origins=("http://localhost:8000",))
SUBJECT = "0123456789abcdef0123456789abcdef"


def credential(**data: object) -> Factor:
    base: dict[str, object] = {
        "credential_id": "AAEC",
        "public_key": "pQ",
        "transports": ["internal"],
    }
    base.update(data)
    return Factor("webauthn-1", "webauthn", "Passkey", 0, data=base)


def ceremony(**fields: object) -> webauthn.Ceremony:
    values: dict[str, object] = {
        "purpose": "authenticate",
        "challenge": "AAAA",
        "subject": SUBJECT,
        "user_verification": True,
        "device_bound": False,
        "expires_at": 10**10,
    }
    values.update(fields)
    return webauthn.Ceremony(**values)  # type: ignore[arg-type]


def test_a_device_bound_credential_meets_every_level() -> None:
    kind = webauthn.WebAuthnKind()
    bound = credential(backup_eligible=False, backed_up=False)
    assert all(kind.meets(bound, level) for level in (MFA, PHR, PHRH))


@pytest.mark.parametrize("flags", [{"backup_eligible": True}, {"backed_up": True}])
def test_a_synced_credential_misses_the_device_bound_level(flags: dict[str, bool]) -> None:
    kind = webauthn.WebAuthnKind()
    synced = credential(**flags)
    assert kind.meets(synced, PHR)
    assert not kind.meets(synced, PHRH)


def test_a_suspected_clone_meets_no_level() -> None:
    kind = webauthn.WebAuthnKind()
    assert not any(kind.meets(credential(suspected_clone=True), lv) for lv in (MFA, PHR, PHRH))


def test_amr_says_mfa_only_when_the_user_was_verified() -> None:
    assert webauthn.proof_amr(True) == ["pop", "user", "mfa"]
    assert webauthn.proof_amr(False) == ["pop", "user"]


def test_registration_options_prefer_resident_keys_and_exclude_known_credentials() -> None:
    options = json.loads(
        webauthn.registration_options(RP, SUBJECT, "alice", [credential()], b"\x01" * 32, True)
    )
    assert options["rp"] == {"id": "localhost", "name": "stepup"}
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert [c["id"] for c in options["excludeCredentials"]] == ["AAEC"]
    # The user handle is the subject's digest, not the user's name.
    assert options["user"]["id"] == bytes_to_base64url(bytes.fromhex(SUBJECT))


def test_authentication_options_allow_only_the_given_credentials() -> None:
    options = json.loads(webauthn.authentication_options(RP, [credential()], b"\x02" * 32, False))
    assert options["userVerification"] == "preferred"
    assert [c["id"] for c in options["allowCredentials"]] == ["AAEC"]
    assert options["rpId"] == "localhost"


@pytest.mark.parametrize(
    "text", [None, "", "not json", "[]", '{"type": "public-key"}', "x" * 20_000]
)
def test_malformed_credentials_are_refused(text: str | None) -> None:
    with pytest.raises(webauthn.CeremonyFailed):
        webauthn.parse_credential(text)


def test_an_assertion_for_a_credential_the_subject_lacks_is_refused() -> None:
    with pytest.raises(webauthn.CeremonyFailed, match="not one of the subject's"):
        webauthn.check_assertion(RP, ceremony(), {"id": "OTHER", "response": {}}, [credential()])


def test_an_assertion_naming_another_user_is_refused() -> None:
    answer = {"id": "AAEC", "response": {"userHandle": "c29tZW9uZS1lbHNl"}}
    with pytest.raises(webauthn.CeremonyFailed, match="another user"):
        webauthn.check_assertion(RP, ceremony(), answer, [credential()])


def test_a_forged_assertion_is_refused_before_any_counter_is_touched() -> None:
    answer = {
        "id": "AAEC",
        "rawId": "AAEC",
        "type": "public-key",
        "response": {"clientDataJSON": "e30", "authenticatorData": "AA", "signature": "AA"},
    }
    with pytest.raises(webauthn.CeremonyFailed, match="authentication"):
        webauthn.check_assertion(RP, ceremony(), answer, [credential()])
