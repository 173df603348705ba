"""The example chat page (`examples/web`) for the dev server: build it when needed, serve it at `/`.

`serve_web_page(app, base_url)` is the dev server's hook: it builds the page with npm on first run
(and again only when its sources or lock file change: a digest of them is kept in
`dist/.build-stamp`), mounts `examples/web/dist` at `/` of the app, and prints the page's URL.
Without npm, an existing build is served as it is, and without a build the API runs alone.

`python -m devtools.web_page` (what `make web` runs) builds the page now: `npm ci`, then `vite build`.
Standard library only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

WEB_DIR = Path(__file__).resolve().parents[1] / "examples" / "web"
DIST_DIR = WEB_DIR / "dist"
BUILD_STAMP = DIST_DIR / ".build-stamp"
INSTALL_STAMP = WEB_DIR / "node_modules" / ".install-stamp"
INPUTS = ("package.json", "package-lock.json", "index.html", "vite.config.ts", "tsconfig.json")


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(WEB_DIR)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def lock_digest() -> str:
    """What `npm ci` installs from."""
    return _digest([WEB_DIR / name for name in ("package.json", "package-lock.json")])


def source_digest() -> str:
    """Everything the build reads: the lock file, the config and every file under src/."""
    files = [WEB_DIR / name for name in INPUTS if (WEB_DIR / name).exists()]
    files += [p for p in (WEB_DIR / "src").rglob("*") if p.is_file()]
    return _digest(files)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def is_current() -> bool:
    """A build exists and was made from the sources as they are now."""
    return (DIST_DIR / "index.html").is_file() and _read(BUILD_STAMP) == source_digest()


def build(*, force: bool = False) -> None:
    """`npm ci` (when the lock changed, or `force`) and `vite build` into `dist/`. Raises on failure."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: the chat page cannot be built (Node.js 20.19+ needed)")
    if force or _read(INSTALL_STAMP) != lock_digest():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB_DIR, check=True)
        INSTALL_STAMP.write_text(lock_digest(), encoding="utf-8")
    digest = source_digest()
    subprocess.run([npm, "run", "--silent", "build"], cwd=WEB_DIR, check=True)
    BUILD_STAMP.write_text(digest, encoding="utf-8")


def ensure_built() -> Path | None:
    """The directory to serve: built now if stale and npm exists; a stale build without npm; else None."""
    if is_current():
        return DIST_DIR
    if shutil.which("npm") is not None:
        print("Building the chat page (examples/web) with npm; later starts reuse it...", flush=True)
        try:
            build()
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"  the chat page failed to build ({exc}); serving the API only", flush=True)
            return DIST_DIR if (DIST_DIR / "index.html").is_file() else None
        return DIST_DIR
    if (DIST_DIR / "index.html").is_file():
        print("  npm not found: serving the chat page as last built", flush=True)
        return DIST_DIR
    print("  npm not found: no chat page (install Node.js 20.19+ and run `make web`)", flush=True)
    return None


def mount_web_page(app: Any, directory: Path) -> None:
    """Serve `directory` at `/`, after every API route (a route always wins over a file)."""
    from starlette.staticfiles import StaticFiles

    app.mount("/", StaticFiles(directory=directory, html=True), name="web")


def serve_web_page(app: Any, base_url: str) -> None:
    """The dev server's hook: build if needed, mount at `/`, print the URL."""
    directory = ensure_built()
    if directory is None:
        return
    mount_web_page(app, directory)
    print(f"Chat page: {base_url}/  (examples/web; ?model=mock/lorem, ?mode=sse)\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.web_page", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    try:
        build(force=True)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Built {DIST_DIR}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
