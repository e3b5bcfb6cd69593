"""Walking a photo tree: which files are images, where each one's output goes (a name decided
once for the whole tree, never outside the output tree, never over a file the job did not
write), and the output shape of each from its header alone (no decoding), so that bad files fail
before they take a batch slot."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import warnings
from collections import defaultdict
from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath

from PIL import ExifTags, Image

from .errors import InputError, WriteError, one_line
from .hashing import file_sha256
from .images import FILE_KINDS, SAVE_FORMATS, fit_long_side, open_regular, plan_decode
from .manifest import read_json, write_json

try:  # HEIC/HEIF where the plugin is installed; Pillow alone cannot read them.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:
    pass

OUTPUT_FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}


def readable_suffixes() -> set[str]:
    """Every file extension that an installed Pillow plugin can open."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def selected(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Globs, case-insensitive: one without '/' matches the file name, one with '/' the path
    relative to the input directory (where '*' also crosses '/')."""

    def match(pattern: str) -> bool:
        target = rel if "/" in pattern else rel.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(target.lower(), pattern.lower())

    if include and not any(match(p) for p in include):
        return False
    return not any(match(p) for p in exclude)


def walk(
    input_dir: Path, output_dir: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Image files under input_dir as sorted relative POSIX paths, and the directories that
    could not be listed. Hidden files and folders and the output tree are skipped; directory
    symlinks are followed, each real directory once, so that a link loop ends."""
    suffixes = readable_suffixes()
    skip = output_dir.resolve()
    seen: set[tuple[int, int]] = set()
    found, errors = [], []
    for root, dirs, files in os.walk(
        input_dir, followlinks=True, onerror=lambda e: errors.append(one_line(f"{e.filename}: {e.strerror}"))
    ):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in seen or Path(root).resolve() == skip:
            dirs.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in suffixes:
                continue
            rel = Path(root, name).relative_to(input_dir).as_posix()
            if selected(rel, include, exclude):
                found.append(rel)
    return sorted(found), errors


def output_names(rels: Sequence[str], out_format: str | None) -> dict[str, str | None]:
    """Relative output path per input, decided once for the whole tree, or None where no name is
    left: the same path, in --format or else the input's own format where Pillow can write it
    (PNG otherwise).

    Names are compared case-insensitively (the output may be on a disk that ignores case), and
    a file never takes a name that an output folder has. A name wanted by several inputs goes to
    the one whose own name it is (a.png before a.gif); the others keep their suffix in the name
    (a.gif.png), and where that is taken too, add a hash of their path (a.gif~1f2e3d4c.png).
    Each step depends only on the set of paths, so the names are the same in every run over the
    same tree, whatever order the files are listed in."""
    new_suffix = {rel: output_suffix(rel, out_format) for rel in rels}
    own = {rel for rel in rels if PurePosixPath(rel).suffix.lower() == new_suffix[rel].lower()}
    taken = {folder.casefold() for rel in rels for folder in map(str, PurePosixPath(rel).parents) if folder != "."}
    names: dict[str, str | None] = {}
    steps = (
        lambda rel: PurePosixPath(rel).with_suffix(new_suffix[rel]).as_posix(),
        lambda rel: rel + new_suffix[rel] if rel not in own else None,
        lambda rel: f"{rel}~{hashlib.sha256(os.fsencode(rel)).hexdigest()[:8]}{new_suffix[rel]}",
    )
    for step, wanted in enumerate(steps):
        claims = defaultdict(list)
        for rel in rels:
            if rel not in names and (name := wanted(rel)) is not None and name.casefold() not in taken:
                claims[name.casefold()].append((rel, name))
        for key, claimants in claims.items():
            owners = [(rel, name) for rel, name in claimants if rel in own and step == 0]
            if len(claimants) == 1 or len(owners) == 1:
                rel, name = owners[0] if owners else claimants[0]
                names[rel] = name
            taken.add(key)  # given, or wanted by several: none of them gets it in a later step
    return {rel: names.get(rel) for rel in rels}


def output_suffix(rel: str, out_format: str | None) -> str:
    suffix = PurePosixPath(rel).suffix
    return OUTPUT_FORMATS[out_format] if out_format else (suffix if suffix.lower() in SAVE_FORMATS else ".png")


def output_shape(path: Path, long_side: int) -> tuple[int, int]:
    """(height, width) of the output for this file, from its header alone (EXIF orientation
    applied), with open_photo's checks that need no decoding: bad files fail before a batch."""
    try:
        with warnings.catch_warnings(), open_regular(path) as file:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                width, height = image.size
                plan_decode(path, image, long_side)
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path}: image is too large to process ({exc})") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (or a format that cannot be read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees for display
        width, height = height, width
    width, height = fit_long_side(width, height, long_side)
    return height, width


def probe(path: Path, long_side: int) -> tuple[tuple[int, int] | None, str | None]:
    """output_shape, or the reason the file cannot be used: (shape, None) or (None, reason)."""
    try:
        return output_shape(path, long_side), None
    except InputError as exc:
        return None, one_line(str(exc))


# --- where outputs go, and whose files are already there ---------------------------------------

# OUTPUT/.stylize/outputs/<hash of the name>.json, one per output name: the fingerprints of the
# files this job placed (or is about to place) under that name, and the record of the newest.
# It is written before each rename of an output (DESIGN.md: before a file is placed under a final
# name, the records already say whose it will be), so a run killed right after the rename leaves
# a file that the same command knows as its own and records without stylizing it again.
LEDGER_DIR = "outputs"


def output_target(output_dir: Path, name: str, *, create: bool = False) -> Path:
    """OUTPUT_DIR/name, refusing every way out of the output tree: a name that is absolute or
    holds '..', and a folder on the way that is a symbolic link (or not a folder). With `create`,
    missing folders are made one at a time, each checked after it is made."""
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(part in ("", ".", "..") for part in name.split("/")) or "\0" in name:
        raise InputError(f"{output_dir / name}: output name would leave the output directory")
    folder = output_dir
    for part in path.parts[:-1]:
        folder = folder / part
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            if not create:
                return output_dir / name  # nothing can be in the way below a missing folder
            try:
                os.mkdir(folder)
            except FileExistsError:
                pass
            except OSError as exc:
                raise WriteError(folder, exc) from None
            mode = os.lstat(folder).st_mode
        if stat.S_ISLNK(mode):
            raise InputError(
                f"{folder}: is a symbolic link; outputs are never written through one (it may lead elsewhere)"
            )
        if not stat.S_ISDIR(mode):
            raise InputError(f"{folder}: is in the way of an output folder (not a directory)")
    return output_dir / name


def ledger_path(state: Path, name: str) -> Path:
    # casefold: on a disk that ignores case, A.png and a.png are one file, so one ledger.
    return state / LEDGER_DIR / f"{hashlib.sha256(os.fsencode(name.casefold())).hexdigest()[:24]}.json"


def read_ledger(state: Path, name: str) -> dict:
    try:
        data = read_json(ledger_path(state, name), {})
    except InputError:  # never written half (atomic), but a disk can fail: own nothing then
        return {}
    return data if isinstance(data, dict) and str(data.get("name", "")).casefold() == name.casefold() else {}


def write_ledger(state: Path, name: str, fingerprints: Sequence[str | None], record: dict) -> None:
    write_json(ledger_path(state, name), {"name": name, "sha256": [f for f in fingerprints if f], "record": record})


def replaceable(target: Path, *, known: Collection[str | None], overwrite: bool) -> str | None:
    """What is under an output's name now, where the job may replace it: None when nothing is,
    else its SHA-256 (None for a link or other non-file with `overwrite`). Raises InputError for
    a folder, and for anything this job did not write (its fingerprint is not `known`) unless
    `overwrite`: a user's file is never replaced without being asked."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{target}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{target}: a directory has the output's name; it is left as it is")
    fingerprint = file_sha256(target, follow_links=False)
    if overwrite or (fingerprint is not None and fingerprint in known):
        return fingerprint
    kinds = {stat.S_IFREG: "a file", stat.S_IFLNK: "a symbolic link", **FILE_KINDS}
    what = kinds.get(stat.S_IFMT(mode), "something")
    raise InputError(
        f"{target}: {what} that this job did not write is in the way; left as it is (--overwrite replaces it)"
    )
