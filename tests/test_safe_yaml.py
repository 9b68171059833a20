"""Documents people hand Bastion are read strictly: one line naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import InvalidInput, InvalidSpec
from bastion.governance.policy import parse_policy
from bastion.safe_yaml import load
from bastion.spec import load_spec

GOOD = """\
project: cardiology
name: smoke
cluster: site-a
job:
  type: smoke
  steps: 2
"""


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "key 'a' is given twice"),
        ("job:\n  steps: 1\n  steps: 2\n", 3, "key 'steps' is given twice"),
        ("x: " + "[" * 40 + "]" * 40 + "\n", 1, "nested deeper than 32 levels"),
        ("n: 1\nm: " + "9" * 5000 + "\n", 2, "a number longer than 64 characters"),
        ("f: 1." + "0" * 100 + "\n", 1, "a number longer than 64 characters"),
        ("a: &x [1, 2]\nb: *x\n", 2, "YAML aliases (*name) are not accepted"),
        ("a: [1,\n", 2, "not valid YAML"),
    ],
)
def test_what_hides_mistakes_or_costs_without_bound_is_refused(
    text: str, line: int, says: str
) -> None:
    with pytest.raises(InvalidSpec) as err:
        load(text, source="spec.yaml", error=InvalidSpec)
    message = str(err.value)
    assert message.startswith(f"spec.yaml:{line}: not valid YAML"), message
    assert says in message
    assert "\n" not in message


def test_ordinary_documents_read_as_before() -> None:
    text = "a: 1\nb: [1, 2.5, {c: d}]\nanchor: &kept plain\nbig: 12345678901234567890\n"
    assert load(text, source="x", error=InvalidSpec) == {
        "a": 1,
        "b": [1, 2.5, {"c": "d"}],
        "anchor": "plain",
        "big": 12345678901234567890,
    }


def test_run_specs_policies_and_the_policy_verb_use_the_strict_reader(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    assert load_spec(spec).job.type == "smoke"
    spec.write_text(GOOD + "cluster: site-b\n")
    with pytest.raises(InvalidSpec, match=r"spec.yaml:7: .*key 'cluster' is given twice"):
        load_spec(spec)
    with pytest.raises(InvalidSpec, match="given twice"):
        parse_policy("max_epsilon: 3\nmax_epsilon: 30\n", source="policy.yaml")


def test_a_misspelt_field_gets_a_suggestion(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.replace("  steps: 2", "  stepz: 2") + "clustr: x\n")
    with pytest.raises(InvalidSpec) as err:
        load_spec(spec)
    assert "job.stepz: Extra inputs are not permitted (did you mean 'steps'?)" in str(err.value)
    assert "clustr: Extra inputs are not permitted (did you mean 'cluster'?)" in str(err.value)
    # a field name in the wrong place is not a misspelling: no suggestion to itself
    spec.write_text(GOOD.replace("  steps: 2", "  project: other"))
    with pytest.raises(InvalidSpec) as err:
        load_spec(spec)
    assert "job.project: Extra inputs are not permitted" in str(err.value)
    assert "did you mean" not in str(err.value)


def test_the_error_class_is_the_callers() -> None:
    with pytest.raises(InvalidInput):
        load("a: 1\na: 2\n", source="policy.yaml", error=InvalidInput)
