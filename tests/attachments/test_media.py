"""The checks of a file's bytes: magic bytes, image sizes from headers, PDF pages, data URLs."""

from __future__ import annotations

import struct

import pytest
from chatcore import errors
from chatcore.attachments import media

from tests.attachments.conftest import PDF, data_url, jpeg_header, png


def webp_vp8x(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") \
        + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def test_image_sizes_come_from_the_headers() -> None:
    assert media.inspect(png(7, 5), "image/png").width == 7
    assert (media.inspect(png(7, 5), "image/png").height) == 5
    assert media.image_size(jpeg_header(640, 480), "image/jpeg") == (640, 480)
    assert media.image_size(b"GIF89a" + struct.pack("<HH", 33, 44) + b"\x00" * 10, "image/gif") == (33, 44)
    assert media.image_size(webp_vp8x(300, 200), "image/webp") == (300, 200)


@pytest.mark.parametrize(("data", "media_type"), [
    (png(), "image/jpeg"), (jpeg_header(10, 10), "image/png"), (b"%PDF-1.4", "image/gif"),
    (png(), "application/pdf"), (b"\xff\xfe\x00binary", "text/plain"), (b"RIFF0000WAVE" + b"\x00" * 20, "image/webp"),
])
def test_bytes_that_are_not_the_declared_type_are_415(data: bytes, media_type: str) -> None:
    with pytest.raises(errors.UnsupportedMediaTypeError):
        media.inspect(data, media_type)


def test_an_image_too_large_in_pixels_is_refused_from_its_header_alone() -> None:
    with pytest.raises(errors.RequestError, match="9000x10"):
        media.inspect(jpeg_header(9000, 10), "image/jpeg")


def test_type_allow_list_and_size_caps() -> None:
    with pytest.raises(errors.UnsupportedMediaTypeError):
        media.check_media_type("image/svg+xml")
    assert media.check_media_type("image/JPG") == "image/jpeg"
    with pytest.raises(errors.PayloadTooLargeError):
        media.check_size("image/png", media.MAX_IMAGE_BYTES + 1)
    media.check_size("application/pdf", media.MAX_IMAGE_BYTES + 1)  # documents have their own cap
    with pytest.raises(errors.PayloadTooLargeError):
        media.check_size("application/pdf", media.MAX_PDF_BYTES + 1)


def test_pdf_pages_are_estimated() -> None:
    assert media.inspect(PDF, "application/pdf").pages == 2


def test_data_urls_are_decoded_within_a_bound() -> None:
    assert media.decode_data_url(data_url("image/png", png()), 10_000) == ("image/png", png())
    with pytest.raises(errors.PayloadTooLargeError):
        media.decode_data_url(data_url("image/png", b"x" * 2000), 1000)
    with pytest.raises(errors.RequestError):
        media.decode_data_url("data:image/png;base64,@@@@", 1000)
    with pytest.raises(errors.RequestError):
        media.decode_data_url("data:text/plain,hello", 1000)
