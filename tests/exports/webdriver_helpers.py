"""A minimal W3C WebDriver client over HTTP, driving headless Chromium through chromedriver.

The Debian packages ``chromium`` and ``chromium-driver`` provide both programs (CI's
``.ci/run`` installs them); :func:`find_browser` says why a test must skip without them.
Only what the report tests use: open a URL, run a script, click, take a screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: Seconds to wait for chromedriver to listen, and for one WebDriver command.
DRIVER_TIMEOUT_S = 60.0


def find_browser() -> tuple[str, str] | str:
    """Return (chromium, chromedriver), or the reason a browser test must skip."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return "Chromium or chromedriver is not installed (Debian: chromium, chromium-driver)"
    return browser, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    """One headless Chromium session.

    Args:
        browser: The Chromium program.
        driver: The chromedriver program.
        profile: A folder for the browser's profile.
        size: Window width and height in CSS pixels.
    """

    def __init__(self, browser: str, driver: str, profile: Path, size: tuple[int, int]) -> None:
        port = _free_port()
        self._process = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + DRIVER_TIMEOUT_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self._process.kill()
                    raise RuntimeError("chromedriver did not start") from None
                time.sleep(0.05)
        arguments = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--force-device-scale-factor=1",
            f"--window-size={size[0]},{size[1]}",
            f"--user-data-dir={profile}",
        ]
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": arguments},
        }
        try:
            answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        except Exception:
            self._process.kill()
            raise
        self._session = f"/session/{answer['sessionId']}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=DRIVER_TIMEOUT_S) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"WebDriver {method} {path}: {exc.read()[:2000]!r}") from exc

    def open(self, url: str) -> None:
        """Load a page and wait for it."""
        self._call("POST", f"{self._session}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run a script's body in the page and return what it returns."""
        return self._call(
            "POST", f"{self._session}/execute/sync", {"script": script, "args": list(args)}
        )

    def wait_for(self, script: str, *args: Any) -> Any:
        """Poll a script's body until it returns something truthy; return that."""
        deadline = time.monotonic() + DRIVER_TIMEOUT_S
        while True:
            value = self.run(script, *args)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """Click the element a CSS selector finds, as a person would."""
        element = self._call(
            "POST", f"{self._session}/element", {"using": "css selector", "value": selector}
        )
        element_id = next(iter(element.values()))
        self._call("POST", f"{self._session}/element/{element_id}/click", {})

    def screenshot(self) -> bytes:
        """A PNG of the window's visible part."""
        return base64.b64decode(self._call("GET", f"{self._session}/screenshot"))

    def close(self) -> None:
        """End the session and chromedriver."""
        try:
            self._call("DELETE", self._session)
        finally:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
