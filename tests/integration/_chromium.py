"""Real headless Chromium (Debian's) driven by Playwright, shared by the dashboard tests.

`browser()` launches it with the flags the tests need on a loopback-only machine, `page()`
opens a page in a fresh context (no stored token or view), `console_problems()` collects the
page's uncaught errors and console errors (a test asserts the list stays empty), `until()`
polls a JS expression
(the dashboard's CSP forbids Playwright's eval-based waits) and `screenshot()` writes a PNG,
copying it into ``docs/`` only when ``FIBERWATCH_UPDATE_SCREENSHOTS`` is set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration._polling import wait_for

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
LAUNCH_TIMEOUT_MS = 60_000  # a loaded 2-core machine starts Chromium slowly
DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE_ENV = "FIBERWATCH_UPDATE_SCREENSHOTS"

# (canvas id) => the share of the waterfall plot area painted with data, not background
DATA_PIXELS = """(id) => {
  const c = document.getElementById(id);
  const g = c._wf;
  if (!g) return 0;
  const k = c.width / c.getBoundingClientRect().width;
  const d = c.getContext('2d').getImageData(
    Math.ceil(g.px * k) + 2, Math.ceil(g.py * k) + 2,
    Math.floor(g.pw * k) - 4, Math.floor(g.ph * k) - 4).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const bg = d[i] === 10 && d[i + 1] === 12 && d[i + 2] === 16;
    if (d[i + 3] > 0 && !bg) n++;
  }
  return n / (d.length / 4);
}"""


@contextmanager
def browser() -> Iterator[Any]:
    """A launched Chromium (Playwright ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True,
                                     timeout=LAUNCH_TIMEOUT_MS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def page(chromium: Any, width: int, height: int) -> Iterator[Any]:
    """A page of `width` x `height` CSS pixels in its own context, closed on exit."""
    context = chromium.new_context(viewport={"width": width, "height": height})
    try:
        yield context.new_page()
    finally:
        context.close()


def console_problems(page: Any, *, allow: tuple[str, ...] = ()) -> list[str]:
    """A list that fills with the page's uncaught exceptions and ``console.error`` messages
    (Chromium logs a failed request, e.g. a 4xx/5xx answer, as one), except those containing
    one of `allow` (a test that provokes an error on purpose names it)."""
    found: list[str] = []

    def add(text: str) -> None:
        if not any(a in text for a in allow):
            found.append(text)

    page.on("pageerror", lambda e: add(f"pageerror: {e}"))
    page.on("console", lambda m: add(f"console.error: {m.text} ({m.location})")
            if m.type == "error" else None)
    return found


def until(page: Any, expression: str, timeout: float = 20.0) -> Any:
    """Poll a JS expression until truthy and return its value; fail after `timeout` s."""
    return wait_for(lambda: page.evaluate(expression), timeout, expression[:200], 0.1)


def screenshot(page: Any, path: Path, docs_name: str, *, full_page: bool = True) -> Path:
    """Screenshot to `path`; with ``FIBERWATCH_UPDATE_SCREENSHOTS`` set, also to docs/."""
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get(UPDATE_ENV):  # refresh the README's picture
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / docs_name)
    return path
