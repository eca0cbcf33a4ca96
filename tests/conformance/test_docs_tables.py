"""README.md's and docs/index.md's methods x hosts tables say what the hosts serve."""

from __future__ import annotations

from tests.conformance.docs_tables import ROOT, TABLES, table_problems


def test_tables_match_what_the_hosts_serve():
    assert table_problems() == []


def test_a_wrong_cell_and_a_missing_row_are_named(tmp_path):
    """Copies of the pages where uniform's last cell (Qwen2.5-VL, which serves it) says "no" and
    random's row is gone: the check names both, on both pages."""
    for page in TABLES:
        lines = (ROOT / page).read_text().splitlines()
        out = []
        for line in lines:
            if line.startswith("|") and "`random`" in line:
                continue
            if line.startswith("|") and "`uniform`" in line:
                cells = line.strip().strip("|").split("|")
                line = "|" + "|".join([*cells[:-1], " no "]) + "|"
            out.append(line)
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("\n".join(out))
    problems = table_problems(tmp_path)
    for page in TABLES:
        assert (
            f"{page}: uniform on Qwen2.5-VL is refused in the table ('no'), but the host serves it"
            in problems
        )
        assert f"{page}: method 'random' has no row in the methods x hosts table" in problems
    assert len(problems) == 2 * len(TABLES)
