"""The serve page in a real headless browser (selenium + Debian's chromium
and chromium-driver, which .ci/run installs): upload a test image, see k
results whose labels are `ra_jax.search`'s, upload a text file, see the
error. RA_JAX_SCREENSHOT=path also saves a screenshot of the results there.
(docs/serve_page.png shows the same page on the README's digits run.)"""

import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from tests import runs

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and DRIVER),
                       reason="needs Debian's chromium and chromium-driver"
                              " (.ci/run installs them)")]


@pytest.fixture
def server(digits_run):
  with runs.serving(digits_run) as base:
    yield base


@pytest.fixture
def browser():
  webdriver = pytest.importorskip("selenium.webdriver")
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
               "--window-size=1200,900"):
    options.add_argument(flag)
  driver = webdriver.Chrome(
      options=options, service=webdriver.ChromeService(executable_path=DRIVER))
  yield driver
  driver.quit()


def _wait(condition, seconds=60):
  deadline = time.time() + seconds
  while not condition():
    assert time.time() < deadline
    time.sleep(0.2)


def test_upload_shows_the_search_results_and_a_text_file_an_error(
    server, browser, digits_run, tmp_path):
  from selenium.webdriver.common.by import By
  from ra_jax.trained.search import Searcher
  searcher = Searcher(digits_run, progress=False)
  query = searcher.source.splits[searcher.source.query_split][5]
  png = tmp_path / "query.png"
  Image.fromarray(np.squeeze(np.asarray(query["image"])).astype(np.uint8),
                  "L").save(png)
  expected = searcher.search(searcher.load_image(str(png)), 6,
                             2, False)

  browser.get(server)
  _wait(lambda: browser.find_element(By.ID, "run").text)
  assert "two-stage search over the class anchors" in browser.find_element(
      By.ID, "run").text
  browser.find_element(By.ID, "image").send_keys(str(png))
  for field, value in (("k", "6"), ("num_lists", "2")):
    element = browser.find_element(By.ID, field)
    element.clear()
    element.send_keys(value)
  browser.find_element(By.ID, "search").click()
  figures = lambda: browser.find_elements(By.CSS_SELECTOR, "#grid figure")
  _wait(lambda: len(figures()) == 6)
  assert [int(f.get_attribute("data-label")) for f in figures()] == [
      int(label) for label in expected["labels"]]
  assert [int(f.get_attribute("data-id")) for f in figures()] == [
      int(i) for i in expected["ids"]]
  classes = browser.find_elements(By.CSS_SELECTOR, "#classes li")
  assert len(classes) == 2 and "anchor distance" in classes[0].text
  if os.environ.get("RA_JAX_SCREENSHOT"):
    browser.save_screenshot(os.environ["RA_JAX_SCREENSHOT"])

  text = tmp_path / "notes.txt"
  text.write_text("not an image")
  browser.find_element(By.ID, "image").send_keys(str(text))
  browser.find_element(By.ID, "search").click()
  _wait(lambda: browser.find_element(By.ID, "error").text)
  error = browser.find_element(By.ID, "error").text
  assert error.startswith("400: the upload: not an image file"), error
  assert not figures()

  browser.find_element(By.ID, "random").click()  # still serving
  _wait(lambda: len(figures()) == 6)
  assert not browser.find_element(By.ID, "error").text
