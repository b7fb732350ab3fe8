"""The inputs of predict and the names of its outputs.

`list_images`: the image files that a folder (recursive, links followed, each real folder once),
a glob pattern or a text file of paths names, each real file once. `output_stems`: the name each
input's outputs get under `maps/` and `overlays/`, its path relative to the input root with its
extension kept, shortened with a hash where the output file system needs it, never two alike.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import unicodedata
from typing import Iterator, NamedTuple, Optional

from wsol_jax.errors import ConfigError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm')
MAP_EXTENSIONS = ('.png', '.npy')  # maps/<stem>.png, .npy
OVERLAY_EXTENSION = '.jpg'  # overlays/<stem>.jpg
LONGEST_EXTENSION = 4
_MAGIC = re.compile(r'[*?[]')


class Listing(NamedTuple):
    """What `list_images` found: `paths` (absolute, sorted, one per file), the `root` output
    names are made relative to, how many paths were `repeated` (the same file reached again
    through a link or listed twice: predicted once) and the folders that could not be listed."""

    paths: list
    root: str
    repeated: int
    unlisted: list


def _walk_files(top: str, unlisted: list, max_depth: Optional[int] = None) -> Iterator[str]:
    """Files under `top`, following links to folders but entering each real folder once (a link
    loop such as `loop -> .` is not followed again); `max_depth` folders deep at most (0: `top`
    only). Folders that cannot be listed are appended to `unlisted` as `(folder, reason)`."""
    seen = set()

    def on_error(e: OSError) -> None:
        unlisted.append((e.filename or top, e.strerror or str(e)))

    for folder, dirs, files in os.walk(top, followlinks=True, onerror=on_error):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        depth = 0 if folder == top else os.path.relpath(folder, top).count(os.sep) + 1
        if max_depth is not None and depth >= max_depth:
            dirs[:] = []
        yield from (os.path.join(folder, f) for f in sorted(files))


def _hidden(name: str) -> bool:
    return name.startswith('.')


def _glob_match(pattern: list[str], parts: list[str]) -> bool:
    """glob's rules on path components: `**` any number of folders (not hidden ones), `*`, `?`,
    `[...]` within one component, a leading `.` matched only by a pattern that starts with one."""
    if not pattern:
        return not parts
    if pattern[0] == '**':
        return _glob_match(pattern[1:], parts) or (
            bool(parts) and not _hidden(parts[0]) and _glob_match(pattern, parts[1:])
        )
    return (
        bool(parts)
        and (not _hidden(parts[0]) or pattern[0].startswith('.'))
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _glob_match(pattern[1:], parts[1:])
    )


def _glob(spec: str) -> tuple[list[str], list]:
    """`glob.glob(spec, recursive=True)` for files, through `_walk_files` (glob follows link
    loops until the path is too long: one photo came out 41 times, and two loops never end)."""
    if not _MAGIC.search(spec):
        return ([spec] if os.path.isfile(spec) else []), []
    parts = spec.split(os.sep)
    fixed = next(i for i, p in enumerate(parts) if _MAGIC.search(p))  # the folder the pattern starts in
    top = os.sep.join(parts[:fixed]) or (os.sep if spec.startswith(os.sep) else os.curdir)
    pattern = [p for p in parts[fixed:] if p]
    unlisted: list = []
    depth = None if '**' in pattern else len(pattern) - 1
    paths = [
        p for p in _walk_files(top, unlisted, depth) if _glob_match(pattern, os.path.relpath(p, top).split(os.sep))
    ]
    return paths, unlisted


def _unique_files(paths) -> tuple[list[str], int]:
    """Sorted absolute paths, one per real file, and how many were dropped. Of the paths to one
    file the file's own is kept where listed, else the shallowest (a link loop's are deeper)."""
    by_real: dict[str, list[str]] = {}
    for path in (os.path.abspath(p) for p in paths):
        by_real.setdefault(os.path.realpath(path), []).append(path)
    kept = [min(group, key=lambda p: (p != real, p.count(os.sep), p)) for real, group in by_real.items()]
    return sorted(kept), len(paths) - len(kept)


def list_images(spec: str) -> Listing:
    """`spec` is a folder (searched recursively, links followed, each real folder once), a glob
    pattern (`**` for any depth), or a text file of paths (one per line, relative to the file's
    folder). Each file is listed once however many links or lines lead to it."""
    if not spec:
        raise ConfigError('predict needs images: --config.predict.images=FOLDER, a glob, or a text file of paths')
    unlisted = []
    if os.path.isdir(spec):
        root = os.path.abspath(spec)
        paths = [p for p in _walk_files(root, unlisted) if p.lower().endswith(IMAGE_EXTENSIONS)]
    elif os.path.isfile(spec) and spec.lower().endswith('.txt'):
        base = os.path.dirname(os.path.abspath(spec))
        with open(spec) as fh:
            paths = [os.path.join(base, line.strip()) for line in fh if line.strip() and not line.startswith('#')]
        root = None
    elif os.path.isfile(spec):
        paths, root = [spec], None
    else:
        paths, unlisted = _glob(spec)
        root = None
        if not paths:
            raise ConfigError(f'predict.images={spec!r} is not a folder, a file or a glob that matches anything')
    if not paths:
        raise ConfigError(f'no images ({", ".join(IMAGE_EXTENSIONS[:4])}, ...) under predict.images={spec!r}')
    paths, repeated = _unique_files(paths)
    if root is None:  # the deepest folder holding every input: names never climb out with '..'
        root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return Listing(paths, root, repeated, unlisted)


def _key(name: str) -> str:
    """Names that one file system may hold as one file (case-insensitive, Unicode-normalising
    ones: macOS, Windows) compare equal."""
    return unicodedata.normalize('NFC', name).casefold()


def _fit(head: str, tail: str, limit: int) -> str:
    """`head + tail`, `head` cut at a character boundary until it fits `limit` bytes."""
    while head and len(os.fsencode(head + tail)) > limit:
        head = head[:-1]
    return head + tail


def _split_extension(name: str) -> tuple[str, str]:
    head, ext = os.path.splitext(name)
    return (head, ext) if len(os.fsencode(ext)) <= 16 else (name, '')


def _digest(text: str, n: int = 10) -> str:
    return hashlib.sha1(os.fsencode(text)).hexdigest()[:n]


def _relative_stem(path: str, root: str, name_max: int) -> Optional[list[str]]:
    """The components of `path` under `root`; one longer than `name_max` bytes (the file's: with
    room for the output extension) is cut and given `~<hash of the path up to it>`, so that the
    files of one folder stay together. None if `path` is not under `root`."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if any(p in ('', os.curdir, os.pardir) for p in parts):
        return None
    out = []
    for k, part in enumerate(parts):
        leaf = k == len(parts) - 1
        limit = name_max - LONGEST_EXTENSION if leaf else name_max
        if len(os.fsencode(part)) > limit:
            head, ext = _split_extension(part) if leaf else (part, '')
            part = _fit(head, f'~{_digest(os.sep.join(parts[: k + 1]))}{ext}', limit)
        out.append(part)
    return out


def _candidate_stems(path: str, root: str, name_max: int) -> Iterator[Optional[list[str]]]:
    """Stems for `path`, best first: its relative path, then flat `<hash>~<file name>` with
    ever longer hashes of its absolute path, then `<full hash>-<k>` for k = 0, 1, ..."""
    yield _relative_stem(path, root, name_max)
    head, ext = _split_extension(os.path.basename(path))
    digest = _digest(path, 40)
    for n in (10, 16, 24, 40):
        yield [_fit(f'{digest[:n]}~{head}', ext, name_max - LONGEST_EXTENSION)]
    k = 0
    while True:
        yield [f'{digest}-{k}']
        k += 1


def output_stems(paths: list[str], root: str, out_dir: str = '') -> list[str]:
    """One output stem per input, `/`-separated and relative to `maps/` and `overlays/`: the
    input's path under `root` with its extension (`a/b.jpg`; outputs `maps/a/b.jpg.png`, ...).

    Two inputs never share an output: a component too long for the output file system
    (`PC_NAME_MAX`, usually 255 bytes) is cut and given `~<hash>`; a stem whose outputs would
    clash with an earlier one's (a file where a folder is needed, names equal but for case or
    Unicode normalisation, which a case-insensitive disk would merge) or whose path would be too
    long (`PC_PATH_MAX`) is replaced by a flat `<hash>~<file name>` (`_candidate_stems`)."""
    probe = out_dir if out_dir and os.path.isdir(out_dir) else os.curdir
    name_max, path_max = _pathconf(probe, 'PC_NAME_MAX', 255), _pathconf(probe, 'PC_PATH_MAX', 4096)
    base_len = len(os.fsencode(os.path.abspath(os.path.join(out_dir or os.curdir, 'overlays'))))
    files, folders, stems = set(), set(), []
    for path in paths:
        for parts in _candidate_stems(path, root, name_max):
            if parts is None:
                continue
            stem = '/'.join(parts)
            outputs = {_key(stem + ext) for ext in (*MAP_EXTENSIONS, OVERLAY_EXTENSION)}
            parents = {_key('/'.join(parts[:k])) for k in range(1, len(parts))}
            too_long = base_len + 1 + len(os.fsencode(stem)) + LONGEST_EXTENSION >= path_max
            if not (too_long or outputs & (files | folders) or parents & files):
                break
        files |= outputs
        folders |= parents
        stems.append(stem)
    return stems


def _pathconf(path: str, name: str, default: int) -> int:
    try:
        return int(os.pathconf(path, name))
    except (OSError, ValueError, AttributeError):
        return default
