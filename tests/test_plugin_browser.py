"""The plugin in the real App, driven by headless Chromium (Debian's /usr/bin/chromium).

Opens the operator browser, runs ``compute_dequity`` from its form, sorts the
grid by ``dequity_weight``, opens the ``dequity`` panel and clicks a cluster;
screenshots of each step are saved in the session's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import fiftyone as fo
import pytest

import dequity

CHROMIUM = os.environ.get("DEQUITY_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GRID_TIMEOUT_MS = 120_000
RUN_TIMEOUT_MS = 240_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)),
        reason=f"chromium not found at {CHROMIUM} (apt-get install -y chromium)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app(demo):
    """The App serving a copy of the demo set (with ``embedding``), and its URL."""
    fo.config.show_progress_bars = False
    port = _free_port()
    session = fo.launch_app(demo, address="127.0.0.1", port=port, remote=True)
    yield demo, f"http://127.0.0.1:{port}/datasets/{demo.name}"
    session.close()


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        yield page
        browser.close()


def _dismiss_popups(page) -> None:
    for button in page.get_by_role("button", name="Dismiss").all():
        if button.is_visible():
            button.click()


def _wait_for_grid(page) -> None:
    page.wait_for_selector("[data-cy=fo-grid], [class*=looker]", timeout=GRID_TIMEOUT_MS)
    page.wait_for_timeout(2000)
    _dismiss_popups(page)


def _shot(page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"))


def test_compute_sort_and_panel_in_the_app(app, page, session_dir):
    ds, url = app
    shots = session_dir / "screenshots"
    shots.mkdir(exist_ok=True)

    page.goto(url, wait_until="load")
    _wait_for_grid(page)
    _shot(page, shots, "01_grid")

    # operator browser (backtick) -> compute_dequity form
    page.keyboard.press("`")
    page.wait_for_timeout(1000)
    page.keyboard.type("compute dequity")
    page.wait_for_timeout(1000)
    _shot(page, shots, "02_operator_browser")
    page.keyboard.press("Enter")
    page.get_by_text("Generalized Focal Loss").wait_for(timeout=30_000)
    _shot(page, shots, "03_compute_form")

    # run it now; the summary replaces the form when it is done
    page.get_by_role("button", name="Execute").click()
    page.get_by_text("Embeddings panel brain key").wait_for(timeout=RUN_TIMEOUT_MS)
    _shot(page, shots, "04_compute_summary")
    ds.reload()  # the App's server wrote the run
    assert dequity.list_dequity_runs(ds) == ["dequity"]
    res = dequity.load_dequity_results(ds, "dequity")
    assert len(res.sample_ids) == len(ds)
    assert "dequity_viz" in ds.list_brain_runs()
    page.get_by_role("button", name="Done").click()
    page.get_by_text("dequity_weight", exact=True).first.wait_for(timeout=30_000)

    # the dequity panel, from the new-panel menu
    page.locator("[data-cy=new-panel-btn], [title='New panel']").first.click()
    page.get_by_text("Dequity", exact=True).click()
    sort = page.get_by_role("button", name="Sort grid rarest first")
    sort.wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").nth(2).wait_for(timeout=30_000)
    page.wait_for_timeout(2000)
    _shot(page, shots, "05_dequity_panel")

    # sort the grid by dequity_weight, rarest first
    sort.click()
    page.get_by_text("SortBy").first.wait_for(state="attached", timeout=30_000)
    page.wait_for_timeout(3000)
    _shot(page, shots, "06_sorted_by_weight")

    # click the largest cluster's bar: the grid shows that cluster only
    largest = max(res.cluster_sizes().items(), key=lambda kv: (kv[0] >= 0, kv[1]))
    page.locator(".js-plotly-plot").first.locator(".bars path").first.click(force=True)
    page.get_by_text(f"{largest[1]} samples", exact=False).first.wait_for(timeout=30_000)
    page.wait_for_timeout(3000)
    _shot(page, shots, "07_largest_cluster")
    print(f"screenshots in {shots}")
