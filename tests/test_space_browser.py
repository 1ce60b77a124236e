"""The Space in a real headless Chromium (Debian's `chromium`, driven by playwright): segment an example image,
generate samples, run the forward process, paint a region of an example and inpaint it, see a corrupt upload's error; screenshots go to
`build/test-artifacts/space/` (or `$SPACE_TEST_ARTIFACTS`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from space_app_support import load_app_module, save_tiny_ddpm, save_tiny_segmenter, served_app

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# as root, without a sandbox, and without the background connections a closed network refuses
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("SPACE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "build/test-artifacts/space")
)
TIMEOUT_MS = 60_000


def require_browser() -> None:
    """Fails (never skips) with the fix when the browser or its driver is missing."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        found = shutil.which("chromium")
        hint = f" (a chromium is on PATH at {found}: set CHROMIUM={found})" if found else ""
        pytest.fail(
            f"Chromium not found at {CHROMIUM}{hint}. Install Debian's browser with "
            "`apt-get update && apt-get install -y chromium` (`make test` does this)."
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Python playwright is missing: `pip install -e '.[dev]'` installs it.")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    require_browser()
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("space_browser")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with served_app(save_tiny_segmenter(root / "swin-fpn"), save_tiny_ddpm(root / "ddpm")) as (_, url):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            browser_page = browser.new_page(viewport={"width": 1400, "height": 1000})
            browser_page.set_default_timeout(TIMEOUT_MS)
            browser_page.goto(url)
            browser_page.wait_for_selector("#segment-button")
            yield browser_page
            browser.close()


def upload(page, component_id: str, path: str | Path) -> None:
    page.locator(f"#{component_id} input[type=file]").set_input_files(str(path))


def loaded_image_size(page, selector: str) -> tuple[int, int]:
    """Waits until the image under `selector` has loaded and returns its natural size."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }", arg=selector
    )
    return tuple(page.eval_on_selector(selector, "i => [i.naturalWidth, i.naturalHeight]"))


def set_number(page, component_id: str, value: int) -> None:
    field = page.locator(f"#{component_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def test_segment_an_example_in_the_browser(page):
    app = load_app_module()
    upload(page, "segment-image", app.example_images()[1])
    page.wait_for_selector("#segment-image img")
    page.click("#segment-button")
    assert loaded_image_size(page, "#segment-overlay img") == (64, 64)
    assert loaded_image_size(page, "#segment-mask img") == (64, 64)
    page.wait_for_function(
        "names => names.every(n => document.querySelector('#segment-legend').innerText.includes(n))",
        arg=["background", "circle", "square", "triangle", "%"],
    )
    page.screenshot(path=ARTIFACTS / "segment.png", full_page=True)


def test_generate_in_the_browser(page):
    page.get_by_role("tab", name="Generate").click()
    set_number(page, "generate-num-images", 2)
    set_number(page, "generate-steps", 4)
    page.click("#generate-button")
    page.wait_for_function("document.querySelectorAll('#generate-gallery img').length === 2")
    assert loaded_image_size(page, "#generate-gallery img") == (128, 128)
    width, height = loaded_image_size(page, "#generate-trajectory img")
    assert width > height  # x_t over the x_0 predictions, one column per recorded step
    page.screenshot(path=ARTIFACTS / "generate.png", full_page=True)


def test_forward_process_in_the_browser(page):
    app = load_app_module()
    page.get_by_role("tab", name="Forward process").click()
    page.locator("#forward-examples img").nth(3).click()  # load an example by clicking it
    assert loaded_image_size(page, "#forward-image img") == Image.open(app.example_images()[3]).size
    set_number(page, "forward-t", 100)
    page.click("#forward-button")
    assert loaded_image_size(page, "#forward-noisy img") == (64, 64)
    loaded_image_size(page, "#forward-curve img")
    page.locator("#forward-summary").get_by_text("t = 100").wait_for()
    page.screenshot(path=ARTIFACTS / "forward.png", full_page=True)


def test_edit_paint_a_region_and_inpaint_in_the_browser(page):
    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-examples img").first.click()  # an example becomes the editor's background
    canvas = page.locator("#edit-editor canvas").first
    canvas.wait_for()
    page.wait_for_timeout(1000)  # the example lands on the canvas
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.6)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.65, steps=12)
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.75, steps=12)
    page.mouse.up()
    set_number(page, "edit-steps", 4)
    page.click("#edit-button")
    assert loaded_image_size(page, "#edit-result img") == (128, 128)
    assert loaded_image_size(page, "#edit-input img") == (128, 128)
    width, height = loaded_image_size(page, "#edit-trajectory img")
    assert width > height
    page.screenshot(path=ARTIFACTS / "edit.png", full_page=True)


def test_a_corrupt_upload_shows_the_error_message(page, tmp_path):  # last: its toast would cover other screenshots
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    page.get_by_role("tab", name="Segment").click()
    page.locator("#segment-image button[aria-label='Remove Image']").click()
    upload(page, "segment-image", corrupt)
    page.click("#segment-button")
    page.get_by_text("it is not an image or it is corrupt").first.wait_for()
    page.wait_for_timeout(500)  # the toast slides in
    page.screenshot(path=ARTIFACTS / "segment_error.png")  # the viewport, where the error toast sits
