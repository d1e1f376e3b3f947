"""Open a local HTML file in headless Chromium: its DOM after rendering and a screenshot.

Used by the report tests to check that pages really render in a browser. Chromium comes
from Debian's packages (``.ci/install-browser``); :func:`chromium_path` is None where it
is missing, and tests skip with that reason. Every run uses a fresh profile directory and
flags that keep Chromium off the network (no background networking, component updates,
sync or QUIC); the pages themselves forbid network loads with a Content-Security-Policy.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CHROMIUM", "chromium_path", "render"]

#: Where Debian's ``chromium`` package installs the browser.
CHROMIUM = "/usr/bin/chromium"

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
)


def chromium_path() -> str | None:
    """The Chromium executable (``/usr/bin/chromium``, else ``chromium`` on PATH), or None."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    return shutil.which("chromium")


def _run(browser: str, args: list[str], url: str, timeout: float) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [browser, *_FLAGS, f"--user-data-dir={profile}", *args, url]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"chromium did not finish within {timeout:g} s: {' '.join(cmd)}") from exc
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"chromium exited with {done.returncode}: {' '.join(cmd)}\n{tail}")
    return done


def render(path: Path, *, width: int = 1280, height: int = 2000, timeout: float = 60.0) -> tuple[str, bytes]:
    """Render ``path`` in headless Chromium.

    Args:
        path: a local HTML file.
        width, height: the window size in CSS pixels (the screenshot's size).
        timeout: seconds allowed for the Chromium run.

    Returns:
        ``(dom, png)``: the serialised DOM after loading (``--dump-dom``) and a PNG
        screenshot of the top ``width`` x ``height`` of the page (``--screenshot``), both
        from one Chromium run.

    Raises:
        FileNotFoundError: no such file, or Chromium is not installed (run
            ``.ci/install-browser``).
        RuntimeError: Chromium failed, timed out or wrote no screenshot.
    """
    page = Path(path).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"no HTML file at {page}")
    browser = chromium_path()
    if browser is None:
        raise FileNotFoundError(f"chromium not found at {CHROMIUM} or on PATH; run .ci/install-browser")
    with tempfile.TemporaryDirectory(prefix="chromium-shot-") as tmp:
        shot = Path(tmp) / "screenshot.png"
        done = _run(
            browser,
            ["--dump-dom", f"--screenshot={shot}", f"--window-size={int(width)},{int(height)}"],
            page.as_uri(),
            timeout,
        )
        if not shot.is_file():
            raise RuntimeError(f"chromium wrote no screenshot of {page}")
        png = shot.read_bytes()
    return done.stdout.decode("utf-8", "replace"), png
