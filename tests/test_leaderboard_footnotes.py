"""Tables and comparisons print each protocol's reference and declared deviations under the table."""

import json
import sys
from pathlib import Path

from ijepa_eval.cli import main
from ijepa_eval.protocols import load_recipe

sys.path.insert(0, str(Path(__file__).parent))
from test_leaderboard import IJEPA_H14, make_result  # noqa: E402


def with_protocol(path, **protocol):
    """Rewrite a written result's protocol section the way run_protocol fills it (schema 2)."""
    data = json.loads(path.read_text())
    data["protocol"].update(protocol)
    path.write_text(json.dumps(data))
    return path


def test_table_and_compare_print_references_and_deviations(tmp_path, capsys):
    cifar = load_recipe("cifar100")
    runs = tmp_path / "runs"
    with_protocol(make_result(runs, "ijepa_h14", "cifar100", 88.1, IJEPA_H14), version=cifar.version,
                  reference=cifar.reference, deviations=cifar.deviations)
    with_protocol(make_result(runs, "ijepa_h14", "places205", 58.0, IJEPA_H14), version=2, reference="VISSL x",
                  deviations=[])
    make_result(runs, "ijepa_h14", "inat18", 47.0, IJEPA_H14)  # a schema-1 style result: nothing recorded
    out = tmp_path / "tables"
    assert main(["table", str(runs), "--out", str(out)]) == 0
    md = (out / "table3.md").read_text()
    notes = md[md.index("declared deviations"):]
    assert f"- **cifar100** v{cifar.version}: {' '.join(cifar.reference.split())}" in notes
    assert all(f"  - deviation: {' '.join(d.split())}" in notes for d in cifar.deviations) and cifar.deviations
    assert "- **places205** v2: VISSL x\n  - no deviations" in notes
    assert "- **inat18** v1: reference not recorded\n  - deviations not recorded" in notes
    assert md.index("| I-JEPA | ViT-H/14 |") < md.index("declared deviations")  # under the table
    assert "declared deviations" in (out / "README.md").read_text()
    assert "declared deviations" not in (out / "table1.md").read_text()  # only protocols the table shows

    capsys.readouterr()
    assert main(["compare", "--results", str(runs), "--protocols", "cifar100"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("88.1") < printed.index("declared deviations") and "places205" not in printed
    assert f"  - deviation: {' '.join(cifar.deviations[0].split())}" in printed
    assert "declared deviations" in (runs / "compare.md").read_text()
    # with a second model the significance notes come first; the footnotes stay a block of their own
    make_result(runs, "mae_h14", "cifar100", 85.0)
    assert main(["compare", "--results", str(runs), "--protocols", "cifar100"]) == 0
    md = (runs / "compare.md").read_text()
    assert md.index("mae_h14") < md.index("\n\nProtocols, their references and declared deviations")
