"""Strict CSV reading for imports: an unbalanced quote is an error naming the line it opens on.

Python's csv module, left lenient, lets an unclosed quote swallow every later line into one
field, so a file with one stray ``"`` imported one row where it held many. Both imports
(subscribers and articles) read their rows through here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from digest.errors import InputError


def read_rows(text: str | Iterable[str], delimiter: str, name: str, *,
              multiline: bool = True) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, fields) for every row of text, header included.

    text is the whole file, or its lines as they are read (a file opened with newline="").

    multiline=False also refuses a quoted field that spans lines, for files whose fields
    never hold a line break (an address, a name): there that is always a stray quote.
    """
    lines = io.StringIO(text, newline="") if isinstance(text, str) else text
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise InputError(
                    f"{name}: line {start}: a quoted field starts here and is never closed "
                    '(an unbalanced "); fix the quotes and import again. Nothing was imported.'
                ) from None
            raise InputError(
                f"{name}: line {start}: not valid CSV ({exc}); check the quotes on that line "
                "and import again. Nothing was imported."
            ) from None
        if not multiline and reader.line_num > start:
            raise InputError(
                f"{name}: line {start}: a quoted field runs on to line {reader.line_num} "
                '(an unbalanced "?); fix the quotes and import again. Nothing was imported.'
            )
        yield start, row
        start = reader.line_num + 1
