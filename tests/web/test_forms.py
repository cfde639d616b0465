"""Reading urlencoded bodies (stepup/web/forms.py): the pairs are exactly urllib's parse_qsl
pairs, remembered decodings included; only public parameters' values are remembered; the
limits (64 parameters, each once, no NUL) hold."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from stepup.errors import InvalidRequest
from stepup.web import forms
from stepup.web.forms import MAX_FIELDS, pairs, read_form

# Enough of every kind: separators, escapes valid and not, `+`, hex digits, non-ASCII text.
_PIECES = st.sampled_from(
    [
        *("&", "=", "%", "+", "%25", "%3A", "%3a", "%2B", "%26", "%3D", "%00", "%C3%A9"),
        *("%E2%82", "%FF", "%zz", "%4", "3", "A", "f", "a", "~", ".", "é", "€", " ", "\x00"),
        *("scope", "challenge", "client_id", "client_secret", "code"),  # remembered or not
    ]
)
bodies = st.lists(_PIECES, max_size=40).map("".join)


@given(text=bodies)
def test_the_pairs_are_parse_qsls(text: str) -> None:
    expected = parse_qsl(text, keep_blank_values=True)
    assert pairs(text) == expected
    assert pairs(text) == expected  # the second time from what was remembered


@given(value=st.text(max_size=60))
def test_a_remembered_parameter_decodes_as_parse_qsl(value: str) -> None:
    for spelled in (quote(value, safe=""), urlencode({"x": value})[2:], value):
        text = f"scope={spelled}&challenge={spelled}"
        assert pairs(text) == parse_qsl(text, keep_blank_values=True)


def test_public_values_are_remembered_and_credentials_never() -> None:
    forms._decode_remembered.cache_clear()
    pairs("client_secret=s%25cret&code=a%2Bb&code_verifier=v%7E1&token=t%2E")
    assert forms._decode_remembered.cache_info().currsize == 0
    challenge = quote('Bearer error="insufficient_user_authentication"', safe="")
    pairs(f"challenge={challenge}&scope=payments%3Awrite")
    pairs(f"challenge={challenge}&scope=payments%3Awrite")
    info = forms._decode_remembered.cache_info()
    assert (info.currsize, info.hits) == (2, 2)


def test_a_long_value_is_not_remembered() -> None:
    forms._decode_remembered.cache_clear()
    long = "%41" * (forms.REMEMBERED_LENGTH // 3 + 1)
    assert pairs(f"challenge={long}") == [("challenge", "A" * (len(long) // 3))]
    assert forms._decode_remembered.cache_info().currsize == 0


def test_the_remembered_values_are_bounded() -> None:
    forms._decode_remembered.cache_clear()
    for n in range(forms.REMEMBERED_VALUES + 50):
        pairs(f"scope=s%3A{n}")
    assert forms._decode_remembered.cache_info().currsize == forms.REMEMBERED_VALUES


def _request(body: bytes) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/token",
        "headers": [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def _read(body: str) -> dict[str, str]:
    return asyncio.run(read_form(_request(body.encode())))


def test_64_parameters_are_read_and_65_refused() -> None:
    most = "&".join(f"p{n}=v" for n in range(MAX_FIELDS))
    assert len(_read(most)) == MAX_FIELDS
    with pytest.raises(InvalidRequest, match=f"at most {MAX_FIELDS} parameters"):
        _read(most + "&extra=v")


def test_a_parameter_repeated_or_with_a_nul_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="'scope' is repeated"):
        _read("scope=a&scope=b")
    with pytest.raises(InvalidRequest, match="'scope' is repeated"):
        _read("scope=a%3Ab&scope=a%3Ab")
    with pytest.raises(InvalidRequest, match="NUL"):
        _read("state=a%00b")


def test_an_empty_value_counts_as_absent() -> None:
    assert _read("scope=&state=x&flag") == {"state": "x"}
    assert _read("scope=payments%3Awrite+read") == {"scope": "payments:write read"}
