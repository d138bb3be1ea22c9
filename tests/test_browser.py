"""``celseg serve`` in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by selenium uploads a generated image, types class names and reads the label map back.

Skipped with the reason when Chromium, its driver, selenium or Gradio is missing, unless
``CELSEG_REQUIRE_BROWSER=1`` (set by .ci/run), where a missing piece fails the test instead.
``CELSEG_SERVE_SCREENSHOT=PATH`` also saves the page with its overlay there (docs/serve.png).
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_run import free_port, largest_object_image, train_tiny_run

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
DRIVER = shutil.which("chromedriver")
MAX_BYTES = 40_000  # the generated 64 px images are ~10 kB; the oversized one ~49 kB
WAIT_S = 90
START_S = 300  # importing gradio and loading the model can take minutes on a loaded CPU


def _missing() -> str:
    if CHROMIUM is None or DRIVER is None:
        return ("Chromium or chromedriver not found on PATH: apt-get install chromium "
                "chromium-driver (.ci/run does)")
    for module, extra in (("selenium", "browser"), ("gradio", "demo")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install -e \".[{extra}]\""
    return ""


@pytest.fixture(scope="module", autouse=True)
def _needs_browser() -> None:
    reason = _missing()
    if reason and os.environ.get("CELSEG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CELSEG_REQUIRE_BROWSER=1 but {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(synthetic_root, tmp_path_factory):
    """``celseg serve`` in a subprocess on a free local port, with a tiny trained run."""
    env = {**os.environ, "CELSEG_CACHE": str(tmp_path_factory.mktemp("cache")),
           "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    os.environ["CELSEG_CACHE"] = env["CELSEG_CACHE"]
    try:
        run = train_tiny_run(synthetic_root, tmp_path_factory.mktemp("browser") / "run")
    finally:
        del os.environ["CELSEG_CACHE"]
    port = free_port()
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celseg", "serve", "--ckpt", str(run), "--port", str(port),
             "--device", "cpu", "--max-bytes", str(MAX_BYTES), "--examples", "3"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"celseg serve did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1050"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    browser = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield browser
    browser.quit()


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(
        condition, message=f"waited {WAIT_S} s for {what}")


def _status(driver) -> str:
    """The status message once the request is done ("" while Gradio shows it pending)."""
    from selenium.webdriver.common.by import By

    if driver.find_elements(By.CSS_SELECTOR, "#status .pending"):
        return ""
    return driver.find_element(By.CSS_SELECTOR, "#status [data-testid='markdown']").text


def _submit(driver, path: Path, names: str) -> str:
    """Upload ``path`` (replacing any earlier upload), type ``names``, click Segment and return
    the new status message."""
    from selenium.webdriver.common.by import By

    for clear in driver.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']"):
        clear.click()
    file_input = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR,
                                                        "#upload input[type=file]"),
                       "the file input")
    file_input.send_keys(str(path))
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload a[download]"),
          "the upload to finish")
    box = driver.find_element(By.CSS_SELECTOR, "#classes textarea")
    box.clear()
    box.send_keys(names)
    before = _status(driver)  # the tests never expect the same message twice in a row
    driver.find_element(By.ID, "segment").click()
    return _wait(driver, lambda d: (s := _status(d)) != before and s, "a new status message")


def test_segment_in_browser(server, driver, synthetic_root, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    image_path, names, largest = largest_object_image(synthetic_root)
    driver.get(server)
    status = _submit(driver, image_path, ", ".join(names))
    assert status.startswith("Segmented"), status
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#overlay img"), "the overlay")
    href = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#labelmap a[download]")
                 .get_attribute("href"), "the label map link")
    assert href.startswith(server)
    with urllib.request.urlopen(href, timeout=10) as reply:
        label = np.asarray(Image.open(io.BytesIO(reply.read())))
    image = np.asarray(Image.open(image_path))
    assert label.shape == image.shape[:2] and label.dtype == np.uint8
    assert names.index(largest) in np.unique(label), (largest, names, np.unique(label))
    assert largest in driver.find_element(By.ID, "shares").text
    driver.save_screenshot(str(tmp_path / "serve.png"))
    if os.environ.get("CELSEG_SERVE_SCREENSHOT"):
        shutil.copy(tmp_path / "serve.png", os.environ["CELSEG_SERVE_SCREENSHOT"])


def test_bad_uploads_get_a_message_and_the_next_is_served(server, driver, synthetic_root,
                                                          tmp_path) -> None:
    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(big)
    assert MAX_BYTES < big.stat().st_size < 4 * MAX_BYTES  # reaches the handler
    note = tmp_path / "note.png"
    note.write_text("this is text, not an image")
    driver.get(server)
    status = _submit(driver, big, "cat, dog")
    assert "--max-bytes" in status and "40.0 kB" in status, status
    status = _submit(driver, note, "cat, dog")
    assert "not an image" in status, status
    image_path, names, _ = largest_object_image(synthetic_root)
    assert _submit(driver, image_path, ", ".join(names)).startswith("Segmented")
