"""Reading uploaded archives (zip, tar, tar.gz/.bz2/.xz) member by member, in memory, without trust.

Nothing here writes a file: members come out as `(name, bytes)` and the caller decides where
(under names it generates) they are kept. A member is refused — listed with a reason, never read —
when its name is absolute or climbs out with `..`, when it is a link (symbolic or hard), a device,
FIFO or socket, encrypted, or compressed with anything but stored/deflate (zip). Whole-archive
limits (bombs) end the upload with 413 *before* the bytes they guard are produced:

- members in the archive (`max_members`): zip — from the end-of-central-directory record,
  before the directory is parsed; tar — counted as headers stream by;
- total uncompressed bytes (`max_total_bytes`): zip — the sum of the declared sizes (reads are
  capped at the declared size, so a member cannot exceed it); tar — every decompressed byte read
  is counted, headers and skipped members included;
- compression ratio (`max_ratio`, uncompressed ÷ compressed, checked once the uncompressed size
  passes `RATIO_FLOOR` bytes): zip — per member and overall; tar — overall, as it streams.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from core.errors import BadRequest, TooLarge, UnsupportedMedia

RATIO_FLOOR = 1 << 20  # bytes of uncompressed data below which the ratio is not judged
MAX_NAME = 255  # characters of a member name kept for display
EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


@dataclass(frozen=True)
class Limits:
    max_members: int
    max_total_bytes: int
    max_ratio: float
    max_member_bytes: int  # a larger member is refused (listed), not read


@dataclass(frozen=True)
class Member:
    """One archive entry: its bytes, or why it was refused (`data` None)."""

    name: str
    data: bytes | None = None
    reason: str | None = None


def display_name(name: str) -> str:
    """A member name made safe to show: control characters dropped, backslashes as `/`, length capped."""
    clean = "".join(ch for ch in name.replace("\\", "/") if ch.isprintable())
    return clean[:MAX_NAME] or "(unnamed)"


def unsafe_path(name: str) -> str | None:
    """Why a member path must not be used (absolute, traversal, NUL), or None when it is harmless."""
    path = name.replace("\\", "/")
    if "\x00" in path:
        return "bad name (NUL character)"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "absolute path"
    if ".." in path.split("/"):
        return "path traversal (..)"
    return None


def kind_of(head: bytes) -> str | None:
    """`zip`, `tar`, `tar.gz`, `tar.bz2`, `tar.xz` from the first bytes of a file; None for anything else."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"BZh"):
        return "tar.bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def members(file: BinaryIO, size: int, limits: Limits) -> Iterator[Member]:
    """Every entry of the archive in `file` (seekable, `size` bytes), in archive order; directories skipped."""
    file.seek(0)
    head = file.read(512)
    file.seek(0)
    kind = kind_of(head)
    if kind == "zip":
        yield from _zip_members(file, size, limits)
    elif kind is not None:
        yield from _tar_members(file, size, kind, limits)
    else:
        raise UnsupportedMedia("the file is not a zip or tar(.gz, .bz2, .xz) archive", code="not_an_archive")


# zip


def _zip_directory(file: BinaryIO, size: int) -> tuple[int, int]:
    """(entries, central directory bytes) from the end records, without parsing the directory."""
    tail_len = min(size, EOCD.size + 65535)
    file.seek(size - tail_len)
    tail = file.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < EOCD.size:
        raise BadRequest("the zip archive has no end-of-directory record", code="corrupt_archive")
    _, _, _, _, entries, cd_size, _, _ = EOCD.unpack_from(tail, at)
    loc = at - ZIP64_LOCATOR.size
    if loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
        _, _, offset, _ = ZIP64_LOCATOR.unpack_from(tail, loc)
        file.seek(offset)
        record = file.read(ZIP64_EOCD.size)
        if len(record) == ZIP64_EOCD.size and record[:4] == b"PK\x06\x06":
            fields = ZIP64_EOCD.unpack(record)
            entries, cd_size = fields[7], fields[8]
    file.seek(0)
    return entries, cd_size


def _zip_refusal(info: zipfile.ZipInfo, limits: Limits) -> str | None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if info.create_system == 3 and kind == stat.S_IFLNK:
        return "symbolic link"
    if info.create_system == 3 and kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        return "device or special file"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return "unsupported compression (use stored or deflate)"
    if info.file_size > limits.max_member_bytes:
        return f"too large ({info.file_size} bytes; the limit is {limits.max_member_bytes})"
    return None


def _check_ratio(uncompressed: int, compressed: int, limits: Limits, what: str) -> None:
    if uncompressed > RATIO_FLOOR and uncompressed > limits.max_ratio * max(compressed, 1):
        raise TooLarge(f"{what} expands {uncompressed / max(compressed, 1):.0f}-fold; the limit is "
                       f"{limits.max_ratio:g} (a decompression bomb?)", code="compression_ratio")


def _zip_members(file: BinaryIO, size: int, limits: Limits) -> Iterator[Member]:
    entries, cd_size = _zip_directory(file, size)
    if entries > limits.max_members or cd_size > limits.max_members * 1024:
        raise TooLarge(f"the archive lists {entries} members; the limit is {limits.max_members}",
                       code="too_many_members")
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise BadRequest(f"the zip archive cannot be read: {exc}", code="corrupt_archive") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise TooLarge(f"the archive has {len(infos)} members; the limit is {limits.max_members}",
                           code="too_many_members")
        files = [i for i in infos if not i.is_dir()]
        total = sum(i.file_size for i in files)
        if total > limits.max_total_bytes:
            raise TooLarge(f"the archive holds {total} bytes uncompressed; the limit is {limits.max_total_bytes}",
                           code="archive_too_large")
        _check_ratio(total, size, limits, "the archive")
        for info in files:
            _check_ratio(info.file_size, info.compress_size, limits, f"member {display_name(info.filename)!r}")
        for info in files:
            name = display_name(info.filename)
            reason = unsafe_path(info.filename) or _zip_refusal(info, limits)
            if reason:
                yield Member(name, reason=reason)
                continue
            try:
                with archive.open(info) as stream:
                    data = stream.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
                yield Member(name, reason=f"corrupt member: {str(exc)[:120]}")
                continue
            yield Member(name, data=data)


# tar


class CountingReader(io.RawIOBase):
    """A read-only stream over decompressed bytes that stops (413) past the total or ratio limit."""

    def __init__(self, inner: BinaryIO, compressed_size: int, limits: Limits, compressed: bool):
        self.inner = inner
        self.compressed_size = compressed_size
        self.limits = limits
        self.compressed = compressed
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        self.count += len(data)
        # Headers, padding and the end-of-archive blocks are read too: allow them on top of the data.
        if self.count > self.limits.max_total_bytes + (self.limits.max_members + 2) * 1024 + 10240:
            raise TooLarge(f"the archive holds more than {self.limits.max_total_bytes} bytes uncompressed",
                           code="archive_too_large")
        if self.compressed:
            _check_ratio(self.count, self.compressed_size, self.limits, "the archive")
        buffer[:len(data)] = data
        return len(data)


def _decompressed(file: BinaryIO, kind: str) -> BinaryIO:
    if kind == "tar.gz":
        return gzip.GzipFile(fileobj=file, mode="rb")
    if kind == "tar.bz2":
        return bz2.BZ2File(file, mode="rb")
    if kind == "tar.xz":
        return lzma.LZMAFile(file, mode="rb")
    return file


def _tar_refusal(info: tarfile.TarInfo, limits: Limits) -> str | None:
    if info.issym():
        return "symbolic link"
    if info.islnk():
        return "hard link"
    if info.ischr() or info.isblk() or info.isfifo():
        return "device or special file"
    if not info.isreg():
        return "not a regular file"
    if info.size > limits.max_member_bytes:
        return f"too large ({info.size} bytes; the limit is {limits.max_member_bytes})"
    return None


def _tar_members(file: BinaryIO, size: int, kind: str, limits: Limits) -> Iterator[Member]:
    reader = CountingReader(_decompressed(file, kind), size, limits, compressed=kind != "tar")
    stream = io.BufferedReader(reader, buffer_size=64 * 1024)
    count = total = 0
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")
        for info in archive:
            count += 1
            if count > limits.max_members:
                raise TooLarge(f"the archive has more than {limits.max_members} members", code="too_many_members")
            if info.isdir():
                continue
            total += max(info.size, 0)
            if total > limits.max_total_bytes:
                raise TooLarge(f"the archive holds more than {limits.max_total_bytes} bytes uncompressed; "
                               f"the limit is {limits.max_total_bytes}", code="archive_too_large")
            name = display_name(info.name)
            reason = unsafe_path(info.name) or _tar_refusal(info, limits)
            if reason:
                yield Member(name, reason=reason)
                continue
            extracted = archive.extractfile(info)
            yield Member(name, data=extracted.read(info.size) if extracted else b"")
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        raise BadRequest(f"the {kind} archive cannot be read: {str(exc)[:200]}", code="corrupt_archive") from None

