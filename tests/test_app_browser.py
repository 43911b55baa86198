"""The browser app (`scripts/app.py`) driven in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
through Selenium), serving the tiny random models saved to folders and loaded by the real loader.

Screenshots of every state go to the test's temporary folder (printed with `-s`); with ZEROSHOT_APP_SCREENSHOT=PATH
the result's goes to PATH too, small (the README's `tests/data/app_screenshot.png`). Under CI (`CI=true`) a missing
browser fails the tests: `.ci/run` installs it.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from zeroshot.poses import load_poses
from zeroshot.testing import sample_video_path
from zeroshot.video import read_video

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "zeroshot" / "assets" / "astronaut.jpg"
POSES = ROOT / "zeroshot" / "assets" / "wave.json"
SIZE = 64
STEPS = 3
TRANSITION = 2
WAIT = 90  # seconds any one state may take to appear; a tiny-model run takes about 2 s
#: What Chromium needs to run here, headless, touching no network beyond the loopback app.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1700",
)  # fmt: skip
#: Records every text the status trackers (queue position, progress bar and its stage) show, as they change.
RECORD_STATUS = """
window.statusTexts = [];
new MutationObserver(() => {
  for (const tracker of document.querySelectorAll('[data-testid="status-tracker"]')) {
    const text = tracker.innerText.trim();
    if (text && window.statusTexts[window.statusTexts.length - 1] !== text) window.statusTexts.push(text);
  }
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


def _browser_paths():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run installs them, so CI must have them.")
    pytest.skip(message)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tiny_model_paths, tmp_path_factory):
    """`scripts/app.py` serving the tiny models on a free loopback port: `(url, log path, work folder)`."""
    work = tmp_path_factory.mktemp("app")
    port = _free_port()
    log = work / "server.log"
    command = [
        sys.executable, str(ROOT / "scripts" / "app.py"), "--model", str(tiny_model_paths.model),
        "--controlnet", str(tiny_model_paths.controlnet), "--device", "cpu", "--offline", "--no-cache",
        "--port", str(port), "--work-dir", str(work / "runs"),
    ]  # fmt: skip
    env = {**os.environ, "GRADIO_TEMP_DIR": str(work / "gradio"), "PYTHONPATH": str(ROOT)}
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while f"Running on local URL:  {url[:-1]}" not in log.read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"the app did not start:\n{log.read_text()}")
        time.sleep(0.2)
    yield url, log, work
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh profile, downloading into its own folder (`browser.downloads`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_paths()
    folder = tmp_path_factory.mktemp("browser")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={folder / 'profile'}"):
        options.add_argument(flag)
    downloads = folder / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.downloads = downloads
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots: {folder}")
    return folder


def _wait(condition, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _find(chrome, selector):
    from selenium.webdriver.common.by import By

    return chrome.find_elements(By.CSS_SELECTOR, selector)


def _element(chrome, selector):
    """The first element matching `selector`, once it is shown."""
    return _wait(lambda: [e for e in _find(chrome, selector) if e.is_displayed()], selector)[0]


def _upload(chrome, element_id, path):
    """Puts `path` into the file field `element_id`, replacing what it holds."""
    for clear in _find(chrome, f"#{element_id} button[aria-label=Clear]"):
        clear.click()
    field = _wait(lambda: _find(chrome, f"#{element_id} input[type=file]"), f"the empty {element_id} field")[0]
    field.send_keys(str(path))
    _wait(lambda: Path(path).stem in _find(chrome, f"#{element_id}")[0].text, f"{path} in {element_id}")


def _type(chrome, selector, text):
    from selenium.webdriver.common.keys import Keys

    field = _element(chrome, selector)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE, str(text), Keys.TAB)


def _toast(chrome):
    return " ".join(toast.text for toast in _find(chrome, "[data-testid=toast-body]"))


def _close_toasts(chrome):
    for button in _find(chrome, "[data-testid=toast-body] .toast-close"):
        button.click()
    _wait(lambda: not _find(chrome, "[data-testid=toast-body]"), "the message to close")


def _click_and_wait(chrome, button, output, shot=None):
    """Clicks `button`, then waits until the status of the element `output` has shown the job and hidden again;
    `shot=(text, path)` saves a screenshot the first time the status shows `text`."""
    tracker = f"#{output} [data-testid=status-tracker]"

    def busy():
        statuses = [status for status in _find(chrome, tracker) if "hide" not in status.get_attribute("class")]
        if shot and statuses and shot[0] in statuses[0].text and not shot[1].exists():
            chrome.save_screenshot(shot[1])
        return bool(statuses)

    _find(chrome, f"#{button}")[0].click()
    _wait(busy, f"{button}'s job to start")
    _wait(lambda: not busy(), f"{button}'s job to end")


def _run_and_download(chrome, shot=None):
    """Clicks Run, waits for the video, then clicks the three download links; returns the downloaded paths."""
    _click_and_wait(chrome, "run-button", "animation", shot)
    _wait(lambda: _find(chrome, "#animation video"), "the animation's video element")
    links = _wait(lambda: _find(chrome, "#downloads a[download]"), "the download links")
    names = [link.get_attribute("download") for link in links]
    assert names == ["animation.mp4", "animation.poses.json", "animation.report.json"]
    for name in names:
        (chrome.downloads / name).unlink(missing_ok=True)
    for link in links:
        link.click()
    paths = [chrome.downloads / name for name in names]
    _wait(lambda: all(path.exists() for path in paths), "the downloads")
    return paths


def _check_animation(paths, frames):
    """The downloaded mp4 has as many frames as report.json says, and as the poses give (source + transition +
    target poses); the report records the settings typed into the page."""
    video, poses_file, report_file = paths
    report = json.loads(report_file.read_text())
    assert report["frames"] == frames and report["transition_frames"] == TRANSITION
    assert len(read_video(video)) == report["frames"]
    assert len(load_poses(poses_file)) == report["frames"]
    assert report["settings"]["size"] == [SIZE, SIZE]
    assert report["settings"]["pacm"]["num_inference_steps"] == STEPS
    assert report["settings"]["pacm"]["mode"] == "direct"
    assert report["stages"]["generation"]["forward"] == 2 * frames * STEPS  # two guidance branches per frame
    return report


def test_animate_in_the_browser(app, browser, screenshots):
    url, log, _ = app
    chrome = browser
    frames = 1 + TRANSITION + len(load_poses(POSES))
    chrome.get(url)
    _wait(lambda: _find(chrome, "#run-button"), "the page")
    chrome.execute_script(RECORD_STATUS)
    chrome.save_screenshot(screenshots / "1-page.png")

    # The inputs: the astronaut and the wave; the settings of a quick run.
    _upload(chrome, "image", IMAGE)
    _upload(chrome, "poses", POSES)
    _type(chrome, "#prompt textarea", "a photo of an astronaut")
    _quick_settings(chrome, STEPS)
    chrome.save_screenshot(screenshots / "2-inputs.png")

    # Preview: the skeleton of every frame over the image, before any run.
    _find(chrome, "#preview-button")[0].click()
    _wait(lambda: len(_find(chrome, "#preview img")) == frames, f"{frames} preview frames")
    chrome.save_screenshot(screenshots / "3-preview.png")

    # Run: the progress names the stages; then the video, the downloads and the figures.
    paths = _run_and_download(chrome, ("generation", screenshots / "4-progress.png"))
    chrome.save_screenshot(screenshots / "4-result.png")
    report = _check_animation(paths, frames)
    figures = _find(chrome, "#figures")[0].text
    assert f"{frames} frames ({TRANSITION} transition)" in figures
    assert re.search(
        rf"generation\s+{report['stages']['generation']['seconds']:.2f}\s+{2 * frames * STEPS}\s+0", figures
    )
    progress = " | ".join(chrome.execute_script("return window.statusTexts"))
    for stage in ("PACM DDIM inversion", "generation"):
        assert stage in progress, progress

    # A broken poses file: its message in the page, no traceback, and the server keeps serving.
    broken = screenshots / "broken.json"
    broken.write_text('{"format": "zeroshot-poses", "frames": [')
    _upload(chrome, "poses", broken)
    _find(chrome, "#run-button")[0].click()
    message = _wait(lambda: _toast(chrome), "the error message")
    assert "broken.json' is not valid JSON" in message and "Traceback" not in message
    opaque = "return getComputedStyle(document.querySelector('[data-testid=toast-body]')).opacity === '1'"
    _wait(lambda: chrome.execute_script(opaque), "the message to fade in")  # for the screenshot
    chrome.save_screenshot(screenshots / "5-error.png")
    _close_toasts(chrome)

    # A second, good run succeeds, on the models loaded once.
    _upload(chrome, "poses", POSES)
    paths = _run_and_download(chrome)
    _check_animation(paths, frames)
    chrome.save_screenshot(screenshots / "6-second-run.png")
    assert log.read_text().count("loading models:") == 1
    if os.environ.get("ZEROSHOT_APP_SCREENSHOT"):  # the README's picture, kept small: 5/7 scale, 256 colours
        shot = Image.open(screenshots / "4-result.png").convert("RGB")
        shot = shot.resize((shot.width * 5 // 7, shot.height * 5 // 7), Image.LANCZOS)
        shot.quantize(256).save(os.environ["ZEROSHOT_APP_SCREENSHOT"], optimize=True)


def _quick_settings(chrome, steps):
    """Opens the settings and chooses a quick run of `steps` steps."""
    _element(chrome, "#settings .label-wrap").click()
    _element(chrome, "#inversion input[value=direct]").click()
    for selector, value in (("#steps", steps), ("#width", SIZE), ("#height", SIZE)):
        _type(chrome, f"{selector} input", value)
    _type(chrome, "#transition-frames textarea, #transition-frames input", TRANSITION)


def test_waiting_users_see_their_place_in_the_queue(app, browser, screenshots):
    """Three users (tabs, each its own session) start runs at once: one job runs at a time, the third user sees
    that two are ahead (queue 2 of 2), and every run then ends with its video. The inputs come from the bundled
    example's row."""
    url, _, _ = app
    chrome = browser
    tabs = []
    for steps in (6, STEPS, STEPS):  # the first job is long enough for the others to queue behind it
        chrome.switch_to.new_window("tab")
        chrome.get(url)
        _element(chrome, "#example [data-testid=dataset-cell-0-0]").click()
        _wait(lambda: "wave" in _element(chrome, "#poses").text, "the example's poses")
        assert "astronaut" in _element(chrome, "#image").text
        _quick_settings(chrome, steps)
        chrome.execute_script(RECORD_STATUS)
        tabs.append(chrome.current_window_handle)
    for tab in tabs:
        chrome.switch_to.window(tab)
        _element(chrome, "#run-button").click()
    tracker = _element(chrome, "#animation [data-testid=status-tracker]")
    _wait(lambda: "queue" in tracker.text or _find(chrome, "#animation video"), "the third user's status")
    chrome.save_screenshot(screenshots / "8-queue.png")
    statuses = []
    for tab in tabs:
        chrome.switch_to.window(tab)
        _wait(lambda: _find(chrome, "#animation video"), "every user's video")
        statuses.append(" | ".join(chrome.execute_script("return window.statusTexts")))
        chrome.close()
    chrome.switch_to.window(chrome.window_handles[0])
    assert "queue: 2/2" in statuses[2], statuses[2]
    assert "queue: 2/" not in statuses[0], statuses[0]  # the first job never waited behind another


def test_extract_in_the_browser(app, browser, screenshots):
    """The Extract tab: a real video of a person in, its poses (one per frame) and their preview out."""
    url, _, work = app
    chrome = browser
    clip = read_video(sample_video_path("carphone"), max_frames=24)
    video_path = work / "carphone.mp4"
    from zeroshot.video import write_video

    write_video(clip.frames, video_path, clip.fps)
    chrome.get(url)
    _wait(lambda: _find(chrome, "#run-button"), "the page")
    tab = next(button for button in _find(chrome, "button[role=tab]") if button.text.startswith("Extract"))
    tab.click()
    _upload(chrome, "extract-video", video_path)
    _click_and_wait(chrome, "extract-button", "extracted")
    _wait(lambda: _find(chrome, "#extracted video"), "the extracted poses' preview")
    link = _wait(lambda: _find(chrome, "#extract-downloads a[download]"), "the poses' download link")[0]
    assert link.get_attribute("download") == "poses.json"
    (chrome.downloads / "poses.json").unlink(missing_ok=True)
    link.click()
    _wait(lambda: (chrome.downloads / "poses.json").exists(), "the download")
    chrome.save_screenshot(screenshots / "7-extract.png")
    poses = load_poses(chrome.downloads / "poses.json")
    assert len(poses) == len(clip) and poses.size == clip.size
    assert f"{len(clip)} frames of {clip.size[0]}x{clip.size[1]}" in _find(chrome, "#extract-summary")[0].text
