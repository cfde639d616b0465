"""The policy file: stepup.config.parse/load, every refusal, and environment overrides."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from stepup.config import ConfigError, hash_secret, load, parse
from tests.support.stepup import CLIENT_ID, RS_ID, Upstream, policy_document, toml_document

# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def document(upstream: Upstream, tmp_path: Path) -> dict[str, Any]:
    return policy_document(upstream, tmp_path / "data")


def problems_of(document: dict[str, Any], base_dir: Path, **environ: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(document, base_dir=base_dir, environ=environ)
    problems = caught.value.problems
    assert problems, "ConfigError without problems"
    assert str(caught.value) == "\n".join(problems)
    return problems


def assert_problem(problems: list[str], *fragments: str) -> None:
    matching = [p for p in problems if all(f in p for f in fragments)]
    assert matching, f"no problem mentions {fragments}; got {problems}"


def client(document: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return document["clients"][index]  # type: ignore[no-any-return]


# -- a good policy ------------------------------------------------------------------------


def test_toml_helper_round_trips(document: dict[str, Any]) -> None:
    assert tomllib.loads(toml_document(document)) == document


def test_test_policy_parses(document: dict[str, Any], tmp_path: Path) -> None:
    config = parse(document, base_dir=tmp_path)
    assert config.issuer == "http://localhost:8000"
    assert set(config.clients) == {"bank", "shop"}
    assert set(config.resource_servers) == {"payments-rs", "other-rs"}
    assert set(config.scopes) == {"payments:write", "audit:read", "keys:admin"}
    assert config.scopes["keys:admin"].acr == "urn:stepup:acr:phr"
    assert config.scopes["audit:read"].single_use is True
    assert config.deployment.redis_url is None
    assert config.deployment.embedded_redis


def test_test_policy_loads_from_a_toml_file(document: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "stepup.toml"
    path.write_text(toml_document(document))
    config = load(path, environ={})
    assert config == parse(document, base_dir=tmp_path)


def test_relative_paths_are_relative_to_the_policy_file(
    document: dict[str, Any], tmp_path: Path
) -> None:
    document["server"] = {"data_dir": "state", "signing_key_file": "keys/signing.json"}
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "stepup.toml"
    path.write_text(toml_document(document))
    deployment = load(path, environ={}).deployment
    assert deployment.data_dir == tmp_path / "etc" / "state"
    assert deployment.signing_key_file == tmp_path / "etc" / "keys" / "signing.json"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "missing.toml", environ={})
    assert_problem(caught.value.problems, "missing.toml", "cannot read")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('issuer = "http://localhost:8000"\n[clients\n')
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert_problem(caught.value.problems, "broken.toml", "TOML")


# -- all problems at once -----------------------------------------------------------------


def test_every_problem_is_listed_at_once(document: dict[str, Any], tmp_path: Path) -> None:
    document["bogus"] = 1
    client(document, 0)["secret_hash"] = "md5:0123"
    client(document, 1)["redirect_uris"] = ["https://shop.example/cb#frag"]
    del document["resource_servers"][0]["name"]
    document["scopes"]["payments:write"]["token_lifetime"] = 5000
    document["throttle"] = {"max_failures": 500}
    document["upstream"][0]["algorithms"] = ["HS256"]
    problems = problems_of(document, tmp_path)
    assert_problem(problems, "unknown key 'bogus'")
    assert_problem(problems, "clients[0].secret_hash")
    assert_problem(problems, "clients[1].redirect_uris", "#frag")
    assert_problem(problems, "resource_servers[0]", "'name'")
    assert_problem(problems, "token_lifetime", "5000")
    assert_problem(problems, "throttle.max_failures")
    assert_problem(problems, "HS256")
    assert len(problems) == 7, problems


# -- separation of duties -----------------------------------------------------------------


def test_client_that_is_also_a_resource_server_is_refused(
    document: dict[str, Any], tmp_path: Path
) -> None:
    document["resource_servers"][0]["id"] = CLIENT_ID
    assert_problem(problems_of(document, tmp_path), CLIENT_ID, "also a resource server")


def test_client_sharing_its_secret_with_a_resource_server_is_refused(
    document: dict[str, Any], tmp_path: Path
) -> None:
    document["resource_servers"][0]["secret_hash"] = client(document)["secret_hash"]
    assert_problem(problems_of(document, tmp_path), CLIENT_ID, "secret", RS_ID)


def test_two_clients_sharing_a_secret_are_refused(document: dict[str, Any], tmp_path: Path) -> None:
    client(document, 1)["secret_hash"] = client(document, 0)["secret_hash"]
    assert_problem(problems_of(document, tmp_path), "share", "secret")


def test_elevatable_scope_without_a_level_is_refused(
    document: dict[str, Any], tmp_path: Path
) -> None:
    client(document)["scopes"].append("wire:transfer")
    assert_problem(problems_of(document, tmp_path), CLIENT_ID, "wire:transfer", "no level")


def test_scope_rule_without_acr_is_refused(document: dict[str, Any], tmp_path: Path) -> None:
    del document["scopes"]["payments:write"]["acr"]
    problems = problems_of(document, tmp_path)
    assert_problem(problems, "payments:write", "acr")


def test_scope_with_unknown_level_is_refused(document: dict[str, Any], tmp_path: Path) -> None:
    document["scopes"]["payments:write"]["acr"] = "urn:example:acr:gold"
    assert_problem(problems_of(document, tmp_path), "urn:example:acr:gold")


def test_token_lifetime_above_the_maximum_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    document = policy_document(upstream, tmp_path / "data", max_token_lifetime=200)
    # payments:write asks for 300 s; the policy caps every lifetime at 200 s.
    assert_problem(problems_of(document, tmp_path), "payments:write", "max_token_lifetime")


def test_token_lifetime_above_the_default_maximum_is_refused(
    document: dict[str, Any], tmp_path: Path
) -> None:
    document["scopes"]["audit:read"]["token_lifetime"] = 901
    assert_problem(problems_of(document, tmp_path), "audit:read", "max_token_lifetime")


# -- unknown keys and bad values ----------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "path"),
    [
        ("policy", ()),
        ("server", ("server",)),
        ("limits", ("limits",)),
        ("clients[0]", ("clients", 0)),
        ("resource_servers[1]", ("resource_servers", 1)),
        ("upstream[0]", ("upstream", 0)),
        ("payments:write", ("scopes", "payments:write")),
    ],
)
def test_unknown_keys_are_refused(
    document: dict[str, Any], tmp_path: Path, where: str, path: tuple[str | int, ...]
) -> None:
    table: Any = document
    for step in path:
        table = table[step]
    table["colour"] = "blue"
    problems = problems_of(document, tmp_path)
    assert_problem(problems, where, "unknown key 'colour'")
    assert len(problems) == 1, problems


@pytest.mark.parametrize("algorithm", ["HS256", "HS512", "none", "None"])
def test_symmetric_or_none_algorithms_are_refused(
    document: dict[str, Any], tmp_path: Path, algorithm: str
) -> None:
    document["upstream"][0]["algorithms"] = ["ES256", algorithm]
    assert_problem(problems_of(document, tmp_path), "algorithms", algorithm)


def test_asymmetric_algorithms_are_accepted(document: dict[str, Any], tmp_path: Path) -> None:
    document["upstream"][0]["algorithms"] = ["RS256", "EdDSA"]
    assert parse(document, base_dir=tmp_path).upstreams[0].algorithms == ("RS256", "EdDSA")


@pytest.mark.parametrize(
    "uri",
    [
        "https://bank.example/cb#fragment",
        "http://bank.example/cb",
        "http://10.0.0.1/cb",
        "/relative/cb",
        "bank.example/cb",
    ],
)
def test_bad_redirect_uris_are_refused(document: dict[str, Any], tmp_path: Path, uri: str) -> None:
    client(document)["redirect_uris"] = [uri]
    assert_problem(problems_of(document, tmp_path), "redirect_uris", uri)


@pytest.mark.parametrize(
    "uri", ["https://bank.example/cb", "http://127.0.0.1:8080/cb", "http://localhost/cb?x=1"]
)
def test_good_redirect_uris_are_accepted(
    document: dict[str, Any], tmp_path: Path, uri: str
) -> None:
    client(document)["redirect_uris"] = [uri]
    assert parse(document, base_dir=tmp_path).clients[CLIENT_ID].redirect_uris == (uri,)


def test_more_than_100_max_failures_is_refused(document: dict[str, Any], tmp_path: Path) -> None:
    document["throttle"] = {"max_failures": 101}
    assert_problem(problems_of(document, tmp_path), "throttle.max_failures")
    document["throttle"] = {"max_failures": 100}
    assert parse(document, base_dir=tmp_path).throttle.max_failures == 100


def test_wrong_types_are_reported_with_their_place(
    document: dict[str, Any], tmp_path: Path
) -> None:
    document["scopes"]["payments:write"]["max_age"] = "five minutes"
    document["limits"] = {"code_lifetime": True}
    problems = problems_of(document, tmp_path)
    assert_problem(problems, "max_age", "expected int")
    assert_problem(problems, "limits.code_lifetime", "expected int")


@pytest.mark.parametrize(
    "issuer", ["http://stepup.example", "https://stepup.example/", "https://stepup.example?x=1"]
)
def test_bad_issuers_are_refused(document: dict[str, Any], tmp_path: Path, issuer: str) -> None:
    document["issuer"] = issuer
    assert_problem(problems_of(document, tmp_path), "issuer")


def test_secret_hash_must_be_a_sha256_digest(document: dict[str, Any], tmp_path: Path) -> None:
    client(document)["secret_hash"] = "plain-text-secret"
    assert_problem(problems_of(document, tmp_path), "secret_hash", "hash-secret")


def test_a_policy_without_upstream_is_refused(document: dict[str, Any], tmp_path: Path) -> None:
    del document["upstream"]
    assert_problem(problems_of(document, tmp_path), "upstream")


# -- environment overrides ------------------------------------------------------------------


def test_environment_overrides_win_over_the_file(document: dict[str, Any], tmp_path: Path) -> None:
    document["server"] = {
        "port": 9000,
        "redis_url": "redis://from-file:6379/0",
        "data_dir": str(tmp_path / "file-data"),
    }
    path = tmp_path / "stepup.toml"
    path.write_text(toml_document(document))
    environ = {
        "STEPUP_REDIS_URL": "redis://from-env:6380/1",
        "STEPUP_PORT": "9100",
        "STEPUP_ISSUER": "https://stepup.example",
        "STEPUP_DATA_DIR": str(tmp_path / "env-data"),
    }
    config = load(path, environ=environ)
    assert config.deployment.redis_url == "redis://from-env:6380/1"
    assert config.deployment.port == 9100
    assert config.issuer == "https://stepup.example"
    assert config.deployment.data_dir == tmp_path / "env-data"
    assert not config.deployment.embedded_redis

    without = load(path, environ={})
    assert without.deployment.redis_url == "redis://from-file:6379/0"
    assert without.deployment.port == 9000
    assert without.issuer == "http://localhost:8000"
    assert without.deployment.data_dir == tmp_path / "file-data"


def test_environment_issuer_is_checked_too(document: dict[str, Any], tmp_path: Path) -> None:
    problems = problems_of(document, tmp_path, STEPUP_ISSUER="http://stepup.example")
    assert_problem(problems, "issuer")


@pytest.mark.parametrize("port", ["eighty", "80a", "-1", "8080.0", "70000"])
def test_bad_stepup_port_is_reported(document: dict[str, Any], tmp_path: Path, port: str) -> None:
    assert_problem(problems_of(document, tmp_path, STEPUP_PORT=port), "STEPUP_PORT")


def test_bad_port_in_the_file_is_reported(document: dict[str, Any], tmp_path: Path) -> None:
    document["server"]["port"] = 70000
    assert_problem(problems_of(document, tmp_path), "port")


def test_hash_secret_is_prefixed_sha256(tmp_path: Path) -> None:
    hashed = hash_secret("bank-secret-0123456789abcdef")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", hashed)
    assert hashed != hash_secret("bank-secret-0123456789abcdeF")


def test_documents_are_not_modified_by_parsing(document: dict[str, Any], tmp_path: Path) -> None:
    before = copy.deepcopy(document)
    parse(document, base_dir=tmp_path)
    assert document == before


# -- WebAuthn relying party and factor rules ----------------------------------------------


def test_webauthn_relying_party_defaults_to_the_issuer(
    document: dict[str, Any], tmp_path: Path
) -> None:
    config = parse(document, base_dir=tmp_path)
    assert config.relying_party.rp_id == "localhost"
    assert config.relying_party.origins == ("http://localhost:8000",)


def test_webauthn_relying_party_may_be_a_parent_domain(
    document: dict[str, Any], tmp_path: Path
) -> None:
    document["issuer"] = "https://login.bank.example"
    document["webauthn"] = {
        "rp_id": "bank.example",
        "rp_name": "Example Bank",
        "origins": ["https://login.bank.example", "https://bank.example"],
        "challenge_lifetime": 90,
    }
    rp = parse(document, base_dir=tmp_path).relying_party
    assert (rp.rp_id, rp.rp_name, rp.challenge_lifetime) == ("bank.example", "Example Bank", 90)
    assert rp.origins == ("https://login.bank.example", "https://bank.example")


@pytest.mark.parametrize(
    ("webauthn", "fragment"),
    [
        ({"rp_id": "other.example"}, "is not a suffix"),
        ({"origins": ["http://evil.example"]}, "not an https"),
        ({"origins": ["https://localhost/path"]}, "not an https"),
        ({"challenge_lifetime": 5}, "between 10 and 600"),
        ({"relying": "x"}, "unknown key 'relying'"),
    ],
)
def test_bad_webauthn_settings_are_refused(
    document: dict[str, Any], tmp_path: Path, webauthn: dict[str, Any], fragment: str
) -> None:
    document["webauthn"] = webauthn
    assert_problem(problems_of(document, tmp_path), "webauthn", fragment)


@pytest.mark.parametrize(
    ("factors", "fragment"),
    [
        ({"recovery_codes": 2}, "between 4 and 20"),
        ({"last_factor": "ignore"}, "'refuse' or 'warn'"),
        ({"spare": 1}, "unknown key 'spare'"),
    ],
)
def test_bad_factor_rules_are_refused(
    document: dict[str, Any], tmp_path: Path, factors: dict[str, Any], fragment: str
) -> None:
    document["factors"] = factors
    assert_problem(problems_of(document, tmp_path), "factors", fragment)


def test_factor_rules_are_read(document: dict[str, Any], tmp_path: Path) -> None:
    document["factors"] = {"recovery_codes": 12, "last_factor": "warn"}
    factors = parse(document, base_dir=tmp_path).factors
    assert (factors.recovery_codes, factors.last_factor) == (12, "warn")


def test_audit_log_lines_are_batched_unless_the_policy_says_immediate(
    document: dict[str, Any], tmp_path: Path
) -> None:
    assert parse(document, base_dir=tmp_path).audit.log_lines == "batched"
    document["audit"] = {"log_lines": "immediate"}
    assert parse(document, base_dir=tmp_path).audit.log_lines == "immediate"


@pytest.mark.parametrize(
    ("log_lines", "fragment"),
    [
        ("sync", "must be 'batched' or 'immediate'"),
        ("Immediate", "must be 'batched' or 'immediate'"),
        ("", "must be 'batched' or 'immediate'"),
        (True, "expected str, got bool"),
    ],
)
def test_bad_audit_log_lines_are_refused(
    document: dict[str, Any], tmp_path: Path, log_lines: object, fragment: str
) -> None:
    document["audit"] = {"log_lines": log_lines}
    problems = problems_of(document, tmp_path)
    assert_problem(problems, "audit.log_lines", fragment)
    assert len(problems) == 1
