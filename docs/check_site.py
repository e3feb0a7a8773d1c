"""Check the built documentation in a headless browser: pages load and formulas render.

Serves ``docs/_build/html`` on a local port and opens pages in headless Chromium with
every host other than the local server unresolvable, so a formula renders only if the
math renderer ships with the site. For each page it checks the title, and on the pages
with formulas that MathJax typeset every one of them: no ``\\(`` or ``\\[`` left in the
rendered text, one ``mjx-container`` per formula of the source, no MathJax error and no
undefined macro.

Usage (after building the site)::

    python -m sphinx -b html docs docs/_build/html
    python docs/check_site.py [--html-dir DIR] [--chromium PATH] [--screenshot FILE]

Exits 0 when every check passes, 1 when a check fails (each failure is printed), 2 when
the check cannot run (no built site, no Chromium).
"""

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

DEFAULT_HTML_DIR = Path(__file__).resolve().parent / "_build" / "html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Enough virtual time for MathJax to load its components and fonts and typeset a long
# page; virtual time advances only while the page is idle, so this is not wall time.
VIRTUAL_TIME_MS = 10000
WALL_TIMEOUT_S = 120


@dataclass(frozen=True)
class Page:
    """A page to check: its path in the site, its title, whether it has formulas."""

    path: str
    title: str
    math: bool


PAGES = (
    Page("index.html", "gmoe", math=True),
    Page("api.html", "API reference", math=False),
    Page("theory.html", "Theory and conventions", math=True),
    Page("user_guide/models.html", "The model and its four gates", math=True),
    Page("reproduction.html", "Reproducing the published rate figures", math=False),
)


class _Dom(HTMLParser):
    """Collects a rendered page's h1 titles, visible text and MathJax elements."""

    _SKIP = {"script", "style", "noscript", "template"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.h1 = []
        self.text = []
        self.n_mjx = 0
        self.errors = []
        self.undefined = []
        self._stack = []
        self._in_h1 = 0
        self._in_undefined = 0

    def handle_starttag(self, tag, attrs):
        self._stack.append(tag)
        if tag == "h1":
            self._in_h1 += 1
            self.h1.append("")
        elif tag == "mjx-container":
            self.n_mjx += 1
        elif tag == "mjx-merror":
            self.errors.append(dict(attrs).get("data-mjx-error", "(no message)"))
        elif tag == "mtext" and dict(attrs).get("mathcolor") == "red":
            # MathJax renders an undefined macro as red text (its "noundefined" package);
            # the page's accessible MathML copy carries it as <mtext mathcolor="red">.
            self._in_undefined += 1
            self.undefined.append("")

    def handle_endtag(self, tag):
        # Pop up to the matching tag: HTML allows unclosed elements.
        if tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass
        if tag == "h1" and self._in_h1:
            self._in_h1 -= 1
        if tag == "mtext" and self._in_undefined:
            self._in_undefined -= 1

    def handle_data(self, data):
        if any(t in self._SKIP for t in self._stack):
            return
        if self._in_undefined:
            self.undefined[-1] += data
        self.text.append(data)
        if self._in_h1:
            self.h1[-1] += data


def count_source_formulas(html):
    """Number of formulas Sphinx wrote into a page: its ``math`` spans and divs."""
    return len(re.findall(r'class="math notranslate nohighlight"', html))


def find_browser(explicit):
    """The Chromium executable: ``explicit``, else the first of BROWSERS on PATH."""
    if explicit:
        return explicit if shutil.which(explicit) else None
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_command(browser, profile, url, *, screenshot=None):
    """The headless Chromium command line that dumps ``url``'s DOM (or screenshots it)."""
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        # Every host but the local server fails to resolve: a page that needs a CDN for
        # its formulas fails here exactly as it would offline.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
    ]
    if screenshot is not None:
        cmd += ["--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={screenshot}"]
    else:
        cmd.append("--dump-dom")
    return cmd + [url]


def run_browser(cmd):
    """Run Chromium; return its stdout, raise RuntimeError with its stderr on failure."""
    with tempfile.TemporaryDirectory(prefix="gmoe-docs-chromium-") as profile:
        cmd = [c.replace("{profile}", profile) for c in cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WALL_TIMEOUT_S,
                              check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with status {proc.returncode}: "
                           f"{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def check_page(page, html_dir, base_url, browser):
    """The failures of one page, as messages (empty when it passes)."""
    source = (html_dir / page.path).read_text(encoding="utf-8")
    try:
        dom_html = run_browser(browser_command(browser, "{profile}", base_url + page.path))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return [f"{page.path}: the browser failed: {exc}"]
    dom = _Dom()
    dom.feed(dom_html)
    failures = []
    titles = [re.sub(r"[#¶]\s*$", "", t).strip() for t in dom.h1]
    if page.title not in titles:
        failures.append(f"{page.path}: expected the title {page.title!r} in an <h1>, "
                        f"found {titles or 'no <h1>'} (did the page load?)")
    if page.math:
        n_source = count_source_formulas(source)
        text = "".join(dom.text)
        left = sorted({m for m in re.findall(r"\\[\(\[]", text)})
        if n_source == 0:
            failures.append(f"{page.path}: expected formulas in the page, found none in "
                            "its HTML")
        if left:
            snippet = text[max(0, text.find(left[0]) - 40):text.find(left[0]) + 80]
            failures.append(f"{page.path}: formulas not typeset, {left} left in the "
                            f"rendered text, e.g. {snippet!r}")
        if dom.n_mjx < n_source:
            failures.append(f"{page.path}: {n_source} formulas in the HTML but only "
                            f"{dom.n_mjx} MathJax outputs (mjx-container) in the page: "
                            "the math renderer did not load or did not finish, or a "
                            "formula's TeX is malformed (unbalanced braces leave it as "
                            "text)")
        if dom.errors:
            failures.append(f"{page.path}: MathJax reported {len(dom.errors)} error(s): "
                            f"{dom.errors[:5]}")
        if dom.undefined:
            failures.append(f"{page.path}: {len(dom.undefined)} undefined TeX macro(s) "
                            f"shown in red: {sorted(set(dom.undefined))[:10]}")
    return failures


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass


def serve(html_dir):
    """Serve ``html_dir`` on a free local port in a daemon thread; return the server."""
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None):
    """Run the checks; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html-dir", type=Path, default=DEFAULT_HTML_DIR,
                        help="the built site (default: docs/_build/html)")
    parser.add_argument("--chromium", default=None,
                        help=f"the browser executable (default: the first of {BROWSERS})")
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="also save a PNG screenshot of the theory page here")
    args = parser.parse_args(argv)

    html_dir = args.html_dir.resolve()
    missing = [p.path for p in PAGES if not (html_dir / p.path).is_file()]
    if missing:
        print(f"check_site: no built site in {html_dir} (missing {missing}); build it "
              "first with: python -m sphinx -b html docs docs/_build/html", file=sys.stderr)
        return 2
    browser = find_browser(args.chromium)
    if browser is None:
        print(f"check_site: no Chromium found (looked for {args.chromium or BROWSERS}); "
              "install it, e.g. apt-get install chromium", file=sys.stderr)
        return 2

    server = serve(html_dir)
    base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        failures = []
        for page in PAGES:
            page_failures = check_page(page, html_dir, base_url, browser)
            status = "ok" if not page_failures else "FAILED"
            print(f"check_site: {page.path}: {status}")
            failures += page_failures
        if args.screenshot is not None:
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            run_browser(browser_command(browser, "{profile}", base_url + "theory.html",
                                        screenshot=args.screenshot.resolve()))
            print(f"check_site: screenshot of theory.html in {args.screenshot}")
    finally:
        server.shutdown()
        server.server_close()

    if failures:
        print("check_site: FAILED", file=sys.stderr)
        for message in failures:
            print(f"  - {message}", file=sys.stderr)
        return 1
    print(f"check_site: all {len(PAGES)} pages load and their formulas are typeset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
