"""The toolkit's challenges read back to the same values with stepup's own parser and with an
independent, strict reading of RFC 9110 §11 written here (a regular expression per rule)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from stepup.protocol.challenge import parse_www_authenticate, step_up_requirement
from stepup.resource import InsufficientScope, InvalidToken, Refusal, Requirement

# RFC 9110 §5.6.2 token, §5.6.4 quoted-string (qdtext and quoted-pair, obs-text included).
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
PARAM = rf"(?:{TOKEN})[ \t]*=[ \t]*(?:{TOKEN}|{QUOTED})"
# §11.2 challenge = auth-scheme [ 1*SP #auth-param ], one challenge, no empty elements.
CHALLENGE = re.compile(rf"({TOKEN})(?: +({PARAM}(?:[ \t]*,[ \t]*{PARAM})*))?")
ONE_PARAM = re.compile(rf"({TOKEN})[ \t]*=[ \t]*({TOKEN}|{QUOTED})")


def strict_reading(header: str) -> tuple[str, dict[str, str]]:
    match = CHALLENGE.fullmatch(header)
    assert match is not None, f"not an RFC 9110 challenge: {header!r}"
    params: dict[str, str] = {}
    for name, raw in ONE_PARAM.findall(match.group(2) or ""):
        value = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        assert name.lower() not in params, "a parameter repeated"
        params[name.lower()] = value
    return match.group(1).lower(), params


# RFC 6749 §3.3 scope-token; acr values are URIs (no spaces); realm: any printable Latin-1.
scope_tokens = st.text(
    st.characters(codec="ascii", min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
    min_size=1,
    max_size=12,
)
acrs = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
realms = st.none() | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=["Cc"]),
    max_size=30,
)


@given(
    scopes=st.lists(scope_tokens, max_size=4, unique=True),
    acr=acrs,
    max_age=st.none() | st.integers(min_value=0, max_value=10**9),
    realm=realms,
    kind=st.sampled_from(["step_up", "scope", "invalid"]),
)
def test_challenges_read_back_the_same_with_both_parsers(
    scopes: list[str], acr: str, max_age: int | None, realm: str | None, kind: str
) -> None:
    requirement = Requirement(scopes, acr=acr, max_age=max_age)
    refusal: Refusal
    if kind == "step_up":
        refusal = requirement.step_up("A stronger authentication is required")
    elif kind == "scope":
        refusal = InsufficientScope("Lacks a scope", params=[("scope", " ".join(scopes))])
    else:
        refusal = InvalidToken("The access token is not valid")
    metadata = "https://api.example/.well-known/oauth-protected-resource"
    header = refusal.challenge(realm, metadata)

    scheme, strict = strict_reading(header)
    (ours,) = parse_www_authenticate(header)
    assert scheme == ours.scheme == "bearer"
    assert dict(ours.params) == strict

    expected: dict[str, str] = {"error": str(refusal.error), "resource_metadata": metadata}
    if realm:
        expected["realm"] = realm
    expected["error_description"] = refusal.description
    if kind == "step_up":
        expected["acr_values"] = acr
        if max_age is not None:
            expected["max_age"] = str(max_age)
        if scopes:
            expected["scope"] = " ".join(scopes)
    elif kind == "scope":
        expected["scope"] = " ".join(scopes)
    assert strict == expected

    read = step_up_requirement([ours])
    assert read.error == refusal.error
    assert read.scope == (
        tuple(scopes) if kind != "invalid" and (scopes or kind == "scope") else ()
    )
    if kind == "step_up":
        assert read.acr_values == (acr,) and read.max_age == max_age
