"""The Space in a real headless Chromium (Debian's `chromium`, driven by playwright): draw two digits on the sketchpad
with the mouse and segment them, segment an example image, generate samples and send them to the Segment tab
("Segment these"), run the forward process, paint a region of an example and inpaint it, see a corrupt upload's
error. Screenshots go to each test's tmp_path and are copied to `build/test-artifacts/space/` (or
`$SPACE_TEST_ARTIFACTS`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from space_app_support import load_app_module, load_space_module, save_tiny_ddpm, save_tiny_segmenter, served_app

from hf_swin_ddpm.data.digit_scenes import DIGIT_SCENES_ID2LABEL
from hf_swin_ddpm.imaging import class_colours

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
    segmenter = save_tiny_segmenter(root / "swin-fpn", DIGIT_SCENES_ID2LABEL)
    with served_app(segmenter, save_tiny_ddpm(root / "ddpm")) as (_, url):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            browser_page = browser.new_page(viewport={"width": 1400, "height": 1000})
            browser_page.set_default_timeout(TIMEOUT_MS)
            browser_page.goto(url)
            browser_page.wait_for_selector("#segment-draw-button")
            yield browser_page
            browser.close()


def screenshot(page, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    """Saves a screenshot of the page into the test's tmp_path and copies it to ARTIFACTS."""
    path = tmp_path / name
    page.screenshot(path=path, full_page=full_page)
    shutil.copy(path, ARTIFACTS / name)
    return path


def draw(page, selector: str, *strokes: list[tuple[float, float]]) -> None:
    """Draws each stroke (points as fractions of the canvas) with the mouse button held down."""
    box = page.locator(selector).first.bounding_box()
    for points in strokes:
        page.mouse.move(box["x"] + box["width"] * points[0][0], box["y"] + box["height"] * points[0][1])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] * y, steps=4)
        page.mouse.up()


def legend_names(page, names: list[str]) -> None:
    """Waits until the legend lists `names`."""
    page.wait_for_function(
        "names => names.every(n => document.querySelector('#segment-legend').innerText.includes(n))", arg=names
    )


# The drawing as the server received it, recovered from the overlay (the drawing tinted by OVERLAY_OPACITY of each
# pixel's class colour, untinted on background) and the mask (the class colours, background's included): the share
# of its pixels that are bright.
BRIGHT_SHARE_OF_THE_DRAWING = """([opacity, background]) => {
    const pixels = s => { const img = document.querySelector(s); const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight; const x = c.getContext('2d'); x.drawImage(img, 0, 0);
        return x.getImageData(0, 0, c.width, c.height).data; };
    const overlay = pixels('#segment-overlay img'), mask = pixels('#segment-mask img');
    let bright = 0;
    for (let i = 0; i < overlay.length; i += 4) {
        const tinted = [0, 1, 2].some(k => mask[i + k] !== background[k]);
        let sum = 0;
        for (let k = 0; k < 3; k++) sum += tinted ? (overlay[i + k] - opacity * mask[i + k]) / (1 - opacity) : overlay[i + k];
        if (sum > 382) bright++;
    }
    return bright / (overlay.length / 4); }"""


def bright_share_of_the_drawing(page) -> float:
    tab = load_space_module("tab_segment")
    background = [int(v) for v in class_colours(DIGIT_SCENES_ID2LABEL)[0]]
    return page.evaluate(BRIGHT_SHARE_OF_THE_DRAWING, [tab.OVERLAY_OPACITY, background])


def selected_tab(page, name: str) -> None:
    """Waits until the tab button `name` is the selected one."""
    page.get_by_role("tab", name=name, selected=True).wait_for()


def upload(page, component_id: str, path: str | Path) -> None:
    page.locator(f"#{component_id} input[type=file]").set_input_files(str(path))


def loaded_image_size(page, selector: str, expected: tuple[int, int] | None = None) -> tuple[int, int]:
    """Waits until the image under `selector` has loaded (with the `expected` natural size, when given: the page is
    shared between tests, so an earlier result may still be shown until the new one replaces it) and returns its
    natural size, read in the same step as the check."""
    size = page.wait_for_function(
        """([s, e]) => {
            const i = document.querySelector(s);
            if (!(i && i.complete && i.naturalWidth > 0)) return null;
            const size = [i.naturalWidth, i.naturalHeight];
            return !e || (size[0] === e[0] && size[1] === e[1]) ? size : null;
        }""",
        arg=[selector, list(expected) if expected else None],
    )
    return tuple(size.json_value())


def set_number(page, component_id: str, value: int) -> None:
    field = page.locator(f"#{component_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def test_draw_two_digits_and_segment_them_in_the_browser(page, tmp_path):
    selected_tab(page, "Draw")  # the Segment tab opens on the sketchpad, white ink on a black canvas
    draw(
        page,
        "#segment-sketchpad canvas",
        [(0.3, 0.3), (0.3, 0.7)],  # a "1"
        [(0.55, 0.3), (0.75, 0.3), (0.6, 0.7)],  # a "7"
    )
    page.click("#segment-draw-button")
    side = load_app_module().DRAWING_SIDE
    assert loaded_image_size(page, "#segment-overlay img", (side, side)) == (side, side)
    assert loaded_image_size(page, "#segment-mask img", (side, side)) == (side, side)
    legend_names(page, ["background", "9", "%"])
    strokes = bright_share_of_the_drawing(page)
    assert 0.01 < strokes < 0.2, strokes  # two white strokes on black: not a blank canvas, not a white one
    screenshot(page, tmp_path, "segment_drawing.png")


def test_black_ink_on_white_starts_a_new_canvas_and_segments(page, tmp_path):
    page.get_by_role("radio", name="black on white").click()
    page.wait_for_timeout(500)  # the new canvas arrives
    draw(page, "#segment-sketchpad canvas", [(0.4, 0.25), (0.4, 0.75)], [(0.6, 0.3), (0.6, 0.7)])
    overlay_source = page.get_attribute("#segment-overlay img", "src")
    page.click("#segment-draw-button")
    page.wait_for_function(
        "old => { const i = document.querySelector('#segment-overlay img'); return i.src !== old && i.complete; }",
        arg=overlay_source,
    )
    page.wait_for_function("() => document.querySelector('#segment-mask img').complete")
    ground = 1 - bright_share_of_the_drawing(page)
    assert 0.01 < ground < 0.2, ground  # two black strokes on white
    screenshot(page, tmp_path, "segment_drawing_black_on_white.png")
    page.get_by_role("radio", name="white on black").click()


def test_segment_an_example_in_the_browser(page, tmp_path):
    app = load_app_module()
    page.get_by_role("tab", name="Upload").click()
    upload(page, "segment-image", app.example_images()[1])
    page.wait_for_selector("#segment-image img")
    page.click("#segment-button")
    assert loaded_image_size(page, "#segment-overlay img", (96, 96)) == (96, 96)
    assert loaded_image_size(page, "#segment-mask img", (96, 96)) == (96, 96)
    legend_names(page, ["background", "0", "9", "%"])
    screenshot(page, tmp_path, "segment.png")


def test_generate_and_segment_these_in_the_browser(page, tmp_path):
    page.get_by_role("tab", name="Generate").click()
    set_number(page, "generate-num-images", 8)
    set_number(page, "generate-steps", 2)
    page.click("#generate-button")
    page.wait_for_function("document.querySelectorAll('#generate-gallery img').length === 8")
    assert loaded_image_size(page, "#generate-gallery img", (128, 128)) == (128, 128)
    width, height = loaded_image_size(page, "#generate-trajectory img")
    assert width > height  # x_t over the x_0 predictions, one column per recorded step
    screenshot(page, tmp_path, "generate.png")

    page.click("#generate-segment-these")
    selected_tab(page, "Segment")
    selected_tab(page, "Upload")
    page.wait_for_function(  # the canvas of the 8 samples (4 x 2 cells of 36 on 144 x 96) and its segmentation
        """() => ['#segment-image img', '#segment-overlay img', '#segment-mask img'].every(s => {
            const i = document.querySelector(s); return i && i.complete && i.naturalWidth === 144
                && i.naturalHeight === 96; })"""
    )
    legend_names(page, ["background", "9", "%"])
    screenshot(page, tmp_path, "segment_these.png")


def test_forward_process_in_the_browser(page, tmp_path):
    app = load_app_module()
    page.get_by_role("tab", name="Forward process").click()
    page.locator("#forward-examples img").nth(3).click()  # load an example (an MNIST digit) by clicking it
    assert loaded_image_size(page, "#forward-image img") == Image.open(app.digit_examples()[3]).size == (28, 28)
    set_number(page, "forward-t", 100)
    page.click("#forward-button")
    assert loaded_image_size(page, "#forward-noisy img", (28, 28)) == (28, 28)
    loaded_image_size(page, "#forward-curve img")
    page.locator("#forward-summary").get_by_text("t = 100").wait_for()
    screenshot(page, tmp_path, "forward.png")


def test_edit_paint_a_region_and_inpaint_in_the_browser(page, tmp_path):
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
    assert loaded_image_size(page, "#edit-result img", (128, 128)) == (128, 128)
    assert loaded_image_size(page, "#edit-input img", (128, 128)) == (128, 128)
    width, height = loaded_image_size(page, "#edit-trajectory img")
    assert width > height
    screenshot(page, tmp_path, "edit.png")


def test_a_corrupt_upload_shows_the_error_message(page, tmp_path):  # last: its toast would cover other screenshots
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    page.get_by_role("tab", name="Segment").click()
    page.get_by_role("tab", name="Upload").click()
    page.locator("#segment-image button[aria-label='Remove Image']").click()
    upload(page, "segment-image", corrupt)
    page.click("#segment-button")
    page.get_by_text("it is not an image or it is corrupt").first.wait_for()
    page.wait_for_timeout(500)  # the toast slides in
    screenshot(page, tmp_path, "segment_error.png", full_page=False)  # the viewport, where the error toast sits
