"""Whether a JPEG file holds its whole picture, read from its markers.

libjpeg decodes a JPEG cut short into a grey-padded picture without a word, so a file must reach its
end-of-image marker (EOI). It need not end there: phones append data past it (a Google or Samsung
"motion photo" carries its MP4 after the JPEG, Samsung's SEFT trailer its own records), which
viewers and OpenCV ignore; such photos were refused as truncated.
"""

from __future__ import annotations

SOS, EOI = 0xDA, 0xD9  # start of scan, end of image
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn: markers without a length


def jpeg_has_end(data: bytes) -> bool:
    """Whether ``data`` (a JPEG: SOI first) reaches the EOI that ends its picture. The segments before
    the first scan are stepped over by their lengths (an EXIF thumbnail's own EOI is inside one); in
    the compressed data that follows, 0xFF 0xD9 is the EOI and nothing else. Where the segments do
    not parse, the file must end with the EOI, as before."""
    if data.rstrip(b"\x00").endswith(b"\xff\xd9"):  # the common case, whatever the walk would find
        return True
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            break  # not a marker where one belongs: a damaged header
        marker = data[offset + 1]
        if marker == 0xFF:  # a fill byte before a marker
            offset += 1
        elif marker == EOI:
            return True
        elif marker in _STANDALONE:
            offset += 2
        elif marker == SOS:
            return data.find(b"\xff\xd9", offset + 2) != -1
        else:
            offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return False
