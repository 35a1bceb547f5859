"""The report in a real browser: headless Chromium draws the sheet, loads thumbnails, pages.

One report of 250 images (three pages) is opened from disk (``file://``, offline) in one
Chromium session shared by the tests of this module. Skipped where Chromium or
chromedriver is not installed.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from report_helpers import Row, make_collection, write_thumbnail_pair
from sqlalchemy.engine import make_url
from webdriver_helpers import Browser, find_browser

from catalog import make_sessionmaker
from exports.report import write_report

#: Browser window, CSS pixels (device scale factor 1).
WINDOW = (1280, 1000)
#: Images in the report: three pages of 100.
IMAGES = 250
#: Every 25th image from the 8th on failed: 10 of them, without thumbnails.
FAILED = {i for i in range(IMAGES) if i % 25 == 7}
#: A done image whose thumbnails have disappeared from disk.
MISSING = 3

_loads = itertools.count()


@dataclass
class Page:
    """The report of the module, and the browser that shows it."""

    browser: Browser
    url: str
    ids: list[int]

    def open(self, fragment: str = "") -> None:
        """Load the report afresh (a new query string forces a real load)."""
        self.browser.open(f"{self.url}?load={next(_loads)}{fragment}")
        assert self.browser.wait_for("return document.querySelectorAll('#sheet figure').length")

    def figures(self) -> int:
        return int(self.browser.run("return document.querySelectorAll('#sheet figure').length"))

    def where(self) -> str:
        return str(self.browser.run("return document.getElementById('where').textContent"))


@pytest.fixture(scope="module")
def page(exports_sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    root = tmp_path_factory.mktemp("browser-report")
    catalog = root / "catalog.sqlite3"
    catalog.write_bytes(exports_sqlite_template.read_bytes())
    sessions = make_sessionmaker(make_url(f"sqlite:///{catalog}").render_as_string())
    output = root / "colour"
    pairs = [write_thumbnail_pair(output, f"{output}/seed{seed}.tif", seed) for seed in range(4)]
    rows, thumbs = [], {}
    for i in range(IMAGES):
        path = f"box {i // 100}/scan {i:03d}.tif"
        if i in FAILED:
            rows.append(Row(path, "failed", "decode.truncated", "truncated"))
            continue
        rows.append(Row(path))
        thumbs[path] = (f"{output}/gone.source.jpg", f"{output}/gone.output.jpg")
        if i != MISSING:
            thumbs[path] = pairs[i % 4]
    ids = make_collection(sessions, root / "scans", output, rows, thumbnails=thumbs)
    report = write_report(sessions, "1920s", root / "report.html").path
    sessions.kw["bind"].dispose()
    browser = Browser(*found, profile=root / "profile", size=WINDOW)
    try:
        yield Page(browser, report.as_uri(), [ids[row.path] for row in rows])
    finally:
        browser.close()


#: Returns the natural sizes of the first ``n`` cards' images once all are loaded, else null.
LOADED = """
const cards = [...document.querySelectorAll('#sheet figure')].slice(0, arguments[0]);
const images = cards.flatMap(card => [...card.querySelectorAll('img')]);
if (!images.every(img => img.complete)) { return null; }
return images.map(img => [img.naturalWidth, img.naturalHeight]);
"""


def test_the_sheet_draws_a_page_of_lazy_thumbnails_that_load(page: Page) -> None:
    page.open()
    browser = page.browser
    browser.run("document.getElementById('contact-sheet').scrollIntoView()")

    sizes = browser.wait_for(LOADED, 3)
    missing = browser.wait_for(
        "return document.querySelectorAll('#sheet figure')[arguments[0]]"
        ".querySelectorAll('.missing').length",
        MISSING,
    )

    assert page.figures() == 100
    assert page.where() == "page 1 of 3 (250 images)"
    assert sizes == [[64, 48]] * 6  # the original's and the copy's, of the first 3 cards
    assert missing == 2  # thumbnails gone from disk show as missing, not as broken images
    assert browser.run("return [...document.images].every(img => img.loading === 'lazy')")
    assert browser.run("return document.images.length") <= 200


def test_paging_and_the_status_filter_draw_the_right_images(page: Page) -> None:
    page.open()
    browser = page.browser
    first = "return Number(document.querySelector('#sheet figure').dataset.id)"

    browser.click("#next")
    assert (browser.run(first), page.where()) == (page.ids[100], "page 2 of 3 (250 images)")
    assert browser.run("return location.hash") == "#page=2"
    browser.click("#last")
    assert (page.figures(), browser.run(first)) == (50, page.ids[200])
    assert browser.run("return document.getElementById('next').disabled") is True
    browser.run(
        "const s = document.getElementById('status'); s.value = 'failed';"
        "s.dispatchEvent(new Event('change'));"
    )
    badges = browser.run(
        "return [...document.querySelectorAll('#sheet .badge')].map(b => b.textContent)"
    )
    assert badges == ["failed"] * len(FAILED)
    assert page.where() == "page 1 of 1 (10 images)"

    page.open("#page=3&status=done")
    assert page.where() == "page 3 of 3 (240 images)"
    assert page.figures() == 40


def _saturation(pixels: np.ndarray) -> float:
    rgb = pixels[..., :3].astype(np.int16)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())


def test_a_screenshot_shows_the_sheet_with_colour_only_in_the_copies(page: Page) -> None:
    page.open()
    browser = page.browser
    browser.run("document.getElementById('sheet').scrollIntoView()")
    assert browser.wait_for(LOADED, 1)
    rects = browser.run(
        "return [...document.querySelector('#sheet figure').querySelectorAll('img')]"
        ".map(img => { const r = img.getBoundingClientRect();"
        " return [r.left, r.top, r.right, r.bottom]; })"
    )

    shot = np.asarray(PILImage.open(io.BytesIO(browser.screenshot())).convert("RGB"))

    assert shot.shape[1] == WINDOW[0] and 0 < shot.shape[0] <= WINDOW[1]
    assert float(shot.std()) > 20.0  # not a blank page
    centres = []
    for left, top, right, bottom in rects:
        # The middle of each picture: object-fit leaves bands of background around it.
        x, y = (left + right) / 2, (top + bottom) / 2
        w, h = (right - left) / 4, (bottom - top) / 8
        centres.append(shot[int(y - h) : int(y + h), int(x - w) : int(x + w)])
    original, copy = centres
    assert original.size and copy.size
    assert _saturation(original) < 8.0
    assert _saturation(copy) > 60.0
