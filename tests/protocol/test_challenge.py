"""Tests for stepup.protocol.challenge: WWW-Authenticate parsing, building, step-up reading."""

from __future__ import annotations

import contextlib
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepup.protocol.challenge import (
    MAX_HEADER_LENGTH,
    Challenge,
    ChallengeSyntaxError,
    StepUpRequirement,
    build_challenge,
    parse_www_authenticate,
    requirement_from,
    step_up_requirement,
)

RFC9728_METADATA = "https://resource.example.com/.well-known/oauth-protected-resource"


def only(value: str) -> Challenge:
    challenges = parse_www_authenticate(value)
    assert len(challenges) == 1
    return challenges[0]


def syntax_error(value: str) -> str:
    with pytest.raises(ChallengeSyntaxError) as excinfo:
        parse_www_authenticate(value)
    return str(excinfo.value)


# --- real header shapes -------------------------------------------------------------


def test_rfc9470_acr_values_example() -> None:
    challenge = only(
        'Bearer error="insufficient_user_authentication", '
        'error_description="A different authentication level is required", '
        'acr_values="myACR"'
    )
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == {
        "error": "insufficient_user_authentication",
        "error_description": "A different authentication level is required",
        "acr_values": "myACR",
    }
    assert challenge.token68 is None


def test_rfc9470_max_age_example() -> None:
    challenge = only(
        'Bearer error="insufficient_user_authentication", '
        'error_description="More recent authentication is required", max_age="5"'
    )
    assert dict(challenge.params) == {
        "error": "insufficient_user_authentication",
        "error_description": "More recent authentication is required",
        "max_age": "5",
    }


def test_rfc6750_realm_only() -> None:
    assert only('Bearer realm="example"') == Challenge("bearer", {"realm": "example"})


def test_rfc6750_invalid_token() -> None:
    challenge = only(
        'Bearer realm="example", error="invalid_token", '
        'error_description="The access token expired"'
    )
    assert dict(challenge.params) == {
        "realm": "example",
        "error": "invalid_token",
        "error_description": "The access token expired",
    }


def test_rfc6750_insufficient_scope_with_scope() -> None:
    challenge = only('Bearer realm="example", error="insufficient_scope", scope="openid profile"')
    assert challenge.params["error"] == "insufficient_scope"
    assert challenge.params["scope"] == "openid profile"


def test_rfc9449_dpop_algs_and_nonce_error() -> None:
    challenge = only('DPoP algs="ES256 PS256", error="use_dpop_nonce"')
    assert challenge == Challenge("dpop", {"algs": "ES256 PS256", "error": "use_dpop_nonce"})


def test_rfc9728_resource_metadata() -> None:
    challenge = only(
        'Bearer error="invalid_request", '
        'error_description="No access token was provided in this request", '
        f'resource_metadata="{RFC9728_METADATA}"'
    )
    assert challenge.params["resource_metadata"] == RFC9728_METADATA


def test_rfc9110_newauth_example_with_escaped_quotes() -> None:
    challenges = parse_www_authenticate(
        'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'
    )
    assert challenges == [
        Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        Challenge("basic", {"realm": "simple"}),
    ]


def test_basic_token68() -> None:
    challenge = only("Basic YWxhZGRpbjpvcGVuc2VzYW1l")
    assert challenge.scheme == "basic"
    assert challenge.token68 == "YWxhZGRpbjpvcGVuc2VzYW1l"
    assert dict(challenge.params) == {}


def test_token68_with_padding_and_slash() -> None:
    assert only("Basic YW/+xh==").token68 == "YW/+xh=="


def test_token68_followed_by_another_challenge() -> None:
    challenges = parse_www_authenticate('Basic YWxh=, Bearer realm="x"')
    assert challenges == [
        Challenge("basic", {}, token68="YWxh="),
        Challenge("bearer", {"realm": "x"}),
    ]


def test_scheme_without_parameters() -> None:
    assert only("Bearer") == Challenge("bearer", {})


def test_several_schemes_basic_first() -> None:
    challenges = parse_www_authenticate(
        'Basic realm="x", Bearer error="insufficient_user_authentication", max_age=60'
    )
    assert challenges == [
        Challenge("basic", {"realm": "x"}),
        Challenge("bearer", {"error": "insufficient_user_authentication", "max_age": "60"}),
    ]


def test_several_schemes_bearer_first() -> None:
    challenges = parse_www_authenticate(
        'Bearer error="insufficient_user_authentication", max_age=60, Basic realm="x"'
    )
    assert [c.scheme for c in challenges] == ["bearer", "basic"]
    assert challenges[1].params["realm"] == "x"


def test_several_schemes_without_parameters() -> None:
    challenges = parse_www_authenticate("Negotiate, NTLM, Bearer")
    assert [c.scheme for c in challenges] == ["negotiate", "ntlm", "bearer"]


def test_escaped_backslash_in_quoted_string() -> None:
    assert only(r'Bearer realm="a\\b"').params["realm"] == "a\\b"


def test_quoted_pair_of_ordinary_character_unescapes() -> None:
    assert only(r'Bearer realm="\a\b\c"').params["realm"] == "abc"


def test_comma_inside_quoted_string() -> None:
    challenge = only('Bearer error_description="first, second, Basic x=y", error="e"')
    assert challenge.params["error_description"] == "first, second, Basic x=y"
    assert challenge.params["error"] == "e"


def test_empty_quoted_string() -> None:
    assert only('Bearer realm=""').params["realm"] == ""


def test_token_valued_param() -> None:
    assert only("Bearer max_age=300").params["max_age"] == "300"


def test_mixed_case_scheme_and_names_are_lowered_but_values_kept() -> None:
    challenge = only('BEARER Error="Insufficient_Scope", SCOPE="Read Write"')
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == {"error": "Insufficient_Scope", "scope": "Read Write"}


def test_bad_whitespace_around_equals() -> None:
    challenge = only('Bearer realm =  "x", max_age\t=\t5')
    assert dict(challenge.params) == {"realm": "x", "max_age": "5"}


def test_tab_between_scheme_and_params() -> None:
    assert only('Bearer\trealm="x"').params["realm"] == "x"


def test_empty_list_elements_between_params() -> None:
    assert dict(only('Bearer realm="x", , ,error="e"').params) == {"realm": "x", "error": "e"}


def test_empty_list_elements_between_challenges() -> None:
    challenges = parse_www_authenticate('Basic realm="x",,  , Bearer')
    assert [c.scheme for c in challenges] == ["basic", "bearer"]


def test_leading_comma_before_first_param() -> None:
    assert only('Bearer , realm="x"').params["realm"] == "x"


def test_leading_and_trailing_commas() -> None:
    assert only(' , Bearer realm="x" ,, ') == Challenge("bearer", {"realm": "x"})


def test_empty_value_has_no_challenges() -> None:
    assert parse_www_authenticate("") == []
    assert parse_www_authenticate(" ,\t, ") == []


def test_params_in_any_order() -> None:
    one = only('Bearer max_age=60, acr_values="a b", error="insufficient_user_authentication"')
    other = only('Bearer error="insufficient_user_authentication", max_age=60, acr_values="a b"')
    assert one == other


def test_params_keep_header_order() -> None:
    assert list(only("Bearer c=1, a=2, b=3").params) == ["c", "a", "b"]


def test_joined_field_lines_parse_like_one_line() -> None:
    lines = ['Basic realm="x"', 'Bearer error="insufficient_scope", scope="a b"', "DPoP algs=ES256"]
    joined = parse_www_authenticate(", ".join(lines))
    separately = [c for line in lines for c in parse_www_authenticate(line)]
    assert joined == separately


def test_non_ascii_obs_text_in_quoted_string() -> None:
    assert only('Bearer realm="caf\xe9"').params["realm"] == "caf\xe9"


def test_challenge_params_are_read_only() -> None:
    challenge = only('Bearer realm="x"')
    with pytest.raises(TypeError):
        challenge.params["realm"] = "y"  # type: ignore[index]


def test_challenge_is_hashable_and_order_insensitive() -> None:
    one = Challenge("Bearer", {"a": "1", "b": "2"})
    other = Challenge("bearer", {"B": "2", "A": "1"})
    assert one == other
    assert hash(one) == hash(other)


def test_challenge_constructor_refuses_names_equal_ignoring_case() -> None:
    with pytest.raises(ValueError, match="duplicate auth-param 'a'"):
        Challenge("bearer", {"a": "1", "A": "2"})


def test_challenge_constructor_copies_params() -> None:
    source = {"a": "1"}
    challenge = Challenge("bearer", source)
    source["a"] = "2"
    assert challenge.params["a"] == "1"


# --- syntax errors ------------------------------------------------------------------


def test_unterminated_quoted_string() -> None:
    assert syntax_error('Bearer realm="example') == "unterminated quoted-string at offset 13"


def test_unterminated_quoted_string_ending_in_backslash() -> None:
    assert syntax_error('Bearer realm="x\\') == "unterminated quoted-string at offset 13"


def test_duplicate_param() -> None:
    value = 'Bearer realm="a", error="e", REALM="b"'
    assert syntax_error(value) == "duplicate auth-param 'realm' in 'bearer' challenge at offset 29"


def test_same_param_in_different_challenges_is_fine() -> None:
    challenges = parse_www_authenticate('Basic realm="a", Bearer realm="b"')
    assert [c.params["realm"] for c in challenges] == ["a", "b"]


def test_missing_scheme() -> None:
    assert (
        syntax_error('realm="x"') == "auth-param 'realm' at offset 0 has no auth-scheme before it"
    )


def test_missing_scheme_after_leading_comma() -> None:
    assert (
        syntax_error(', error="e"') == "auth-param 'error' at offset 2 has no auth-scheme before it"
    )


def test_scheme_glued_to_equals() -> None:
    assert (
        syntax_error("Bearer=abc") == "auth-param 'bearer' at offset 0 has no auth-scheme before it"
    )


def test_scheme_glued_to_quoted_string() -> None:
    assert syntax_error('Bearer"x"') == (
        "expected whitespace, ',' or end of header after auth-scheme 'bearer'"
        " at offset 6, found '\"'"
    )


def test_quoted_string_where_token68_or_param_expected() -> None:
    assert syntax_error('Bearer "x"') == (
        "expected token68 or auth-param after auth-scheme 'bearer' at offset 7"
    )


def test_two_bare_words_after_scheme() -> None:
    assert syntax_error("Bearer abc def") == (
        "expected token68 or auth-param after auth-scheme 'bearer' at offset 7"
    )


def test_missing_comma_between_params() -> None:
    assert syntax_error('Bearer realm="x" error="e"') == (
        "expected ',' or end of header at offset 17, found 'e'"
    )


def test_missing_comma_between_challenges() -> None:
    assert syntax_error('Bearer realm="x" Basic') == (
        "expected ',' or end of header at offset 17, found 'B'"
    )


def test_param_after_token68() -> None:
    assert syntax_error('Basic YWxh==, realm="x"') == (
        "auth-param 'realm' at offset 14 follows the token68 of the 'basic' challenge"
    )


def test_missing_param_value() -> None:
    assert syntax_error("Bearer error=e, realm=, scope=x") == (
        "expected token or quoted-string at offset 22, found ','"
    )


def test_valueless_first_param_reads_as_token68() -> None:
    # RFC 9110 §11.2: "realm=" is a whole token68, so nothing may follow it but challenges.
    assert syntax_error("Bearer realm=, error=e") == (
        "auth-param 'error' at offset 15 follows the token68 of the 'bearer' challenge"
    )


def test_missing_param_value_at_end() -> None:
    assert syntax_error("Bearer error=e, realm=") == (
        "expected token or quoted-string at offset 22, found end of header"
    )


def test_non_token_character_in_bare_value() -> None:
    assert (
        syntax_error("Bearer realm=a/b") == "expected ',' or end of header at offset 14, found '/'"
    )


def test_control_character_in_quoted_string() -> None:
    assert syntax_error('Bearer realm="a\nb"') == (
        "invalid character '\\n' in quoted-string at offset 15"
    )


def test_control_character_in_quoted_pair() -> None:
    assert syntax_error('Bearer realm="a\\\x00"') == (
        "invalid character '\\x00' in quoted-pair at offset 16"
    )


def test_crlf_between_params_is_refused() -> None:
    assert syntax_error('Bearer realm="x",\r\n error="e"') == (
        "expected auth-scheme or auth-param at offset 17, found '\\r'"
    )


def test_garbage_bytes() -> None:
    assert syntax_error("\x00\xff\x01") == (
        "expected auth-scheme or auth-param at offset 0, found '\\x00'"
    )


def test_all_latin1_bytes_as_text() -> None:
    garbage = bytes(range(256)).decode("latin-1")
    assert syntax_error(garbage) == "expected auth-scheme or auth-param at offset 0, found '\\x00'"


def test_non_ascii_scheme() -> None:
    assert syntax_error("B\xe9arer realm=x") == (
        "expected whitespace, ',' or end of header after auth-scheme 'b' at offset 1, found 'é'"
    )


def test_oversized_input() -> None:
    value = 'Bearer realm="' + "x" * MAX_HEADER_LENGTH + '"'
    assert syntax_error(value) == (
        f"header value too long: {len(value)} characters (limit {MAX_HEADER_LENGTH})"
    )


def test_input_at_length_limit_is_accepted() -> None:
    prefix = 'Bearer realm="'
    value = prefix + "x" * (MAX_HEADER_LENGTH - len(prefix) - 1) + '"'
    assert len(value) == MAX_HEADER_LENGTH
    assert only(value).params["realm"] == "x" * (MAX_HEADER_LENGTH - len(prefix) - 1)


def test_many_backslashes_parse_in_linear_time() -> None:
    value = 'Bearer realm="' + "\\\\" * 4000 + '"'
    assert only(value).params["realm"] == "\\" * 4000


def test_syntax_error_is_a_value_error() -> None:
    assert issubclass(ChallengeSyntaxError, ValueError)


def test_non_string_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_www_authenticate(b"Bearer")  # type: ignore[arg-type]


# --- step-up requirement ------------------------------------------------------------


def test_step_up_requirement_from_rfc9470_acr_example() -> None:
    requirement = step_up_requirement(
        parse_www_authenticate(
            'Bearer error="insufficient_user_authentication", '
            'error_description="A different authentication level is required", '
            'acr_values="myACR"'
        )
    )
    assert requirement == StepUpRequirement(
        error="insufficient_user_authentication",
        acr_values=("myACR",),
        max_age=None,
        scope=(),
        resource_metadata=None,
        error_description="A different authentication level is required",
    )


def test_step_up_requirement_from_rfc9470_max_age_example() -> None:
    requirement = step_up_requirement(
        parse_www_authenticate(
            'Bearer error="insufficient_user_authentication", '
            'error_description="More recent authentication is required", max_age="5"'
        )
    )
    assert requirement.max_age == 5
    assert requirement.acr_values == ()


def test_step_up_requirement_splits_acr_values_and_scope_on_spaces() -> None:
    requirement = step_up_requirement(
        parse_www_authenticate(
            'Bearer error="insufficient_scope", scope="openid  profile ", '
            'acr_values="urn:stepup:acr:phr urn:stepup:acr:mfa"'
        )
    )
    assert requirement.scope == ("openid", "profile")
    assert requirement.acr_values == ("urn:stepup:acr:phr", "urn:stepup:acr:mfa")


def test_step_up_requirement_reads_resource_metadata() -> None:
    requirement = step_up_requirement(
        parse_www_authenticate(f'Bearer resource_metadata="{RFC9728_METADATA}"')
    )
    assert requirement.resource_metadata == RFC9728_METADATA
    assert requirement.error is None


def test_step_up_requirement_skips_other_schemes() -> None:
    requirement = step_up_requirement(
        parse_www_authenticate(
            'Basic realm="x", Bearer error="insufficient_user_authentication", max_age=60'
        )
    )
    assert requirement.error == "insufficient_user_authentication"
    assert requirement.max_age == 60


def test_step_up_requirement_prefers_challenge_with_error() -> None:
    requirement = step_up_requirement(
        parse_www_authenticate('Bearer realm="x", DPoP algs="ES256", error="use_dpop_nonce"')
    )
    assert requirement.error == "use_dpop_nonce"


def test_step_up_requirement_prefers_bearer_when_both_carry_error() -> None:
    requirement = step_up_requirement(
        parse_www_authenticate(
            'DPoP error="use_dpop_nonce", Bearer error="insufficient_user_authentication"'
        )
    )
    assert requirement.error == "insufficient_user_authentication"


def test_step_up_requirement_prefers_bearer_when_neither_carries_error() -> None:
    requirement = step_up_requirement(parse_www_authenticate('DPoP algs="ES256", Bearer scope="a"'))
    assert requirement.scope == ("a",)


def test_step_up_requirement_accepts_dpop_alone() -> None:
    requirement = step_up_requirement(
        parse_www_authenticate('DPoP algs="ES256 PS256", error="use_dpop_nonce"')
    )
    assert requirement.error == "use_dpop_nonce"


def test_step_up_requirement_without_bearer_or_dpop() -> None:
    with pytest.raises(ChallengeSyntaxError, match=r"^no Bearer or DPoP challenge$"):
        step_up_requirement(parse_www_authenticate('Basic realm="x", Negotiate'))


def test_step_up_requirement_of_empty_list() -> None:
    with pytest.raises(ChallengeSyntaxError, match=r"^no Bearer or DPoP challenge$"):
        step_up_requirement([])


@pytest.mark.parametrize(
    "max_age", ["-1", "+5", "1.5", "five", "", " 5", "5 ", "0x10", "٣", "1_000"]
)
def test_step_up_requirement_bad_max_age(max_age: str) -> None:
    challenges = [Challenge("bearer", {"max_age": max_age})]
    with pytest.raises(ChallengeSyntaxError, match=r"^max_age must be a non-negative integer$"):
        step_up_requirement(challenges)


def test_step_up_requirement_bad_max_age_from_header() -> None:
    with pytest.raises(ChallengeSyntaxError, match=r"^max_age must be a non-negative integer$"):
        step_up_requirement(parse_www_authenticate("Bearer max_age=-1"))


def test_step_up_requirement_absurdly_long_max_age() -> None:
    challenges = [Challenge("bearer", {"max_age": "9" * 5000})]
    with pytest.raises(ChallengeSyntaxError, match=r"^max_age must be a non-negative integer$"):
        step_up_requirement(challenges)


def test_step_up_requirement_zero_max_age() -> None:
    assert step_up_requirement([Challenge("bearer", {"max_age": "0"})]).max_age == 0


# --- builder ------------------------------------------------------------------------


def test_build_step_up_challenge() -> None:
    header = build_challenge(
        "Bearer",
        {
            "error": "insufficient_user_authentication",
            "acr_values": "urn:stepup:acr:phr",
            "max_age": 300,
        },
    )
    assert header == (
        'Bearer error="insufficient_user_authentication", '
        'acr_values="urn:stepup:acr:phr", max_age=300'
    )


def test_build_from_sequence_of_pairs_keeps_order() -> None:
    header = build_challenge("DPoP", [("algs", "ES256 PS256"), ("error", "use_dpop_nonce")])
    assert header == 'DPoP algs="ES256 PS256", error="use_dpop_nonce"'


def test_build_without_params_is_just_the_scheme() -> None:
    assert build_challenge("Bearer", {}) == "Bearer"


def test_build_escapes_quotes_and_backslashes() -> None:
    header = build_challenge("Bearer", {"error_description": 'say "hi" \\o/'})
    assert header == 'Bearer error_description="say \\"hi\\" \\\\o/"'


def test_build_output_parses_back() -> None:
    header = build_challenge("Bearer", {"realm": 'a, b="c"', "max_age": 5})
    assert only(header) == Challenge("bearer", {"realm": 'a, b="c"', "max_age": "5"})


def test_build_keeps_tab_in_value() -> None:
    assert build_challenge("Bearer", {"realm": "a\tb"}) == 'Bearer realm="a\tb"'


@pytest.mark.parametrize(
    "bad", ["a\r\nSet-Cookie: x=y", "a\nb", "a\rb", "a\x00b", "\x1b", "\x7f", "\x85"]
)
def test_build_refuses_control_characters(bad: str) -> None:
    with pytest.raises(
        ValueError, match=r"^control character U\+00[0-9A-F]{2} in value of auth-param 'realm'$"
    ):
        build_challenge("Bearer", {"realm": bad})


def test_build_refuses_characters_beyond_latin1() -> None:
    with pytest.raises(
        ValueError, match=re.escape("character U+20AC in value of auth-param 'realm'")
    ):
        build_challenge("Bearer", {"realm": "5\u20ac"})


@pytest.mark.parametrize("name", ["", "max age", "a=b", 'a"', "a,b", "é", "a\r\n"])
def test_build_refuses_non_token_param_names(name: str) -> None:
    with pytest.raises(ValueError, match=r"^auth-param name must be a non-empty token"):
        build_challenge("Bearer", {name: "x"})


@pytest.mark.parametrize("scheme", ["", "Bear er", "Bearer\r\n", "Bearer,"])
def test_build_refuses_non_token_scheme(scheme: str) -> None:
    with pytest.raises(ValueError, match=r"^auth-scheme must be a non-empty token"):
        build_challenge(scheme, {})


def test_build_refuses_duplicate_names_ignoring_case() -> None:
    with pytest.raises(ValueError, match=r"^duplicate auth-param 'realm'$"):
        build_challenge("Bearer", [("realm", "a"), ("REALM", "b")])


def test_build_refuses_bool_values() -> None:
    with pytest.raises(TypeError):
        build_challenge("Bearer", {"max_age": True})


def test_build_negative_int_is_a_bare_token() -> None:
    assert build_challenge("Bearer", {"n": -3}) == "Bearer n=-3"


# --- properties ---------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
# Everything build_challenge accepts in a quoted-string: HTAB and printable ISO-8859-1.
field_text = st.text(
    alphabet=st.characters(
        codec="latin-1", exclude_categories=["Cc"], include_characters='\t"\\,= '
    ),
    max_size=30,
)
param_values = st.one_of(field_text, st.integers())
param_lists = st.lists(
    st.tuples(tokens, param_values), max_size=5, unique_by=lambda pair: pair[0].lower()
)
challenge_specs = st.tuples(tokens, param_lists)


def expected(scheme: str, params: list[tuple[str, str | int]]) -> Challenge:
    return Challenge(scheme.lower(), {name.lower(): str(value) for name, value in params})


@settings(max_examples=300, deadline=None, database=None)
@given(challenge_specs)
def test_property_build_then_parse_round_trips(
    spec: tuple[str, list[tuple[str, str | int]]],
) -> None:
    scheme, params = spec
    assert parse_www_authenticate(build_challenge(scheme, params)) == [expected(scheme, params)]


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(challenge_specs, min_size=1, max_size=3))
def test_property_joined_challenges_round_trip(
    specs: list[tuple[str, list[tuple[str, str | int]]]],
) -> None:
    header = ", ".join(build_challenge(scheme, params) for scheme, params in specs)
    assert parse_www_authenticate(header) == [expected(s, p) for s, p in specs]


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_property_arbitrary_text_parses_or_raises_syntax_error(value: str) -> None:
    try:
        challenges = parse_www_authenticate(value)
    except ChallengeSyntaxError:
        return
    with contextlib.suppress(ChallengeSyntaxError):
        step_up_requirement(challenges)


# Text drawn from the grammar's own alphabet reaches far deeper than st.text() does.
header_fragments = st.sampled_from(
    [
        "Bearer",
        "DPoP",
        "Basic",
        "realm",
        "max_age",
        "abc",
        "=",
        '"',
        "\\",
        ",",
        " ",
        "\t",
        "/",
        "-1",
        "\x00",
    ]
)
header_like_text = st.lists(header_fragments, max_size=25).map("".join)


@settings(max_examples=300, deadline=None, database=None)
@given(header_like_text)
def test_property_header_like_text_parses_or_raises_syntax_error(value: str) -> None:
    try:
        challenges = parse_www_authenticate(value)
    except ChallengeSyntaxError:
        return
    with contextlib.suppress(ChallengeSyntaxError):
        step_up_requirement(challenges)


def test_a_remembered_requirement_is_the_one_parsing_gives() -> None:
    value = 'Bearer error="insufficient_user_authentication", acr_values="a b", max_age=60'
    expected = step_up_requirement(parse_www_authenticate(value))
    assert requirement_from(value) == expected
    assert requirement_from(value) is requirement_from(value)


def test_a_challenge_that_fails_to_parse_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ChallengeSyntaxError):
            requirement_from('Bearer max_age="soon"')
