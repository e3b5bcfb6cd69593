"""The pieces every report page is made of: one stylesheet inline, escaped text, tables, and an
atomic write that leaves an unchanged page alone.

A report is a plain HTML file beside its thumbnails and SVG plots (DESIGN.md, "Reports"): no
script, no framework, nothing fetched from the network, so it opens offline in any browser, from
a file:// URL or a copied folder. While the job runs, a meta refresh reloads it; a finished or
stopped job's page does not refresh.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from .atomic import atomic_path
from .errors import WriteError, one_line

REPORT_FILE = "report.html"
FILES_DIR = "report-files"  # thumbnails, plots and caches, beside the page
REFRESH_SECONDS = 30  # the jobs rewrite their report at least this often while they run

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#555}.muted{color:#777}.bad{color:#b00020}.ok{color:#1b7a1b}
.state{display:inline-block;padding:1px 8px;border-radius:9px;background:#e3e3e3}
.state.running{background:#d4ecff}.state.done{background:#d8f3d8}.state.stopped{background:#ffe2c4}
.bar{width:360px;height:12px;background:#e3e3e3;border-radius:6px;overflow:hidden;display:inline-block;
vertical-align:middle}
.bar span{display:block;height:100%;background:#3a7bd5}
.strip{display:flex;flex-wrap:wrap;gap:6px}.strip figure,.gallery figure{margin:0;background:#fff;
border:1px solid #ddd;padding:4px;text-align:center}
.strip img,.gallery img{display:block;margin:0 auto 2px;image-rendering:auto}
figcaption{font-size:12px;color:#555;max-width:330px;overflow-wrap:anywhere}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.gallery .pair{display:flex;gap:2px}
.plot{max-width:100%;height:auto;background:#fff;border:1px solid #ddd}
nav a,nav b{margin-right:.6em}pre{white-space:pre-wrap;overflow-wrap:anywhere}
"""


def esc(value: object) -> str:
    """Text for HTML: escaped, and one printable line (file names may hold newlines or bytes
    that are not UTF-8, errors.one_line)."""
    return html.escape(one_line(str(value)))


def href(path: str | os.PathLike) -> str:
    """A relative URL for a file path, any byte of its name percent-encoded."""
    return html.escape(quote(os.fsencode(os.fspath(path))), quote=True)


def link_from(page_dir: Path, target: Path | str) -> str:
    """A URL from the page's folder to `target`, relative where it can be (the folder can move)."""
    return href(os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir)))


def table(rows: Iterable[tuple[str, object]]) -> str:
    """Two columns of name and value; values are escaped here."""
    body = "".join(f"<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in rows)
    return f"<table>{body}</table>"


def progress_bar(done: int, total: int) -> str:
    share = 0.0 if total <= 0 else min(1.0, done / total)
    return f'<span class="bar" title="{share:.1%}"><span style="width:{share * 100:.1f}%"></span></span> {share:.1%}'


def state_badge(state: str) -> str:
    kind = "running" if state.startswith("running") else "done" if state.startswith("finished") else "stopped"
    return f'<span class="state {kind}">{esc(state)}</span>'


def img(
    src: str, *, width: int | None = None, height: int | None = None, alt: str = "", lazy: bool = False, cls: str = ""
) -> str:
    """An <img>; `src` is an already encoded URL. Width and height reserve the space before it loads."""
    size = (f' width="{width}"' if width else "") + (f' height="{height}"' if height else "")
    extra = (' loading="lazy"' if lazy else "") + (f' class="{cls}"' if cls else "")
    return f'<img src="{src}"{size} alt="{html.escape(alt, quote=True)}"{extra}>'


def page(title: str, body: str, *, running: bool) -> str:
    """A whole page. The meta refresh only while the job runs: a finished page stays put."""
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if running else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{refresh}'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_text(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically unless the file already holds exactly that; returns
    whether it wrote. Unchanged pages (most of an archive's gallery) cost one read, no rename.
    No fsync: a report is rebuilt from the job's records at any time (`stylize report`)."""
    data = text.encode("utf-8")
    try:
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise WriteError(path, exc) from None
    return True
