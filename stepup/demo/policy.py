"""The demo's fixed settings, the policy file it hands to stepup, and its upstream IdP key.

The secrets below are public on purpose: they exist so a newcomer can run the demo on
localhost with one command. stepup only ever sees their hashes (see `write_demo_policy`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from joserfc.jwk import ECKey

from stepup.config import ACR_MFA, hash_secret

POLICY_FILE = "demo-policy.toml"
IDP_KEY_FILE = "demo-idp-key.json"

# Documented demo credentials: never reuse them outside the demo.
DEMO_CLIENT_SECRET = "demo-bank-secret-for-localhost-only-3d1f0c2a"
DEMO_RESOURCE_SERVER_SECRET = "payments-api-secret-for-localhost-only-9b7e41d5"

PAYMENTS_READ = "payments:read"
PAYMENTS_WRITE = "payments:write"
# RFC 9396 type the demo bank sends to approve one payment (the RFC's own example type).
PAYMENT_DETAILS_TYPE = "payment_initiation"
# What the payments API accepts; the policy's payment_initiation type says the same.
MAX_AMOUNT = Decimal("10000.00")
MAX_PAYEE_LENGTH = 70


@dataclass(frozen=True)
class DemoSettings:
    stepup_issuer: str = "http://localhost:8000"
    client_base: str = "http://localhost:8001"
    api_base: str = "http://localhost:8002"
    client_id: str = "demo-bank"
    client_name: str = "Demo Bank"
    client_secret: str = DEMO_CLIENT_SECRET
    resource_server_id: str = "payments-api"
    resource_server_name: str = "Payments API"
    resource_server_secret: str = DEMO_RESOURCE_SERVER_SECRET
    user: str = "alice"
    # What the payments API demands before it moves money (RFC 9470 challenge parameters).
    payment_acr: str = ACR_MFA
    payment_max_age: int = 300
    currency: str = "EUR"

    @property
    def idp_issuer(self) -> str:
        return f"{self.client_base}/idp"

    @property
    def redirect_uri(self) -> str:
        return f"{self.client_base}/callback"

    @property
    def account_uri(self) -> str:
        """Where stepup's factor management page leads back to ("Done")."""
        return f"{self.client_base}/account"


def write_demo_policy(data_dir: Path, settings: DemoSettings) -> Path:
    """Write the stepup policy for the demo into `data_dir` and return its path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / POLICY_FILE
    path.write_text(_policy_text(settings), encoding="utf-8")
    return path


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(value)


def _toml_strings(values: list[str]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def _policy_text(s: DemoSettings) -> str:
    q = _toml_string
    return f"""\
# stepup policy for the demo (written by stepup.demo.policy; regenerated on every start).
# The secrets hashed here are the documented demo secrets in stepup/demo/policy.py.
issuer = {q(s.stepup_issuer)}

[server]
data_dir = "."

[[upstream]]
issuer = {q(s.idp_issuer)}
discovery = true
audiences = {_toml_strings([s.api_base])}

[[clients]]
client_id = {q(s.client_id)}
name = {q(s.client_name)}
secret_hash = {q(hash_secret(s.client_secret))}
redirect_uris = {_toml_strings([s.redirect_uri, s.account_uri])}
scopes = {_toml_strings([PAYMENTS_WRITE])}
resources = {_toml_strings([s.api_base])}

[[resource_servers]]
id = {q(s.resource_server_id)}
name = {q(s.resource_server_name)}
secret_hash = {q(hash_secret(s.resource_server_secret))}
resources = {_toml_strings([s.api_base])}

[scopes.{q(PAYMENTS_WRITE)}]
acr = {q(s.payment_acr)}
description = "Send payments from your account"
max_age = {s.payment_max_age}
token_lifetime = 300

# RFC 9396: the bank sends the payment itself; stepup shows it and binds the elevation to it.
[authorization_details.{q(PAYMENT_DETAILS_TYPE)}]
description = "Pay {{instructedAmount.amount}} {{instructedAmount.currency}} to {{creditorName}}"
scopes = {_toml_strings([PAYMENTS_WRITE])}
clients = {_toml_strings([s.client_id])}
required = ["instructedAmount", "creditorName"]

[authorization_details.{q(PAYMENT_DETAILS_TYPE)}.fields]
creditorName = {{ kind = "string", max_length = {MAX_PAYEE_LENGTH}, label = "Payee" }}
remittanceInformationUnstructured = {{ kind = "string", max_length = 140, label = "Reference" }}
actions = {{ kind = "strings", enum = ["initiate"] }}
locations = {{ kind = "strings" }}

[authorization_details.{q(PAYMENT_DETAILS_TYPE)}.fields.instructedAmount]
kind = "object"
required = ["amount", "currency"]
fields.amount = {{ kind = "decimal", scale = 2, max = {q(str(MAX_AMOUNT))}, label = "Amount" }}
fields.currency = {{ kind = "currency", enum = {_toml_strings([s.currency])}, label = "Currency" }}
"""


def load_or_create_idp_key(data_dir: Path) -> ECKey:
    """The demo IdP's signing key, created once and kept as a private JWK (mode 0600)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / IDP_KEY_FILE
    if path.exists():
        return _read_key(path)
    key = ECKey.generate_key("P-256", auto_kid=True)
    temporary = data_dir / f".{IDP_KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(key.as_dict(private=True), file)
        # link() fails if the name exists: two demo processes starting at once agree on
        # one key, and no reader ever sees a half-written file.
        os.link(temporary, path)
    except FileExistsError:
        return _read_key(path)
    finally:
        temporary.unlink(missing_ok=True)
    return key


def _read_key(path: Path) -> ECKey:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        # RFC 7638: the kid is the key's thumbprint, whatever the file says.
        data.pop("kid", None)
        key = ECKey.import_key(data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: not a private EC JWK ({exc}); delete it to make a new one"
        ) from exc
    if not key.is_private:
        raise ValueError(f"{path}: holds no private key; delete it to make a new one")
    key.ensure_kid()
    return key
