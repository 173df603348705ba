"""What a file may be: the media-type allow-list, per-type size caps, and checks of the bytes themselves.

Every check reads headers only: magic bytes for the type, and an image's dimensions from its header
(PNG IHDR, GIF logical screen, WebP VP8/VP8L/VP8X, JPEG SOF marker); no image is ever decoded.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

from chatcore import errors

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
DOCUMENT_TYPES = ("application/pdf", "text/plain", "text/markdown", "text/csv")
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv")
ALLOWED_TYPES = IMAGE_TYPES + DOCUMENT_TYPES

# 3.75 MB: the largest image both Anthropic and Bedrock accept; 4.5 MB: Bedrock's document limit.
MAX_IMAGE_BYTES = 3_750_000
MAX_PDF_BYTES = 4_500_000
MAX_TEXT_BYTES = 1_000_000
MAX_IMAGE_SIDE = 8000  # pixels, Anthropic's limit (the strictest)
MAX_IMAGES_PER_REQUEST = 20
MAX_DOCUMENTS_PER_REQUEST = 5

_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
               "application/pdf": ".pdf", "text/plain": ".txt", "text/markdown": ".md", "text/csv": ".csv"}
_ALIASES = {"image/jpg": "image/jpeg", "text/x-markdown": "text/markdown", "application/csv": "text/csv"}
_FILENAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\\\]")


def normalize_media_type(media_type: str) -> str:
    """The media type without parameters, lower-cased, aliases resolved (`image/jpg` -> `image/jpeg`)."""
    base = media_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def check_media_type(media_type: str) -> str:
    """The normalized type, or 415 naming the allowed ones."""
    normalized = normalize_media_type(media_type)
    if normalized not in ALLOWED_TYPES:
        raise errors.UnsupportedMediaTypeError(
            f"Files of type {media_type!r} are not accepted; allowed: {', '.join(ALLOWED_TYPES)}.")
    return normalized


def max_bytes(media_type: str) -> int:
    if media_type in IMAGE_TYPES:
        return MAX_IMAGE_BYTES
    if media_type == "application/pdf":
        return MAX_PDF_BYTES
    return MAX_TEXT_BYTES


def check_size(media_type: str, size: int) -> None:
    """413 when `size` is over the type's cap; 400 when empty."""
    if size <= 0:
        raise errors.RequestError("The file is empty.")
    cap = max_bytes(media_type)
    if size > cap:
        raise errors.PayloadTooLargeError(f"The file is {size} bytes; a {media_type} file may have at most {cap}.")


def extension(media_type: str) -> str:
    """The usual file extension of an allowed type (with its dot), '' for others."""
    return _EXTENSIONS.get(media_type, "")


def clean_filename(filename: str | None, media_type: str) -> str:
    """A display name: no path, no control characters, at most 200 characters; a default when absent."""
    name = _FILENAME_FORBIDDEN.sub("_", (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip()
    return name[:200] or f"file{_EXTENSIONS.get(media_type, '')}"


@dataclass(frozen=True, slots=True)
class Inspected:
    """What the checks learned of a file's bytes."""

    media_type: str
    width: int = 0
    height: int = 0
    pages: int = 0  # PDFs: an estimate, for prompt fitting


def inspect(data: bytes, media_type: str) -> Inspected:
    """Check that `data` is a `media_type` file within limits: 413 oversize, 415 wrong bytes, 400 image too large."""
    media_type = check_media_type(media_type)
    check_size(media_type, len(data))
    if media_type in IMAGE_TYPES:
        width, height = image_size(data, media_type)
        if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
            raise errors.RequestError(f"The image is {width}x{height} pixels; at most {MAX_IMAGE_SIDE} a side.")
        return Inspected(media_type, width, height)
    if media_type == "application/pdf":
        if not data.startswith(b"%PDF-"):
            raise errors.UnsupportedMediaTypeError("The file is not a PDF (its bytes do not start with %PDF-).")
        return Inspected(media_type, pages=pdf_pages(data))
    _check_text(data)
    return Inspected(media_type)


def _check_text(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.UnsupportedMediaTypeError("A text file must be UTF-8.") from None
    if "\x00" in text:
        raise errors.UnsupportedMediaTypeError("A text file must not contain NUL bytes.")


def _wrong(media_type: str) -> errors.UnsupportedMediaTypeError:
    return errors.UnsupportedMediaTypeError(f"The file's bytes are not a valid {media_type} image.")


def image_size(data: bytes, media_type: str) -> tuple[int, int]:
    """(width, height) from the image's header, or 415 when its magic bytes are not `media_type`'s."""
    if media_type == "image/png":
        if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR" or len(data) < 24:
            raise _wrong(media_type)
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if media_type == "image/gif":
        if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 10:
            raise _wrong(media_type)
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if media_type == "image/webp":
        return _webp_size(data)
    if media_type == "image/jpeg":
        return _jpeg_size(data)
    raise _wrong(media_type)


def _webp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _wrong("image/webp")
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise _wrong("image/webp")


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG's marker segments (never its entropy-coded data) up to the first SOF."""
    if not data.startswith(b"\xff\xd8"):
        raise _wrong("image/jpeg")
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            raise _wrong("image/jpeg")
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            index += 2
            continue
        length = int.from_bytes(data[index + 2:index + 4], "big")
        if length < 2:
            raise _wrong("image/jpeg")
        if marker in _SOF_MARKERS:
            if index + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[index + 5:index + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            break
        index += 2 + length
    raise _wrong("image/jpeg")


_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_PDF_COUNT = re.compile(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)|/Count\s+(\d+)[^>]*?/Type\s*/Pages\b")


def pdf_pages(data: bytes) -> int:
    """An estimate of a PDF's page count (its page tree's /Count, else its /Page objects); 0 if unknown."""
    counts = [int(a or b) for a, b in _PDF_COUNT.findall(data[:2_000_000])]
    if counts:
        return max(counts)
    return len(_PDF_PAGE.findall(data))


_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,=]+=[^;,]*)*)(;base64)?,", re.IGNORECASE)


def decode_data_url(url: str, max_decoded: int) -> tuple[str, bytes]:
    """(media type, bytes) of a `data:` URL; 400 when malformed, 413 when over `max_decoded` bytes."""
    match = _DATA_URL.match(url[:500])
    if match is None:
        raise errors.RequestError("A file part's data URL is malformed.")
    payload = url[match.end():]
    if not match.group(3):
        raise errors.RequestError("A file part's data URL must be base64-encoded.")
    if len(payload) * 3 // 4 > max_decoded + 3:
        raise errors.PayloadTooLargeError(
            f"An inline file may have at most {max_decoded} bytes; upload larger files with POST /api/files.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise errors.RequestError("A file part's data URL is not valid base64.") from None
    if len(data) > max_decoded:
        raise errors.PayloadTooLargeError(
            f"An inline file may have at most {max_decoded} bytes; upload larger files with POST /api/files.")
    return normalize_media_type(match.group(1) or "text/plain"), data
