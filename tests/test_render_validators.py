"""The compiled issue passes the outside judges: the official MJML validator (strict) for
every layout, and SpamAssassin (offline, Debian's package) for the demo issue."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from digest.message import MessageTemplate, make_message_id
from digest.render import Renderer
from tests.conftest import skip_or_fail
from tests.demo_issue import DEMO_RECIPIENT, demo_content, demo_settings

ROOT = Path(__file__).resolve().parent.parent
#: Where .ci/run installs the validator: npm install --prefix .ci/node mjml
CI_MJML = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mjml"


def mjml_validator() -> str:
    """The official MJML command line: $DIGEST_MJML_BIN, else .ci/node, else PATH."""
    if shutil.which("node") is None:
        skip_or_fail("node is not installed; the official MJML validator runs on node")
    for candidate in (os.environ.get("DIGEST_MJML_BIN", ""), str(CI_MJML), shutil.which("mjml")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    skip_or_fail(
        "the official MJML validator is not installed: npm install --prefix .ci/node mjml "
        "(or set DIGEST_MJML_BIN)"
    )
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.mark.parametrize("layout", ["cards", "full"])
@pytest.mark.parametrize("extras", ["plain", "logo-and-note"])
def test_every_layout_passes_the_official_mjml_validator_at_strict_level(
    tmp_path: Path, layout: str, extras: str
) -> None:
    validator = mjml_validator()
    settings = demo_settings(layout=layout)
    if extras == "logo-and-note":
        settings = dataclasses.replace(
            settings, theme_logo_url="https://newsletter.example.org/logo.png",
            theme_logo_height=48,
        )
    content = demo_content(tmp_path, settings)
    if extras == "logo-and-note":
        content = dataclasses.replace(content, intro="A **note** with [a link](https://a.example/).")
    source = tmp_path / f"{layout}.mjml"
    source.write_text(Renderer(settings).compile(content).mjml, encoding="utf-8")

    run = subprocess.run(
        [validator, "-v", str(source), "--config.validationLevel=strict"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "illegal" not in (run.stdout + run.stderr).lower()


def test_spamassassin_scores_the_demo_issue_at_or_below_zero(tmp_path: Path) -> None:
    spamassassin = shutil.which("spamassassin")
    if spamassassin is None:
        skip_or_fail("spamassassin is not installed: apt-get install spamassassin")
    settings = demo_settings(secret_key=("validators-test-key",))
    compiled = Renderer(settings).compile(demo_content(tmp_path, settings))
    message = MessageTemplate(compiled.subject, compiled.html, compiled.text, settings).build(
        DEMO_RECIPIENT, make_message_id("news.example.org")
    )

    # -L: local tests only (no DNS or network); -t: the report, with each rule that hit.
    run = subprocess.run(
        [spamassassin, "-L", "-t"], input=message, capture_output=True, timeout=300, check=False
    )
    report = run.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: \w+, score=(-?[0-9.]+)", report, re.MULTILINE)
    assert status is not None, report[-3000:] + run.stderr.decode("utf-8", "replace")
    hits = report[report.find("Content analysis details"):]
    assert "HTML_FONT_LOW_CONTRAST" not in hits, hits
    assert float(status.group(1)) <= 0, hits
