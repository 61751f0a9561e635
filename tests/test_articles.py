"""Article import: feeds, JSON and CSV in; normalised, sanitised, upserted once; listed by week."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from digest.articles import (
    BAD_LINK,
    LINK_TAKEN,
    NO_LINK,
    NO_TITLE,
    REPEATED,
    SkipItem,
    detect_format,
    fetch_url,
    html_to_text,
    import_records,
    import_sources,
    normalise,
    parse_source,
    sanitize_html,
)
from digest.cli import main
from digest.db import Database
from digest.errors import InputError
from digest.models import Article
from digest.sample_data import sample_articles, sample_subscribers
from digest.store.articles import count_articles

NOW = datetime(2025, 11, 22, 12, 0, tzinfo=UTC)


def stored(db: Database) -> dict[str, Article]:
    """Every stored article, keyed by URL."""
    with db.read() as session:
        return {a.url: a for a in session.scalars(select(Article))}


def snapshot(db: Database) -> list[tuple[Any, ...]]:
    """Every article row as plain values, to compare before and after a failed import."""
    with db.read() as session:
        rows = session.scalars(select(Article).order_by(Article.id))
        return [(a.id, a.guid, a.url, a.title, a.updated_at) for a in rows]


def invoke(runner: CliRunner, db_url: str, *args: str, **env: str) -> Any:
    return runner.invoke(main, ["--db", db_url, *args], env=env or None)


# --- RSS ---------------------------------------------------------------------------------


def test_rss_maps_namespaced_fields(db: Database, article_fixtures: Path) -> None:
    """dc:creator, category, description, media:content/description/credit and pubDate map."""
    import_sources(db, [str(article_fixtures / "feed.xml")], now=NOW)
    pilots = stored(db)["https://news.example.org/europe/harbour-pilots"]
    assert pilots.guid == "example-weekly-1001"
    assert pilots.title == "Harbour pilots vote to slow the night shift"  # trimmed, collapsed
    assert pilots.author == "Ingrid Solberg"
    assert pilots.section == "Europe"  # the first category
    assert pilots.summary == "Pilots want two people on every night transit."  # HTML stripped
    assert pilots.dek == ""
    assert pilots.image_url == "https://images.example.org/harbour-pilots.jpg"
    assert pilots.image_alt == "A pilot boat beside a container ship at dusk"
    assert pilots.image_credit == "Photo: Fjordline Images / Sindre Aas"
    assert (pilots.image_width, pilots.image_height) == (1600, 1067)  # media:content size
    # +0100 in the feed; stored as UTC.
    assert pilots.published_at == datetime(2025, 11, 18, 8, 30, tzinfo=UTC)


def test_rss_body_is_sanitised(db: Database, article_fixtures: Path) -> None:
    """content:encoded loses script, handlers, iframes and javascript: links; links get rel."""
    import_sources(db, [str(article_fixtures / "feed.xml")], now=NOW)
    body = stored(db)["https://news.example.org/europe/harbour-pilots"].body_html
    assert "fatigue, not pay" in body
    for bad in ("<script", "alert", "onclick", "onmouseover", "onerror", "<iframe", "javascript:"):
        assert bad not in body
    # Relative links resolve against the article; every link gets rel.
    assert 'href="https://news.example.org/europe/pilots-letter"' in body
    assert body.count('rel="noopener noreferrer nofollow"') == body.count("<a ")
    assert '<img alt="Chart" src="https://images.example.org/chart.png">' in body


def test_rss_thumbnail_title_alt_entities_and_image_enclosure(
    db: Database, article_fixtures: Path
) -> None:
    """media:thumbnail with media:title as alt; entities decoded; an image enclosure, not audio."""
    import_sources(db, [str(article_fixtures / "feed.xml")], now=NOW)
    articles = stored(db)
    growers = articles["https://news.example.org/latin-america/growers-coop"]
    assert (growers.image_width, growers.image_height) == (0, 0)  # the feed gives no size
    assert growers.title == "Growers’ co-op weighs coffee & cacao"
    assert growers.image_url == "https://images.example.org/growers-thumb.jpg"
    assert growers.image_alt == "Seedlings in black bags on a terrace"
    assert growers.published_at == datetime(2025, 11, 20, 4, 15, tzinfo=UTC)  # -0500
    patrol = articles["https://news.example.org/asia-pacific/patrol-pact"]
    assert patrol.image_url == "https://images.example.org/patrol.jpg"
    assert patrol.author == "Kiri Tane"  # not the desk's e-mail address
    assert patrol.section == "Asia-Pacific"


def test_rss_skips_are_counted_and_a_repeated_item_is_stored_once(
    db: Database, article_fixtures: Path
) -> None:
    """No title, no link, javascript: and relative links are skipped; a repeat is kept once."""
    report = import_sources(db, [str(article_fixtures / "feed.xml")], now=NOW)
    (result,) = report.sources
    assert (result.added, result.updated) == (3, 0)
    assert dict(result.skipped) == {NO_TITLE: 1, NO_LINK: 1, BAD_LINK: 2, REPEATED: 1}
    with db.read() as session:
        assert count_articles(session) == 3
    # The first occurrence of a repeated item is the one kept.
    pilots = stored(db)["https://news.example.org/europe/harbour-pilots"]
    assert "(repeated)" not in pilots.title


# --- Atom, JSON, CSV ---------------------------------------------------------------------


def test_atom(db: Database, article_fixtures: Path) -> None:
    """Atom: HTML titles become text, published then updated dates, enclosure and thumbnail."""
    report = import_sources(db, [str(article_fixtures / "atom.xml")], now=NOW)
    assert report.sources[0].line() == (
        f"Imported {article_fixtures / 'atom.xml'}: 2 added, 0 updated, 1 skipped "
        "(1 without a link)"
    )
    articles = stored(db)
    farms = articles["https://news.example.org/middle-east/desert-farms"]
    assert farms.title == "Water first: desert farms & their bills"
    assert farms.guid == "urn:example:weekly:2001"
    assert farms.author == "Samira Haddad"
    assert farms.section == "Middle East"
    assert farms.summary == "Greenhouses count every litre."
    assert farms.body_html == "<p>Growers say <strong>power</strong> costs more than water.</p>"
    assert farms.image_url == "https://images.example.org/desert-farms.png"
    assert farms.published_at == datetime(2025, 11, 18, 15, 0, tzinfo=UTC)  # published wins
    report_ = articles["https://news.example.org/mic/procurement-report"]
    assert report_.published_at == datetime(2025, 11, 21, 15, 45, tzinfo=UTC)  # from updated
    assert report_.image_url == "https://images.example.org/report.jpg"
    # Content only: the summary is the body's text (clipped), not the body's HTML.
    assert report_.summary.startswith("Start with the footnotes")


def test_json_array(db: Database, article_fixtures: Path) -> None:
    """JSON: canonical keys and common aliases; naive means UTC; no date means import time."""
    report = import_sources(db, [str(article_fixtures / "articles.json")], now=NOW)
    (result,) = report.sources
    assert result.added == 3
    assert dict(result.skipped) == {NO_LINK: 1, BAD_LINK: 1}
    articles = stored(db)
    trains = articles["https://news.example.org/europe/night-trains"]
    assert trains.dek == "Operators added sleepers faster than the network could schedule them."
    assert trains.summary == "Sleeper routes return across the continent."
    assert trains.body_html == "<p>Timetables are set a year ahead.</p>"
    assert trains.image_alt == "A sleeper carriage corridor with dimmed lights"
    assert trains.image_credit == "Photo: Railscape / Mia Kerr"
    assert trains.published_at == datetime(2025, 11, 19, 20, 30, tzinfo=UTC)  # +02:00
    cash = articles["https://news.example.org/latin-america/central-bank-cash"]
    assert cash.guid == "3002"  # "id" as a number
    assert cash.section == "Latin America"  # first of "categories"
    assert cash.summary == "Rural branches report record withdrawals."  # "description"
    assert cash.published_at == datetime(2025, 11, 20, 8, 0, tzinfo=UTC)  # naive: UTC
    assert articles["https://news.example.org/undated"].published_at == NOW


def test_json_lines(db: Database, article_fixtures: Path) -> None:
    """JSON lines: one object per line, blank lines ignored, offsets converted to UTC."""
    report = import_sources(db, [str(article_fixtures / "articles.jsonl")], now=NOW)
    assert report.sources[0].added == 2
    atoll = stored(db)["https://news.example.org/asia-pacific/atoll-solar"]
    assert atoll.published_at == datetime(2025, 11, 17, 18, 0, tzinfo=UTC)  # +13:00


def test_csv(db: Database, article_fixtures: Path) -> None:
    """CSV: header row, quoted commas, empty cells, a bare date is midnight UTC."""
    report = import_sources(db, [str(article_fixtures / "articles.csv")], now=NOW)
    (result,) = report.sources
    assert (result.added, dict(result.skipped)) == (2, {NO_TITLE: 1})
    articles = stored(db)
    shells = articles["https://news.example.org/mic/shell-plants"]
    assert shells.section == "Military Industrial Complex"
    assert shells.dek == "Orders doubled, the workforce did not."
    assert shells.image_credit == "Photo: Steelworks / Dana Pruitt"
    assert shells.published_at == datetime(2025, 11, 17, 23, 0, tzinfo=UTC)  # -08:00
    ledger = articles["https://news.example.org/latin-america/water-ledger"]
    assert ledger.published_at == datetime(2025, 11, 20, tzinfo=UTC)
    assert ledger.image_url == ledger.image_alt == ""


def test_csv_with_semicolons(db: Database, tmp_path: Path) -> None:
    """Spreadsheets in many locales write semicolons; the header line decides."""
    path = tmp_path / "export.csv"
    path.write_text(
        'Title;Link;Section\n"A harbour, a strike; a deal";https://news.example.org/a;Europe\n',
        encoding="utf-8",
    )
    import_sources(db, [str(path)], now=NOW)
    assert stored(db)["https://news.example.org/a"].title == "A harbour, a strike; a deal"


# --- re-import and matching ---------------------------------------------------------------


def test_reimport_updates_and_never_duplicates(
    db: Database, article_fixtures: Path, tmp_path: Path
) -> None:
    """The same feed again changes nothing; an edited feed updates in place."""
    feed = str(article_fixtures / "feed.xml")
    import_sources(db, [feed], now=NOW)
    again = import_sources(db, [feed], now=NOW + timedelta(hours=1)).sources[0]
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)
    assert again.line().startswith(f"Imported {feed}: 0 added, 0 updated, 3 unchanged, 5 skipped")

    edited = tmp_path / "feed.xml"
    edited.write_text(
        (article_fixtures / "feed.xml").read_text(encoding="utf-8")
        .replace("Island patrol pact signed", "Island patrol pact signed at last"),
        encoding="utf-8",
    )
    result = import_sources(db, [str(edited)], now=NOW + timedelta(hours=2)).sources[0]
    assert (result.added, result.updated, result.unchanged) == (0, 1, 2)
    with db.read() as session:
        assert count_articles(session) == 3
    patrol = stored(db)["https://news.example.org/asia-pacific/patrol-pact"]
    assert patrol.title == "Island patrol pact signed at last"
    assert patrol.updated_at == NOW + timedelta(hours=2)
    assert patrol.created_at == NOW


def test_match_by_guid_follows_a_changed_url(db: Database) -> None:
    """A guid match wins: a story whose URL changed is updated, not added again."""
    first = {"guid": "g-1", "url": "https://news.example.org/old-slug", "title": "Old"}
    import_records(db, [first], now=NOW)
    result = import_records(
        db, [{**first, "url": "https://news.example.org/new-slug", "title": "New"}], now=NOW
    )
    assert (result.added, result.updated) == (0, 1)
    assert list(stored(db)) == ["https://news.example.org/new-slug"]


def test_match_by_url_when_the_guid_is_new(db: Database) -> None:
    """Without a guid match the URL matches; a stored guid is kept, a missing one is filled."""
    url = "https://news.example.org/europe/bridge"
    import_records(db, [{"url": url, "title": "Bridge"}], now=NOW)
    result = import_records(db, [{"guid": "feed-7", "url": url, "title": "Bridge reopens"}])
    assert (result.added, result.updated) == (0, 1)
    assert stored(db)[url].guid == "feed-7"
    import_records(db, [{"guid": "other-feed-9", "url": url, "title": "Bridge reopens"}])
    assert stored(db)[url].guid == "feed-7"
    with db.read() as session:
        assert count_articles(session) == 1


def test_a_link_owned_by_another_article_is_skipped(db: Database) -> None:
    """Moving an article onto another article's URL would merge two stories: skip it."""
    import_records(db, [
        {"guid": "a", "url": "https://news.example.org/a", "title": "A"},
        {"guid": "b", "url": "https://news.example.org/b", "title": "B"},
    ], now=NOW)
    result = import_records(
        db, [{"guid": "a", "url": "https://news.example.org/b", "title": "A moved"}], now=NOW
    )
    assert dict(result.skipped) == {LINK_TAKEN: 1}
    assert stored(db)["https://news.example.org/b"].title == "B"


def test_a_url_freed_in_the_same_batch_can_be_taken(db: Database) -> None:
    """An article moving to a new URL frees its old one for a new article in the same import."""
    import_records(db, [{"guid": "a", "url": "https://news.example.org/x", "title": "A"}], now=NOW)
    result = import_records(db, [
        {"guid": "n", "url": "https://news.example.org/x", "title": "New at x"},
        {"guid": "a", "url": "https://news.example.org/y", "title": "A moved to y"},
    ], now=NOW)
    assert (result.added, result.updated, sum(result.skipped.values())) == (1, 1, 0)
    articles = stored(db)
    assert articles["https://news.example.org/x"].guid == "n"
    assert articles["https://news.example.org/y"].guid == "a"


def test_dateless_item_keeps_its_first_date(db: Database) -> None:
    """An item without a date gets the import time once, not a new week at every import."""
    item = {"url": "https://news.example.org/undated", "title": "Undated"}
    import_records(db, [item], now=NOW)
    result = import_records(db, [{**item, "title": "Undated, edited"}], now=NOW + timedelta(days=8))
    assert result.updated == 1
    assert stored(db)[item["url"]].published_at == NOW


def test_upsert_uses_a_few_queries_not_one_per_row(db: Database) -> None:
    """1,200 articles are loaded and written in batches, not one statement per row."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    records = [
        {"guid": f"bulk-{i}", "url": f"https://news.example.org/bulk/{i}", "title": f"Story {i}",
         "published_at": (NOW - timedelta(minutes=i)).isoformat()}
        for i in range(1200)
    ]
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        first = import_records(db, records, now=NOW)
        inserts = len(statements)
        statements.clear()
        second = import_records(db, [{**r, "title": r["title"] + "!"} for r in records], now=NOW)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert (first.added, second.updated) == (1200, 1200)
    assert inserts <= 12, statements
    assert len(statements) <= 12, statements


# --- all or nothing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad.xml", "bad.xml: not a readable RSS or Atom feed"),
        ("bad.json", "bad.json: not valid JSON (line 4, column 1"),
        ("no_header.csv", "no_header.csv: the first line must be a header naming a title"),
    ],
)
def test_malformed_source_exits_1_and_writes_nothing(
    runner: CliRunner, db_url: str, db: Database, article_fixtures: Path, name: str, message: str
) -> None:
    """A bad file fails the command with a message naming it, even after a good source."""
    import_records(db, [{"url": "https://news.example.org/kept", "title": "Kept"}], now=NOW)
    before = snapshot(db)
    for sources in ([name], ["feed.xml", name]):
        paths = [str(article_fixtures / s) for s in sources]
        result = invoke(runner, db_url, "import", *paths)
        assert result.exit_code == 1, result.output
        assert "Error: " in result.output and message in result.output
        assert "Imported" not in result.output
        assert snapshot(db) == before


def test_a_failing_write_rolls_back_earlier_sources(
    db: Database, article_fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All sources share one transaction: a failure while storing the second undoes the first."""
    from digest.store import articles as store

    real = store.upsert_articles
    calls = 0

    def fail_second(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "upsert_articles", fail_second)
    with pytest.raises(RuntimeError):
        import_sources(
            db, [str(article_fixtures / "feed.xml"), str(article_fixtures / "atom.xml")], now=NOW
        )
    with db.read() as session:
        assert count_articles(session) == 0


def test_a_truncated_feed_is_an_error_unless_lenient(
    runner: CliRunner, db_url: str, article_fixtures: Path, tmp_path: Path
) -> None:
    """Broken XML exits 1 and stores nothing; --lenient imports what feedparser recovered."""
    text = (article_fixtures / "feed.xml").read_text(encoding="utf-8")
    cut = tmp_path / "cut.xml"
    cut.write_text(text[: text.index("<title>Island patrol")], encoding="utf-8")
    strict = invoke(runner, db_url, "import", str(cut))
    assert strict.exit_code == 1
    assert "not well-formed XML" in strict.output and "--lenient" in strict.output
    assert "Imported" not in strict.output
    result = invoke(runner, db_url, "import", "--lenient", str(cut))
    assert result.exit_code == 0, result.output
    assert f"Warning: {cut}: the feed is not well-formed" in result.stderr
    assert f"Imported {cut}: 2 added" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"just some words", "cannot tell whether this is a feed, JSON or CSV; use --format"),
        (b'[{"title": "x"}, 3]', "item 2 is not a JSON object"),
        (b'{"title": "a", "url": "https://e.example.org/a"}\nnot json\n',
         "line 2 is not valid JSON"),
        (b"\xff\xfe title,url", "not UTF-8 text"),
        (b"<html><body><p>Hello</p></body></html>", "not a readable RSS or Atom feed"),
    ],
)
def test_unreadable_content_is_an_input_error(content: bytes, message: str) -> None:
    """Each kind of unreadable input gets a message that says what is wrong."""
    with pytest.raises(InputError, match=r"^upload\.dat: ") as info:
        parse_source(content, "upload.dat")
    assert message in str(info.value)


def test_missing_file(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    """A path that does not exist is named in the error."""
    result = invoke(runner, db_url, "import", str(tmp_path / "nope.xml"))
    assert result.exit_code == 1
    assert f"Error: {tmp_path / 'nope.xml'}: no such file" in result.output


# --- CLI ---------------------------------------------------------------------------------


def test_cli_import_prints_a_line_per_source_and_a_total(
    runner: CliRunner, db_url: str, article_fixtures: Path
) -> None:
    """Each source gets a summary line; several sources also get a total."""
    feed, csv_ = str(article_fixtures / "feed.xml"), str(article_fixtures / "articles.csv")
    result = invoke(runner, db_url, "import", feed, csv_)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"Imported {feed}: 3 added, 0 updated, 5 skipped (2 {BAD_LINK}, 1 {REPEATED}, "
        f"1 {NO_LINK}, 1 {NO_TITLE})",
        f"Imported {csv_}: 2 added, 0 updated, 1 skipped (1 {NO_TITLE})",
        f"Total: 5 added, 0 updated, 6 skipped (2 {BAD_LINK}, 2 {NO_TITLE}, 1 {REPEATED}, "
        f"1 {NO_LINK})",
    ]


def test_cli_format_option_forces_the_parser(
    runner: CliRunner, db_url: str, article_fixtures: Path, tmp_path: Path
) -> None:
    """--format overrides detection, and a wrong one fails clearly."""
    lines = tmp_path / "articles.txt"
    lines.write_bytes((article_fixtures / "articles.jsonl").read_bytes())
    result = invoke(runner, db_url, "import", "--format", "jsonl", str(lines))
    assert result.exit_code == 0, result.output
    assert "2 added" in result.output
    result = invoke(runner, db_url, "import", "--format", "csv", str(article_fixtures / "feed.xml"))
    assert result.exit_code == 1
    assert "the first line must be a header" in result.output


def test_detect_format_by_content_then_extension() -> None:
    """Content decides; the extension only breaks ties."""
    assert detect_format(b"  <?xml version='1.0'?><rss/>", "x.json") == "feed"
    assert detect_format(b"[]", "x.csv") == "json"
    assert detect_format(b'{"title": "a"}', "x") == "json"
    assert detect_format(b'{"title": "a"}\n{"title": "b"}\n', "x") == "jsonl"
    assert detect_format(b'{"title": "a"}\n{"title": "b"}\n', "x.json") == "jsonl"
    assert detect_format(b'{"title": "a",\n', "x.json") == "json"  # broken: report as JSON
    assert detect_format(b"title,url\n", "export") == "csv"
    assert detect_format(b"title url\n", "export.csv") == "csv"


def test_cli_articles_week(
    runner: CliRunner, db_url: str, article_fixtures: Path, tmp_path: Path
) -> None:
    """`digest articles --week` lists the ISO week's articles in the configured time zone."""
    feed = str(article_fixtures / "feed.xml")
    long_title = tmp_path / "long.json"
    long_title.write_text(json.dumps([{
        "url": "https://news.example.org/europe/long", "section": "Europe",
        "title": "A very long headline about harbour pilots, night shifts and the unions",
        "published_at": "2025-11-17T00:30:00+01:00",
    }]), encoding="utf-8")
    assert invoke(runner, db_url, "import", feed, str(long_title)).exit_code == 0
    result = invoke(runner, db_url, "articles", "--week", "2025-W47",
                    DIGEST_TIMEZONE="Europe/Berlin")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["Published", "Section", "Title", "Author", "URL"]
    assert lines[1].startswith("2025-11-20 07:00  Asia-Pacific ")  # 06:00 UTC, CET is +1
    assert lines[1].endswith("  https://news.example.org/asia-pacific/patrol-pact")
    assert lines[2].startswith("2025-11-20 05:15  Latin America ")
    assert "Growers’ co-op weighs coffee & cacao" in lines[2]
    assert lines[3].startswith("2025-11-18 09:30  Europe ")
    assert "  Harbour pilots vote to slow the night shift  " in lines[3]
    assert "Ingrid Solberg" in lines[3]
    assert lines[4].startswith("2025-11-17 00:30  Europe ")  # first minutes of the week
    assert "  A very long headline about harbour pilots, nigh…  -  " in lines[4]
    assert lines[5] == (
        "4 articles from 2025-11-17 00:00 to 2025-11-24 00:00 (Europe/Berlin)."
    )

    europe = invoke(runner, db_url, "articles", "--week", "2025-W47", "--section", "europe")
    assert europe.output.splitlines()[-1].startswith("1 article in section 'europe' from")
    empty = invoke(runner, db_url, "articles", "--week", "2025-W40")
    assert empty.output.startswith("No articles from 2025-09-29 00:00 to 2025-10-06 00:00 (UTC)")
    bad = invoke(runner, db_url, "articles", "--week", "2025-W47", "--since", "2025-11-01")
    assert bad.exit_code == 1
    assert "either --week or --since/--until" in bad.output


# --- URL import ---------------------------------------------------------------------------


def test_url_import(
    runner: CliRunner, db_url: str, db: Database, feed_server: str
) -> None:
    """An http URL is fetched (local server) and imported like a file."""
    url = f"{feed_server}/feed.xml"
    result = invoke(runner, db_url, "import", url, f"{feed_server}/articles.json")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(f"Imported {url}: 3 added")
    with db.read() as session:
        assert count_articles(session) == 6


def test_url_errors_are_clear(runner: CliRunner, db_url: str, feed_server: str) -> None:
    """HTTP errors, timeouts, oversized bodies and redirects to files are refused by name."""
    missing = invoke(runner, db_url, "import", f"{feed_server}/missing.xml")
    assert missing.exit_code == 1
    assert f"Error: {feed_server}/missing.xml: the server answered HTTP 404" in missing.output
    with pytest.raises(InputError, match=r"not received within 0\.2 seconds"):
        fetch_url(f"{feed_server}/slow", timeout=0.2)
    with pytest.raises(InputError, match="larger than 100 bytes"):
        fetch_url(f"{feed_server}/feed.xml", max_bytes=100)
    with pytest.raises(InputError, match="redirected to a URL that is not http"):
        fetch_url(f"{feed_server}/to-file")


# --- normalisation and HTML --------------------------------------------------------------


def test_html_to_text_drops_markup_and_hidden_content() -> None:
    """Tags go, entities are decoded, script/style text is not text, blocks get spaces."""
    assert html_to_text("<p>One&nbsp;&amp;</p><p>two</p><script>x()</script>") == "One & two"
    assert html_to_text("a < b and c > d") == "a < b and c > d"
    assert html_to_text("plain   text\n here") == "plain text here"


def test_sanitize_keeps_the_allowlist_only() -> None:
    """Only allowlisted tags and attributes survive; images need absolute http(s) sources."""
    dirty = (
        '<h2 style="color:red" class="x">Head</h2><table><tr><td>cell</td></tr></table>'
        '<img src="data:image/png;base64,AAAA"><a href="mailto:desk@news.example.org">mail</a>'
        '<form action="https://e.example.org"><input></form><svg onload="x()"></svg>'
    )
    clean = sanitize_html(dirty, base_url="https://news.example.org/a")
    assert clean.startswith("<h2>Head</h2>cell<img>")
    assert '<a href="mailto:desk@news.example.org" rel="noopener noreferrer nofollow">' in clean
    for bad in ("style", "class", "<table", "data:", "<form", "<input", "<svg", "onload"):
        assert bad not in clean


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "/relative", "news.example.org/x", "http://", "ftp://e.example.org/",
     "https://exa mple.org/", "https://[::1", "data:text/html,hi"],
)
def test_links_must_be_absolute_http(url: str) -> None:
    """Anything but an absolute http(s) URL is rejected."""
    with pytest.raises(SkipItem) as info:
        normalise({"title": "T", "url": url})
    assert info.value.reason == BAD_LINK


def test_dates() -> None:
    """Offsets convert to UTC, RFC 822 is accepted, an unreadable date skips the item."""

    def published(value: str) -> datetime | None:
        record = {"title": "T", "url": "https://e.example.org/", "date": value}
        return normalise(record).published_at

    assert published("2025-11-18T09:30:00+05:30") == datetime(2025, 11, 18, 4, 0, tzinfo=UTC)
    assert published("2025-11-18T09:30:00Z") == datetime(2025, 11, 18, 9, 30, tzinfo=UTC)
    rfc822 = published("Tue, 18 Nov 2025 09:30:00 -0800")
    assert rfc822 == datetime(2025, 11, 18, 17, 30, tzinfo=UTC)
    assert published("") is None
    with pytest.raises(SkipItem, match="unreadable date"):
        published("last Tuesday")
    # An unreadable published date falls back to a readable updated one.
    fallback = normalise({"title": "T", "url": "https://e.example.org/", "published": "soon",
                          "updated": "2025-11-19"})
    assert fallback.published_at == datetime(2025, 11, 19, tzinfo=UTC)


def test_text_fields_are_cleaned_and_fit_their_columns() -> None:
    """Control characters (terminal escapes) go; long authors are clipped; long guids dropped."""
    article = normalise({
        "title": "Red\x1b[31m alert\x07", "url": " https://e.example.org/a ",
        "author": "A" * 400, "guid": "g" * 2000, "image_url": "javascript:x",
        "image_alt": "alt without an image",
    })
    assert article.title == "Red[31m alert"
    assert article.url == "https://e.example.org/a"
    assert len(article.author) == 300 and article.author.endswith("…")
    assert article.guid is None
    assert (article.image_url, article.image_alt) == ("", "")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["title", "url", "guid", "summary", "body_html", "dek", "author",
                     "section", "image_url", "published_at", "categories"]),
    st.one_of(st.text(), st.integers(), st.none(), st.lists(st.text(), max_size=3)),
))
def test_normalise_never_crashes(record: dict[str, Any]) -> None:
    """Arbitrary record values either normalise or skip with a reason; nothing else escapes."""
    try:
        article = normalise(record)
    except SkipItem as skip:
        assert skip.reason
        return
    assert article.title and article.url.startswith(("http://", "https://"))
    assert "<script" not in article.body_html.lower()


# --- sample data -------------------------------------------------------------------------


def test_sample_articles_are_this_weeks_and_import_cleanly(db: Database) -> None:
    """The demo articles cover five sections over the last five days and import as they are."""
    now = datetime.now(UTC)
    records = sample_articles(now)
    assert len(records) == 24  # a full issue at the default total_cap
    assert {r["section"] for r in records} == {
        "Europe", "Latin America", "Asia-Pacific", "Middle East", "Military Industrial Complex",
    }
    for record in records:
        published = datetime.fromisoformat(record["published_at"])
        assert now - timedelta(days=5) <= published <= now
        assert record["url"].startswith("https://news.example.org/")
        assert record["title"] and record["dek"] and record["author"]
        if record["image_url"]:
            assert record["image_url"].startswith("https://images.example.org/")
            assert record["image_alt"] and record["image_credit"]
            assert (record["image_width"], record["image_height"]) == (1200, 675)
    assert sum(not r["image_url"] for r in records) == 2  # the text-only card, twice
    result = import_records(db, records, name="demo")
    assert (result.added, sum(result.skipped.values())) == (24, 0)
    again = import_records(db, sample_articles(now), name="demo")
    assert (again.added, again.unchanged) == (0, 24)


def test_sample_subscribers() -> None:
    """Five invented readers at example domains, some with chosen sections."""
    subscribers = sample_subscribers()
    assert len(subscribers) == 5
    for subscriber in subscribers:
        assert subscriber["email"].endswith(("@example.com", "@example.org"))
        assert isinstance(subscriber["sections"], list)
    assert any(s["sections"] for s in subscribers)
    assert any(not s["sections"] for s in subscribers)


def test_image_sizes_from_json_are_kept_only_when_whole_and_plausible(db: Database) -> None:
    """A photo's width and height make the email's layout hold with images off; a half-given
    or absurd size is dropped rather than guessed."""
    base = {"title": "T", "section": "Europe", "published_at": "2025-11-18T08:00:00Z",
            "image_url": "https://images.example.org/p.jpg"}
    records = [
        {**base, "url": "https://news.example.org/a", "image_width": 1200, "image_height": "800"},
        {**base, "url": "https://news.example.org/b", "image_width": "900px", "image_height": 600},
        {**base, "url": "https://news.example.org/c", "image_width": 1200},
        {**base, "url": "https://news.example.org/d", "image_width": -5, "image_height": 10},
        {**base, "url": "https://news.example.org/e", "image_width": 10**9, "image_height": 10},
        {**base, "url": "https://news.example.org/f", "image_url": "", "image_width": 100,
         "image_height": 100},
    ]
    import_records(db, records, name="sizes")
    sizes = {u.rsplit("/", 1)[1]: (a.image_width, a.image_height) for u, a in stored(db).items()}
    assert sizes == {"a": (1200, 800), "b": (900, 600), "c": (0, 0), "d": (0, 0), "e": (0, 0),
                     "f": (0, 0)}
