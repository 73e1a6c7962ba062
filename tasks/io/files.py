"""The one reader of files a user names: checkpoints, weights, export cards, specs, summaries
and data files. Every failure is one UserError naming the file, what was expected there and
what was found ("a text file", "truncated", "a folder"); nothing here runs pickled code.
Writers replace a file or folder only once it is complete (temporary name, then rename)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import re
import shutil
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.errors import DiskFull, UserError

WEIGHTS = "a safetensors or PyTorch checkpoint"
_SAFETENSORS_MAX_HEADER = 100 << 20  # the safetensors format's own limit


def _fix(fix: str) -> str:
    return f" {fix}" if fix else ""


def what_is(path: Path) -> str:
    """A few words on what a path holds, for messages ("a JSON file", "an empty file", ...)."""
    if not path.exists():
        return "nothing (no such file)"
    if path.is_dir():
        return "a folder"
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as err:
        return f"an unreadable file ({err.strerror})"
    size = path.stat().st_size
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if _safetensors_header_size(head, size) is not None:
        return "a safetensors file"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (legacy PyTorch format)"
    for magic, name in (
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"\x1f\x8b", "a gzip file"),
        (b"\x00\x00\x08", "an IDX array file"),
    ):
        if head.startswith(magic):
            return name
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return "a binary file of an unknown kind"
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "a JSON text file"
    return "a text file"


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            torch_zip = any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a truncated or damaged zip archive"
    return "a zip archive (PyTorch's checkpoint format)" if torch_zip else "a zip archive without PyTorch data"


def _safetensors_header_size(head: bytes, size: int) -> int | None:
    """The header length of a safetensors file (u64 little-endian, then a JSON object), or None."""
    if len(head) < 9:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if n == 0 or n > _SAFETENSORS_MAX_HEADER or head[8:9] != b"{":
        return None
    return n if 8 + n <= size else -1  # -1: the header says more bytes than the file has


def require_file(path: str | Path, what: str, fix: str = "") -> Path:
    """`path` as a Path that is a readable, non-empty file; else one message naming it."""
    path = Path(str(path)).expanduser()
    if not path.exists():
        raise UserError(f"{what} not found: {path}.{_fix(fix)}")
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file.{_fix(fix)}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} {path} cannot be read (permission denied).{_fix(fix)}")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is an empty file.{_fix(fix)}")
    return path


def require_dir(path: str | Path, what: str, fix: str = "") -> Path:
    path = Path(str(path)).expanduser()
    if not path.exists():
        raise UserError(f"{what} not found: {path}.{_fix(fix)}")
    if not path.is_dir():
        raise UserError(f"{what} {path} is {what_is(path)}, not a folder.{_fix(fix)}")
    return path


def read_text(path: str | Path, what: str, fix: str = "") -> str:
    path = require_file(path, what, fix)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is {what_is(path)}, not a text file.{_fix(fix)}") from None
    except OSError as err:
        raise UserError(f"{what} {path} cannot be read ({err.strerror}).{_fix(fix)}") from None


def read_json(
    path: str | Path, what: str, fix: str = "", keys: tuple[str, ...] = (), kind: str | tuple[str, ...] | None = None
) -> dict:
    """A JSON object; `keys` must be present, `kind` (one or several) must match its "kind"."""
    path = Path(str(path)).expanduser()
    text = read_text(path, what, fix)
    try:
        data = json.loads(text)
    except ValueError as err:
        at_end = getattr(err, "pos", 0) >= len(text.rstrip())
        truncated = "Unterminated string" in str(err) or ("Expecting" in str(err) and at_end)
        cut = " (it looks truncated)" if truncated else ""
        found = "" if what_is(path) == "a JSON text file" else f"; it is {what_is(path)}"
        raise UserError(
            f"{what} {path} is not valid JSON{cut}: {str(err).splitlines()[0]}{found}.{_fix(fix)}"
        ) from None
    return _check_mapping(data, path, what, fix, keys, kind)


def read_yaml(path: str | Path, what: str, fix: str = "", keys: tuple[str, ...] = ()) -> dict:
    """A YAML mapping, read with yaml.safe_load (no Python objects)."""
    import yaml

    path = Path(str(path)).expanduser()
    text = read_text(path, what, fix)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{what} {path} is not valid YAML ({first}).{_fix(fix)}") from None
    return _check_mapping(data, path, what, fix, keys, None)


def require_keys(data: dict, path: str | Path, what: str, keys: tuple[str, ...], fix: str = "") -> dict:
    """`data` (read from `path`) with every one of `keys`; else one message naming the file."""
    return _check_mapping(data, Path(str(path)), what, fix, keys, None)


def _check_mapping(data: Any, path: Path, what: str, fix: str, keys: tuple[str, ...], kind) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} holds a {type(data).__name__}, not a mapping of keys.{_fix(fix)}")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and data.get("kind") not in kinds:
        expected = " or ".join(map(repr, kinds))
        raise UserError(f"{what} {path} is of kind {data.get('kind')!r}, expected {expected}.{_fix(fix)}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{what} {path} lacks the keys {missing} (it has {sorted(data)[:12]}).{_fix(fix)}")
    return data


def _refuse_pickle(path: Path, what: str, err: Exception) -> UserError | None:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if found is None:
        return None
    return UserError(
        f"Refusing to load {what} {path}: it holds pickled Python objects that would run code when loaded "
        f"(it asks to import {found.group(1)}). Only tensors, numbers, strings and plain containers are accepted. "
        "Re-save the weights as a plain state_dict (torch.save(model.state_dict(), ...)) or as safetensors."
    )


def read_torch(path: str | Path, what: str = "Checkpoint", fix: str = "", map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True; a file that needs pickled code is refused."""
    import torch

    path = require_file(path, what, fix)
    kind = what_is(path)
    if not (kind.startswith("a zip archive (PyTorch") or kind.startswith("a Python pickle")):
        hint = " (it is a safetensors file: use it where weights are expected)" if kind == "a safetensors file" else ""
        raise UserError(f"{what} {path} is corrupt or not a PyTorch checkpoint: it is {kind}{hint}.{_fix(fix)}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refuse_pickle(path, what, err)
        if refused is not None:
            raise refused from None
        raise UserError(
            f"{what} {path} is a corrupt or truncated PyTorch checkpoint ({_first(err)}).{_fix(fix)}"
        ) from None
    except Exception as err:  # zip, struct, EOF, index errors: the bytes themselves are broken
        raise UserError(
            f"{what} {path} is a corrupt or truncated PyTorch checkpoint "
            f"({type(err).__name__}: {_first(err)})."
            f"{_fix(fix)}"
        ) from None


# What the pickle of a numpy array or scalar imports (numpy 1 and 2 spell the module differently);
# bytes from a Python 2 pickle come through _codecs.encode. Nothing else may be imported.
_ARRAY_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")
        return super().find_class(module, name)


def read_array_pickle(path: str | Path, what: str, fix: str = "") -> Any:
    """A data file in pickle format (CIFAR's python batches): plain containers, numbers, strings
    and numpy arrays only; a pickle that imports anything else is refused before it runs."""
    path = require_file(path, what, fix)
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as err:  # EOF, truncated arrays, wrong kinds of bytes
        refused = _refuse_pickle(path, what, err) if isinstance(err, pickle.UnpicklingError) else None
        if refused is not None:
            raise refused from None
        kind = what_is(path)
        if not kind.startswith("a Python pickle"):
            raise UserError(f"{what} {path} is not a pickle of arrays: it is {kind}.{_fix(fix)}") from None
        raise UserError(f"{what} {path} is a corrupt or truncated pickle ({_first(err)}).{_fix(fix)}") from None


def _check_safetensors(path: Path, what: str, fix: str) -> None:
    """The header of a safetensors file parses and the file holds every byte it promises."""
    with open(path, "rb") as handle:
        size = _safetensors_header_size(handle.read(9), path.stat().st_size)
        if size is None:
            raise UserError(f"{what} {path} is not a safetensors file: it is {what_is(path)}.{_fix(fix)}")
        if size < 0:
            raise UserError(f"{what} {path} is a truncated safetensors file (its header is cut off).{_fix(fix)}")
        handle.seek(8)
        try:
            header = json.loads(handle.read(size))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise UserError(
                f"{what} {path} is a corrupt safetensors file (its header does not parse: {_first(err)}).{_fix(fix)}"
            ) from None
    if 8 + size + end > path.stat().st_size:
        raise UserError(
            f"{what} {path} is a truncated safetensors file ({path.stat().st_size} bytes, its header "
            f"promises {8 + size + end}).{_fix(fix)}"
        )


def read_safetensors(path: str | Path, what: str = "Weight file", fix: str = "") -> dict:
    from safetensors.torch import load_file

    path = require_file(path, what, fix)
    _check_safetensors(path, what, fix)
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, OSError, ValueError: a broken header or data
        text = str(err).lower()
        truncated = " truncated" if "incomplete" in text or "out of bounds" in text else " corrupt"
        raise UserError(f"{what} {path} is a{truncated} safetensors file ({_first(err)}).{_fix(fix)}") from None


def read_weights(path: str | Path, what: str = "Weight file", fix: str = "") -> Any:
    """Tensors from a safetensors file or a PyTorch checkpoint, told apart by content."""
    path = require_file(path, what, fix)
    kind = what_is(path)
    if kind == "a safetensors file":
        return read_safetensors(path, what, fix)
    if kind.startswith(("a zip archive (PyTorch", "a Python pickle")):
        return read_torch(path, what, fix)
    with open(path, "rb") as handle:
        head = handle.read(9)
    if _safetensors_header_size(head, path.stat().st_size) == -1:
        raise UserError(f"{what} {path} is a truncated safetensors file (its header is cut off).{_fix(fix)}")
    raise UserError(f"{what} {path} is not {WEIGHTS}: it is {kind}.{_fix(fix)}")


def check_weights(path: str | Path, what: str = "Weight file", fix: str = "") -> Path:
    """A weight file that another library loads (timm, diffusers pick the reader by the file
    name): checked without reading its tensors. Content and name must agree; a safetensors
    header must parse and cover the file; a PyTorch checkpoint is read here, weights only,
    so pickled code is refused before the library sees it."""
    path = require_file(path, what, fix)
    kind = what_is(path)
    if path.suffix == ".safetensors":
        if kind != "a safetensors file":
            raise UserError(f"{what} {path} is named .safetensors but it is {kind}.{_fix(fix)}")
        _check_safetensors(path, what, fix)
    elif kind == "a safetensors file":
        raise UserError(
            f"{what} {path} is a safetensors file without the .safetensors name the loader needs.{_fix(fix)}"
        )
    else:
        read_torch(path, what, fix)
    return path


def read_image(path: str | Path, what: str = "Image", mode: str = "RGB"):
    """A PIL image in `mode`, fully decoded here (so a broken file fails now, named, rather
    than deep inside a data loader)."""
    from PIL import Image, UnidentifiedImageError

    path = require_file(path, what)
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except UnidentifiedImageError:
        raise UserError(
            f"{what} {path} is not an image PIL can read: it is {what_is(path)}. Remove or replace it."
        ) from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or damaged image data
        raise UserError(
            f"{what} {path} is a truncated or damaged image ({_first(err)}). Remove or replace it."
        ) from None


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


# --- writing ------------------------------------------------------------------------------
_NO_SPACE = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded"}
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


def no_space(err: BaseException) -> bool:
    """Whether `err`, or an error it wraps, is a write that failed for lack of space or quota:
    an OSError, or a library's own error around one (safetensors says "os error 28")."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        if any(text in str(current) for text in _NO_SPACE_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def _free_space(path: Path) -> str:
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError:
        return ""
    return f" ({usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB there)"


def disk_full(path: str | Path | None, err: BaseException) -> DiskFull:
    """One message for a write that ran out of space: the file, the space left, what was kept."""
    quota = "quota" in str(err).lower() or getattr(err, "errno", None) == errno.EDQUOT
    reason = "Disk quota exceeded" if quota else "No space left on device"
    if path is None:
        name = getattr(err, "filename", None)
        where = f" while writing {name}" if name else ""
        kept = "checkpoints, summaries and exports are written whole or not at all, so the last checkpoint is intact"
        free = _free_space(Path(name)) if name else ""
    else:
        path = Path(path)
        where, free = f" while writing {path}", _free_space(path)
        kept = f"the previous {path.name} is kept" if path.exists() else "no partial file is left"
    return DiskFull(
        f"{reason}{where}{free}. Nothing already written is lost: {kept}. Free space there, or write "
        "elsewhere (paths.log_dir=<folder on another disk>), then run the same command again; a training "
        "run continues from its last checkpoint with resume=auto."
    )


def temp_name(path: Path) -> Path:
    """A hidden name beside `path` with the same suffix (libraries that pick a format by the suffix
    still see it): .<stem>.partial-<pid><suffix>."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """An open handle on a temporary file beside `path`; when the block ends without an error
    the file is flushed to disk and renamed to `path`, so a reader sees the old file or the whole
    new one. Writers stream into it (a checkpoint is not first built in memory). A write that
    runs out of space is one DiskFull error; the temporary file is removed."""
    path = Path(path)
    with atomic_path(path) as temp:
        with open(temp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a library that writes by file name (safetensors,
    matplotlib); renamed to `path` when the block ends without an error, removed otherwise."""
    path = Path(path)
    temp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temp
        os.replace(temp, path)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, Exception) and not isinstance(err, UserError) and no_space(err):
            raise disk_full(path, err) from None
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path, "w") as handle:
        handle.write(text)
    return Path(path)


@contextlib.contextmanager
def complete_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; when the block ends without an error it
    becomes `path` (an older `path` is replaced), otherwise it is removed. An interrupted
    writer leaves at most a hidden `.<name>.partial-<pid>` folder, never a half `path`."""
    path = Path(path)
    temp = temp_name(path)
    shutil.rmtree(temp, ignore_errors=True)
    try:
        temp.mkdir(parents=True)
        yield temp
    except BaseException as err:
        shutil.rmtree(temp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, UserError) and no_space(err):
            raise disk_full(path, err) from None
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(temp, path)
    shutil.rmtree(old, ignore_errors=True)
