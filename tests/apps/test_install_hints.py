"""Install hints name a command that works where vtcompress runs from."""

from __future__ import annotations

from pathlib import Path

from vtcompress import hints

ROOT = Path(__file__).resolve().parents[2]


def test_from_a_checkout_the_hint_is_an_editable_install(monkeypatch, tmp_path):
    assert hints.source_checkout() == ROOT
    monkeypatch.chdir(ROOT)
    assert hints.install_command("demo") == 'pip install -e ".[demo]"'
    monkeypatch.chdir(tmp_path)
    assert hints.install_command("eval") == f'pip install -e "{ROOT}[eval]"'


def test_from_an_installed_package_the_hint_names_the_extra(monkeypatch):
    monkeypatch.setattr(hints, "source_checkout", lambda: None)
    assert hints.install_command("kernels") == 'pip install "vtcompress[kernels]"'
    assert hints.needs_extra("the demo needs gradio", "demo") == (
        'the demo needs gradio: pip install "vtcompress[demo]"'
    )


def test_no_message_hardcodes_an_index_install():
    """Runtime messages go through vtcompress.hints (docstrings may show both forms)."""
    offenders = []
    for folder in ("vtcompress", "integrations", "kernels"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if 'pip install "vtcompress[' in code and (
                    "raise" in code or "print" in code or "warn" in code
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []
