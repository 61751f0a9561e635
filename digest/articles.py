"""Import articles from RSS/Atom feeds, JSON and CSV, and normalise them for the store.

Every source of one import is read and parsed before anything is written, and all of them
are then stored in one transaction: a bad second file leaves the first one unimported too.

Publish dates are stored in UTC. A date without an offset is taken as UTC. An item with no
date at all takes its ``updated`` date, else the import time; re-importing it later keeps
the date it got the first time (see ``store.articles.upsert_articles``).
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.request
import xml.sax
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.parsers import expat

import feedparser
import nh3
from sqlalchemy.exc import IntegrityError

from digest import __version__
from digest.csvrows import read_rows
from digest.db import Database
from digest.errors import InputError
from digest.store import articles as store

#: Formats ``digest import --format`` accepts; ``feed`` is RSS 2.0 or Atom.
FORMATS = ("feed", "json", "jsonl", "csv")

DEFAULT_TIMEOUT = 20.0
MAX_BYTES = 20 * 1024 * 1024
SUMMARY_LIMIT = 300
USER_AGENT = f"digest/{__version__} (+article import)"

# Column sizes from digest.models.Article; PostgreSQL enforces them, SQLite does not.
MAX_URL = 2048
MAX_GUID = 1024
_LIMITS = {"author": 300, "section": 200, "image_credit": 500}

# Conservative allowlist for article bodies: structure and emphasis, links and images.
# No style, class or id: the body is shown inside our own email and page layouts.
ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "cite", "code", "em", "figcaption", "figure",
    "h2", "h3", "h4", "hr", "i", "img", "li", "ol", "p", "pre", "q", "s", "small", "strong",
    "sub", "sup", "ul",
})
ALLOWED_ATTRIBUTES = {
    "a": frozenset({"href", "title"}),
    "abbr": frozenset({"title"}),
    "img": frozenset({"src", "alt", "width", "height", "title"}),
}
LINK_REL = "noopener noreferrer nofollow"

# Reasons an item is skipped; each reads after a count: "2 without a title".
NO_TITLE = "without a title"
NO_LINK = "without a link"
BAD_LINK = "with a link that is not an absolute http(s) URL"
BAD_DATE = "with an unreadable date"
REPEATED = "repeated in the same source"
LINK_TAKEN = "whose link belongs to another article"

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


class SkipItem(Exception):
    """An item that cannot become an article; the reason is counted, not raised to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ArticleIn:
    """One normalised article, ready to store. ``published_at`` None means "no date given"."""

    url: str
    title: str
    guid: str | None = None
    dek: str = ""
    summary: str = ""
    body_html: str = ""
    author: str = ""
    section: str = ""
    image_url: str = ""
    image_alt: str = ""
    image_credit: str = ""
    image_width: int = 0  # pixels, when the source says; 0 when unknown
    image_height: int = 0
    published_at: datetime | None = None


@dataclass
class ParsedSource:
    """A source's articles after parsing, before anything is stored."""

    name: str
    format: str
    articles: list[ArticleIn] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


@dataclass
class SourceResult:
    """What importing one source did."""

    name: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        """``Imported feed.xml: 12 added, 3 updated, 2 skipped (1 without a title, …)``."""
        counts = _counts(self.added, self.updated, self.unchanged, self.skipped)
        return f"Imported {self.name}: {counts}"


@dataclass
class ImportReport:
    """The results of one ``digest import``, one entry per source, in order."""

    sources: list[SourceResult]

    def total_line(self) -> str:
        """``Total: 14 added, 3 updated, 2 skipped (…)`` over every source."""
        skipped: Counter[str] = Counter()
        for result in self.sources:
            skipped.update(result.skipped)
        return "Total: " + _counts(
            sum(r.added for r in self.sources),
            sum(r.updated for r in self.sources),
            sum(r.unchanged for r in self.sources),
            skipped,
        )


def _counts(added: int, updated: int, unchanged: int, skipped: Counter[str]) -> str:
    parts = [f"{added} added", f"{updated} updated"]
    if unchanged:
        parts.append(f"{unchanged} unchanged")
    total = sum(skipped.values())
    text = ", ".join(parts) + f", {total} skipped"
    if total:
        reasons = sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
        text += " (" + ", ".join(f"{n} {reason}" for reason, n in reasons) + ")"
    return text


# --- reading sources -------------------------------------------------------------------


class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), never to file: or ftp:."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        # urllib itself refuses file: but still follows ftp:; only the web is wanted here.
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(req.full_url, code, msg, headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def is_url(source: str) -> bool:
    """True when source is an http(s) URL rather than a file path."""
    return urlsplit(source).scheme in ("http", "https")


def fetch_url(url: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = MAX_BYTES) -> bytes:
    """The body of an http(s) URL within a total deadline and a size cap; errors name the URL.

    timeout bounds the whole transfer, not each read: a server that trickles a byte every
    second would otherwise keep a cron import running for ever.
    """
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(HttpOnlyRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310 - is_url() checked the scheme
    late = InputError(
        f"{url}: not received within {timeout:g} seconds (the --timeout / import_timeout "
        "deadline for the whole download); nothing was imported"
    )
    big = InputError(
        f"{url}: larger than {_size(max_bytes)} (--max-size / import_max_bytes); nothing was "
        "imported"
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = str(response.headers.get("Content-Length") or "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise big
            chunks: list[bytes] = []
            size = 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise late
                _limit_next_read(response, left)
                chunk = response.read1(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise big
                chunks.append(chunk)
            data = b"".join(chunks)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response and its socket
        if 300 <= exc.code < 400:
            raise InputError(f"{url}: redirected to a URL that is not http(s); not followed") \
                from None
        raise InputError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise late from None
        raise InputError(f"{url}: cannot fetch it: {exc.reason}") from None
    except TimeoutError:
        raise late from None
    except OSError as exc:
        raise InputError(f"{url}: cannot fetch it: {exc}") from None
    return data


def _limit_next_read(response: Any, seconds: float) -> None:
    """Let the next socket read wait at most seconds (what is left of the deadline)."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.01))


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def parse_size(text: str) -> int:
    """``5MB``, ``500KB`` or a number of bytes, as bytes; InputError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or float(match[1]) <= 0:
        raise InputError(f"size {text!r} is not a size; write it like 5MB, 500KB or 100000")
    return max(1, int(float(match[1]) * _UNITS[(match[2] or "b").lower()]))


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n} bytes"


def read_source(
    source: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = MAX_BYTES
) -> bytes:
    """The bytes of a file path or http(s) URL."""
    if is_url(source):
        return fetch_url(source, timeout=timeout, max_bytes=max_bytes)
    path = Path(source)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{source}: is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read it: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise InputError(f"{source}: larger than {_size(max_bytes)}; not imported")
    return data


# --- format detection and parsing ------------------------------------------------------

_EXTENSIONS = {
    ".xml": "feed", ".rss": "feed", ".atom": "feed", ".json": "json",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
}


def detect_format(data: bytes, name: str) -> str:
    """Tell the format from the content; the file extension only breaks ties."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    hint = _EXTENSIONS.get(Path(urlsplit(name).path).suffix.lower(), "")
    if head == b"<":
        return "feed"
    if head == b"[":
        return "json"
    if head == b"{":
        try:
            json.loads(data)
        except ValueError:  # includes UnicodeDecodeError
            pass
        else:
            return "json"
        first = data.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
        try:
            json.loads(first)
        except ValueError:
            return hint if hint in ("json", "jsonl") else "jsonl"  # broken either way
        return "jsonl"  # several objects, one per line
    if hint:
        return hint
    if not head:
        raise InputError(f"{name}: the file is empty")
    first_line = data.split(b"\n", 1)[0]
    if b"," in first_line or b";" in first_line or b"\t" in first_line:
        return "csv"
    raise InputError(
        f"{name}: cannot tell whether this is a feed, JSON or CSV; use --format"
    )


def parse_source(
    data: bytes, name: str, fmt: str | None = None, *, lenient: bool = False
) -> ParsedSource:
    """Parse bytes in the given format (or a detected one) into normalised articles."""
    try:
        return _parse_source(data, name, fmt, lenient=lenient)
    except RecursionError:
        # json (and the normalising walk) recurse per level: 100,000 nested arrays would
        # otherwise end in a traceback.
        raise InputError(
            f"{name}: nested too deeply (thousands of levels of arrays or objects) to be "
            "articles; nothing was imported"
        ) from None


def _parse_source(data: bytes, name: str, fmt: str | None, *, lenient: bool) -> ParsedSource:
    fmt = fmt or detect_format(data, name)
    if fmt == "feed":
        return parse_feed(data, name, lenient=lenient)
    if fmt == "json":
        return parse_json(data, name)
    if fmt == "jsonl":
        return parse_json_lines(data, name)
    if fmt == "csv":
        return parse_csv(data, name)
    raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def parse_feed(data: bytes, name: str, *, lenient: bool = False) -> ParsedSource:
    """Parse an RSS 2.0 or Atom feed with feedparser.

    XML that is not well-formed is an error (nothing is imported), unless lenient, when
    feedparser's recovered entries are imported with a warning. Other feedparser complaints,
    such as a wrong declared encoding, only warn.
    """
    # Bytes go in as a stream: feedparser treats a str or bytes argument as a URL or path
    # to open. Its own HTML sanitiser is off because nh3 applies our policy afterwards.
    parsed = feedparser.parse(io.BytesIO(data), sanitize_html=False)
    # Plain dicts: FeedParserDict maps a missing "updated" to "published" with a
    # DeprecationWarning (feedparser issue 310); the fallback is done here explicitly.
    entries = [dict(entry) for entry in parsed.get("entries", [])]
    problem = parsed.get("bozo_exception")
    if not entries and (parsed.get("bozo") or not parsed.get("version")):
        why = f": {problem}" if parsed.get("bozo") and problem else ""
        raise InputError(f"{name}: not a readable RSS or Atom feed{why}")
    result = ParsedSource(name, "feed")
    if parsed.get("bozo") and entries:
        if isinstance(problem, xml.sax.SAXParseException) and not lenient:
            raise InputError(
                f"{name}: the feed is not well-formed XML ({problem}); fix the feed, or "
                "import what can be read with --lenient"
            )
        result.warnings.append(
            f"{name}: the feed is not well-formed ({problem}); imported what could be read"
        )
    media = _media_alt_texts(data)
    if len(media) != len(entries):
        media = [""] * len(entries)  # cannot line them up reliably: leave alt text empty
    records = (_feed_record(entry, alt) for entry, alt in zip(entries, media, strict=True))
    return normalise_records(records, name, "feed", result)


def parse_json(data: bytes, name: str) -> ParsedSource:
    """Parse a JSON array of article objects (or ``{"items": [...]}``, as JSON Feed has)."""
    try:
        document = json.loads(data)
    except UnicodeDecodeError:
        raise InputError(f"{name}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if isinstance(document, dict):
        for key in ("items", "articles"):
            if isinstance(document.get(key), list):
                document = document[key]
                break
        else:
            document = [document]
    if not isinstance(document, list):
        raise InputError(f"{name}: expected a JSON array of article objects")
    for position, item in enumerate(document, start=1):
        if not isinstance(item, dict):
            raise InputError(f"{name}: item {position} is not a JSON object")
    return normalise_records(document, name, "json")


def parse_json_lines(data: bytes, name: str) -> ParsedSource:
    """Parse JSON lines: one article object per line; blank lines are ignored."""
    text = _decode(data, name)
    records: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise InputError(f"{name}: line {number} is not a JSON object")
        records.append(item)
    return normalise_records(records, name, "jsonl")


def parse_csv(data: bytes, name: str) -> ParsedSource:
    """Parse CSV with a header row naming at least a title and a url (or link) column."""
    text = _decode(data, name)
    # The header line decides the delimiter: commas, or semicolons/tabs as spreadsheet
    # programs in many locales write them. (csv.Sniffer guesses from prose in the rows.)
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    # Strict: an unbalanced quote fails naming its line instead of swallowing later rows.
    reader = read_rows(text, delimiter, name)
    opening = next(reader, None)
    if opening is None:
        raise InputError(f"{name}: the CSV file is empty")
    header = opening[1]
    columns = [_key(column) for column in header]
    has_link = any(column in _ALIASES["url"] for column in columns)
    if "title" not in columns or not has_link:
        found = _clip(_line(", ".join(header)), 120) or "nothing"
        raise InputError(
            f"{name}: the first line must be a header naming a title and a url (or "
            f"link) column; it reads: {found}"
        )
    rows = [dict(zip(columns, row, strict=False)) for _, row in reader]
    return normalise_records(rows, name, "csv")


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name}: not UTF-8 text") from None


# --- feeds -----------------------------------------------------------------------------


def _feed_record(entry: Mapping[str, Any], alt: str) -> dict[str, Any]:
    """Map a feedparser entry onto the keys the JSON importer accepts."""
    title_type = (entry.get("title_detail") or {}).get("type", "text/plain")
    title = entry.get("title", "")
    link = entry.get("link", "")
    has_alternate = any(
        link_.get("rel", "alternate") == "alternate" for link_ in entry.get("links", [])
    )
    if entry.get("guidislink") and not has_alternate and not is_url(link):
        link = ""  # feedparser copied a non-URL id into link: there is no link
    body = ""
    for content in entry.get("content", []):
        if content.get("value"):
            body = content["value"]
            break
    # feedparser copies Atom content into summary when there is no summary element; then
    # summary_detail is absent and the summary is derived from the body instead.
    summary = entry.get("summary", "") if "summary_detail" in entry else ""
    tags = entry.get("tags") or []
    credits_ = [c.get("content", "") for c in entry.get("media_credit", []) if c.get("content")]
    image_url, image_width, image_height = _feed_image(entry)
    return {
        "guid": entry.get("id", ""),
        "url": link,
        "title": html_to_text(title) if "html" in title_type else title,
        # author_detail has the name alone; RSS <author> is "email (Name)" and no
        # reader's newsletter should show the desk's address.
        "author": (entry.get("author_detail") or {}).get("name") or entry.get("author", ""),
        "section": (tags[0].get("term") or tags[0].get("label") or "") if tags else "",
        "dek": next((entry[k] for k in ("dek", "standfirst", "subtitle") if entry.get(k)), ""),
        "summary": summary,
        "body_html": body,
        "image_url": image_url,
        "image_width": image_width,
        "image_height": image_height,
        "image_alt": alt,
        "image_credit": credits_[0] if credits_ else "",
        "published_at": _struct_or_raw(entry, "published"),
        "updated_at": _struct_or_raw(entry, "updated"),
    }


def _struct_or_raw(entry: Mapping[str, Any], key: str) -> datetime | str:
    """feedparser's parsed date (a UTC struct_time) as a datetime, else the raw text."""
    parsed = entry.get(f"{key}_parsed")
    if parsed:
        year, month, day, hour, minute, second = parsed[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    raw = entry.get(key, "")
    return raw if isinstance(raw, str) else ""


def _feed_image(entry: Mapping[str, Any]) -> tuple[str, Any, Any]:
    """The hero image and its stated width and height: media:content (an image), else
    media:thumbnail, else an image enclosure (which has no size)."""
    for media in entry.get("media_content", []):
        kind = media.get("type", "")
        if media.get("url") and (media.get("medium") == "image" or kind.startswith("image/")
                                 or (not kind and not media.get("medium"))):
            return str(media["url"]), media.get("width", ""), media.get("height", "")
    for thumb in entry.get("media_thumbnail", []):
        if thumb.get("url"):
            return str(thumb["url"]), thumb.get("width", ""), thumb.get("height", "")
    for link in entry.get("links", []):
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/"):
            return str(link.get("href", "")), "", ""
    return "", "", ""


_MEDIA_NS = ("http://search.yahoo.com/mrss/", "http://search.yahoo.com/mrss")
_ITEM_TAGS = frozenset({"item", "entry"})
_ALT_TAGS = frozenset({"description", "title"})


def _media_alt_texts(data: bytes) -> list[str]:
    """Each item's media:description (else media:title), in document order.

    feedparser folds media:description into the item's summary fields and drops
    media:title, so alt text is read here with a second, minimal expat pass. A document
    that declares entities is refused (no entity-expansion bombs), and expat never fetches
    external ones. Returns [] when the XML cannot be read this way.
    """
    parser = expat.ParserCreate(namespace_separator=" ")
    alts: list[str] = []
    found: dict[str, str] = {}
    depth = 0
    item_depth = 0  # depth of the open item element; 0 when outside any item
    text: list[str] = []

    def refuse(*_args: Any) -> None:
        raise ValueError("entity declarations are not accepted")

    def start(tag: str, _attrs: dict[str, str]) -> None:
        nonlocal depth, item_depth
        depth += 1
        ns, _, local = tag.rpartition(" ")
        if not item_depth and local in _ITEM_TAGS and ns not in _MEDIA_NS:
            item_depth = depth
            found.clear()
        elif item_depth and ns in _MEDIA_NS and local in _ALT_TAGS:
            text.clear()

    def end(tag: str) -> None:
        nonlocal depth, item_depth
        ns, _, local = tag.rpartition(" ")
        if item_depth and depth == item_depth:
            alts.append(found.get("description") or found.get("title") or "")
            item_depth = 0
        elif item_depth and ns in _MEDIA_NS and local in _ALT_TAGS:
            found.setdefault(local, "".join(text))
        depth -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except (expat.ExpatError, ValueError):
        return []
    return [html_to_text(alt) for alt in alts]


# --- normalisation ---------------------------------------------------------------------

_ALIASES: dict[str, tuple[str, ...]] = {
    "url": ("url", "link", "href", "permalink", "external_url"),
    "guid": ("guid", "id"),
    "title": ("title",),
    "dek": ("dek", "standfirst", "subtitle", "subheadline"),
    "summary": ("summary", "description", "excerpt"),
    "body_html": ("body_html", "body", "content_html", "content", "content_encoded"),
    "author": ("author", "authors", "creator", "byline"),
    "section": ("section", "category", "categories", "tags"),
    "image_url": ("image_url", "image", "banner_image", "thumbnail"),
    "image_alt": ("image_alt", "alt"),
    "image_credit": ("image_credit", "credit", "photo_credit"),
    "image_width": ("image_width",),
    "image_height": ("image_height",),
    "published_at": ("published_at", "published", "date_published", "pub_date", "pubdate",
                     "date"),
    "updated_at": ("updated_at", "updated", "date_modified", "modified"),
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_").replace(":", "_")


def _pick(record: Mapping[str, Any], field_: str) -> Any:
    """The first non-empty value among a field's accepted keys."""
    for alias in _ALIASES[field_]:
        value = record.get(alias)
        if value not in (None, "", [], {}):
            return value
    return None


def _text(value: Any) -> str:
    """A scalar as text; a list gives its first item; an object its name/term/url."""
    if isinstance(value, list):
        return _text(value[0]) if value else ""
    if isinstance(value, dict):
        for key in ("name", "term", "label", "url", "value"):
            if value.get(key):
                return _text(value[key])
        return ""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    return ""


def _line(text: str) -> str:
    """One line of plain text: control characters removed, whitespace collapsed."""
    return _SPACE.sub(" ", _CONTROL.sub("", text)).strip()


def _clip(text: str, limit: int) -> str:
    """Shorten text to at most limit characters, at a word boundary, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-") + "…"


def http_url(value: str) -> str | None:
    """value as an absolute http(s) URL, or None if it is not one."""
    url = value.strip()
    if not url or len(url) > MAX_URL or _CONTROL.search(url) or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def parse_date(value: Any) -> datetime | None:
    """A publish date as aware UTC; None when absent. Raises ValueError when unreadable.

    Accepts datetimes, ISO 8601 (with or without an offset; without one means UTC; a bare
    date means midnight UTC) and RFC 822 dates as used in RSS.
    """
    if isinstance(value, datetime):
        moment = value
    else:
        raw = _text(value).strip()
        if not raw:
            return None
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            try:
                moment = parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                raise ValueError(raw) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def normalise(record: Mapping[str, Any]) -> ArticleIn:
    """Turn one record (JSON/CSV keys, or a mapped feed entry) into an article.

    Raises SkipItem with the reason when the item has no title or no usable link.
    """
    keyed = {_key(str(k)): v for k, v in record.items()}
    title = _line(_text(_pick(keyed, "title")))
    raw_url = _line(_text(_pick(keyed, "url")))
    if not title:
        raise SkipItem(NO_TITLE)
    if not raw_url:
        raise SkipItem(NO_LINK)
    url = http_url(raw_url)
    if url is None:
        raise SkipItem(BAD_LINK)

    published: datetime | None = None
    unreadable = False
    for key in ("published_at", "updated_at"):
        try:
            published = parse_date(_pick(keyed, key))
        except ValueError:
            unreadable = True
            continue
        if published is not None:
            break
    if published is None and unreadable:
        raise SkipItem(BAD_DATE)

    guid = _line(_text(_pick(keyed, "guid"))) or None
    if guid is not None and len(guid) > MAX_GUID:
        guid = None  # too long to be an id we can index; match this item by URL instead
    body = sanitize_html(_text(_pick(keyed, "body_html")), base_url=url)
    summary = _line(html_to_text(_text(_pick(keyed, "summary"))))
    if not summary and body:
        summary = _clip(_line(html_to_text(body)), SUMMARY_LIMIT)
    image_url = http_url(_text(_pick(keyed, "image_url"))) or ""
    width, height = _pixels(_pick(keyed, "image_width")), _pixels(_pick(keyed, "image_height"))
    if not (image_url and width and height):
        width = height = 0  # a size is only useful whole, and only with a photo
    return ArticleIn(
        url=url,
        title=title,
        guid=guid,
        dek=_line(html_to_text(_text(_pick(keyed, "dek")))),
        summary=summary,
        body_html=body,
        author=_clip(_line(_text(_pick(keyed, "author"))), _LIMITS["author"]),
        section=_clip(_line(_text(_pick(keyed, "section"))), _LIMITS["section"]),
        image_url=image_url,
        image_alt=_line(_text(_pick(keyed, "image_alt"))) if image_url else "",
        image_credit=(
            _clip(_line(_text(_pick(keyed, "image_credit"))), _LIMITS["image_credit"])
            if image_url else ""
        ),
        image_width=width,
        image_height=height,
        published_at=published,
    )


#: The largest photo dimension believed; anything bigger is a typo or a trick.
MAX_IMAGE_PIXELS = 20_000


def _pixels(value: Any) -> int:
    """A stated image dimension ("1200", 1200, "1200px") as pixels, or 0 if unusable."""
    text = str(value if value is not None else "").strip().lower().removesuffix("px")
    if not text.isdigit() or not text.isascii():
        return 0
    number = int(text)
    return number if 0 < number <= MAX_IMAGE_PIXELS else 0


def normalise_records(
    records: Iterable[Mapping[str, Any]],
    name: str,
    fmt: str = "json",
    result: ParsedSource | None = None,
) -> ParsedSource:
    """Normalise records, counting skipped ones; a repeated item (same guid or URL) is kept once."""
    result = result or ParsedSource(name, fmt)
    seen_guids: set[str] = set()
    seen_urls: set[str] = set()
    for record in records:
        try:
            article = normalise(record)
        except SkipItem as skip:
            result.skipped[skip.reason] += 1
            continue
        if article.url in seen_urls or (article.guid and article.guid in seen_guids):
            # Feeds list newest first, so the first occurrence is the one kept.
            result.skipped[REPEATED] += 1
            continue
        seen_urls.add(article.url)
        if article.guid:
            seen_guids.add(article.guid)
        result.articles.append(article)
    return result


# --- HTML ------------------------------------------------------------------------------


def sanitize_html(html: str, base_url: str = "") -> str:
    """Clean untrusted HTML to the allowlist; relative links resolve against base_url.

    Links and images keep only absolute http(s) URLs (and mailto: for links), because the
    body may be shown in an email where relative URLs lead nowhere; every link gets rel.
    """
    if not html.strip():
        return ""

    def keep(tag: str, attribute: str, value: str) -> str | None:
        if attribute not in ("href", "src"):
            return value
        target = urljoin(base_url, value.strip()) if base_url else value.strip()
        scheme = urlsplit(target).scheme.lower()
        if scheme in ("http", "https") or (attribute == "href" and scheme == "mailto"):
            return target
        return None

    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=keep,
        url_schemes={"http", "https", "mailto"},
        link_rel=LINK_REL,
        strip_comments=True,
    ).strip()


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML fragment, without script and style contents."""

    _BLOCKS = frozenset({
        "p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
        "tr", "td", "th", "section", "article", "figure", "figcaption", "hr", "pre", "table",
    })
    _HIDDEN = frozenset({"script", "style", "template", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The visible text of an HTML fragment, entities decoded, whitespace collapsed."""
    if "<" not in html and "&" not in html:
        return _line(html)
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return _line("".join(extractor.parts))


# --- importing -------------------------------------------------------------------------


def store_sources(
    db: Database, parsed: Sequence[ParsedSource], *, now: datetime | None = None
) -> ImportReport:
    """Store parsed sources in one transaction: all of them, or nothing."""
    now = now or datetime.now(UTC)
    results: list[SourceResult] = []
    try:
        with db.write() as session:
            for source in parsed:
                counts = store.upsert_articles(session, source.articles, now=now)
                skipped = Counter(source.skipped)
                if counts.conflicts:
                    skipped[LINK_TAKEN] += counts.conflicts
                results.append(SourceResult(
                    source.name, counts.added, counts.updated, counts.unchanged, skipped,
                    list(source.warnings),
                ))
    except IntegrityError:
        # Only reachable when another process imports the same articles at this moment
        # (PostgreSQL) or URLs swap between two stored articles within one batch.
        raise InputError(
            "another import changed the same articles at the same time; nothing was "
            "imported, run the import again"
        ) from None
    return ImportReport(results)


def import_sources(
    db: Database,
    sources: Sequence[str],
    *,
    fmt: str | None = None,
    now: datetime | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = MAX_BYTES,
    lenient: bool = False,
) -> ImportReport:
    """Read, parse and store every source (files or http(s) URLs); nothing is stored on error."""
    parsed = [
        parse_source(
            read_source(source, timeout=timeout, max_bytes=max_bytes), source, fmt,
            lenient=lenient,
        )
        for source in sources
    ]
    return store_sources(db, parsed, now=now)


def import_records(
    db: Database,
    records: Iterable[Mapping[str, Any]],
    *,
    name: str = "records",
    now: datetime | None = None,
) -> SourceResult:
    """Store article dicts of the JSON import's shape (as sample_data builds) in one go."""
    return store_sources(db, [normalise_records(records, name)], now=now).sources[0]
