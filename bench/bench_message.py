"""Benchmark: complete per-recipient messages from a MessageTemplate vs the stdlib EmailMessage.

Run from the repository root:  .venv/bin/python bench/bench_message.py
"""

from __future__ import annotations

import argparse
import email.policy
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digest.config import Settings
from digest.message import MessageTemplate, make_message_id
from digest.personalise import Recipient, SplicedTemplate

SUBJECT = "The Weekly Digest: Café prices fall — and 23 more stories"


def realistic_issue(target_html: int = 60_000) -> tuple[SplicedTemplate, SplicedTemplate]:
    """An MJML-like table layout of ~target_html bytes with 8 slots, and its ~8 KB text part."""
    head = (
        '<!doctype html>\n<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n<head>\n'
        '<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<style type=\"text/css\">#outlook a { padding:0; } body { margin:0;padding:0;"
        "-webkit-text-size-adjust:100%;-ms-text-size-adjust:100%; } table, td "
        "{ border-collapse:collapse;mso-table-lspace:0pt;mso-table-rspace:0pt; }\n"
        "@media only screen and (min-width:480px) { .mj-column-per-100 { width:100% "
        "!important; max-width: 100%; } }</style>\n</head>\n"
        '<body style="word-spacing:normal;background-color:#f4f4f4;">\n'
        '<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;'
        'max-width:0px;opacity:0;overflow:hidden;">This week: cafés, rockets and rain</div>\n'
        '<div style="background-color:#f4f4f4;" lang="en">\n'
        '<table align="center" border="0" cellpadding="0" cellspacing="0" role="presentation"'
        ' style="width:100%;"><tbody><tr><td style="direction:ltr;font-size:0px;padding:20px 0;'
        'text-align:center;"><a href="'
    )
    html_chunks = [head]
    html_slots: list[tuple[str, str]] = [("view_url", "url")]
    html_chunks.append(
        '" style="color:#888888;font-size:12px;">View in your browser</a></td></tr>'
        '<tr><td style="font-family:Helvetica,Arial,sans-serif;font-size:16px;line-height:24px;'
        'padding:10px 25px;color:#222222;">Hello '
    )
    html_slots.append(("name", "html"))
    article = (
        '<tr><td align="left" style="font-size:0px;padding:10px 25px;word-break:break-word;">'
        '<div style="font-family:Georgia, \'Times New Roman\', serif;font-size:22px;'
        'font-weight:bold;line-height:28px;text-align:left;color:#111111;">'
        '<a href="https://news.example.org/2024/05/{n}/cafe-prices-fall-across-the-city?'
        'utm_source=digest&amp;utm_medium=email&amp;utm_campaign=weekly" style="color:#111111;'
        'text-decoration:none;">Café prices fall across the city — story {n}</a></div>'
        "</td></tr>\n"
        '<tr><td align="left" style="font-size:0px;padding:0 25px 20px;word-break:break-word;">'
        '<div style="font-family:Helvetica, Arial, sans-serif;font-size:15px;line-height:22px;'
        'text-align:left;color:#444444;">Owners say the “new normal” is cheaper beans and longer '
        "queues; economists are less sure. Prices dropped 4% in the month to April, the third "
        "fall in a row, while rents kept rising in the centre.</div></td></tr>\n"
    )
    body = []
    n = 0
    while sum(map(len, body)) + len(head) < target_html - 3_000:
        body.append(article.replace("{n}", str(n)))
        n += 1
    html_chunks.append(
        ",</td></tr>\n" + "".join(body[: len(body) // 2])
        + '<tr><td style="padding:10px 25px;">Forwarded this? <a href="'
    )
    html_slots.append(("preferences_url", "url"))
    html_chunks.append('">Subscribe here</a>, ')
    html_slots.append(("name", "html"))
    footer = (
        '<tr><td style="font-family:Helvetica,Arial,sans-serif;font-size:12px;line-height:18px;'
        'color:#888888;padding:20px 25px;">This email was sent to '
    )
    html_chunks.append(".</td></tr>\n" + "".join(body[len(body) // 2 :]) + footer)
    html_slots.append(("email", "html"))
    html_chunks.append('. <a href="')
    html_slots.append(("unsubscribe_url", "url"))
    html_chunks.append('" style="color:#888888;">Unsubscribe</a> · <a href="')
    html_slots.append(("preferences_url", "url"))
    html_chunks.append('" style="color:#888888;">Preferences</a> · <a href="')
    html_slots.append(("view_url", "url"))
    html_chunks.append(
        '" style="color:#888888;">Web version</a><br>The Weekly Digest, 1 Example Street, '
        "Exampleton</td></tr></tbody></table>\n</div>\n</body>\n</html>\n"
    )

    story = (
        "Café prices fall across the city — story {n}\n"
        "https://news.example.org/2024/05/{n}/cafe-prices-fall-across-the-city\n"
        "Owners say the “new normal” is cheaper beans and longer queues; economists are less "
        "sure. Prices dropped 4% in the month to April.\n\n"
    )
    stories = "".join(story.replace("{n}", str(i)) for i in range(30))
    text_chunks = ["View in your browser: ", "\n\nHello ", ",\n\n" + stories + "Sent to ",
                   ".\nUnsubscribe: ", "\nPreferences: ", "\n"]
    text_slots = [("view_url", "text"), ("name", "text"), ("email", "text"),
                  ("unsubscribe_url", "text"), ("preferences_url", "text")]
    return (
        SplicedTemplate(tuple(html_chunks), tuple(html_slots)),  # type: ignore[arg-type]
        SplicedTemplate(tuple(text_chunks), tuple(text_slots)),  # type: ignore[arg-type]
    )


def recipients(count: int) -> list[Recipient]:
    """Varied recipients: ASCII and non-ASCII names, long link tokens."""
    names = ["Alice Example", "José Ramírez", "", "Zoë O'Neil", "李小龙", "Bob <b> Smith"]
    out = []
    for i in range(count):
        token = f"eyJzIjoiZGlnZXN0IiwiaWQiOjEyMzQ1fQ.Zk9xYw.{i:08d}-kT3tW_0b9sQkqjHc1mBv8w"
        out.append(Recipient(
            email=f"reader{i}@mail.example.net",
            name=names[i % len(names)],
            unsubscribe_url=f"https://digest.example.com/u/{token}",
            preferences_url=f"https://digest.example.com/p/{token}",
            view_url=f"https://digest.example.com/v/2024-05-17?t={token}",
        ))
    return out


def stdlib_message(settings: Settings, subject: str, html: SplicedTemplate,
                   text: SplicedTemplate, recipient: Recipient, message_id: str) -> bytes:
    """The same message the straightforward way: render, EmailMessage, serialise."""
    msg = EmailMessage()
    msg["From"] = Address(settings.from_name, addr_spec=settings.from_email)
    msg["To"] = Address(recipient.name, addr_spec=recipient.email)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{message_id}>"
    msg["List-Id"] = f"{settings.newsletter_name} <{settings.effective_list_id}>"
    msg["List-Unsubscribe"] = f"<{recipient.unsubscribe_url}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Precedence"] = "bulk"
    msg.set_content(text.fill(recipient), cte="quoted-printable")
    msg.add_alternative(html.fill(recipient), subtype="html", cte="quoted-printable")
    return msg.as_bytes(policy=email.policy.SMTP)


def timed(fn: object, count: int, repeats: int) -> list[float]:
    """Seconds per call for each repeat of count calls."""
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(count)  # type: ignore[operator]
        results.append((time.perf_counter() - start) / count)
    return results


def main() -> None:
    """Time the spliced path, optionally with DKIM, against the stdlib baseline."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5_000, help="messages per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline-messages", type=int, default=200)
    parser.add_argument("--dkim", action="store_true", help="also time RSA-2048 signing "
                        "(needs openssl)")
    args = parser.parse_args()

    settings = Settings()
    html, text = realistic_issue()
    people = recipients(args.messages)
    ids = [make_message_id("example.com") for _ in people]

    start = time.perf_counter()
    template = MessageTemplate(SUBJECT, html, text, settings)
    prepare = time.perf_counter() - start
    sample = template.build(people[0], ids[0])
    print(f"issue: html {len(html.fill(people[0])):,} chars with {len(html.slots)} slots, "
          f"text {len(text.fill(people[0])):,} chars with {len(text.slots)} slots; "
          f"message {len(sample):,} bytes")
    print(f"template prepared once in {prepare * 1e3:.1f} ms")

    def spliced(count: int) -> None:
        build = template.build
        for i in range(count):
            build(people[i], ids[i])

    def baseline(count: int) -> None:
        for i in range(count):
            stdlib_message(settings, SUBJECT, html, text, people[i], ids[i])

    ours = statistics.median(timed(spliced, args.messages, args.repeats))
    theirs = statistics.median(timed(baseline, args.baseline_messages, 3))
    print(f"spliced:  median {ours * 1e6:8.1f} µs/message  {1 / ours:10,.0f} messages/s "
          f"({args.repeats} repeats x {args.messages})")
    print(f"stdlib:   median {theirs * 1e6:8.1f} µs/message  {1 / theirs:10,.0f} messages/s "
          f"(3 repeats x {args.baseline_messages})")
    print(f"speed-up: {theirs / ours:.0f}x")

    if args.dkim:
        with tempfile.TemporaryDirectory() as tmp:
            key = Path(tmp) / "dkim.pem"
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                           capture_output=True)
            signed_settings = settings.replace(dkim_domain="example.com", dkim_selector="bench",
                                               dkim_private_key=str(key))
            signed = MessageTemplate(SUBJECT, html, text, signed_settings)
            count = min(args.messages, 300)

            def signing(count: int) -> None:
                for i in range(count):
                    signed.build(people[i], ids[i])

            dkim_time = statistics.median(timed(signing, count, 3))
            print(f"dkim rsa: median {dkim_time * 1e6:8.1f} µs/message  "
                  f"{1 / dkim_time:10,.0f} messages/s (3 repeats x {count})")


if __name__ == "__main__":
    main()
