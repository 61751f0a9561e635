"""Preview an issue exactly as readers get it: HTML, text, MJML or .eml, and a live server."""

from __future__ import annotations

import hashlib
import html
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import func, select

from digest.config import Settings
from digest.db import Database
from digest.errors import InputError
from digest.issues import IssueContent, select_issue, upcoming, window_for
from digest.models import Article, Issue
from digest.personalise import Recipient
from digest.render import CompiledIssue, Renderer, personalise

FORMATS = ("html", "text", "mjml", "eml")


@dataclass(frozen=True)
class Preview:
    """One issue rendered for one reader."""

    content: IssueContent
    compiled: CompiledIssue
    recipient: Recipient
    html: str
    text: str
    note: str = ""  # which issue this is, when no window was given (issues.upcoming)

    def output(self, fmt: str, settings: Settings) -> bytes:
        """The preview in one of FORMATS, as bytes ready to write."""
        if fmt == "html":
            return self.html.encode()
        if fmt == "text":
            return self.text.encode()
        if fmt == "mjml":
            return self.compiled.mjml.encode()
        if fmt == "eml":
            from digest.message import MessageTemplate, make_message_id

            compiled = self.compiled
            template = MessageTemplate(compiled.subject, compiled.html, compiled.text, settings,
                                       issue=self.content.label)
            domain = settings.from_email.rpartition("@")[2] or "localhost"
            return template.build(self.recipient, make_message_id(domain))
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def archive_url(settings: Settings, label: str) -> str:
    """The public web version of an issue: the "view in browser" link."""
    return f"{settings.base_url.rstrip('/')}/archive/{label}"


def sample_reader(settings: Settings, label: str) -> Recipient:
    """A made-up reader, for previews that are not for a real subscriber."""
    base = settings.base_url.rstrip("/")
    return Recipient(
        email="reader@example.com",
        name="Sample Reader",
        unsubscribe_url=f"{base}/u/sample-preview-token",
        preferences_url=f"{base}/preferences/sample-preview-token",
        view_url=archive_url(settings, label),
    )


def recipient_for(db: Database, settings: Settings, email: str, label: str) -> tuple[
    Recipient, list[str]
]:
    """A real subscriber as a Recipient, with their chosen sections."""
    from digest import subscribers, tokens

    with db.read() as session:
        # NotFoundError says the address is not on the list; `digest subscribers list` helps.
        subscriber = subscribers.get(session, email)
        recipient = Recipient(
            email=subscriber.email,
            name=subscriber.name,
            unsubscribe_url=tokens.unsubscribe_url(settings, subscriber),
            preferences_url=tokens.preferences_url(settings, subscriber),
            view_url=archive_url(settings, label),
        )
        return recipient, list(subscriber.sections or [])


def build_preview(
    db: Database,
    settings: Settings,
    *,
    week: str | None = None,
    since: str | None = None,
    until: str | None = None,
    include_sent: bool = False,
    intro: str = "",
    subject: str = "",
    preheader: str = "",
    as_email: str | None = None,
    renderer: Renderer | None = None,
) -> Preview:
    """Select the window's issue and render it for one reader (default: a sample reader).

    Without week, since or until it is the issue ``digest send`` would send now: a draft,
    the next articles, or (when nothing newer is due) the last sent issue, with a note.
    """
    with db.read() as session:
        note = ""
        if week or since or until:
            window = window_for(session, settings, week=week, since=since, until=until)
        else:
            chosen = upcoming(session, settings, last_when_empty=True)
            window, note = chosen.window, chosen.note
        content = select_issue(
            session, settings, window, include_sent=include_sent, intro=intro,
            subject=subject, preheader=preheader,
        )
    if content.is_empty:
        raise InputError(
            f"no articles for {window.label}: nothing to preview. Import some with "
            "`digest import FEED`, or pick another week with --week (see `digest articles`)"
        )
    sections: list[str] = []
    if as_email:
        recipient, sections = recipient_for(db, settings, as_email, content.label)
    else:
        recipient = sample_reader(settings, content.label)
    compiled = (renderer or Renderer(settings)).compile(content, sections)
    body_html, body_text = personalise(compiled, recipient)
    return Preview(content, compiled, recipient, body_html, body_text, note)


def summary_lines(preview: Preview, settings: Settings) -> list[str]:
    """What an editor wants to know before sending: counts per section, size, margin,
    and the pre-send check's errors and warnings."""
    from digest.checks import check_issue
    from digest.render import GMAIL_CLIP_BYTES

    content, report = preview.content, preview.compiled.report
    lines = [preview.note] if preview.note else []
    lines.append(f"Issue {content.number} ({content.label}): {preview.compiled.subject}")
    for block in content.sections:
        lines.append(f"  {block.name}: {len(block.articles)}")
    if content.more:
        lines.append(f"  More stories: {len(content.more)}")
    html_bytes = len(preview.html.encode())
    lines.append(
        f"HTML {html_bytes:,} bytes ({GMAIL_CLIP_BYTES - html_bytes:,} bytes below Gmail's "
        f"clip limit), text {len(preview.text.encode()):,} bytes"
    )
    lines.extend(report.describe())
    check = check_issue(preview.compiled, preview.content, settings)
    lines.extend(f"error: {m}" for m in check.errors)
    lines.extend(f"warning: {m}" for m in check.warnings)
    return lines


# --------------------------------------------------------------------------- live preview

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>digest preview</title>
<style>
 body{{margin:0;font:14px system-ui,sans-serif;background:#e9e9ee}}
 nav{{position:sticky;top:0;background:#222;color:#fff;padding:8px 12px;display:flex;gap:8px;
      align-items:center}}
 nav button{{font:inherit;padding:4px 10px;border:0;border-radius:4px;cursor:pointer}}
 nav button[aria-pressed=true]{{background:#ffd54f}}
 #status{{margin-left:auto;opacity:.8}}
 iframe{{display:block;margin:16px auto;border:0;background:#fff;height:calc(100vh - 80px);
         box-shadow:0 2px 12px rgba(0,0,0,.2)}}
</style></head><body>
<nav><strong>{title}</strong>
<button data-w="700" data-src="/issue.html" aria-pressed="true">Desktop</button>
<button data-w="375" data-src="/issue.html" aria-pressed="false">Mobile</button>
<button data-w="700" data-src="/issue.txt" aria-pressed="false">Text</button>
<span id="status" role="status"></span></nav>
<iframe id="frame" src="/issue.html" style="width:700px" title="Issue preview"></iframe>
<script>
const frame=document.getElementById('frame'),status=document.getElementById('status');
let version=null;
document.querySelectorAll('nav button').forEach(b=>b.onclick=()=>{{
  document.querySelectorAll('nav button').forEach(o=>o.setAttribute('aria-pressed',o===b));
  frame.style.width=b.dataset.w+'px';frame.src=b.dataset.src;}});
async function poll(){{
  try{{const r=await fetch('/version');const v=(await r.json()).version;
    if(version!==null&&v!==version){{frame.contentWindow.location.reload();
      status.textContent='reloaded '+new Date().toLocaleTimeString();}}
    version=v;}}catch(e){{status.textContent='preview server stopped';}}
  setTimeout(poll,1000);}}
poll();
</script></body></html>"""


def fingerprint(db: Database, settings: Settings, template_dirs: list[Path]) -> str:
    """Changes whenever a template file or the stored articles/issues change."""
    digest = hashlib.sha256()
    for folder in template_dirs:
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    stat = path.stat()
                    digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    with db.read() as session:
        row = session.execute(
            select(func.count(Article.id), func.max(Article.updated_at))
        ).one()
        issues = session.execute(select(func.count(Issue.id), func.max(Issue.number))).one()
    digest.update(repr((tuple(row), tuple(issues))).encode())
    return digest.hexdigest()[:16]


class LivePreview:
    """Serves the preview on loopback and rebuilds it when templates or the database change."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        build: Callable[[], Preview],
        *,
        host: str = "127.0.0.1",
        port: int = 8025,
    ) -> None:
        self.db, self.settings, self.build = db, settings, build
        renderer_dirs = [Path(settings.templates_dir)] if settings.templates_dir else []
        from digest.render import default_templates_dir

        self.template_dirs = [*renderer_dirs, default_templates_dir()]
        self._lock = threading.Lock()
        self._version = ""
        self._html = self._text = ""
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        """Where the preview page is served."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def current(self) -> tuple[str, str, str]:
        """(version, html, text), rebuilt only when the fingerprint changed."""
        version = fingerprint(self.db, self.settings, self.template_dirs)
        with self._lock:
            if version != self._version:
                try:
                    preview = self.build()
                    self._html, self._text = preview.html, preview.text
                except Exception as exc:
                    message = html.escape(str(exc))
                    self._html = f"<!doctype html><p><strong>Cannot render:</strong> {message}</p>"
                    self._text = f"Cannot render: {exc}"
                self._version = version
            return self._version, self._html, self._text

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        live = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # the terminal shows the URL once; per-request noise helps nobody

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                version, body_html, body_text = live.current()
                path = self.path.split("?", 1)[0]
                if path == "/":
                    title = html.escape(live.settings.newsletter_name)
                    self._send(_PAGE.format(title=title).encode(), "text/html; charset=utf-8")
                elif path == "/issue.html":
                    self._send(body_html.encode(), "text/html; charset=utf-8")
                elif path == "/issue.txt":
                    self._send(body_text.encode(), "text/plain; charset=utf-8")
                elif path == "/version":
                    stamp = datetime.now(UTC).isoformat()
                    payload = json.dumps({"version": version, "checked": stamp})
                    self._send(payload.encode(), "application/json")
                else:
                    self.send_error(HTTPStatus.NOT_FOUND)

        return Handler

    def serve_forever(self) -> None:
        """Serve until interrupted."""
        self.server.serve_forever(poll_interval=0.5)

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
