"""The report in a real browser: headless Chromium opens the report of a synthetic analysis, as a
reader would, with no network; no console error, no broken image, findings on the first screen."""

from __future__ import annotations

import pytest

from tests.analysis.browser import Page, find_chromium

WIDTH, HEIGHT = 1280, 800

LAYOUT = """(() => {
  const box = e => { const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom}; };
  const imgs = [...document.images];
  return {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    findings: box(document.getElementById('findings')),
    rows: [...document.querySelectorAll('#findings tbody tr')].map(box),
    verdicts: [...document.querySelectorAll('#findings .v')].map(v => v.textContent),
    toc: [...document.querySelectorAll('nav a')].map(a => a.getAttribute('href')),
    missing_targets: [...document.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href').slice(1))
      .filter(id => !document.getElementById(id)),
    captions: [...document.querySelectorAll('figure')].filter(f => !f.querySelector('figcaption')).length,
    scroll_width: document.documentElement.scrollWidth,
  };
})()"""


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium on PATH: install Debian's chromium (apt-get install -y chromium; .ci/run does) "
                    "to run the report's browser test")
    pytest.importorskip("websocket", reason="websocket-client (the test extra) drives Chromium: "
                                            "pip install -e '.[test]'")
    return exe


@pytest.fixture(scope="module")
def seen(analyzed_experiments, chromium, tmp_path_factory):
    """What Chromium saw opening the report: layout, errors, requests, and a screenshot."""
    run, summary = analyzed_experiments
    page = Page(chromium, tmp_path_factory.mktemp("chromium-profile"), WIDTH, HEIGHT)
    try:
        page.open((run / "analysis" / "report.html").as_uri())
        layout = page.evaluate(LAYOUT)
        shot = page.screenshot(run / "analysis" / "report_first_screen.png")
        return {"layout": layout, "errors": page.errors(), "remote": page.remote_requests(), "shot": shot,
                "summary": summary}
    finally:
        page.close()


def test_no_console_error_and_no_network(seen):
    assert seen["errors"] == []
    assert seen["remote"] == []


def test_every_image_renders_and_has_a_caption(seen):
    lay = seen["layout"]
    assert lay["images"] >= 7 and lay["broken"] == []
    assert lay["captions"] == 0


def test_findings_fill_the_first_screen(seen):
    lay = seen["layout"]
    claims = seen["summary"]["claims"]
    assert len(lay["rows"]) == len(claims) >= 4
    # The findings start near the top and every claim's row ends inside a 1280x800 window.
    assert lay["findings"]["top"] < 200
    assert max(r["bottom"] for r in lay["rows"]) <= HEIGHT
    assert set(lay["verdicts"]) <= {"reproduced", "contradicted", "not resolved at this scale"}
    assert lay["scroll_width"] <= WIDTH  # nothing wider than the window


def test_table_of_contents_links_resolve(seen):
    lay = seen["layout"]
    assert lay["toc"][:2] == ["#findings", "#numbers"] and "#best_size" in lay["toc"]
    assert lay["missing_targets"] == []


def test_screenshot_is_taken(seen):
    from matplotlib.image import imread

    img = imread(seen["shot"])
    assert img.shape[:2] == (HEIGHT, WIDTH) and img.std() > 0.05
