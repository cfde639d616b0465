"""Authorization details (RFC 9396): the types the policy defines, the check of what a client
sends against them, the narrowing rule of the token endpoint, and the plain words the page shows.

A type is a closed shape: every field is declared with its kind, unknown fields are refused,
so what the user reads on the page is all the token will carry. Nothing here knows HTTP or Redis.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from stepup.errors import InvalidAuthorizationDetails

# Bounds on what a client may send (the body itself is at most 64 KiB).
MAX_LENGTH = 8192  # characters of the JSON text
MAX_DETAILS = 8  # objects in the array
MAX_ITEMS = 16  # strings in a list field
MAX_DEPTH = 3  # a type's fields may nest objects this deep
DEFAULT_MAX_LENGTH = 256

KINDS = frozenset({"string", "decimal", "currency", "strings", "object"})
# RFC 9396 §2.2: fields common to all types, with their fixed shapes.
COMMON_KINDS = {
    "locations": "strings",
    "actions": "strings",
    "datatypes": "strings",
    "privileges": "strings",
    "identifier": "string",
}
# A type name is sent by clients and shown in metadata: keep it to a plain token or URI.
_TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,127}")
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# ISO 4217 alphabetic code shape; which codes exist is the policy's `enum`.
_CURRENCY = re.compile(r"[A-Z]{3}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")


@dataclass(frozen=True)
class FieldSpec:
    """One field of a type. `kind`: string | decimal | currency | strings | object.

    string/strings: `max_length` characters (each item for strings), optional `enum`;
    decimal: a JSON string of digits with at most `scale` decimals, at most `max`;
    currency: three capital letters (ISO 4217 shape), optional `enum`;
    object: its own `fields` and `required` names.
    """

    kind: str
    label: str = ""
    max_length: int = DEFAULT_MAX_LENGTH
    enum: tuple[str, ...] = ()
    scale: int = 2
    max: Decimal | None = None
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetailType:
    """An authorization details type a client may send, per policy.

    `scopes`: the request must name one of them. `clients`: if any, only these may send it.
    `description`: the sentence the page shows, `{field}` / `{object.field}` filled in.
    """

    name: str
    description: str
    scopes: tuple[str, ...]
    fields: Mapping[str, FieldSpec]
    required: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()


# -- the policy file -----------------------------------------------------------------------


class PolicyReader(Protocol):
    """What reads the rest of the policy file (config.py's reader): its problem list and
    typed getters, so detail types are read and reported like every other section."""

    def problem(self, where: str, message: str) -> None: ...
    def no_unknown(self, table: Mapping[str, Any], known: set[str], where: str) -> None: ...
    def strings(
        self, table: Mapping[str, Any], key: str, where: str, default: Any = ...
    ) -> tuple[str, ...]: ...


def read_types(
    raw: Mapping[str, Any], policy: PolicyReader, scopes: Sequence[str], clients: Sequence[str]
) -> dict[str, DetailType]:
    """The `[authorization_details.<type>]` tables, each problem reported, none fatal here."""
    types: dict[str, DetailType] = {}
    for name, table in raw.items():
        where = f"authorization_details.{name!r}"
        if not _TYPE_NAME.fullmatch(name):
            policy.problem(where, "a type name is letters, digits and _.:/+- (at most 128)")
            continue
        if not isinstance(table, dict):
            policy.problem(where, "expected a table")
            continue
        detail_type = _read_type(name, table, where, policy, scopes, clients)
        if detail_type is not None:
            types[name] = detail_type
    return types


def _read_type(
    name: str,
    t: Mapping[str, Any],
    where: str,
    policy: PolicyReader,
    scopes: Sequence[str],
    clients: Sequence[str],
) -> DetailType | None:
    policy.no_unknown(t, {"description", "scopes", "clients", "fields", "required"}, where)
    description = t.get("description")
    if not isinstance(description, str) or not description.strip():
        policy.problem(where, "needs a description: the sentence shown to the user")
        description = ""
    type_scopes = policy.strings(t, "scopes", where, [])
    if not type_scopes:
        policy.problem(where, "needs scopes: the scopes a request with this type must name")
    for scope in type_scopes:
        if scope not in scopes:
            policy.problem(f"{where}.scopes", f"scope '{scope}' is not defined in [scopes]")
    type_clients = policy.strings(t, "clients", where, [])
    for client in type_clients:
        if client not in clients:
            policy.problem(f"{where}.clients", f"client '{client}' is not defined")
    raw_fields = t.get("fields", {})
    if not isinstance(raw_fields, dict) or not raw_fields:
        policy.problem(where, "needs [fields]: the fields a detail of this type may carry")
        raw_fields = {}
    fields = _read_fields(raw_fields, f"{where}.fields", policy, depth=1, top=True)
    required = policy.strings(t, "required", where, [])
    for missing in sorted(set(required) - set(fields)):
        policy.problem(f"{where}.required", f"'{missing}' is not one of the fields")
    for path in _PLACEHOLDER.findall(description):
        if _spec_at(fields, path) is None:
            policy.problem(f"{where}.description", f"{{{path}}} names no field")
    if not type_scopes:
        return None
    return DetailType(name, description, type_scopes, fields, required, type_clients)


def _read_fields(
    raw: Mapping[str, Any], where: str, policy: PolicyReader, *, depth: int, top: bool
) -> dict[str, FieldSpec]:
    fields: dict[str, FieldSpec] = {}
    for name, t in raw.items():
        here = f"{where}.{name}"
        if name == "type" or not _FIELD_NAME.fullmatch(name):
            policy.problem(
                here, "a field name is a letter then letters, digits, _ (and not 'type')"
            )
            continue
        if not isinstance(t, dict):
            policy.problem(here, "expected a table with a 'kind'")
            continue
        spec = _read_field(t, here, policy, depth)
        if spec is None:
            continue
        common = COMMON_KINDS.get(name) if top else None
        if common is not None and spec.kind != common:
            policy.problem(here, f"is an RFC 9396 common field: its kind is '{common}'")
            continue
        fields[name] = spec
    return fields


def _read_field(
    t: Mapping[str, Any], where: str, policy: PolicyReader, depth: int
) -> FieldSpec | None:
    policy.no_unknown(
        t, {"kind", "label", "max_length", "enum", "scale", "max", "fields", "required"}, where
    )
    kind = t.get("kind")
    if kind not in KINDS:
        policy.problem(where, f"kind must be one of {sorted(KINDS)}")
        return None
    allowed = {
        "string": {"max_length", "enum"},
        "strings": {"max_length", "enum"},
        "currency": {"enum"},
        "decimal": {"scale", "max"},
        "object": {"fields", "required"},
    }[kind] | {"kind", "label"}
    for key in sorted(set(t) - allowed):
        policy.problem(where, f"'{key}' does not apply to kind '{kind}'")
    label = t.get("label", "")
    if not isinstance(label, str):
        policy.problem(f"{where}.label", "expected a string")
        label = ""
    max_length = t.get("max_length", DEFAULT_MAX_LENGTH)
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, int)
        or not 1 <= max_length <= 4096
    ):
        policy.problem(f"{where}.max_length", "must be an integer from 1 to 4096")
        max_length = DEFAULT_MAX_LENGTH
    enum = policy.strings(t, "enum", where, [])
    if kind == "currency":
        for code in enum:
            if not _CURRENCY.fullmatch(code):
                policy.problem(f"{where}.enum", f"'{code}' is not a three-letter ISO 4217 code")
    scale = t.get("scale", 2)
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 8:
        policy.problem(f"{where}.scale", "must be an integer from 0 to 8")
        scale = 2
    maximum = None
    if "max" in t:
        maximum = _decimal(t["max"]) if isinstance(t["max"], str) else None
        if maximum is None:
            policy.problem(
                f"{where}.max", 'must be a decimal number written as a string, e.g. "10000.00"'
            )
    fields: dict[str, FieldSpec] = {}
    required: tuple[str, ...] = ()
    if kind == "object":
        if depth >= MAX_DEPTH:
            policy.problem(where, f"objects nest at most {MAX_DEPTH} deep")
            return None
        raw_fields = t.get("fields")
        if not isinstance(raw_fields, dict) or not raw_fields:
            policy.problem(where, "an object needs fields")
            raw_fields = {}
        fields = _read_fields(raw_fields, f"{where}.fields", policy, depth=depth + 1, top=False)
        required = policy.strings(t, "required", where, [])
        for missing in sorted(set(required) - set(fields)):
            policy.problem(f"{where}.required", f"'{missing}' is not one of the fields")
    return FieldSpec(kind, label, max_length, enum, scale, maximum, fields, required)


def _spec_at(fields: Mapping[str, FieldSpec], path: str) -> FieldSpec | None:
    head, _, rest = path.partition(".")
    spec = fields.get(head)
    if spec is None or not rest:
        return spec
    return _spec_at(spec.fields, rest)


def _decimal(text: str) -> Decimal | None:
    if not re.fullmatch(r"[0-9]{1,15}(\.[0-9]{1,8})?", text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


# -- what a client sends -------------------------------------------------------------------


def parse(
    raw: str,
    types: Mapping[str, DetailType],
    *,
    client_id: str,
    scopes: Sequence[str],
    resource: str,
) -> list[dict[str, Any]]:
    """The `authorization_details` parameter, checked against policy: the list to store.

    Raises InvalidAuthorizationDetails (RFC 9396 §5) naming the first problem found.
    """
    if len(raw) > MAX_LENGTH:
        raise InvalidAuthorizationDetails(f"authorization_details is longer than {MAX_LENGTH}")
    try:
        value = json.loads(raw, object_pairs_hook=_unique_names)
    except _DuplicateName as exc:
        raise InvalidAuthorizationDetails(
            f"authorization_details names {str(exc)[:64]!r} twice in one object"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidAuthorizationDetails("authorization_details is not valid JSON") from exc
    if not isinstance(value, list) or not value:
        raise InvalidAuthorizationDetails("authorization_details must be a non-empty JSON array")
    if len(value) > MAX_DETAILS:
        raise InvalidAuthorizationDetails(f"authorization_details holds more than {MAX_DETAILS}")
    details: list[dict[str, Any]] = []
    for index, detail in enumerate(value):
        where = f"authorization_details[{index}]"
        if not isinstance(detail, dict):
            raise InvalidAuthorizationDetails(f"{where} must be a JSON object")
        name = detail.get("type")
        if not isinstance(name, str) or not name:
            raise InvalidAuthorizationDetails(f"{where} needs a type")
        detail_type = types.get(name)
        if detail_type is None:
            raise InvalidAuthorizationDetails(f"{where}: type {name[:64]!r} is not supported")
        if detail_type.clients and client_id not in detail_type.clients:
            raise InvalidAuthorizationDetails(f"{where}: this client may not use type {name!r}")
        if not set(detail_type.scopes) & set(scopes):
            raise InvalidAuthorizationDetails(
                f"{where}: type {name!r} needs scope {' or '.join(detail_type.scopes)}"
            )
        fields = {k: v for k, v in detail.items() if k != "type"}
        _check_object(fields, detail_type.fields, detail_type.required, where)
        # RFC 9396 §2.2: `locations` names where the access is for; here that is the one
        # resource the elevated token's `aud` will carry, nothing else.
        for location in fields.get("locations", ()):
            if location != resource:
                raise InvalidAuthorizationDetails(
                    f"{where}.locations: {location[:64]!r} is not the requested resource"
                )
        details.append(detail)
    return details


class _DuplicateName(ValueError):
    pass


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 §4: with a name twice, parsers differ on which value wins. The client, a
    # filter in front of stepup and stepup itself could each read another transaction.
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateName(name)
            seen.add(name)
    return value


def _check_object(
    value: Mapping[str, Any], fields: Mapping[str, FieldSpec], required: Sequence[str], where: str
) -> None:
    for name in value:
        if name not in fields:
            raise InvalidAuthorizationDetails(f"{where}: unknown field {name[:64]!r}")
    for name in required:
        if name not in value:
            raise InvalidAuthorizationDetails(f"{where}: {name} is required")
    for name, item in value.items():
        _check_value(item, fields[name], f"{where}.{name}")


def _check_value(value: Any, spec: FieldSpec, where: str) -> None:
    if spec.kind == "object":
        if not isinstance(value, dict):
            raise InvalidAuthorizationDetails(f"{where} must be an object")
        _check_object(value, spec.fields, spec.required, where)
    elif spec.kind == "strings":
        if not isinstance(value, list) or not value or len(value) > MAX_ITEMS:
            raise InvalidAuthorizationDetails(f"{where} must be a list of 1 to {MAX_ITEMS} strings")
        if len(set(map(str, value))) != len(value):
            raise InvalidAuthorizationDetails(f"{where} lists an item twice")
        for item in value:
            _check_string(item, spec, where)
    elif spec.kind == "string":
        _check_string(value, spec, where)
    elif spec.kind == "currency":
        if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
            raise InvalidAuthorizationDetails(f"{where} must be a three-letter currency code")
        if spec.enum and value not in spec.enum:
            raise InvalidAuthorizationDetails(f"{where}: currency {value} is not accepted")
    else:  # decimal
        amount = _decimal(value) if isinstance(value, str) else None
        if amount is None:
            # A JSON number would go through a float somewhere; amounts travel as strings.
            raise InvalidAuthorizationDetails(f"{where} must be a decimal number in a string")
        exponent = amount.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > spec.scale:
            raise InvalidAuthorizationDetails(f"{where} has more than {spec.scale} decimals")
        if spec.max is not None and amount > spec.max:
            raise InvalidAuthorizationDetails(f"{where} is above {spec.max}")


def _check_string(value: Any, spec: FieldSpec, where: str) -> None:
    if not isinstance(value, str) or not value or len(value) > spec.max_length:
        raise InvalidAuthorizationDetails(
            f"{where} must be a string of 1 to {spec.max_length} characters"
        )
    if not value.isprintable():
        raise InvalidAuthorizationDetails(f"{where} holds control characters")
    if spec.enum and value not in spec.enum:
        raise InvalidAuthorizationDetails(f"{where}: {value[:64]!r} is not one of the accepted")


# -- the token endpoint: only the same or less ---------------------------------------------


def narrowed(
    requested: Sequence[Mapping[str, Any]],
    approved: Sequence[Mapping[str, Any]],
    types: Mapping[str, DetailType],
) -> bool:
    """Whether each requested detail is one approved, or one with fewer list items
    (`actions`, `locations`, …), each approved detail standing for one requested detail at
    most: one payment repeated, or split by its actions, would be two payments. Leaving a
    field out is not narrower: it would lift a constraint (no payee means any payee), so
    every approved field must be repeated."""
    fits = [
        [
            i
            for i, a in enumerate(approved)
            if d.get("type") == a.get("type") and _within(d, a, types[str(d["type"])].fields)
        ]
        for d in requested
    ]
    return _one_to_one(fits, set())


def _one_to_one(fits: Sequence[Sequence[int]], taken: set[int]) -> bool:
    # A matching of the requested details (rows) to distinct approved ones; at most
    # MAX_DETAILS of each, so trying every choice stays small.
    if not fits:
        return True
    return any(_one_to_one(fits[1:], taken | {choice}) for choice in fits[0] if choice not in taken)


def _within(
    asked: Mapping[str, Any], approved: Mapping[str, Any], fields: Mapping[str, FieldSpec]
) -> bool:
    if set(asked) != set(approved):
        return False
    for name, value in asked.items():
        if name == "type":
            continue
        spec, granted = fields[name], approved[name]
        if type(value) is not type(granted):
            # The policy changed since the approval: only an identical detail still passes.
            return False
        if spec.kind == "strings":
            ok = set(value) <= set(granted)
        elif spec.kind == "object":
            ok = _within(value, granted, spec.fields)
        elif spec.kind == "decimal":
            amount = _decimal(value)
            ok = value == granted or (amount is not None and amount == _decimal(granted))
        else:
            ok = value == granted
        if not ok:
            return False
    return True


# -- the page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One detail as the page shows it: the sentence, then every field it carries."""

    summary: str
    rows: tuple[tuple[str, str], ...]


def describe(detail: Mapping[str, Any], types: Mapping[str, DetailType]) -> Shown:
    detail_type = types.get(str(detail.get("type")))
    if detail_type is None:
        # The policy lost the type since intake: still show everything that will be approved.
        rows = tuple(
            (k, json.dumps(v, ensure_ascii=False)) for k, v in detail.items() if k != "type"
        )
        return Shown(f"Details of type {detail.get('type')}", rows)

    def fill(match: re.Match[str]) -> str:
        value = _value_at(detail, match.group(1))
        return value if value is not None else "—"

    summary = _PLACEHOLDER.sub(fill, detail_type.description)
    rows = tuple(_rows(detail, detail_type.fields, ""))
    return Shown(summary, rows)


def _value_at(value: Any, path: str) -> str | None:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return value if isinstance(value, str) else None


def _rows(
    value: Mapping[str, Any], fields: Mapping[str, FieldSpec], prefix: str
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name, spec in fields.items():
        if name not in value:
            continue
        label = spec.label or prefix + name
        item = value[name]
        if spec.kind == "object" and isinstance(item, dict):
            rows.extend(_rows(item, spec.fields, f"{label} "))
        elif spec.kind == "strings" and isinstance(item, list):
            rows.append((label, ", ".join(map(str, item))))
        elif isinstance(item, str):
            rows.append((label, item))
        else:  # only if the policy changed since intake: show it as it is
            rows.append((label, json.dumps(item, ensure_ascii=False)))
    return rows
