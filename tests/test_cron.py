"""The crontab line ``digest schedule`` prints, run as cron runs it: it sends warned weeks only.

cron starts a command with /bin/sh in the user's home, with no terminal, PATH=/usr/bin:/bin
and none of the variables of the shell the line was copied from. These tests take the line
from the real ``digest schedule`` output and run exactly that, that way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from digest.config import WEEKDAYS

DIGEST = Path(sys.executable).with_name("digest")

SETTINGS = """\
newsletter_name = "The Cron Weekly"
from_email = "weekly@news.example.org"
base_url = "https://news.example.org"
timezone = "UTC"
secret_key = ["cron-test-secret-key-0123456789"]
backend = "file"
file_dir = "outbox"
{postal}
[schedule]
weekday = "{weekday}"
time = "00:00"
"""


def user_env(home: Path) -> dict[str, str]:
    """The environment of the person setting digest up: theirs, minus any DIGEST_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return {**env, "HOME": str(home)}


def digest(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """The real digest command, as the person runs it in their terminal (set-up only)."""
    result = subprocess.run([str(DIGEST), *args], cwd=cwd, env=user_env(home), text=True,
                            capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def publication(tmp_path: Path, *, postal: bool) -> tuple[Path, Path]:
    """A publication folder due today at 00:00 UTC, with a warned week and three readers."""
    if not DIGEST.exists():
        pytest.skip(f"the digest script is not installed beside {sys.executable}")
    home = tmp_path / "home"
    home.mkdir()
    folder = tmp_path / "publication"
    folder.mkdir()
    now = datetime.now(UTC)
    postal_line = 'postal_address = "1 Cron Street, Springfield"' if postal else ""
    (folder / "digest.toml").write_text(
        SETTINGS.format(weekday=WEEKDAYS[now.weekday()], postal=postal_line), encoding="utf-8"
    )
    due = datetime.combine(now.date(), time(0), tzinfo=UTC)
    # A plain http:// story and an image without alt text: warnings, as in real feeds.
    articles = [
        {"title": "Harbour towns bet on ferries", "url": "http://news.example.org/ferries",
         "section": "Europe", "published_at": (due - timedelta(hours=3)).isoformat(),
         "summary": "Three councils pooled their budgets.",
         "image_url": "https://img.news.example.org/ferry.jpg", "image_alt": ""},
        {"title": "A border bridge reopens", "url": "https://news.example.org/bridge",
         "section": "Europe", "published_at": (due - timedelta(hours=5)).isoformat(),
         "summary": "Commuters save forty minutes a day."},
    ]
    (folder / "articles.json").write_text(json.dumps(articles), encoding="utf-8")
    digest(["import", "articles.json"], folder, home)
    for n in range(3):
        digest(["subscribers", "add", f"reader{n}@example.com"], folder, home)
    return folder, home


def printed_cron_line(folder: Path, home: Path) -> str:
    """The crontab line from `digest schedule`, run in the publication folder."""
    output = digest(["schedule"], folder, home).stdout.splitlines()
    marker = output.index("crontab line (crontab -e):")
    return output[marker + 1].strip()


def run_as_cron(line: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run a crontab line the way cron does (crontab(5)): /bin/sh -c, minimal env, no tty."""
    minute, hour, day, month, weekday, command = line.split(None, 5)
    assert (minute, hour, day, month, weekday) == ("*/5", "*", "*", "*", "*")
    assert "%" not in command.replace("\\%", ""), "an unescaped % would end the command"
    command = command.replace("\\%", "%")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh", "LOGNAME": "root"}
    return subprocess.run(["/bin/sh", "-c", command], cwd=home, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL,
                          start_new_session=True, timeout=120)


def test_the_printed_cron_line_sends_a_week_that_only_has_warnings(tmp_path: Path) -> None:
    folder, home = publication(tmp_path, postal=True)
    line = printed_cron_line(folder, home)
    assert line.startswith(f"*/5 * * * * cd {folder} && /")  # no PATH lookup for digest
    result = run_as_cron(line, home)
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed
    # cron mails what the job prints: the warnings are there despite --quiet.
    assert "link(s) or image(s) use http:// rather than https://" in printed
    assert "image(s) have no alt text of their own" in printed
    assert "3 sent, 0 failed, 0 pending" in printed
    assert len(list((folder / "outbox").glob("*.eml"))) == 3
    # Five minutes later: already sent, nothing printed, nothing sent twice.
    again = run_as_cron(line, home)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert len(list((folder / "outbox").glob("*.eml"))) == 3


def test_the_printed_cron_line_refuses_a_week_with_an_error(tmp_path: Path) -> None:
    folder, home = publication(tmp_path, postal=False)
    result = run_as_cron(printed_cron_line(folder, home), home)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Error: the issue did not pass the check:" in result.stderr
    assert "postal_address is not set" in result.stderr
    assert not (folder / "outbox").exists() or not list((folder / "outbox").iterdir())
    issues = digest(["issues"], folder, home).stdout
    assert issues.startswith("No issues yet"), issues


def test_settings_only_in_the_environment_are_named_by_schedule(tmp_path: Path) -> None:
    """A secret kept in the shell's environment would not reach cron: schedule says so."""
    folder, home = publication(tmp_path, postal=True)
    env = {**user_env(home), "DIGEST_SMTP_PASSWORD": "hunter2-not-for-cron"}
    result = subprocess.run([str(DIGEST), "schedule"], cwd=folder, env=env, text=True,
                            capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "will not see these settings: smtp_password." in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_a_settings_file_elsewhere_is_named_in_the_line(tmp_path: Path) -> None:
    folder, home = publication(tmp_path, postal=True)
    elsewhere = tmp_path / "etc 100%"
    elsewhere.mkdir()
    (folder / "digest.toml").rename(elsewhere / "weekly.toml")
    output = digest(["--config", str(elsewhere / "weekly.toml"), "schedule", "--workdir",
                     str(folder)], folder, home).stdout.splitlines()
    line = output[output.index("crontab line (crontab -e):") + 1].strip()
    assert "--config" in line and "\\%" in line
    result = run_as_cron(line, home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 sent, 0 failed, 0 pending" in result.stdout
