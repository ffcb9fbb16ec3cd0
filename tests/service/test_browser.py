"""The web page in a real headless Chromium: type a query, see results, play the moment, ask a question.

Debian's `chromium` and `chromium-driver` packages drive it through Selenium; nothing is downloaded (the
driver path is given, so Selenium Manager never runs, and SE_OFFLINE forbids it anyway). Skipped, with the
install command, where /usr/bin/chromium is absent. The library is a small synthworld (coloured shapes, H.264
MP4 as the generator writes them, titled with their captions), indexed with the session's tiny checkpoint and
served by a real `clover serve`. The test saves a screenshot under its tmp dir; with
CLOVER_DOCS_SCREENSHOT=1 it also refreshes docs/screenshots/web-ui.png (so plain test runs leave the tree clean).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from bench.server import serve
from tests.service.conftest import ANSWERS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "screenshots" / "web-ui.png"
WAIT_S = 30

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file() or not CHROMEDRIVER.is_file(),
                       reason=f"needs Debian's chromium and chromedriver ({INSTALL})"),
]

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # root in a container: the setuid sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # a container's /dev/shm is often too small for the renderer
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no update, metrics or safe-browsing traffic: loopback only
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,1160",  # the viewport is ~140 px shorter: all of the page
]


@pytest.fixture(scope="module")
def site(tiny_checkpoint, tmp_path_factory):
    """A synthworld library indexed with the tiny checkpoint, served by `clover serve`: its URL and titles."""
    from indexer.pipeline import index_paths
    from model import Clover
    from model.checkpoint import fingerprint
    from training.synthworld import generate_world

    base = tmp_path_factory.mktemp("site")
    world = base / "world"
    generate_world(world, num_videos=12, seed=3, size=128, workers=1)  # 2 s clips: one segment each
    rows = [json.loads(line) for split in ("train", "val", "test", "test_compositional")
            for line in (world / f"{split}.jsonl").read_text().splitlines()]
    manifest = base / "library.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(world / r["path"]), "title": r["captions"][0]}) + "\n"
                                for r in rows))
    index_dir = base / "index"
    summary = index_paths(index_dir, [manifest], Clover.from_pretrained(tiny_checkpoint),
                          checkpoint_fingerprint=fingerprint(tiny_checkpoint), workers=0)
    assert summary["indexed"] == len(rows) and summary["failed"] == 0, summary

    env = {"CLOVER_INDEX_WORKERS": "0", "CLOVER_LIBRARY_ROOTS": str(world / "videos")}
    with serve(index_dir, tiny_checkpoint, env=env, log_path=base / "server.log") as server:
        yield {"url": server.url, "titles": [r["captions"][0] for r in rows]}


@pytest.fixture
def browser(monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="clover-chromium-")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, script: str, what: str, *args):
    """Poll a JavaScript expression until it is truthy; fail with the page's console output otherwise."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.1)
    status = driver.execute_script("return document.getElementById('status').textContent")
    console = "\n".join(entry["message"] for entry in driver.get_log("browser"))
    raise AssertionError(f"timed out waiting for {what}; status line {status!r}; console:\n{console}")


def test_search_play_and_ask_in_chromium(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    query = site["titles"][0]
    browser.get(site["url"] + "/")
    assert browser.title == "Clover Search"

    # search: type the query, submit, wait for cards whose thumbnails have loaded
    browser.find_element(By.ID, "query").send_keys(query)
    browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    count = _wait(browser, "return document.querySelectorAll('#results .card').length", "result cards")
    assert count == min(len(site["titles"]), 24)
    assert "video(s) in" in browser.find_element(By.ID, "status").text
    titles = {card.text for card in browser.find_elements(By.CSS_SELECTOR, "#results .card .title")}
    assert titles <= set(site["titles"])
    _wait(browser, """
        const imgs = [...document.querySelectorAll('#results .card img')].slice(0, 4);
        return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
    """, "thumbnails")

    # the same query re-ranked by the fusion encoder: the cards show both scores
    browser.find_element(By.ID, "rerank").click()
    browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    _wait(browser, "return document.getElementById('status').textContent.includes('re-ranked top')",
          "re-ranking")
    assert "rerank" in browser.find_element(By.CSS_SELECTOR, "#results .card .scores").text

    # play: the first result streams from /videos/{id}/stream and its playback starts at the moment
    first = browser.find_element(By.CSS_SELECTOR, "#results .card")
    first_title = first.find_element(By.CSS_SELECTOR, ".title").text
    assert first.get_attribute("title") == first_title  # the whole caption, which the card cuts to one line
    first.click()
    assert browser.find_element(By.ID, "player-panel").is_displayed()
    assert browser.find_element(By.ID, "player-title").text == first_title
    found = httpx.get(f"{site['url']}/search", params={"q": query, "k": 1, "rerank": "true"}).json()
    hit = found["results"][0]
    assert hit["title"] == first_title
    _wait(browser, """
        const v = document.getElementById('player');
        return v.error === null && v.readyState >= 2 && (v.currentTime > arguments[0] || !v.paused);
    """, "playback", hit["start"])
    video = browser.execute_script("""
        const v = document.getElementById('player');
        return {src: v.currentSrc, error: v.error && v.error.code, width: v.videoWidth, height: v.videoHeight,
                frames: v.getVideoPlaybackQuality().totalVideoFrames};
    """)
    assert httpx.URL(video["src"]).path == f"/videos/{hit['video_id']}/stream", video
    assert (video["width"], video["height"]) == (128, 128) and video["error"] is None, video  # H.264 decodes
    # decoded frames keep coming while it plays (the clip is 2 s)
    _wait(browser, "return document.getElementById('player').getVideoPlaybackQuality().totalVideoFrames > 2",
          "decoded frames")

    # ask: an open-ended question about the playing video gets an answer from the QA head's vocabulary
    browser.find_element(By.ID, "question").send_keys("what color is the shape?")
    browser.find_element(By.CSS_SELECTOR, "#qa-form button[type=submit]").click()
    answer = _wait(browser, "const s = document.querySelector('#answer strong'); return s && s.textContent",
                   "an answer")
    assert answer in ANSWERS
    assert "error" not in browser.find_element(By.ID, "answer").get_attribute("class")
    assert "p = " in browser.find_element(By.ID, "answer").text

    # let the 2 s clip finish so the screenshot shows a settled player, then keep the picture
    _wait(browser, "return document.getElementById('player').ended", "the end of the clip")
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "web-ui.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("CLOVER_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
