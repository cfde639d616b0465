"""`WWW-Authenticate` challenges: a parser, a builder, and the step-up reading of them.

The parser follows the challenge grammar of RFC 9110 §11.2 and §11.6.1:

    WWW-Authenticate = #challenge
    challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param       = token BWS "=" BWS ( token / quoted-string )

It is a single left-to-right scanner with no backtracking beyond one bounded
look-ahead per list element, so its running time is linear in the input.

`step_up_requirement` then reads the Bearer (RFC 6750 §3) or DPoP (RFC 9449 §7.1)
challenge for what RFC 9470 §3 step-up asks of the client: `acr_values`,
`max_age`, `scope`, plus `resource_metadata` from RFC 9728 §5.1.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "MAX_HEADER_LENGTH",
    "Challenge",
    "ChallengeSyntaxError",
    "StepUpRequirement",
    "build_challenge",
    "parse_www_authenticate",
    "step_up_requirement",
]

# Servers commonly cap a whole header section near 8 KiB; a single challenge list
# beyond that is either broken or hostile, and refusing it bounds parser work.
MAX_HEADER_LENGTH = 8192

# RFC 9110 §5.6.2: tchar.
_TCHARS = frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters)
# RFC 9110 §11.2: token68 allows "/" (absent from tchar) so base64 fits unquoted.
_TOKEN68_CHARS = frozenset("-._~+/" + string.digits + string.ascii_letters)
# RFC 9110 §5.6.3: OWS and BWS are both *( SP / HTAB ).
_WHITESPACE = frozenset(" \t")

_STEP_UP_SCHEMES = ("bearer", "dpop")


class ChallengeSyntaxError(ValueError):
    """A `WWW-Authenticate` value, or a step-up parameter in it, is malformed."""


@dataclass(frozen=True)
class Challenge:
    """One challenge: a scheme plus either auth-params or a token68 (RFC 9110 §11.2).

    Scheme and parameter names are compared case-insensitively by the RFC, so they
    are stored lower-cased; values keep their case. `params` is read-only.
    """

    scheme: str
    params: Mapping[str, str]
    token68: str | None = None

    def __post_init__(self) -> None:
        normalized: dict[str, str] = {}
        for name, value in self.params.items():
            key = name.lower()
            if key in normalized:
                raise ValueError(f"duplicate auth-param {key!r}")
            normalized[key] = value
        object.__setattr__(self, "scheme", self.scheme.lower())
        object.__setattr__(self, "params", MappingProxyType(normalized))

    def __hash__(self) -> int:
        # The generated hash would try to hash the mapping proxy, which is unhashable;
        # a frozenset keeps the hash consistent with the order-insensitive equality.
        return hash((self.scheme, frozenset(self.params.items()), self.token68))


@dataclass(frozen=True)
class StepUpRequirement:
    """What a Bearer/DPoP challenge asks the client to obtain before retrying."""

    error: str | None
    acr_values: tuple[str, ...]
    max_age: int | None
    scope: tuple[str, ...]
    resource_metadata: str | None
    error_description: str | None


def _is_field_char(ch: str) -> bool:
    # RFC 9110 §5.6.4: qdtext and quoted-pair admit HTAB, SP, VCHAR and obs-text.
    # obs-text is %x80-FF on the wire; a caller may have decoded the field as UTF-8,
    # so any code point from U+0080 up is accepted rather than failing on it.
    code = ord(ch)
    return ch == "\t" or 0x20 <= code <= 0x7E or code >= 0x80


def _describe(text: str, pos: int) -> str:
    if pos >= len(text):
        return "end of header"
    return repr(text[pos])


class _Scanner:
    """Cursor over the header value; every method advances `pos` or raises."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def found(self) -> str:
        return _describe(self.text, self.pos)

    def skip_whitespace(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        self.pos = pos

    def skip_empty_elements(self) -> None:
        # RFC 9110 §5.6.1.2: recipients must accept empty list elements (", ,"),
        # which also makes leading and trailing commas harmless.
        text, pos = self.text, self.pos
        while pos < len(text) and (text[pos] == "," or text[pos] in _WHITESPACE):
            pos += 1
        self.pos = pos

    def read_token(self) -> str:
        text, start = self.text, self.pos
        pos = start
        while pos < len(text) and text[pos] in _TCHARS:
            pos += 1
        self.pos = pos
        return text[start:pos]

    def try_token68(self) -> str | None:
        # RFC 9110 §11.2: token68 and an auth-param list can start alike ("abc=" is a
        # token68, "abc=def" an auth-param). It is a token68 only if the run of
        # token68 characters and trailing "=" is the whole list element.
        text, start = self.text, self.pos
        pos = start
        while pos < len(text) and text[pos] in _TOKEN68_CHARS:
            pos += 1
        if pos == start:
            return None
        while pos < len(text) and text[pos] == "=":
            pos += 1
        end = pos
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos < len(text) and text[pos] != ",":
            return None
        self.pos = end
        return text[start:end]

    def read_quoted_string(self) -> str:
        # RFC 9110 §5.6.4: a backslash quotes the next character, whatever it is,
        # so the value is rebuilt from the unescaped runs between backslashes.
        text, start = self.text, self.pos
        parts: list[str] = []
        pos = run_start = start + 1
        while True:
            if pos >= len(text):
                raise ChallengeSyntaxError(f"unterminated quoted-string at offset {start}")
            ch = text[pos]
            if ch == '"':
                parts.append(text[run_start:pos])
                self.pos = pos + 1
                return "".join(parts)
            if ch == "\\":
                parts.append(text[run_start:pos])
                if pos + 1 >= len(text):
                    raise ChallengeSyntaxError(f"unterminated quoted-string at offset {start}")
                escaped = text[pos + 1]
                if not _is_field_char(escaped):
                    raise ChallengeSyntaxError(
                        f"invalid character {escaped!r} in quoted-pair at offset {pos + 1}"
                    )
                parts.append(escaped)
                pos += 2
                run_start = pos
                continue
            if not _is_field_char(ch):
                raise ChallengeSyntaxError(
                    f"invalid character {ch!r} in quoted-string at offset {pos}"
                )
            pos += 1

    def read_param_value(self) -> str:
        # Called just past "="; RFC 9110 §11.2 allows BWS on both sides of it.
        self.skip_whitespace()
        if self.peek() == '"':
            return self.read_quoted_string()
        value = self.read_token()
        if not value:
            raise ChallengeSyntaxError(
                f"expected token or quoted-string at offset {self.pos}, found {self.found()}"
            )
        return value


class _PendingChallenge:
    """A challenge whose parameters are still being collected."""

    __slots__ = ("params", "scheme", "token68")

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.params: dict[str, str] = {}
        self.token68: str | None = None

    def add_param(self, scanner: _Scanner, name: str, name_offset: int) -> None:
        key = name.lower()
        # RFC 9110 §11.2: "each parameter name MUST only occur once per challenge";
        # silently keeping either copy would let two parties read different values.
        if key in self.params:
            raise ChallengeSyntaxError(
                f"duplicate auth-param {key!r} in {self.scheme!r} challenge at offset {name_offset}"
            )
        self.params[key] = scanner.read_param_value()

    def finish(self) -> Challenge:
        return Challenge(self.scheme, self.params, self.token68)


def parse_www_authenticate(value: str) -> list[Challenge]:
    """Parse a `WWW-Authenticate` field value into its challenges, in order.

    Several field lines joined with ", " parse as the concatenation of their
    challenges (RFC 9110 §5.3). An empty list yields `[]`.

    Raises ChallengeSyntaxError on any deviation from the grammar, and on input
    longer than MAX_HEADER_LENGTH characters.
    """
    if not isinstance(value, str):
        raise TypeError(f"header value must be str, not {type(value).__name__}")
    if len(value) > MAX_HEADER_LENGTH:
        raise ChallengeSyntaxError(
            f"header value too long: {len(value)} characters (limit {MAX_HEADER_LENGTH})"
        )

    scanner = _Scanner(value)
    challenges: list[Challenge] = []
    current: _PendingChallenge | None = None

    while True:
        scanner.skip_empty_elements()
        if scanner.at_end():
            break
        start = scanner.pos
        name = scanner.read_token()
        if not name:
            raise ChallengeSyntaxError(
                f"expected auth-scheme or auth-param at offset {start}, found {scanner.found()}"
            )
        name_end = scanner.pos
        scanner.skip_whitespace()

        if scanner.peek() == "=":
            # Challenges and their auth-params share one comma-separated list
            # (RFC 9110 §11.6.1); "token BWS =" is what marks an element as a param.
            if current is None:
                raise ChallengeSyntaxError(
                    f"auth-param {name.lower()!r} at offset {start} has no auth-scheme before it"
                )
            if current.token68 is not None:
                raise ChallengeSyntaxError(
                    f"auth-param {name.lower()!r} at offset {start} follows the token68"
                    f" of the {current.scheme!r} challenge"
                )
            scanner.pos += 1
            current.add_param(scanner, name, start)
        else:
            if current is not None:
                challenges.append(current.finish())
            current = _PendingChallenge(name.lower())
            if not scanner.at_end() and scanner.peek() != ",":
                # RFC 9110 §11.2: whatever follows the scheme is separated by 1*SP.
                if scanner.pos == name_end:
                    raise ChallengeSyntaxError(
                        f"expected whitespace, ',' or end of header after auth-scheme"
                        f" {current.scheme!r} at offset {name_end}, found {scanner.found()}"
                    )
                current.token68 = scanner.try_token68()
                if current.token68 is None:
                    param_start = scanner.pos
                    param_name = scanner.read_token()
                    scanner.skip_whitespace()
                    if not param_name or scanner.peek() != "=":
                        raise ChallengeSyntaxError(
                            f"expected token68 or auth-param after auth-scheme"
                            f" {current.scheme!r} at offset {param_start}"
                        )
                    scanner.pos += 1
                    current.add_param(scanner, param_name, param_start)

        # RFC 9110 §5.6.1: list elements are separated by OWS "," OWS and nothing else.
        scanner.skip_whitespace()
        if not scanner.at_end() and scanner.peek() != ",":
            raise ChallengeSyntaxError(
                f"expected ',' or end of header at offset {scanner.pos}, found {scanner.found()}"
            )

    if current is not None:
        challenges.append(current.finish())
    return challenges


def _split_spaces(value: str | None) -> tuple[str, ...]:
    # RFC 6749 §3.3 (scope) and RFC 9470 §3 (acr_values) are lists separated by SP.
    if value is None:
        return ()
    return tuple(item for item in value.split(" ") if item)


def _parse_max_age(value: str | None) -> int | None:
    if value is None:
        return None
    # RFC 9470 §3: max_age is a count of seconds. Only ASCII digits qualify:
    # int() would also take "+5", " 5", "5_0" and non-ASCII digits.
    if not value or any(ch not in string.digits for ch in value):
        raise ChallengeSyntaxError("max_age must be a non-negative integer")
    try:
        return int(value)
    except ValueError:
        # Beyond sys.get_int_max_str_digits(); no real max_age is that long.
        raise ChallengeSyntaxError("max_age must be a non-negative integer") from None


def step_up_requirement(challenges: Sequence[Challenge]) -> StepUpRequirement:
    """Read the step-up request out of the Bearer or DPoP challenge.

    A challenge carrying `error` is preferred, since that is the one explaining the
    refusal; between equals Bearer wins over DPoP, then the earlier one.
    Raises ChallengeSyntaxError if there is no such challenge or `max_age` is bad.
    """
    candidates = [
        (index, challenge)
        for index, challenge in enumerate(challenges)
        if challenge.scheme in _STEP_UP_SCHEMES
    ]
    if not candidates:
        raise ChallengeSyntaxError("no Bearer or DPoP challenge")
    _, chosen = min(
        candidates,
        key=lambda item: (
            "error" not in item[1].params,
            _STEP_UP_SCHEMES.index(item[1].scheme),
            item[0],
        ),
    )
    params = chosen.params
    return StepUpRequirement(
        error=params.get("error"),
        acr_values=_split_spaces(params.get("acr_values")),
        max_age=_parse_max_age(params.get("max_age")),
        scope=_split_spaces(params.get("scope")),
        resource_metadata=params.get("resource_metadata"),
        error_description=params.get("error_description"),
    )


# How many distinct challenge values requirement_from remembers (each at most
# MAX_HEADER_LENGTH characters: 2 MiB at worst).
REQUIREMENT_CACHE_SIZE = 256


@functools.lru_cache(maxsize=REQUIREMENT_CACHE_SIZE)
def requirement_from(value: str) -> StepUpRequirement:
    """step_up_requirement(parse_www_authenticate(value)), remembered per value.

    A resource server sends the same few challenge strings again and again; both steps are
    pure, the result is immutable, and parsing was an eighth of a challenge intake's CPU.
    A value that fails to parse raises every time (lru_cache keeps only results).
    """
    return step_up_requirement(parse_www_authenticate(value))


def _is_token(text: str) -> bool:
    return bool(text) and all(ch in _TCHARS for ch in text)


def _render_value(name: str, value: str | int) -> str:
    # bool is an int subclass; "True" as a bare token is surely a caller mistake.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(
            f"value of auth-param {name!r} must be str or int, not {type(value).__name__}"
        )
    if isinstance(value, int):
        # Digits and "-" are tchars, so an int is always a valid bare token.
        return str(value)
    for ch in value:
        code = ord(ch)
        # CR and LF would end the field and start an attacker-chosen one; other C0,
        # DEL and C1 controls are refused too, since some stacks treat them (NEL,
        # NUL) as line ends or terminators. HTAB is legitimate qdtext.
        if (code < 0x20 and ch != "\t") or 0x7F <= code <= 0x9F:
            raise ValueError(f"control character U+{code:04X} in value of auth-param {name!r}")
        # Field values are octets (RFC 9110 §5.5) and servers encode them as
        # ISO-8859-1; refusing here beats failing later while sending the response.
        if code > 0xFF:
            raise ValueError(
                f"character U+{code:04X} in value of auth-param {name!r}"
                " is not representable in an HTTP field (ISO-8859-1 only)"
            )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def build_challenge(
    scheme: str,
    params: Mapping[str, str | int] | Sequence[tuple[str, str | int]],
) -> str:
    """Render one challenge, e.g. `Bearer error="insufficient_scope", max_age=300`.

    String values are always quoted (RFC 9110 §11.2 lets recipients treat both
    forms alike, and quoting never needs a token check); ints are bare tokens.
    Scheme and parameter names keep the caller's case.
    Raises ValueError for non-token names, repeated names and unsafe characters.
    """
    if not _is_token(scheme):
        raise ValueError(f"auth-scheme must be a non-empty token, got {scheme!r}")
    items: Iterable[tuple[str, str | int]] = (
        params.items() if isinstance(params, Mapping) else params
    )
    rendered: list[str] = []
    seen: set[str] = set()
    for name, value in items:
        if not _is_token(name):
            raise ValueError(f"auth-param name must be a non-empty token, got {name!r}")
        key = name.lower()
        if key in seen:
            # The parser would reject the result (RFC 9110 §11.2), so refuse to emit it.
            raise ValueError(f"duplicate auth-param {key!r}")
        seen.add(key)
        rendered.append(f"{name}={_render_value(name, value)}")
    if not rendered:
        return scheme
    return f"{scheme} {', '.join(rendered)}"
