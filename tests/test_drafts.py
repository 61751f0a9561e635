"""An editor's hand on an issue: draft, edit, show, discard; what preview, check and send do then.

Every test drives the CLI (CliRunner) against a real database: a SQLite file in tmp_path,
and PostgreSQL when DIGEST_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, insert, select

from digest.cli import main
from digest.config import Settings
from digest.db import Database
from digest.issues import parse_week, week_of
from digest.mail.memory import MemoryBackend
from digest.models import Article, Delivery, Issue, IssueArticle
from digest.schedule import Schedule
from tests.conftest import digest_env, seed_subscribers

WEEK = "2025-W47"  # Monday 17 to Monday 24 November 2025, UTC
NEXT = "2025-W48"


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """DIGEST_* variables: the test database, the memory backend, two articles per section."""
    MemoryBackend.clear()
    return digest_env(settings, DIGEST_BACKEND="memory", DIGEST_SECTION_CAP="2",
                      DIGEST_SECTIONS="Europe,Asia")


def add_articles(db: Database, week: str, rows: list[tuple[str, str]], *,
                 hours: int = 0) -> dict[str, int]:
    """Articles (slug, section) published in week, the first oldest; returns slug: id."""
    start = parse_week(week, Settings().tz).start
    with db.write() as session:
        session.execute(insert(Article), [
            {"url": f"https://news.example.org/{slug}", "title": f"Story {slug}",
             "section": section, "published_at": start + timedelta(hours=hours + i + 1),
             "dek": f"What happened in {slug}.", "summary": f"Summary of {slug}."}
            for i, (slug, section) in enumerate(rows)
        ])
    with db.read() as session:
        return {a.url.rsplit("/", 1)[1]: a.id for a in session.scalars(select(Article))}


@pytest.fixture
def newsroom(db: Database) -> dict[str, int]:
    """W47: three Europe stories (cap 2, so the oldest is in "more stories"), two Asia."""
    ids = add_articles(db, WEEK, [("eu-1", "Europe"), ("eu-2", "Europe"), ("eu-3", "Europe"),
                                  ("asia-1", "Asia"), ("asia-2", "Asia")])
    seed_subscribers(db, 3)
    return ids


def run(runner: CliRunner, env: dict[str, str], *args: str) -> Result:
    return runner.invoke(main, list(args), env=env)


def ok(runner: CliRunner, env: dict[str, str], *args: str) -> str:
    result = run(runner, env, *args)
    assert result.exit_code == 0, result.output
    return result.output


def order(show: str) -> list[str]:
    """The story lines of `digest issue show`, e.g. "Europe 1 eu-3 (lead)"."""
    out, section = [], ""
    for line in show.splitlines():
        if line and not line.startswith((" ", "Issue", "Change it", "warning")):
            section = line
        elif line.strip()[:1].isdigit() or line.strip().startswith("-"):
            mark, _, rest = line.strip().partition(" ")
            slug = " ".join(rest.split("] Story ", 1)[1].split())
            out.append(f"{section} {mark.rstrip('.')} {slug}")
    return out


def sent() -> list[EmailMessage]:
    out = []
    for message in MemoryBackend.outbox:
        parsed = message_from_bytes(message.data, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        out.append(parsed)
    return out


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def stories_in(text: str) -> list[str]:
    """Slugs of the stories in a text part, in reading order ("more stories" included)."""
    return [m[1] for m in re.finditer(r"^(?:\* )?Story (\S+)", text, re.MULTILINE)]


def counts(db: Database) -> tuple[int, int]:
    with db.read() as session:
        return (int(session.scalar(select(func.count()).select_from(Issue)) or 0),
                int(session.scalar(select(func.count()).select_from(Delivery)) or 0))


# ------------------------------------------------------------------------------ drafting


def test_draft_freezes_the_selection_with_no_deliveries(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    output = ok(runner, env, "draft", "--week", WEEK)
    assert output.startswith(f"Drafted issue 1 ({WEEK}) with 5 article(s); nothing is sent yet.")
    assert order(output) == ["Europe 1 eu-3 (lead)", "Europe 2 eu-2", "Asia 1 asia-2",
                             "Asia 2 asia-1", "More stories 1 eu-1"]
    assert counts(db) == (1, 0)
    assert "draft" in ok(runner, env, "issues")
    # Frozen: an article imported afterwards is not in the draft.
    add_articles(db, WEEK, [("late", "Europe")], hours=100)
    assert "late" not in ok(runner, env, "issue", "show", WEEK)
    again = run(runner, env, "issue", "new", "--week", WEEK)
    assert again.exit_code == 1
    assert f"issue 1 ({WEEK}) is already a draft: change it with digest issue edit" in (
        again.output)
    assert counts(db) == (1, 0)


def test_a_week_with_no_articles_makes_no_draft(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    result = run(runner, env, "draft", "--week", NEXT)
    assert result.exit_code == 1
    assert f"no articles for {NEXT}: nothing to draft" in result.output
    assert counts(db) == (0, 0)


def test_every_edit_changes_the_draft_and_the_preview(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int],
    tmp_path: Path,
) -> None:
    ok(runner, env, "draft", "--week", WEEK)
    ids = newsroom

    shown = ok(runner, env, "issue", "edit", WEEK, "--lead", str(ids["asia-1"]))
    assert order(shown)[:3] == ["Asia 1 asia-1 (lead, pinned)", "Asia 2 asia-2", "Europe 1 eu-3"]

    shown = ok(runner, env, "issue", "edit", WEEK, "--drop", "https://news.example.org/eu-2")
    assert "Europe 2 eu-2" not in order(shown)
    assert "Dropped (left out of this issue; free for a later one) - eu-2" in order(shown)

    shown = ok(runner, env, "issue", "edit", WEEK, "--add", str(ids["eu-1"]))
    assert "Europe 2 eu-1 (pinned)" in order(shown)  # out of "more stories", into Europe

    shown = ok(runner, env, "issue", "edit", WEEK, "--move", str(ids["eu-1"]), "--to", "1")
    assert order(shown)[2:4] == ["Europe 1 eu-1 (pinned)", "Europe 2 eu-3"]

    shown = ok(runner, env, "issue", "edit", WEEK, "--lead", str(ids["eu-3"]),
               "--section-order", "Asia,Europe")
    # The lead's section opens the issue; the rest follow the order given.
    assert order(shown)[:4] == ["Europe 1 eu-3 (lead, pinned)", "Europe 2 eu-1 (pinned)",
                                "Asia 1 asia-1 (pinned)", "Asia 2 asia-2"]
    assert "the lead's section still opens the issue" in shown

    note = tmp_path / "note.md"
    note.write_text("A **short** note from the desk.\n", encoding="utf-8")
    shown = ok(runner, env, "issue", "edit", WEEK, "--subject", "Ferries and frost",
               "--preheader", "Plus: a note from the desk", "--intro", str(note))
    assert "  subject    Ferries and frost\n" in shown
    assert "  preheader  Plus: a note from the desk\n" in shown
    assert "  intro      1 line(s)" in shown

    text = ok(runner, env, "preview", "--week", WEEK, "--format", "text")
    assert stories_in(text) == ["eu-3", "eu-1", "asia-1", "asia-2"]
    assert "note from the desk." in text
    html = ok(runner, env, "preview", "--week", WEEK)
    assert "Ferries and frost" in html and "Plus: a note from the desk" in html

    # "" restores the defaults.
    shown = ok(runner, env, "issue", "edit", WEEK, "--subject", "", "--preheader", "")
    assert "  subject    Story eu-3 and 3 more stories  (default)" in shown
    assert "  preheader  Story eu-1 · Story asia-1  (default)" in shown


def test_edit_errors_change_nothing(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    ok(runner, env, "draft", "--week", WEEK)
    before = ok(runner, env, "issue", "show", WEEK)
    cases = [
        (["--add", "https://news.example.org/nope"], "no stored article"),
        (["--drop", str(newsroom["eu-2"]), "--section-order", "Europe,Africa"],
         "section(s) 'Africa' are not in this issue; it has: Europe, Asia"),
        (["--lead", str(newsroom["asia-1"]), "--move", str(newsroom["asia-1"]), "--to", "2"],
         "is the lead, which always opens the issue"),
        (["--subject", "x" * 151], "the subject is 151 characters; the limit is 150"),
    ]
    for args, message in cases:
        result = run(runner, env, "issue", "edit", WEEK, *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output
        assert ok(runner, env, "issue", "show", WEEK) == before
    usage = run(runner, env, "issue", "edit", WEEK, "--move", "3")
    assert usage.exit_code == 2 and "--move ID and --to N go together" in usage.output
    nothing = run(runner, env, "issue", "edit", WEEK)
    assert nothing.exit_code == 1 and "nothing to change" in nothing.output
    missing = run(runner, env, "issue", "edit", NEXT, "--drop", "1")
    assert missing.exit_code == 1 and "digest draft --week" in missing.output


def test_discard_frees_the_articles(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    ok(runner, env, "draft", "--week", WEEK)
    cancel = run(runner, env, "issues", "cancel", WEEK, "--yes")
    assert cancel.exit_code == 1
    assert f"delete a draft with digest issue discard {WEEK}" in cancel.output
    assert ok(runner, env, "issue", "discard", WEEK, "--yes") == (
        f"Discarded draft issue 1 ({WEEK}).\n")
    assert counts(db) == (0, 0)
    assert ok(runner, env, "draft", "--week", WEEK).startswith("Drafted issue 1")


# ------------------------------------------------------------------------------ pins, drops


def test_a_pinned_article_beyond_the_section_cap_is_sent_and_a_dropped_one_is_not(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    ok(runner, env, "draft", "--week", WEEK)
    # Asia already holds its cap of 2; a third Asia story added by hand goes in anyway.
    extra = add_articles(db, WEEK, [("asia-3", "Asia")], hours=50)["asia-3"]
    shown = ok(runner, env, "issue", "edit", WEEK, "--add", str(extra),
               "--drop", str(newsroom["asia-2"]))
    assert "Asia 3 asia-3 (pinned)" not in order(shown)  # asia-2 left, so asia-3 is second
    assert "Asia 2 asia-3 (pinned)" in order(shown)
    shown = ok(runner, env, "issue", "edit", WEEK, "--add", str(newsroom["asia-2"]))
    assert [line for line in order(shown) if line.startswith("Asia")] == [
        "Asia 1 asia-1", "Asia 2 asia-3 (pinned)", "Asia 3 asia-2 (pinned)"]
    ok(runner, env, "issue", "edit", WEEK, "--drop", str(newsroom["eu-2"]))

    output = ok(runner, env, "send", "--week", WEEK)
    assert "Created issue 1 (2025-W47) with 3 deliveries." in output
    messages = sent()
    assert len(messages) == 3
    assert stories_in(text_of(messages[0])) == ["eu-3", "asia-1", "asia-3", "asia-2", "eu-1"]
    assert "eu-2" not in text_of(messages[0])


def test_the_never_twice_rule_holds_after_pins_and_drops(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    ok(runner, env, "draft", "--week", WEEK)
    ok(runner, env, "issue", "edit", WEEK, "--drop", str(newsroom["eu-2"]))
    ok(runner, env, "send", "--week", WEEK)

    # The next week's automatic selection leaves out what went out, not what was dropped.
    add_articles(db, NEXT, [("next-1", "Europe")])
    span = ["--since", "2025-11-17", "--until", "2025-12-01"]
    text = ok(runner, env, "preview", *span, "--format", "text")
    assert sorted(stories_in(text)) == ["eu-2", "next-1"]
    again = ok(runner, env, "preview", *span, "--format", "text", "--include-sent")
    assert sorted(stories_in(again)) == ["asia-1", "asia-2", "eu-1", "eu-2", "eu-3", "next-1"]

    ok(runner, env, "draft", "--week", NEXT)
    refused = run(runner, env, "issue", "edit", NEXT, "--add", str(newsroom["eu-3"]))
    assert refused.exit_code == 1
    assert "already went out in issue 1 (2025-W47)" in refused.output
    assert "--include-sent" in refused.output
    shown = ok(runner, env, "issue", "edit", NEXT, "--add", str(newsroom["eu-2"]))
    assert "Europe 2 eu-2 (pinned)" in order(shown)
    assert "was published outside this issue's window" in shown
    shown = ok(runner, env, "issue", "edit", NEXT, "--add", str(newsroom["eu-3"]),
               "--include-sent")
    assert "Europe 3 eu-3 (pinned)" in order(shown)
    with db.read() as session:
        rows = session.execute(select(IssueArticle.issue_id, IssueArticle.article_id,
                                      IssueArticle.choice)).all()
    assert (1, newsroom["eu-2"], "dropped") in rows
    assert (2, newsroom["eu-2"], "pinned") in rows


# ------------------------------------------------------------------------------ subject


def test_subject_cap_and_warning(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    long = " ".join(["word"] * 112)  # 559 characters, like the 562 of the report
    for command in (["send", "--week", WEEK], ["preview", "--week", WEEK],
                    ["check", "--week", WEEK]):
        result = run(runner, env, *command, "--subject", long)
        assert result.exit_code == 1, result.output
        assert f"the issue's subject is {len(long)} characters; the limit is 150" in (
            result.output)
    assert counts(db) == (0, 0)

    wordy = "A subject that goes on and on, well past what any inbox shows in its list view."
    assert 78 < len(wordy) <= 150
    check = run(runner, env, "check", "--week", WEEK, "--subject", wordy)
    assert check.exit_code == 0, check.output
    assert f"warning: The subject is {len(wordy)} characters; inboxes show about 78" in (
        check.output)
    ok(runner, env, "draft", "--week", WEEK)
    edited = ok(runner, env, "issue", "edit", WEEK, "--subject", wordy)
    assert f"  subject    {wordy}\n" in edited
    assert f"warning: the subject is {len(wordy)} characters" in edited


def test_default_subject_names_the_lead_and_counts_the_rest(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    seed_subscribers(db, 1)
    add_articles(db, WEEK, [("only", "Europe")])
    check = ok(runner, env, "check", "--week", WEEK)
    assert "subject 'Story only'" in check  # never "and 0 more"

    headline = ("Harbour towns bet on ferries as the rail strikes drag on into a third "
                "winter of closures")
    with db.write() as session:
        session.execute(insert(Article), [{
            "url": "https://news.example.org/long", "title": headline, "section": "Europe",
            "published_at": datetime(2025, 11, 23, 12, tzinfo=UTC),
        }])
    check = ok(runner, env, "check", "--week", WEEK)
    subject = check.split("subject '", 1)[1].split("'\n", 1)[0]
    assert subject == ("Harbour towns bet on ferries as the rail strikes drag on… and 1 more "
                       "story")
    assert len(subject) <= 78
    assert "warning: The subject" not in check


# ------------------------------------------------------------------------------ the date


def test_an_issue_is_dated_the_day_it_is_sent(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    """W47 ends on Sunday 23 November; sent today, it is dated today."""
    today = datetime.now(UTC).date()
    ok(runner, env, "send", "--week", WEEK)
    text = text_of(sent()[0])
    assert f"Issue 1 · {today.day} {today:%B %Y}" in text
    assert "23 November 2025" not in text
    with db.read() as session:
        assert session.scalars(select(Issue.issue_date)).one() == today


def test_a_scheduled_issue_is_dated_its_scheduled_day(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    """Due Friday 21 November 09:00 (the default schedule); cron catches up on Saturday."""
    saturday = datetime(2025, 11, 22, 8, tzinfo=UTC)
    ok(runner, env, "send", "--if-due", "--now", saturday.isoformat())
    assert "Issue 1 · 21 November 2025" in text_of(sent()[0])


def test_a_draft_for_the_next_scheduled_issue_sent_early_is_dated_the_day_it_goes(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    """The preview shows the scheduled day; sent by hand before it, the issue is dated today."""
    seed_subscribers(db, 1)
    now = datetime.now(UTC)
    schedule = Schedule.from_settings(Settings())
    window = schedule.window(schedule.next_runs(now, 1)[0])
    with db.write() as session:
        session.execute(insert(Article), [{
            "url": "https://news.example.org/early", "title": "Story early",
            "section": "Europe", "published_at": max(window.start, now - timedelta(seconds=30)),
        }])
    due = window.end.date()
    drafted = ok(runner, env, "draft")
    assert f"Drafted issue 1 ({window.label})" in drafted
    assert f"dated      {due.day} {due:%B %Y}" in drafted
    ok(runner, env, "send")
    today = datetime.now(UTC).date()
    assert f"Issue 1 · {today.day} {today:%B %Y}" in text_of(sent()[0])


# ------------------------------------------------------------------------------ send a draft


def test_send_if_due_sends_the_edited_draft(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    """Drafted on Wednesday for Friday's scheduled issue, edited, then sent by cron."""
    wednesday = datetime(2025, 11, 19, 15, tzinfo=UTC)
    output = ok(runner, env, "draft", "--now", wednesday.isoformat())
    assert output.startswith("Drafted issue 1 (2025-W47)")
    assert "dated      21 November 2025" in output  # Friday, the scheduled day
    ok(runner, env, "issue", "edit", WEEK, "--lead", str(newsroom["asia-1"]),
       "--drop", str(newsroom["eu-2"]), "--subject", "The editor's pick")

    early = ok(runner, env, "send", "--if-due", "--now", "2025-11-21T08:55:00")
    assert MemoryBackend.outbox == [] and "already" not in early
    output = ok(runner, env, "send", "--if-due", "--now", "2025-11-21T09:05:00")
    assert "3 sent, 0 failed, 0 pending" in output
    messages = sent()
    assert len(messages) == 3
    assert messages[0]["Subject"] == "The editor's pick"
    text = text_of(messages[0])
    assert stories_in(text)[0] == "asia-1" and "eu-2" not in text
    assert "Issue 1 · 21 November 2025" in text
    assert counts(db) == (1, 3)
    again = ok(runner, env, "send", "--if-due", "--now", "2025-11-21T09:10:00")
    assert "already sent" in again and len(MemoryBackend.outbox) == 3
    refused = run(runner, env, "issue", "edit", WEEK, "--drop", str(newsroom["eu-3"]))
    assert refused.exit_code == 1 and "is sent: it can no longer be drafted or edited" in (
        refused.output)


def test_a_stale_draft_is_not_sent_by_cron(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    """Missed by more than the grace window, the week is skipped and its draft kept."""
    ok(runner, env, "draft", "--now", "2025-11-19T15:00:00")
    output = ok(runner, env, "send", "--if-due", "--now", "2025-11-23T09:05:00")
    assert "so that week is skipped" in output and "(its draft, issue 1, is kept)" in output
    assert MemoryBackend.outbox == []
    assert "draft, not sent yet" in ok(runner, env, "issue", "show", WEEK)


def test_if_due_without_a_draft_builds_the_automatic_issue(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    ok(runner, env, "send", "--if-due", "--now", "2025-11-21T09:05:00")
    assert stories_in(text_of(sent()[0])) == ["eu-3", "eu-2", "asia-2", "asia-1", "eu-1"]


def test_send_without_a_week_sends_the_draft_and_refuses_new_words(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    ok(runner, env, "draft", "--week", WEEK)
    ok(runner, env, "issue", "edit", WEEK, "--drop", str(newsroom["eu-3"]))
    refused = run(runner, env, "send", "--subject", "Another subject")
    assert refused.exit_code == 1
    assert f"is a draft: change its subject, preheader or intro with digest issue edit {WEEK}" \
        in refused.output
    assert counts(db) == (1, 0)
    output = ok(runner, env, "send")
    assert f"Created issue 1 ({WEEK}) with 3 deliveries." in output
    assert stories_in(text_of(sent()[0]))[0] == "eu-2"


def test_a_draft_with_nobody_to_send_to_stays_a_draft(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    add_articles(db, WEEK, [("eu-1", "Europe")])
    ok(runner, env, "draft", "--week", WEEK)
    result = run(runner, env, "send", "--week", WEEK)
    assert result.exit_code == 1 and "no active subscribers" in result.output
    assert "draft, not sent yet" in ok(runner, env, "issue", "show", WEEK)


# ------------------------------------------------------------------------------ preview, check


def test_preview_and_check_show_the_draft(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    ok(runner, env, "draft", "--week", WEEK)
    ok(runner, env, "issue", "edit", WEEK, "--drop", str(newsroom["eu-3"]))
    for args in ([], ["--week", WEEK]):
        result = run(runner, env, "preview", *args, "--format", "text")
        assert result.exit_code == 0, result.output
        assert "eu-3" not in "\n".join(stories_in(result.output))
    result = run(runner, env, "preview", "--format", "text")
    assert f"Draft issue 1 ({WEEK}); change it with: digest issue edit {WEEK}" in result.output
    for command in ("preview", "check"):
        refused = run(runner, env, command, "--subject", "Try this")
        assert refused.exit_code == 1
        assert f"is a draft: change its subject, preheader or intro with digest issue edit " \
            f"{WEEK}" in refused.output
    check = ok(runner, env, "check")
    assert check.startswith(f"Draft issue 1 ({WEEK});")
    assert f"Issue 1 ({WEEK}): 4 articles" in check


def test_preview_and_check_after_a_send_show_the_last_issue(
    runner: CliRunner, env: dict[str, str], db: Database
) -> None:
    """Sent for the current week (its window ends next Monday): no "--until" error."""
    seed_subscribers(db, 2)
    now = datetime.now(UTC)
    week = week_of(now, Settings().tz)
    with db.write() as session:
        session.execute(insert(Article), [{
            "url": "https://news.example.org/now", "title": "Story now", "section": "Europe",
            "published_at": max(week.start, now - timedelta(minutes=5)),
        }])
    ok(runner, env, "send", "--week", week.label)
    note = (f"Issue 1 ({week.label}) was the last one sent and covers articles up to "
            f"{week.end:%a %Y-%m-%d %H:%M} UTC, so nothing newer is due yet; showing it as sent.")
    preview = run(runner, env, "preview", "--format", "text")
    assert preview.exit_code == 0, preview.output
    assert note in preview.output and "Story now" in preview.output
    check = ok(runner, env, "check")
    assert check.startswith(note)
    assert "OK: ready to send" in check
    listing = ok(runner, env, "articles")
    assert note in listing and "Story now" in listing
    again = ok(runner, env, "send")
    assert f"Issue 1 ({week.label}) already sent." in again
    assert len(MemoryBackend.outbox) == 2


def test_the_size_gate_never_leaves_out_a_pinned_article(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    """With a budget no issue can meet, the gate drops stories, but not the editor's."""
    ok(runner, env, "draft", "--week", WEEK)
    ok(runner, env, "issue", "edit", WEEK, "--add", str(newsroom["asia-1"]))
    tight = {**env, "DIGEST_HTML_SIZE_BUDGET": "1000"}
    text = ok(runner, tight, "preview", "--week", WEEK, "--format", "text")
    assert "asia-1" in stories_in(text)
    assert len(stories_in(text)) < 5  # the others did go


def test_preview_after_a_past_week_was_sent_shows_it_until_new_articles_come(
    runner: CliRunner, env: dict[str, str], db: Database, newsroom: dict[str, int]
) -> None:
    ok(runner, env, "send", "--week", WEEK)
    preview = ok(runner, env, "preview", "--format", "text")
    assert (f"No articles have come in since issue 1 ({WEEK}) was sent; showing it as sent."
            in preview)
    assert "eu-3" in stories_in(preview)
    assert ok(runner, env, "articles").startswith("No articles from 2025-11-24 00:00 to ")
    with db.write() as session:
        session.execute(insert(Article), [{
            "url": "https://news.example.org/fresh", "title": "Story fresh", "section": "Asia",
            "published_at": datetime.now(UTC) - timedelta(hours=1),
        }])
    preview = ok(runner, env, "preview", "--format", "text")
    assert "showing it as sent" not in preview and stories_in(preview) == ["fresh"]
    assert "Story fresh" in ok(runner, env, "articles")
