"""How a manifest or an export is written: its encoding and, for delimited text, its delimiter.
The one home of charset-normalizer.

Spreadsheets write CSV in the locale's code page (Excel in a Russian locale: windows-1251,
`;`, CRLF) or as "Unicode text" (UTF-16 LE with a byte order mark, tab-separated, .txt).
The encoding is, in this order: the one given (--encoding); a byte order mark; UTF-8 when
the whole file decodes as UTF-8; otherwise, when everything before the first byte that is
not UTF-8 was ASCII, what charset-normalizer recognises in the lines that are not ASCII, if
it recognises a language there. A byte that cannot be decoded is a ConfigError naming its
line and --encoding, before any row is read: never a row, never a silent end.

The delimiter is the one given (--delimiter), an Excel `sep=;` first line, or whichever of
`,` `;` tab `|` splits the header into the most columns.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import NamedTuple, TextIO

from bulk_uploader.errors import ConfigError
from bulk_uploader.records import FrozenRecord, record

DELIMITED_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
MANIFEST_SUFFIXES = DELIMITED_SUFFIXES | {".jsonl", ".ndjson"}
DELIMITERS = (",", ";", "\t", "|")  # in order of preference when two split the header alike
_BOMS = (  # UTF-32 first: its little-endian mark begins like UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_CHUNK = 1024 * 1024
_SAMPLE_BYTES = 64 * 1024  # of non-ASCII lines handed to the detector
# charset-normalizer names a language only when the decoded letters are frequent in one; a few
# words give it too little to tell code pages apart (it guesses CJK encodings), so below this
# it is not trusted and --encoding is asked for.
_MIN_COHERENCE = 0.2
_NOT_SCRIPTS = ("Latin", "Control", "Punctuation", "Symbols", "Forms", "Box Drawing")  # Unicode blocks
_HINT = "give the file's encoding with --encoding (Excel's CSV in a Russian locale: --encoding cp1251), " \
        "or save it as CSV UTF-8"


@record(slots=True)
class TextFormat(FrozenRecord):
    """How to read one file: a Python codec, the delimiter (delimited text only), how they were chosen."""

    encoding: str
    delimiter: str | None = None
    how: str = "UTF-8"  # "--encoding", "byte order mark", "UTF-8" or "detected from its <script> text"
    sep_line: bool = False  # the first line is Excel's `sep=X`, not the header

    def notice(self, path: Path) -> str | None:
        """What to tell the user about an encoding or delimiter they may not expect; None for plain UTF-8 CSV."""
        parts = []
        if self.encoding not in ("utf-8", "utf-8-sig"):
            parts.append(f"read as {self.encoding} ({self.how})")
        if self.delimiter not in (None, ","):
            parts.append("tab-separated" if self.delimiter == "\t" else f"{self.delimiter!r}-separated")
        if not parts:
            return None
        override = " (--encoding, --delimiter to override)" if self.how.startswith("detected") else ""
        return f"{path.name}: {', '.join(parts)}{override}"


def is_delimited(path: Path) -> bool:
    """Whether a manifest or export is delimited text (CSV, TSV, Excel's Unicode text), else JSON lines."""
    return path.suffix.lower() in DELIMITED_SUFFIXES


def parse_delimiter(text: str) -> str:
    """--delimiter: one character, or `tab` (also `\\t`)."""
    if text.lower() in ("tab", "\\t", "\t"):
        return "\t"
    if len(text) != 1 or text in "\"\r\n":
        raise ConfigError(f"--delimiter must be one character or 'tab', not {text!r}")
    return text


def codec_name(encoding: str) -> str:
    """--encoding as a Python codec; UTF-8 and UTF-16 read past a byte order mark."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"--encoding: unknown encoding {encoding!r} (for example utf-8, cp1251, utf-16)") from None
    return "utf-8-sig" if name == "utf-8" else name


class BadByte(NamedTuple):
    """The first byte of a file that does not decode."""

    line: int
    offset: int
    data: bytes
    ascii_before: bool  # everything before it was ASCII


def first_bad_byte(path: Path, encoding: str) -> BadByte | None:
    """Where `path` first fails to decode as `encoding`, or None when all of it decodes."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line, offset, ascii_before = 1, 0, True
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            state = decoder.getstate()
            if encoding == "utf-8" and not state[0] and chunk.isascii():
                line += chunk.count(b"\n")  # ASCII decodes to itself: no text made to count its lines
                offset += len(chunk)
                continue
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError:
                decoder.setstate(state)
                return _narrow(decoder, chunk, line, offset, ascii_before)
            line += text.count("\n")
            ascii_before = ascii_before and text.isascii()
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a character
            return BadByte(line, offset - len(exc.object) + exc.start, exc.object[exc.start:exc.end], ascii_before)
    return None


def _narrow(decoder: codecs.IncrementalDecoder, chunk: bytes, line: int, offset: int, ascii_before: bool) -> BadByte:
    """The bad byte within a chunk that failed, found one byte at a time (this chunk only)."""
    for i in range(len(chunk)):
        try:
            text = decoder.decode(chunk[i:i + 1])
        except UnicodeDecodeError as exc:
            # exc.object is the bytes the decoder held back plus this one.
            start = offset + i + 1 - len(exc.object) + exc.start
            return BadByte(line, start, exc.object[exc.start:exc.end], ascii_before)
        line += text.count("\n")
        ascii_before = ascii_before and text.isascii()
    raise AssertionError("a chunk that failed to decode decoded byte by byte")


def undecodable(path: Path, encoding: str, how: str) -> ConfigError:
    """The error for a file that does not decode as `encoding`: its first bad byte, its line and the way out."""
    bad = first_bad_byte(path, encoding)
    if bad is None:  # the file changed since the read that failed
        return ConfigError(f"{path.name} stopped decoding as {encoding} while being read; {_HINT}")
    return _bad_byte_error(path, bad, "UTF-8" if encoding.startswith("utf-8") else f"{encoding} ({how})")


def _bad_byte_error(path: Path, bad: BadByte, expected: str) -> ConfigError:
    shown = " ".join(f"0x{b:02X}" for b in bad.data[:4])
    return ConfigError(f"{path.name} line {bad.line}: {shown} (offset {bad.offset}) is not {expected}; {_HINT}")


def detect_format(path: Path, *, encoding: str | None = None, delimiter: str | None = None) -> TextFormat:
    """How to read `path`; raises ConfigError when its bytes do not decode, naming the line."""
    with path.open("rb") as f:
        head = f.read(4096)
    if encoding is not None:
        codec, how = codec_name(encoding), "--encoding"
    elif bom := next((name for mark, name in _BOMS if head.startswith(mark)), None):
        codec, how = bom, "byte order mark"
    else:
        codec, how = _sniff_encoding(path, head)
    if not is_delimited(path):
        return TextFormat(codec, None, how)
    if delimiter is not None:
        return TextFormat(codec, parse_delimiter(delimiter), how)
    return _with_delimiter(path, codec, how)


def _sniff_encoding(path: Path, head: bytes) -> tuple[str, str]:
    """UTF-16 without a mark, UTF-8, or what the detector recognises in the non-ASCII lines."""
    if head.count(0) * 4 > len(head):  # a text file full of NULs is UTF-16 that lost its mark
        return ("utf-16-le" if head[1::2].count(0) > head[::2].count(0) else "utf-16-be"), "no byte order mark"
    bad = first_bad_byte(path, "utf-8")
    if bad is None:
        return "utf-8", "UTF-8"
    guess = _guess(path) if bad.ascii_before else None  # UTF-8 text with a stray byte is not another code page
    if guess is None:
        raise _bad_byte_error(path, bad, "UTF-8")
    return guess


def _guess(path: Path) -> tuple[str, str] | None:
    """A single-byte code page charset-normalizer recognises a language in, or None."""
    import charset_normalizer

    sample = bytearray()
    with path.open("rb") as f:
        for raw in f:
            if not raw.isascii():
                sample += raw
                if len(sample) >= _SAMPLE_BYTES:
                    break
    best = charset_normalizer.from_bytes(bytes(sample)).best()
    if best is None or best.coherence < _MIN_COHERENCE or best.language == "Unknown":
        return None
    scripts = [name for name in best.alphabets if not any(word in name for word in _NOT_SCRIPTS)]
    return codecs.lookup(best.encoding).name, f"detected from its {', '.join(scripts) or 'Latin'} text"


def open_text(path: Path, fmt: TextFormat) -> TextIO:
    """The file as text, lines ending only at `\\n` (CSV reads its own line ends)."""
    return path.open("r", encoding=fmt.encoding, newline="" if fmt.delimiter else "\n")


def _with_delimiter(path: Path, codec: str, how: str) -> TextFormat:
    import csv  # only delimited files load it

    try:
        with open_text(path, TextFormat(codec, ",")) as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise undecodable(path, codec, how) from None
    first = first.lstrip("\ufeff").rstrip("\r\n")
    if len(first) == 5 and first.lower().startswith("sep="):
        return TextFormat(codec, first[4], how, sep_line=True)
    widths = {d: len(next(csv.reader([first], delimiter=d), [])) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (widths[d], -DELIMITERS.index(d)))
    return TextFormat(codec, best if widths[best] > 1 else ",", how)
