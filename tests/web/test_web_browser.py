"""The `resshift serve` page end to end in real headless Chromium: load it, upload, run, see, download.

Needs Debian's `chromium` and `chromium-driver` (`apt-get install chromium chromium-driver`) and the
Python packages of the `web` and `test` extras (`pip install -e ".[test,web]"`). Without them this
module is skipped with the reason, unless RESSHIFT_REQUIRE_BROWSER=1 (set by CI), which makes the
missing piece a failure. The real server (`create_app`) runs in a background thread with tiny
random-weight models; Selenium drives the system chromedriver, so nothing is downloaded.
The finished upscale is saved as a screenshot, tests/artifacts/web_upscale.png.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import os
import shutil
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SOURCE_IMAGE = SHARED_DATA / "benchmarks" / "Set5" / "img_001.png"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_TIMEOUT_S = 60
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                  # nothing but the page under test may touch the network
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-default-apps", "--no-first-run")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    for module in ("selenium", "fastapi", "uvicorn", "multipart"):
        if importlib.util.find_spec(module) is None:
            return f"the Python package {module!r} is not installed (pip install -e \".[test,web]\")"
    if _chromium() is None:
        return "no chromium on PATH (apt-get install chromium)"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    if not SOURCE_IMAGE.is_file():
        return f"the test image {SOURCE_IMAGE} is missing (the shared data folder beside the repository)"
    return None


pytestmark = pytest.mark.browser
MISSING = _missing()
if MISSING is not None:
    if os.environ.get("RESSHIFT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"RESSHIFT_REQUIRE_BROWSER=1 but {MISSING}", pytrace=False)
    pytest.skip(f"browser test skipped: {MISSING}", allow_module_level=True)

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from conftest import tiny_config  # noqa: E402
from serving import served  # noqa: E402
from resshift.pipeline import ResShiftPipeline  # noqa: E402
from resshift.web.app import ServeSettings, create_app  # noqa: E402


# ---------------------------------------------------------------------------------- fixtures
API_KEY = "browser-test-key_42"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny x4 SR model and a tiny inpainting model, saved as folders."""
    folder = tmp_path_factory.mktemp("web-models")
    torch.manual_seed(0)
    ResShiftPipeline.from_config(tiny_config()).save_pretrained(folder / "tiny-x4")
    ResShiftPipeline.from_config(tiny_config(task="inpaint", scale=1, num_steps=2)).save_pretrained(
        folder / "tiny-inpaint")
    return folder


@contextlib.contextmanager
def serving(settings: ServeSettings):
    """The real app on 127.0.0.1 (a free port) in a background thread; yields its base URL."""
    app = create_app(settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny networks: threads only add waiting on a busy machine
    try:
        with served(app) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(model_folder):
    """The app serving the tiny x4 SR model and the tiny inpainting model, without an API key."""
    models = (str(model_folder / "tiny-x4"), str(model_folder / "tiny-inpaint"))
    with serving(ServeSettings(models=models, device="cpu", dtype="fp32")) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server(model_folder):
    """The app serving the tiny x4 SR model, started with an API key."""
    settings = ServeSettings(models=(str(model_folder / "tiny-x4"),), device="cpu", dtype="fp32", api_key=API_KEY)
    with serving(settings) as url:
        yield url


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    yield browser
    browser.quit()


@pytest.fixture
def page(server, driver):
    """The page, freshly loaded, with its model list filled in; the logs start empty."""
    driver.get_log("browser")           # reading a log empties it: drop what earlier tests left
    driver.get_log("performance")
    driver.get(server + "/")
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "model").get_attribute("value"))
    return driver


@pytest.fixture
def small_image(tmp_path):
    """A 48x48 crop of a Set5 image: the tiny model makes a 192x192 result in about a second."""
    path = tmp_path / "crop.png"
    with Image.open(SOURCE_IMAGE) as image:
        image.convert("RGB").crop((100, 100, 148, 148)).save(path)
    return path


# ---------------------------------------------------------------------------------- helpers
def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call, from Chrome's performance (DevTools) log."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def is_local(url: str, base: str) -> bool:
    parsed = urlparse(urljoin(base + "/", url))
    return parsed.scheme in ("data", "blob") or parsed.netloc == urlparse(base).netloc


def choose(driver, path: Path) -> None:
    """Pick a file in the page's file input (what the file dialog or a drop does) and wait for it."""
    driver.find_element(By.ID, "file-input").send_keys(str(path))
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "run").is_enabled())


def wait_for_result(driver, name_end: str) -> None:
    """Wait until the run ends: a shown result with a download name ending in `name_end`, or an error."""
    def finished(d):
        if d.find_element(By.ID, "error").is_displayed():
            return True
        link = d.find_element(By.ID, "download")
        return (link.is_displayed() and (link.get_attribute("download") or "").endswith(name_end)
                and d.find_element(By.ID, "run").is_enabled())

    WebDriverWait(driver, RUN_TIMEOUT_S).until(finished)
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), f"the page shows an error: {error.text}"


def download(driver) -> bytes:
    """The bytes behind the Download link (an object URL), read inside the page: no file dialog."""
    script = """
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById("download").href)
          .then((r) => r.arrayBuffer())
          .then((buffer) => {
            const bytes = new Uint8Array(buffer);
            let text = "";
            for (let i = 0; i < bytes.length; i += 0x8000) {
              text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
            }
            done(btoa(text));
          })
          .catch((err) => done("ERROR " + err));
    """
    answer = driver.execute_async_script(script)
    assert not answer.startswith("ERROR"), answer
    return base64.b64decode(answer)


def natural_size(driver, element_id: str) -> tuple[int, int]:
    return tuple(driver.execute_script(
        "const i = document.getElementById(arguments[0]); return [i.naturalWidth, i.naturalHeight];",
        element_id))


# ---------------------------------------------------------------------------------- tests
def test_page_loads_only_local_assets(page, server):
    assert "ResShift" in page.title
    assets = page.execute_script("""
        return [...document.querySelectorAll("script[src], link[href], img[src], a[href]")]
          .map((el) => el.getAttribute("src") || el.getAttribute("href"));""")
    assert assets, "the page has no assets at all?"
    assert all(is_local(url, server) for url in assets), assets
    urls = requested_urls(page)
    assert any(url.endswith("/static/app.js") for url in urls) and any(url.endswith("/v1/models") for url in urls)
    assert all(is_local(url, server) for url in urls), urls
    assert console_errors(page) == []

    tasks = {o.get_attribute("value"): o for o in Select(page.find_element(By.ID, "task")).options}
    assert tasks["upscale"].is_enabled() and tasks["inpaint"].is_enabled()
    assert not tasks["restore-face"].is_enabled()       # no face model served: disabled, with the reason
    assert "No face restoration model" in tasks["restore-face"].get_attribute("title")
    assert page.find_element(By.ID, "model").get_attribute("value") == "tiny-x4"
    assert page.find_element(By.ID, "scale").get_attribute("value") == "4"
    assert page.find_element(By.ID, "steps").get_attribute("max") == "4"
    assert not page.find_element(By.ID, "mask-tools").is_displayed()


def test_upscale_shows_the_result_and_downloads_it(page, server, small_image):
    choose(page, small_image)
    assert "48×48" in page.find_element(By.ID, "input-info").text
    page.find_element(By.ID, "run").click()
    wait_for_result(page, ".png")

    result = page.find_element(By.ID, "result-image")
    assert result.is_displayed()
    assert natural_size(page, "result-image") == (4 * 48, 4 * 48)
    assert not page.find_element(By.ID, "progress").is_displayed()
    name = page.find_element(By.ID, "download").get_attribute("download")
    assert name == "crop_x4.png"                         # the server's Content-Disposition name
    data = download(page)
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (192, 192)
    ARTIFACTS.mkdir(exist_ok=True)
    assert page.save_screenshot(str(ARTIFACTS / "web_upscale.png"))

    # the comparison and zoom controls act on the view
    zoom = page.find_element(By.ID, "zoom-level").text
    page.find_element(By.ID, "zoom-in").click()
    assert page.find_element(By.ID, "zoom-level").text != zoom
    page.find_element(By.ID, "zoom-fit").click()
    assert page.find_element(By.ID, "zoom-level").text == zoom
    clip = page.find_element(By.ID, "before-clip").value_of_css_property("clip-path")
    page.execute_script("const s = document.getElementById('compare-slider'); s.value = 20;"
                        "s.dispatchEvent(new Event('input'));")
    assert page.find_element(By.ID, "before-clip").value_of_css_property("clip-path") != clip

    assert all(is_local(url, server) for url in requested_urls(page))
    assert console_errors(page) == []


def test_server_errors_are_shown(page, small_image):
    choose(page, small_image)
    tile = page.find_element(By.ID, "tile")
    tile.clear()
    tile.send_keys("8")                                  # the server takes 0 or at least 32
    page.find_element(By.ID, "run").click()
    error = page.find_element(By.ID, "error")
    WebDriverWait(page, 10).until(lambda d: error.is_displayed())
    assert "422" in error.text and "tile" in error.text
    assert page.find_element(By.ID, "run").is_enabled()
    assert not page.find_element(By.ID, "download").is_displayed()


def test_inpaint_with_a_brush_stroke(page, small_image):
    Select(page.find_element(By.ID, "task")).select_by_value("inpaint")
    assert page.find_element(By.ID, "mask-tools").is_displayed()
    assert not page.find_element(By.ID, "scale").is_displayed()
    assert page.find_element(By.ID, "model").get_attribute("value") == "tiny-inpaint"
    choose(page, small_image)

    page.find_element(By.ID, "run").click()              # nothing painted yet: the page says what to do
    error = page.find_element(By.ID, "error")
    WebDriverWait(page, 5).until(lambda d: error.is_displayed())
    assert "Paint the area" in error.text

    canvas = page.find_element(By.ID, "mask-canvas")
    assert canvas.is_displayed()
    assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("48", "48")
    width = canvas.size["width"]        # displayed enlarged; the stroke crosses the middle band
    (ActionChains(page).move_to_element_with_offset(canvas, -width // 4, 0).click_and_hold()
     .move_by_offset(width // 2, 0).release().perform())
    page.find_element(By.ID, "run").click()
    wait_for_result(page, "_inpainted.png")

    data = download(page)
    with Image.open(io.BytesIO(data)) as result, Image.open(small_image) as source:
        assert result.size == source.size == (48, 48)
        result, source = result.convert("RGB"), source.convert("RGB")
        changed = [(x, y) for y in range(48) for x in range(48)
                   if result.getpixel((x, y)) != source.getpixel((x, y))]
    assert changed, "the stroke filled nothing"
    # known pixels are kept exactly: only the painted band around the middle row changed
    assert all(8 <= x < 40 and 12 <= y < 36 for x, y in changed), sorted(changed)[:5]


def enter_key(driver, key: str) -> None:
    """Type `key` into the page's API key form, as a user would, and send it."""
    field = driver.find_element(By.ID, "key-input")
    assert field.get_attribute("type") == "password"
    field.send_keys(key)
    driver.find_element(By.ID, "key-submit").click()


def test_with_an_api_key_the_page_asks_for_it_once_and_upscales(keyed_server, driver, small_image):
    driver.get_log("browser")                                                # drop what earlier tests left
    driver.get(keyed_server + "/")
    form, message = driver.find_element(By.ID, "key-form"), driver.find_element(By.ID, "key-message")
    WebDriverWait(driver, 10).until(lambda d: form.is_displayed())          # GET /v1/models was refused
    assert "needs an API key" in message.text
    assert driver.switch_to.active_element == driver.find_element(By.ID, "key-input")
    enter_key(driver, "not-the-key")
    WebDriverWait(driver, 10).until(lambda d: "refused" in message.text and form.is_displayed())
    enter_key(driver, API_KEY)
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "model").get_attribute("value") == "tiny-x4")
    assert not form.is_displayed()
    assert driver.execute_script("return sessionStorage.getItem('resshift-api-key')") == API_KEY

    choose(driver, small_image)
    driver.find_element(By.ID, "run").click()
    wait_for_result(driver, ".png")
    assert natural_size(driver, "result-image") == (4 * 48, 4 * 48)
    assert not form.is_displayed()                                           # the upload carried the key

    driver.get(keyed_server + "/")                                           # same tab: not asked again
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "model").get_attribute("value") == "tiny-x4")
    assert not driver.find_element(By.ID, "key-form").is_displayed()
    # A key that stops working (the server restarted with another) is asked for again at the next request.
    driver.execute_script("sessionStorage.setItem('resshift-api-key', 'stale')")
    choose(driver, small_image)
    driver.find_element(By.ID, "run").click()
    form, message = driver.find_element(By.ID, "key-form"), driver.find_element(By.ID, "key-message")
    WebDriverWait(driver, 10).until(lambda d: form.is_displayed() and "refused" in message.text)
    enter_key(driver, API_KEY)
    wait_for_result(driver, ".png")
    refused = [m for m in console_errors(driver) if "401" not in m]
    assert refused == [], refused
