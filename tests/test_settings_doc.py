"""docs/configuration.md's settings tables are generated from `core.settings.Settings` (scripts/settings_table.py):
every field is described there, the committed tables are what the generator makes, and no other page keeps a
hand-written copy."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import Settings
from scripts import settings_table

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "run `.venv/bin/python -m scripts.settings_table` and commit docs/configuration.md"
# Read by scripts, not by the service: scripts/run.sh (workers to start), the browser tests (chromium's path) and
# the command-line client (clients/python: the service's URL and the key it sends).
NOT_SETTINGS = {"CONVSCOPE_WORKERS", "CONVSCOPE_CHROMIUM", "CONVSCOPE_URL", "CONVSCOPE_API_KEY"}


def pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_setting_has_a_description():
    missing = [name for name, info in Settings.model_fields.items() if not (info.description or "").strip()]
    assert not missing, f"give these fields of core/settings.py a description=: {missing}"


def test_the_committed_tables_are_the_generated_ones():
    page = settings_table.DOC.read_text()
    assert page == settings_table.update(page), f"docs/configuration.md's settings tables are stale: {REGENERATE}"


def test_every_setting_has_one_row_under_a_section():
    table = settings_table.render()
    for name in Settings.model_fields:
        variable = f"`CONVSCOPE_{name.upper()}`"
        assert len(re.findall(rf"^\| {re.escape(variable)}", table, re.M)) == 1, name
    assert "| `CONVSCOPE_REDIS_URL` or `REDIS_URL` |" in table
    titles = [section.title for section in settings_table.sections()]
    assert len(titles) == len(set(titles)) and all(titles), titles


def test_secret_defaults_are_not_shown():
    secrets = [name for name, info in Settings.model_fields.items() if settings_table.is_secret(info)]
    assert {"s3_secret_access_key", "events_token_secret", "api_keys"} <= set(secrets)
    for name in secrets:
        row = next(line for line in settings_table.render().splitlines() if f"`CONVSCOPE_{name.upper()}`" in line)
        assert row.split(" | ")[1] == "", row


def test_section_titles_end_at_a_colon_or_full_stop_outside_brackets():
    assert settings_table.split_title("Datasets (POST /v1/datasets): archive limits. More.") == (
        "Datasets (POST /v1/datasets)", "Archive limits. More.")
    assert settings_table.split_title("API keys: open on 127.0.0.1 only.") == ("API keys", "Open on 127.0.0.1 only.")
    assert settings_table.split_title("ONNX Runtime.") == ("ONNX Runtime", "")


def test_no_page_keeps_a_hand_written_settings_table_or_names_an_unknown_setting():
    known = {f"CONVSCOPE_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    for path in pages():
        text = path.read_text()
        start, stop = text.find(settings_table.BEGIN), text.find(settings_table.END)
        if start >= 0:
            text = text[:start] + text[stop:]
        rows = re.findall(r"^\|\s*`(?:CONVSCOPE_|REDIS_URL)[^|]*\|.*$", text, re.M)
        assert not rows, f"{path.relative_to(ROOT)} tables settings by hand; link to docs/configuration.md: {rows[:3]}"
        unknown = set(re.findall(r"CONVSCOPE_[A-Z0-9_]*[A-Z0-9]", text)) - known
        assert not unknown, f"{path.relative_to(ROOT)} names settings that core/settings.py lacks: {sorted(unknown)}"
