"""The search page in a real headless browser: Debian's chromium, driven by selenium through chromedriver.

Outside CI the test skips when no chromium is installed; in CI (CI=true, where .ci/run installs it)
a missing browser is a failure, so the page is always tested there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.fixtures.serve import LiveServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromedriver must be installed in CI (.ci/run installs them)")
        pytest.skip("no chromium/chromedriver here (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_random_test_query_renders_thumbnails_in_two_columns(browser, live_server: LiveServer, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(live_server.url + "/")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dataset option")) > 1)
    Select(browser.find_element(By.ID, "dataset")).select_by_value("tweakset")  # image + edit request -> images
    browser.find_element(By.ID, "random").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .column")) == 2)
    columns = browser.find_elements(By.CSS_SELECTOR, "#results .column")
    assert [c.get_attribute("data-variant") for c in columns] == ["none", "both"]
    for col in columns:
        assert len(col.find_elements(By.CSS_SELECTOR, ".hit")) == 10
    wait.until(lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('#results .hit img')];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);"))
    qid = browser.find_element(By.ID, "q-id").text.split()[0]
    assert qid.startswith("14:")  # tweakset's dataset id
    positives = live_server.service.catalog.positives[qid]
    marked = {h.get_attribute("data-did") for h in browser.find_elements(By.CSS_SELECTOR, ".hit.positive")}
    shown = {h.get_attribute("data-did") for h in browser.find_elements(By.CSS_SELECTOR, ".hit")}
    assert marked == shown & positives
    assert browser.find_element(By.ID, "q-original").text
    assert browser.find_element(By.ID, "q-note").text.startswith("[ok, op rewrite, standin]")
    assert browser.find_element(By.ID, "q-enhanced").text != "(original kept)"
    assert browser.find_element(By.ID, "query-thumb").get_attribute("naturalWidth") != "0"
    assert not browser.find_element(By.ID, "error").is_displayed()
    shot = tmp_path / "serve-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
