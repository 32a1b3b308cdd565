"""What a file's bytes are, by their leading bytes: an image format (:func:`image_format`), text, a
video, a HEIF photo, and the one line saying why bytes are no readable image (:func:`describe_unreadable`,
:func:`check_complete`). Part of :mod:`augment.imageio`, which re-exports them.
"""

from __future__ import annotations

from augment.image_files import VIDEO_EXTENSIONS
from augment.input_error import InputError
from augment.jpeg_markers import jpeg_has_end
from augment.png_chunks import png_damage


# Leading bytes of the formats OpenCV reads, to say what a file that fails to decode actually is.
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP", b"RIFF": "WebP",
          b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"GIF87a": "GIF", b"GIF89a": "GIF"}
# Brands of an ISO base media file ("....ftyp<brand>") that are still images: a phone's HEIC photo
# (often renamed .jpg) or an AVIF, which OpenCV's wheels do not decode.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


def image_format(data: bytes) -> str | None:
    """``JPEG``, ``PNG``, ``BMP``, ``WebP``, ``TIFF`` or ``GIF`` by the leading bytes, else None."""
    return next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)


def looks_like_text(data: bytes) -> bool:
    """Whether the first 4 KiB are printable UTF-8 (a character cut at the end of the sample is fine)."""
    sample = data[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(sample) - 3:
            return False
        text = sample[:error.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def video_container(data: bytes) -> str | None:
    """``MP4/MOV``, ``AVI`` or ``Matroska/WebM`` by the leading bytes (a HEIF image's ``ftyp`` is none), else None."""
    if data[4:8] == b"ftyp" and data[8:12] not in _HEIF_BRANDS:
        return "MP4/MOV"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "AVI"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    return None


def empty_or_text(data: bytes, name: str, what: str) -> str | None:
    """The line for ``data`` (a file's first bytes) that is empty or text, not ``what``; else None."""
    if not data:
        return f"{name}: empty file (0 bytes), not {what}"
    if image_format(data) is None and looks_like_text(data):
        return f"{name}: a text file, not {what}"
    return None


def describe_unreadable(data: bytes, name: str) -> str:
    """One line saying why ``data`` is not an image: empty, text, a video, or corrupt/unknown."""
    if (line := empty_or_text(data, name, "an image")) is not None:
        return line
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return f"{name}: a HEIC/HEIF or AVIF image, which cannot be read here; convert it to JPEG or PNG"
    if (video := video_container(data)) is not None:  # a phone's clip saved as .jpg: not 'corrupt'
        article = "a" if video.startswith("Matroska") else "an"
        return (f"{name}: {article} {video} video, not an image (a wrong extension? synth search reads videos "
                f"by their own: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return f"{name}: not a readable image (corrupt, truncated or unknown format)"


def check_complete(data: bytes, name: str) -> None:
    """An InputError for bytes that are empty, text, or a JPEG/PNG cut short."""
    # libjpeg happily decodes a truncated JPEG into a grey-padded image; catch it here.
    kind = image_format(data)
    if kind == "JPEG" and not jpeg_has_end(data):  # data past the end (a motion photo's video) is fine
        raise InputError(f"{name}: truncated JPEG (no end-of-image marker)")
    if kind == "PNG" and (damage := png_damage(data)):  # before libpng prints its own error line
        raise InputError(f"{name}: {damage}")
    if kind is None and (not data or looks_like_text(data)):
        raise InputError(describe_unreadable(data, name))
