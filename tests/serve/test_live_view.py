"""The live view in a real browser: headless Chromium driven by Selenium against the local
app (``bioflux view``'s app, uvicorn in a thread) with built-in policies.

Needs Debian's ``chromium`` and ``chromium-driver``: installed here with apt when missing and
running as root (``.ci/run`` installs them in CI), else the test is skipped with the reason.
``BIOFLUX_LIVE_SCREENSHOT=docs/images/live_view_inspect.png`` (the page running, an agent
inspected) and ``BIOFLUX_LIVE_ONLOAD_SCREENSHOT=docs/images/live_view_on_load.png`` (the page
as it loads) also copy the screenshots there, for the docs; otherwise they only go to a
temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.serve.conftest import free_port

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def _browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    paths = _browser_paths()
    if paths is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
            check=False,
            capture_output=True,
            timeout=600,
        )
        paths = _browser_paths()
    if paths is None and os.environ.get("CI"):
        pytest.fail("CI must run the browser test: .ci/run installs chromium and chromium-driver")
    if paths is None:
        pytest.skip(
            "chromium and chromedriver are missing: apt-get install chromium chromium-driver"
        )
    import selenium  # noqa: F401  (the test extra installs it: a missing one fails, never skips)

    return paths


def _view_app(models: Path):
    """``bioflux view``'s app over ``models`` on a free loopback port: (url, stop)."""
    import uvicorn

    from bioflux.serve.live_routes import create_view_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_view_app(models), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "v1/live/options", timeout=2) as res:
                assert res.status == 200
            break
        except OSError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise
            time.sleep(0.1)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return url, stop


@pytest.fixture(scope="module")
def view_url(tmp_path_factory):
    """``bioflux view``'s app on a free loopback port (built-in policies only)."""
    url, stop = _view_app(tmp_path_factory.mktemp("view-models"))
    yield url
    stop()


@pytest.fixture
def browser(chromium, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float = 60, what: str = "condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"timed out waiting for {what}"
    )


CANVAS_STATS = """
const c = document.getElementById('grid');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let red = 0, green = 0, sum = 0;
for (let i = 0; i < d.length; i += 4) {
  sum += d[i] + 2 * d[i + 1] + 3 * d[i + 2];
  if (d[i] > 180 && d[i + 1] < 80) red++;
  if (d[i + 1] > 130 && d[i] < 80) green++;
}
return {red: red, green: green, sum: sum, url: c.toDataURL()};
"""

#: The offset from the canvas' centre of the first live predator's cell (CSS pixels).
AGENT_OFFSET = """
const S = window.bioflux, c = document.getElementById('grid');
const r = c.getBoundingClientRect(), k = c.width / r.width;
const row = S.frame.predators[0], col = S.frame.predators[1];
return [((col + 0.5) * S.cell) / k - r.width / 2, ((row + 0.5) * S.cell) / k - r.height / 2,
        S.frame.predator_slots[0]];
"""


def test_the_live_view_streams_plots_and_explains(browser, view_url, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(view_url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#prey option"), what="options")
    # the page shows a world on load; its first frame sets the seed field, so wait for it
    _wait(driver, lambda d: d.execute_script("return window.bioflux.frame"), what="first frame")
    driver.execute_script(
        "document.getElementById('predator').value = 'lotka_volterra/predator';"
        "document.getElementById('seed').value = '7';"
        "const s = document.getElementById('speed'); s.value = s.max;"
        "s.dispatchEvent(new Event('input'));"
    )
    driver.find_element(By.ID, "start").click()
    _wait(driver, lambda d: d.execute_script("return window.bioflux.frames") >= 5, what="frames")
    first = driver.execute_script(CANVAS_STATS)
    _wait(
        driver, lambda d: d.execute_script("return window.bioflux.frames") >= 50, 120, "50 frames"
    )
    later = driver.execute_script(CANVAS_STATS)
    assert driver.find_element(By.ID, "error").text == ""
    # the canvas shows predators (red) and prey (green), and it moves
    assert first["red"] > 0 and first["green"] > 0
    assert later["url"] != first["url"] and later["sum"] != first["sum"]
    status = driver.find_element(By.ID, "status").text
    assert "lotka_volterra/predator vs random/prey" in status
    assert int(driver.find_element(By.ID, "stat-step").text.split()[0]) >= 50
    prey, captures = driver.execute_script(  # both at once: frames keep coming
        "return [document.getElementById('stat-prey').textContent,"
        " document.getElementById('stat-captures').textContent]"
    )
    assert int(captures.split()[0]) == 100 - int(prey)  # the ppo world: 100 prey, no births
    # the population chart has a point per frame
    points = driver.find_element(By.ID, "pop-prey").get_attribute("points").split()
    assert len(points) >= 50
    assert not driver.find_element(By.ID, "phase").is_displayed()  # not an ecology world

    # pause, then click a predator: its probabilities (summing to 1), confidence, reasoning
    driver.find_element(By.ID, "pause").click()
    _wait(driver, lambda d: d.execute_script("return window.bioflux.paused"), what="pause")
    frames = driver.execute_script("return window.bioflux.frames")
    time.sleep(0.3)
    assert driver.execute_script("return window.bioflux.frames") == frames
    dx, dy, slot = driver.execute_script(AGENT_OFFSET)
    canvas = driver.find_element(By.ID, "grid")
    ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy)).click().perform()
    cells = _wait(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#probabilities td.prob"), what="inspect"
    )
    probs = [float(td.get_attribute("data-p")) for td in cells]
    assert len(probs) == 5 and abs(sum(probs) - 1) < 1e-6
    inspected = driver.execute_script("return window.bioflux.inspected")
    assert inspected["slot"] == slot and inspected["species"] == "predator"
    assert driver.find_element(By.ID, "confidence").text.startswith("confidence ")
    assert driver.find_element(By.ID, "reasoning").text.startswith("chose ")

    # one step while paused, then a bad seed shows as a message on the page
    driver.find_element(By.ID, "step").click()
    _wait(driver, lambda d: d.execute_script("return window.bioflux.frames") == frames + 1)
    seed = driver.find_element(By.ID, "seed")
    driver.execute_script("arguments[0].value = '-3'", seed)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", seed)
    error = _wait(driver, lambda d: d.find_element(By.ID, "error").text, what="error message")
    assert "seed=-3 is out of range" in error

    shot = tmp_path / "live_view.png"
    driver.execute_script("document.getElementById('error').style.display = 'none'")
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    target = os.environ.get("BIOFLUX_LIVE_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_the_page_shows_bad_parameters(browser, view_url):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(view_url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#prey option"), what="options")
    # the page shows a world on load; its first frame sets the seed field, so wait for it
    _wait(driver, lambda d: d.execute_script("return window.bioflux.frame"), what="first frame")
    driver.execute_script("document.getElementById('seed').value = '-1'")
    driver.find_element(By.ID, "start").click()
    error = _wait(driver, lambda d: d.find_element(By.ID, "error").text, what="error message")
    assert "seed=-1 is out of range" in error
    assert driver.find_element(By.ID, "pause").get_property("disabled")


def test_the_page_shows_a_world_on_load(browser, view_url, tmp_path):
    """No click: the default world appears, paused on its first frame, with its counters."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(view_url)
    _wait(driver, lambda d: d.execute_script("return window.bioflux.frame"), what="first frame")
    stats = driver.execute_script(CANVAS_STATS)
    assert stats["red"] > 0 and stats["green"] > 0  # predators and prey on the grid
    assert driver.find_element(By.ID, "status").text.startswith(
        "ppo: 100×100, random/predator vs random/prey"
    )
    assert int(driver.find_element(By.ID, "stat-prey").text) == 100
    assert driver.find_element(By.ID, "pause").text == "Play"  # paused until asked
    frames = driver.execute_script("return window.bioflux.frames")
    time.sleep(0.5)
    assert driver.execute_script("return window.bioflux.frames") == frames
    shot = tmp_path / "live_view_on_load.png"
    assert driver.save_screenshot(str(shot))
    target = os.environ.get("BIOFLUX_LIVE_ONLOAD_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_the_page_says_where_the_chosen_trained_policies_started(browser, models_dir):
    """The trained models' lineage (their bioflux.json): a "from …" line per chosen policy."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, stop = _view_app(models_dir)
    try:
        driver = browser
        driver.get(url)
        text = _wait(driver, lambda d: d.find_element(By.ID, "lineage").text, what="lineage")
        assert (
            "Predator ppo/predator: from run source (ppo, 10 tensors), then a 2-stage curriculum:"
            " small (height=8; 2 it) -> full (1 it)" in text
        )
        assert "Prey ppo/prey: from scratch, then a 2-stage curriculum" in text
        Select(driver.find_element(By.ID, "predator")).select_by_value("random/predator")
        _wait(
            driver,
            lambda d: "Predator" not in d.find_element(By.ID, "lineage").text,
            what="the built-in's line gone",
        )
    finally:
        stop()
