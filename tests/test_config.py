"""Settings layering (defaults, digest.toml, DIGEST_* variables, flags) and `digest config`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import load_settings
from digest.errors import ConfigError


def test_layers_apply_in_order(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file, which beats the default."""
    config = tmp_path / "digest.toml"
    config.write_text(
        'newsletter_name = "From File"\ntimezone = "Europe/Paris"\nsection_cap = 2\n'
        '[smtp]\nhost = "mail.example.org"\nport = 2525\n'
        '[schedule]\nweekday = "monday"\n'
    )
    loaded = load_settings(
        config,
        env={"DIGEST_TIMEZONE": "Asia/Tokyo", "DIGEST_SECTION_CAP": "3"},
        overrides={"section_cap": 7, "database_url": None},
    )
    s = loaded.settings
    assert (s.newsletter_name, s.timezone, s.section_cap) == ("From File", "Asia/Tokyo", 7)
    assert (s.smtp_host, s.smtp_port, s.schedule_weekday) == ("mail.example.org", 2525, "monday")
    assert loaded.sources["newsletter_name"] == str(config)
    assert loaded.sources["timezone"] == "env DIGEST_TIMEZONE"
    assert loaded.sources["section_cap"] == "command line"
    assert loaded.sources["from_email"] == "default"


def test_secret_key_list_from_environment_keeps_order() -> None:
    s = load_settings(env={"DIGEST_SECRET_KEY": "newest, older ,oldest"}).settings
    assert s.secret_key == ("newest", "older", "oldest")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DIGEST_TIMEZONE": "Mars/Olympus"}, "unknown time zone"),
        ({"DIGEST_SECTION_CAP": "many"}, "DIGEST_SECTION_CAP has an invalid value"),
        ({"DIGEST_SMTP_SECURITY": "tls"}, "none, starttls, ssl"),
        ({"DIGEST_BASE_URL": "news.example.org"}, "must start with https://"),
        ({"DIGEST_SCHEDULE_WEEKDAY": "funday"}, "not a weekday"),
    ],
)
def test_bad_values_say_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "digest.toml"
    config.write_text('newsleter_name = "typo"\n')
    with pytest.raises(ConfigError, match=r"unknown setting.*newsleter_name"):
        load_settings(config, env={})


def test_config_command_masks_secrets_and_shows_sources(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "digest.toml").write_text('smtp_password = "hunter2"\n')
    result = runner.invoke(
        main,
        ["--db", "postgresql+psycopg://digest:s3cret@db.example/digest", "config"],
        env={"DIGEST_SECRET_KEY": "topsecret,older"},
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert "topsecret" not in result.output and "s3cret" not in result.output
    assert "digest:***@db.example" in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "(env DIGEST_SECRET_KEY)" in lines["secret_key"]
    assert "[2 key(s), hidden]" in lines["secret_key"]
    assert "(digest.toml)" in lines["smtp_password"]
    assert "(command line)" in lines["database_url"]


def test_broken_config_file_exits_1_with_message(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "digest.toml").write_text("this is = not toml =\n")
    result = runner.invoke(main, ["config"])
    assert result.exit_code == 1
    assert "digest.toml is not valid TOML" in result.output


def test_init_creates_and_then_reports_up_to_date(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    assert "upgraded from empty" in result.output
    assert (tmp_path / "subscribers.db").exists()
    again = runner.invoke(main, ["init"])
    assert again.exit_code == 0 and "up to date" in again.output


def test_database_in_missing_folder_is_a_clear_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--db", "sqlite:///no/such/folder/x.db", "init"])
    assert result.exit_code == 1
    assert "folder" in result.output and "does not exist" in result.output
