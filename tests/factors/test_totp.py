"""stepup.factors.totp against RFC 6238, oathtool and zbarimg (independent implementations)."""

from __future__ import annotations

import base64
import re
import struct
import subprocess
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import segno

from stepup.factors import totp

# RFC 6238 Appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
# (time, last 6 digits of the 8-digit SHA-1 value in Appendix B)
RFC_VECTORS = [
    (59, "287082"),  # 94287082
    (1111111109, "081804"),  # 07081804
    (1111111111, "050471"),  # 14050471
    (1234567890, "005924"),  # 89005924
    (2000000000, "279037"),  # 69279037
    (20000000000, "353130"),  # 65353130
]
FIXED_TIMES = [59, 1111111109, 1234567890, 1700000000, 2000000000]


# -- QR helpers (also used by the page tests) ---------------------------------------------


def svg_to_png(svg: str, path: Path, pixels_per_module: int = 4) -> Path:
    """Rasterises a QR code SVG as segno writes it (one path of horizontal runs: M, m, h)
    into a greyscale PNG, without using segno, so zbarimg decodes what the page really shows."""
    match = re.search(r'<path[^>]*\bd="([^"]+)"', svg)
    assert match, "no <path d=...> in the QR SVG"
    size_match = re.search(r'<svg[^>]*\bwidth="(\d+)"', svg)
    scale_match = re.search(r'transform="scale\((\d+)\)"', svg)
    assert size_match and scale_match, "QR SVG without width or scale"
    modules = int(size_match.group(1)) // int(scale_match.group(1))
    dark = [[False] * modules for _ in range(modules)]
    x = y = 0.0
    for command, args in re.findall(r"([A-Za-z])([^A-Za-z]*)", match.group(1)):
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", args)]
        if command == "M":
            x, y = numbers
        elif command == "m":
            x, y = x + numbers[0], y + numbers[1]
        elif command == "h":
            row = int(y)  # segno draws each row as a stroke at y + 0.5
            for column in range(int(x), int(x + numbers[0])):
                dark[row][column] = True
            x += numbers[0]
        else:
            raise AssertionError(f"unexpected SVG path command {command!r}")
    raw = bytearray()
    for cells in dark:
        line = bytes(0 if cell else 255 for cell in cells for _ in range(pixels_per_module))
        for _ in range(pixels_per_module):
            raw += b"\x00" + line
    width = modules * pixels_per_module

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, width, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)
    return path


def zbar_decode(zbarimg: str, png: Path) -> str:
    done = subprocess.run(
        [zbarimg, "--raw", "--quiet", "--nodbus", str(png)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"zbarimg found no QR code: {done.stderr}"
    return done.stdout.strip()


def oath(oathtool: str, *args: str) -> str:
    done = subprocess.run(
        [oathtool, "--totp", "-b", *args], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip()


# -- RFC 6238 -------------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "code"), RFC_VECTORS)
def test_rfc6238_sha1_vectors_match_their_own_time_step(at: int, code: str) -> None:
    assert totp.matching_step(RFC_SECRET, code, at) == at // 30


@pytest.mark.parametrize(("at", "code"), RFC_VECTORS)
def test_rfc6238_vector_is_refused_two_steps_away(at: int, code: str) -> None:
    assert totp.matching_step(RFC_SECRET, code, at + 60) is None
    if at >= 90:  # no time steps before the epoch
        assert totp.matching_step(RFC_SECRET, code, at - 60) is None


def test_codes_one_step_either_side_match_and_report_their_own_step() -> None:
    secret = totp.new_secret()
    now = 1_700_000_015.0
    current = int(now) // 30
    generator = pyotp.TOTP(secret)
    for offset in (-1, 0, 1):
        code = generator.at(now + 30 * offset)
        assert totp.matching_step(secret, code, now) == current + offset


def test_codes_two_steps_away_do_not_match() -> None:
    secret = totp.new_secret()
    now = 1_700_000_015.0
    generator = pyotp.TOTP(secret)
    near = {generator.at(now + 30 * offset) for offset in (-1, 0, 1)}
    for offset in (-2, 2):
        code = generator.at(now + 30 * offset)
        if code in near:  # a one-in-a-million collision with an allowed step
            continue
        assert totp.matching_step(secret, code, now) is None


def test_a_step_boundary_is_exact() -> None:
    # At t = 30k the current step is k: the code for k - 2 no longer matches, k + 1 does.
    secret = totp.new_secret()
    generator = pyotp.TOTP(secret)
    boundary = 1_700_000_010.0  # a multiple of 30
    assert boundary % 30 == 0
    assert totp.matching_step(secret, generator.at(boundary), boundary) == boundary // 30
    before = generator.at(boundary - 1)  # step k - 1: one step of skew
    assert totp.matching_step(secret, before, boundary) == boundary // 30 - 1


def test_new_secrets_are_160_bit_base32_and_distinct() -> None:
    secrets_made = {totp.new_secret() for _ in range(20)}
    assert len(secrets_made) == 20
    for secret in secrets_made:
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        assert len(base64.b32decode(secret)) == 20


# -- normalize_code -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("123456", "123456"),
        ("123 456", "123456"),
        ("123-456", "123456"),
        (" 123456 ", "123456"),
        ("012345", "012345"),
    ],
)
def test_normalize_code_accepts_what_people_type(typed: str, expected: str) -> None:
    assert totp.normalize_code(typed) == expected


@pytest.mark.parametrize(
    "typed",
    [
        None,
        "",
        "12345",
        "1234567",
        "12345a",
        "abcdef",
        "١٢٣٤٥٦",  # Arabic-Indic digits
        "\uff11\uff12\uff13\uff14\uff15\uff16",  # full-width digits
        "12345\u00b2",  # superscript two: str.isdigit() is True for it
        "+12345",
        "12.456",
    ],
)
def test_normalize_code_refuses_anything_but_six_ascii_digits(typed: str | None) -> None:
    assert totp.normalize_code(typed) is None


# -- oathtool interop -----------------------------------------------------------------------


@pytest.mark.parametrize("at", FIXED_TIMES)
def test_oathtool_codes_at_fixed_times_match(oathtool: str, at: int) -> None:
    secret = totp.new_secret()
    code = oath(oathtool, "-N", f"@{at}", secret)
    assert re.fullmatch(r"\d{6}", code)
    assert totp.matching_step(secret, code, at) == at // 30


def test_oathtool_rfc_secret_gives_the_rfc_vector(oathtool: str) -> None:
    for at, code in RFC_VECTORS[:5]:
        assert oath(oathtool, "-N", f"@{at}", RFC_SECRET) == code


def test_oathtool_code_for_now_is_accepted(oathtool: str) -> None:
    secret = totp.new_secret()
    code = oath(oathtool, secret)
    # Real clock on both sides; one step of skew covers a step boundary in between.
    assert totp.matching_step(secret, code, time.time()) is not None


def test_oathtool_code_two_steps_ahead_is_refused(oathtool: str) -> None:
    secret = totp.new_secret()
    at = 1_700_000_015
    code = oath(oathtool, "-N", f"@{at + 60}", secret)
    near = {pyotp.TOTP(secret).at(at + 30 * o) for o in (-1, 0, 1)}
    if code not in near:
        assert totp.matching_step(secret, code, at) is None


# -- provisioning URI and QR code -----------------------------------------------------------


def test_provisioning_uri_carries_secret_issuer_and_defaults() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "alice@example.com", "bank.example")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert unquote(parts.path) == "/bank.example:alice@example.com"
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert params["secret"] == secret
    assert params["issuer"] == "bank.example"
    # Google Authenticator's key-uri format: absent means SHA1, 6 digits, 30 seconds.
    assert params.get("digits", "6") == "6"
    assert params.get("period", "30") == "30"
    assert params.get("algorithm", "SHA1").upper() == "SHA1"


def test_qr_svg_is_an_inline_svg_with_a_title() -> None:
    svg = totp.qr_svg(totp.provisioning_uri(totp.new_secret(), "alice", "localhost"))
    assert svg.lstrip().startswith("<svg")
    assert re.search(r"<title>[^<]+</title>", svg)
    assert "<?xml" not in svg  # inline in HTML, no XML declaration
    assert "<script" not in svg.lower()


def test_zbarimg_decodes_a_png_of_the_uri(zbarimg: str, tmp_path: Path) -> None:
    uri = totp.provisioning_uri(totp.new_secret(), "alice", "localhost")
    png = tmp_path / "qr.png"
    segno.make(uri).save(str(png), kind="png", scale=4)
    assert zbar_decode(zbarimg, png) == uri


def test_zbarimg_decodes_the_served_svg_back_to_the_uri(zbarimg: str, tmp_path: Path) -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "alice", "localhost")
    png = svg_to_png(totp.qr_svg(uri), tmp_path / "svg.png")
    decoded = zbar_decode(zbarimg, png)
    assert decoded == uri
    assert parse_qs(urlsplit(decoded).query)["secret"] == [secret]
