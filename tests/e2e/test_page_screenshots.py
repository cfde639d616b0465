"""Every page stepup shows, rendered by Chromium at a desktop and a phone width, checked on
the screenshot itself: the right size, no sideways scrolling, a main box that carries ink
(not blank, not one colour), and no text cut off or spilling out of its box.

The PNGs are kept under test-artifacts/screenshots/ (gitignored) for a person to look at.
They are decoded by the browser (an <img> drawn on a canvas in a blank page), so the checks
need no imaging library.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

import pyotp
import pytest
from playwright.sync_api import Page, expect

from tests.support.stepup import REDIRECT, Stepup, hidden, payment, pkce
from tests.support.webauthn import (
    VirtualAuthenticator,
    callback_page_fixtures,
    management_url,
    module_stepup_at_origin,
)

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
VIEWPORTS = {"desktop": (1280, 800), "phone": (360, 740)}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def policy_edits(document: dict[str, Any]) -> None:
    # "warn" so the removal confirmation can be shown; the smallest set of recovery codes.
    document["factors"] = {"last_factor": "warn", "recovery_codes": 4}


served, stepup = module_stepup_at_origin("screens", policy_edits)


_DESKTOP_WIDTH, _DESKTOP_HEIGHT = VIEWPORTS["desktop"]
context, page = callback_page_fixtures(
    viewport={"width": _DESKTOP_WIDTH, "height": _DESKTOP_HEIGHT}
)


# -- reading the pictures -----------------------------------------------------------------


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which PNG puts first (RFC 2083 §4.1.1)."""
    assert png[:8] == PNG_SIGNATURE, "not a PNG"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


class Box(TypedDict):
    x: int
    y: int
    width: int
    height: int


class Ink(TypedDict):
    width: int
    height: int
    ink: float  # share of the box's pixels that differ from its background
    colours: int  # distinct colours (4 bits per channel) in the box


INK_JS = """
async ({ png, box }) => {
  const image = new Image();
  image.src = "data:image/png;base64," + png;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(box.x, box.y, box.width, box.height).data;
  // The background: the colour just inside the box's top-left corner (past its border).
  const at = (4 * (4 * box.width + 4));
  const background = [pixels[at], pixels[at + 1], pixels[at + 2]];
  let inked = 0;
  const colours = new Set();
  for (let i = 0; i < pixels.length; i += 4) {
    const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
    if (Math.abs(r - background[0]) + Math.abs(g - background[1]) + Math.abs(b - background[2]) > 48) {
      inked += 1;
    }
    colours.add(((r >> 4) << 8) | ((g >> 4) << 4) | (b >> 4));
  }
  return { width: image.width, height: image.height, ink: inked / (pixels.length / 4),
           colours: colours.size };
}
"""

# Text that leaves the main box, is cut off by a box that hides its overflow, or a code
# (recovery code, TOTP key group) broken across two lines.
CLIPPED_TEXT_JS = r"""
() => {
  const main = document.querySelector("main");
  const outer = main.getBoundingClientRect();
  const found = [];
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const element = node.parentElement;
    if (!node.textContent.trim() || element.closest(".visually-hidden, noscript")) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const rects = Array.from(range.getClientRects()).filter((r) => r.width > 0 && r.height > 0);
    if (!rects.length) continue;  // not rendered (a closed fold, a hidden control)
    const label = `${element.tagName.toLowerCase()} "${node.textContent.trim().slice(0, 40)}"`;
    for (const r of rects) {
      if (r.left < outer.left - 1 || r.right > outer.right + 1) {
        found.push(`${label} spills out of the main box`);
      }
    }
    for (let box = element; box && box !== main; box = box.parentElement) {
      const style = getComputedStyle(box);
      const hides = style.overflowX !== "visible" || style.textOverflow === "ellipsis";
      if (hides && box.scrollWidth > box.clientWidth + 1) {
        found.push(`${label} is cut off by <${box.tagName.toLowerCase()}>`);
      }
    }
  }
  // A code or key is read and typed character by character: never split inside a group.
  for (const code of main.querySelectorAll("code")) {
    const text = code.firstChild;
    if (!text || text.nodeType !== Node.TEXT_NODE || !code.getClientRects().length) continue;
    for (const match of text.textContent.matchAll(/\S+/g)) {
      const range = document.createRange();
      range.setStart(text, match.index);
      range.setEnd(text, match.index + match[0].length);
      const lines = new Set(Array.from(range.getClientRects(), (r) => Math.round(r.top)));
      if (lines.size > 1) found.push(`code "${match[0]}" is split across lines`);
    }
  }
  // What the user typed must be seen whole, to check it before sending.
  for (const input of main.querySelectorAll("input[type=text]")) {
    if (input.value && input.getClientRects().length && input.scrollWidth > input.clientWidth + 1) {
      found.push(`input #${input.id} cuts off "${input.value}"`);
    }
  }
  for (const control of main.querySelectorAll("button, .button, summary, label")) {
    const r = control.getBoundingClientRect();
    if (r.width && (r.left < outer.left - 1 || r.right > outer.right + 1)) {
      found.push(`${control.tagName.toLowerCase()} "${control.textContent.trim()}" leaves the box`);
    }
  }
  return found;
}
"""


def assert_renders_sensibly(page: Page, name: str) -> None:
    """Screenshots the page at each width and checks the picture and the layout."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    reader = page.context.new_page()  # about:blank: a page of our own to decode PNGs in
    try:
        for viewport, (width, height) in VIEWPORTS.items():
            page.set_viewport_size({"width": width, "height": height})
            where = f"{name} at {viewport} width"
            expect(page.locator("h1")).to_have_count(1)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
                f"{where}: the page scrolls sideways"
            )
            assert page.evaluate(CLIPPED_TEXT_JS) == [], where
            main = page.locator("main").bounding_box()
            assert main is not None, f"{where}: no main box"
            assert main["x"] >= 0 and main["x"] + main["width"] <= width, where
            assert main["width"] >= min(width, 540) * 0.9, f"{where}: main box too narrow"
            assert main["height"] >= 120, f"{where}: main box too short"

            png = page.screenshot(full_page=True)
            (SCREENSHOTS / f"{name}-{viewport}.png").write_bytes(png)
            shot_width, shot_height = png_size(png)
            assert shot_width == width and shot_height >= height, (where, shot_width, shot_height)
            box: Box = {
                "x": int(main["x"]),
                "y": int(main["y"]),
                "width": int(main["width"]),
                "height": int(min(main["height"], shot_height - main["y"])),
            }
            ink: Ink = reader.evaluate(INK_JS, {"png": base64.b64encode(png).decode(), "box": box})
            assert (ink["width"], ink["height"]) == (shot_width, shot_height), where
            # Text, controls and borders: some ink, but not a box flooded with one colour.
            assert 0.02 <= ink["ink"] <= 0.6, f"{where}: ink share {ink['ink']:.3f}"
            assert ink["colours"] >= 16, f"{where}: only {ink['colours']} colours"
    finally:
        reader.close()


# -- getting to each page -----------------------------------------------------------------


def totp_user(stepup: Stepup, sub: str) -> str:
    with stepup.browser() as browser:
        _, _, secret = stepup.step_up(browser, sub=sub)
    return secret


def fresh_code(stepup: Stepup, secret: str) -> str:
    stepup.clock.advance(30)
    return pyotp.TOTP(secret).at(stepup.clock.now())


def with_recovery_codes(stepup: Stepup, sub: str, secret: str) -> None:
    path = urlsplit(management_url(stepup, sub)).path
    with stepup.browser() as browser:
        page = browser.get(path)
        data = {"csrf": hidden(page.text, "csrf")}
        proven = browser.post(
            path, data={**data, "action": "prove", "code": fresh_code(stepup, secret)}
        )
        assert proven.status_code == 200, proven.text
        made = browser.post(path, data={**data, "action": "recovery-new"})
        assert re.search(r"<li><code>[0-9a-z-]+</code></li>", made.text), made.text


def open_stepup(stepup: Stepup, page: Page, sub: str, scope: str = "audit:read") -> None:
    _, challenge = pkce()
    pushed = stepup.par(stepup.upstream.token(sub), scope=scope, code_challenge=challenge)
    assert pushed.status_code == 201, pushed.text
    page.goto(f"{stepup.url}/authorize?client_id=bank&request_uri={pushed.json()['request_uri']}")


def managing(stepup: Stepup, page: Page, sub: str) -> None:
    secret = totp_user(stepup, sub)
    page.goto(management_url(stepup, sub))
    page.get_by_label("Code from your current authenticator app").fill(fresh_code(stepup, secret))
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="What you have")).to_be_visible()


# -- the pages ----------------------------------------------------------------------------


def test_verification_page_with_an_app_code_renders(stepup: Stepup, page: Page) -> None:
    totp_user(stepup, "tess")
    open_stepup(stepup, page, "tess")
    expect(page.get_by_label("Code from your authenticator app")).to_be_visible()
    assert_renders_sensibly(page, "verify-totp")


def test_verification_page_with_a_passkey_renders(stepup: Stepup, page: Page) -> None:
    VirtualAuthenticator(page)
    open_stepup(stepup, page, "pat", scope="keys:admin")
    page.get_by_role("button", name="Create a passkey and continue").click()
    page.wait_for_url(REDIRECT + "?*")
    stepup.clock.advance(61)
    open_stepup(stepup, page, "pat", scope="keys:admin")
    expect(page.get_by_role("button", name="Use passkey")).to_be_visible()
    assert_renders_sensibly(page, "verify-passkey")


def test_verification_page_with_the_recovery_fold_open_renders(stepup: Stepup, page: Page) -> None:
    secret = totp_user(stepup, "rae")
    with_recovery_codes(stepup, "rae", secret)
    open_stepup(stepup, page, "rae")
    page.get_by_text("Use a recovery code instead").click()
    page.get_by_label("Recovery code").fill("ab12-cd34-ef56-gh78")  # as long as a real one
    assert_renders_sensibly(page, "verify-recovery")


def test_verification_page_with_transaction_details_renders(stepup: Stepup, page: Page) -> None:
    # Long words (an unbroken payee name, a reference) must wrap at 360 px, not widen the page.
    totp_user(stepup, "tia")
    detail = payment(
        "9999.99",
        payee="Grossherzoglich-Hessische-Landesbrandversicherungsanstalt-Darmstadt",
        remittanceInformationUnstructured="INV-2026-11-23-000000000000000000000000000000042 " * 2,
        actions=["initiate", "status"],
    )
    _, challenge = pkce()
    pushed = stepup.par(
        stepup.upstream.token("tia"),
        code_challenge=challenge,
        authorization_details=json.dumps([detail, payment("12.00", "USD", "Corner Shop")]),
    )
    assert pushed.status_code == 201, pushed.text
    page.goto(f"{stepup.url}/authorize?client_id=bank&request_uri={pushed.json()['request_uri']}")
    expect(page.get_by_text("Pay 12.00 USD to Corner Shop")).to_be_visible()
    assert_renders_sensibly(page, "verify-transaction")


def test_first_factor_enrolment_page_renders(stepup: Stepup, page: Page) -> None:
    open_stepup(stepup, page, "fay", scope="payments:write")
    expect(page.get_by_role("button", name="Create a passkey and continue")).to_be_visible()
    expect(page.locator(".qr svg")).to_be_visible()
    expect(page.locator("#totp-secret")).to_be_visible()
    assert_renders_sensibly(page, "enrol-first-factor")


def test_management_prove_step_renders(stepup: Stepup, page: Page) -> None:
    totp_user(stepup, "mo")
    page.goto(management_url(stepup, "mo"))
    expect(page.get_by_label("Code from your current authenticator app")).to_be_visible()
    assert_renders_sensibly(page, "manage-prove")


def test_management_factor_list_renders(stepup: Stepup, page: Page) -> None:
    managing(stepup, page, "lou")
    expect(page.get_by_role("button", name="Rename Authenticator app")).to_be_visible()
    assert_renders_sensibly(page, "manage-list")


def test_management_new_recovery_codes_render(stepup: Stepup, page: Page) -> None:
    managing(stepup, page, "nel")
    page.get_by_role("button", name="Create recovery codes").click()
    expect(page.locator("#recovery-codes code")).to_have_count(4)
    assert_renders_sensibly(page, "manage-recovery-codes")


def test_management_remove_confirmation_renders(stepup: Stepup, page: Page) -> None:
    managing(stepup, page, "rem")
    page.get_by_role("button", name="Remove Authenticator app").click()
    expect(page.get_by_role("button", name="Remove anyway")).to_be_visible()
    assert_renders_sensibly(page, "manage-remove-confirm")


def test_error_page_renders(stepup: Stepup, page: Page) -> None:
    answer = page.goto(f"{stepup.url}/authorize")
    assert answer is not None and answer.status == 400
    expect(page.get_by_role("heading", name="Incomplete request")).to_be_visible()
    assert_renders_sensibly(page, "error")
