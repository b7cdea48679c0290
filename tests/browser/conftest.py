"""Fixtures of the dashboard's browser tests: the `cardsync` binary, a running `cardsync
sandbox`, a test webhook listener, and Chromium driven by Playwright.

Environment:
  CARDSYNC_BIN       the cardsync binary (default: target/debug/cardsync, built if missing)
  CARDSYNC_CHROMIUM  the Chromium binary (default: chromium on PATH, as Debian installs it)
  CARDSYNC_ARTIFACTS where screenshots go (default: target/browser-artifacts)
Under CI=true a missing Chromium or Playwright fails the tests instead of skipping them.
"""

import http.server
import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def missing(what):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="session")
def cardsync_bin():
    given = os.environ.get("CARDSYNC_BIN")
    if given:
        return given
    subprocess.run(["cargo", "build", "--quiet", "-p", "cardsync-cli"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "debug" / "cardsync")


@pytest.fixture(scope="session")
def artifacts():
    path = pathlib.Path(os.environ.get("CARDSYNC_ARTIFACTS", ROOT / "target" / "browser-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class Sandbox:
    """A `cardsync sandbox` process on a free loopback port."""

    def __init__(self, binary, *args):
        self.binary = binary
        self.process = subprocess.Popen(
            [binary, "--output", "json", "sandbox", "--addr", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("cardsync sandbox did not start: " + self.process.stderr.read())
        info = json.loads(line)
        self.base_url = info["base_url"]
        self.dashboard_url = info["dashboard_url"]
        self.merchant_key = info["merchant_key"]

    def cli(self, *args, check=True):
        """Runs `cardsync ARGS` against this sandbox with the merchant key."""
        env = dict(os.environ, CARDSYNC_BASE_URL=self.base_url, CARDSYNC_API_KEY=self.merchant_key)
        result = subprocess.run(
            [self.binary, *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        if check and result.returncode != 0:
            raise AssertionError(f"cardsync {' '.join(args)} failed: {result.stderr}")
        return result

    def get(self, path):
        import urllib.request

        with urllib.request.urlopen(self.base_url + path, timeout=10) as answer:
            return json.loads(answer.read())

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def sandbox(cardsync_bin):
    # Batches stay pending until the clock is advanced from the page.
    s = Sandbox(cardsync_bin, "--complete-after", "30s")
    yield s
    s.stop()


class Listener:
    """A webhook receiver on a free loopback port: answers each delivery with the next status
    queued (200 once the queue is empty) and keeps what it received."""

    def __init__(self):
        self.received = []
        self.statuses = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                listener.received.append(json.loads(body or b"null"))
                status = listener.statuses.pop(0) if listener.statuses else 200
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"try later")

            def do_GET(self):
                page = b"<!DOCTYPE html><title>elsewhere</title><p>another site</p>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    l = Listener()
    yield l
    l.stop()


@pytest.fixture(scope="session")
def chromium_path():
    path = os.environ.get("CARDSYNC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing("Chromium")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def new_context(browser):
    """Opens browser contexts that are closed when the test ends, passed or failed, so a page
    left polling a stopped sandbox cannot disturb the next test."""
    opened = []

    def new(**options):
        context = browser.new_context(**options)
        opened.append(context)
        return context

    yield new
    for context in opened:
        try:
            context.unroute_all(behavior="ignoreErrors")
        except Exception:
            pass
        context.close()


def wait_until(check, what, timeout=20.0):
    """Polls `check` until it returns a true value, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def time_limit():
    """Every test ends within two minutes, passed or failed."""

    def expired(signum, frame):
        raise TimeoutError("the test took more than two minutes")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
