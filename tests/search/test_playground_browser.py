"""The playground in a real browser (headless Chromium through selenium and the system chromedriver):
the images and captions the page shows, in order, are exactly what the Searcher API returns.

Skipped only where the browser is not installed; CI installs Debian's chromium and chromium-driver
(.ci/run). Nothing is installed or downloaded here.
"""

import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the playground needs the demo extra: pip install -e '.[demo]'")
uvicorn = pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from retrerank.playground.app import create_app  # noqa: E402
from retrerank.search import open_run  # noqa: E402

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (BROWSER and DRIVER),
    reason="headless Chromium and chromedriver are not "
    "installed (Debian: apt-get install chromium chromium-driver; .ci/run does)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(run):
    searcher, split = open_run(run, data_root=run.parent / "data")
    searcher.index_split(split)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(searcher, split, "tiny", rerank_top=6), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the playground server did not start"
    yield f"http://127.0.0.1:{port}", searcher, split
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def shown(browser, list_id: str) -> list[str]:
    return [li.get_attribute("data-id") for li in browser.find_elements(By.CSS_SELECTOR, f"#{list_id} li")]


def wait_done(browser, status_id: str, query: str) -> None:
    WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.ID, status_id).get_attribute("data-done") == query,
        message=f"no results for {query!r}: {browser.find_element(By.ID, status_id).text}",
    )


def set_number(browser, element_id: str, value: int) -> None:
    box = browser.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(str(value))


def test_the_page_shows_the_searchers_images_and_captions_in_order(served, browser):
    url, searcher, split = served
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    set_number(browser, "k", 4)
    set_number(browser, "rerank-top", 6)
    query = split.captions[11].text
    for scoring in ("cross", "cross+bi"):  # the scoring switch, the same server and model
        Select(browser.find_element(By.ID, "scoring")).select_by_value(scoring)
        box = browser.find_element(By.ID, "query")
        box.clear()
        box.send_keys(query)
        browser.find_element(By.CSS_SELECTOR, "#text-form button").click()
        wait_done(browser, "t2i-status", query)
        assert shown(browser, "t2i-bi") == [h.id for h in searcher.search_text(query, 4, None, scoring)[0]]
        assert shown(browser, "t2i-reranked") == [h.id for h in searcher.search_text(query, 4, 6, scoring)[0]]
    truth = {split.images[r].image_id for r in split.caption_relevant[11]}
    marked = browser.find_elements(By.CSS_SELECTOR, "#t2i-reranked li.relevant")
    assert {li.get_attribute("data-id") for li in marked} == truth & set(shown(browser, "t2i-reranked"))
    assert "rerank" in browser.find_element(By.ID, "t2i-reranked-ms").text
    # the pictures were served and decoded
    assert browser.execute_script(
        "return [...document.querySelectorAll('#t2i-bi img')].every(i => i.complete && i.naturalWidth > 0)"
    )

    image = split.images[4]
    browser.find_element(By.CSS_SELECTOR, f".picker img[data-id='{image.image_id}']").click()
    wait_done(browser, "i2t-status", image.image_id)
    assert shown(browser, "i2t-bi") == [h.id for h in searcher.search_image([image], 4, None, "cross+bi")[0]]
    assert shown(browser, "i2t-reranked") == [h.id for h in searcher.search_image([image], 4, 6, "cross+bi")[0]]
