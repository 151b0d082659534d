"""Quantities and label values: `rlhf validate` (pydantic) and the CRD schema refuse what the API
server would refuse for ever (issue 16, item 4), naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from rlhf_api.quantity import LABEL_VALUE, NON_NEGATIVE_QUANTITY, POSITIVE_QUANTITY, QUANTITY
from rlhf_api.validation import RunInvalid, parse_run
from rlhf_cli.main import main
from rlhf_operator.crd import crd

from .conftest import spec_with

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# (value, a quantity, >= 0, > 0): apimachinery's ParseQuantity grammar.
QUANTITIES = [
    ("100Gi", True, True, True),
    ("512Mi", True, True, True),
    ("1.5", True, True, True),
    ("500m", True, True, True),
    (".5", True, True, True),
    ("5.", True, True, True),
    ("1e3", True, True, True),
    ("1E-3", True, True, True),
    ("+1k", True, True, True),
    ("0", True, True, False),
    ("0.0Gi", True, True, False),
    ("-5Gi", True, False, False),
    ("5GiGi", False, False, False),
    ("1.2.3", False, False, False),
    ("5 Gi", False, False, False),
    ("Gi", False, False, False),
    ("5gi", False, False, False),
    ("", False, False, False),
]


@pytest.mark.parametrize(("value", "quantity", "non_negative", "positive"), QUANTITIES)
def test_quantity_patterns(value: str, quantity: bool, non_negative: bool, positive: bool) -> None:
    import re

    assert bool(re.match(QUANTITY, value)) is quantity
    assert bool(re.match(NON_NEGATIVE_QUANTITY, value)) is non_negative
    assert bool(re.match(POSITIVE_QUANTITY, value)) is positive


def _crd_validates(document: dict[str, Any]) -> bool:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(schema).is_valid(document)


def _model_validates(document: dict[str, Any]) -> str | None:
    try:
        parse_run(document)
    except RunInvalid as error:
        return "; ".join(error.errors)
    return None


@pytest.mark.parametrize(("value", "quantity", "non_negative", "positive"), QUANTITIES)
def test_storage_size_refused_by_model_and_crd(value: str, quantity: bool, non_negative: bool, positive: bool) -> None:
    document = spec_with(storage={"size": value})
    error = _model_validates(document)
    assert (error is None) is positive
    assert _crd_validates(document) is positive
    if not positive:
        assert error is not None and "spec.storage.size" in error


@pytest.mark.parametrize(("value", "quantity", "non_negative", "positive"), QUANTITIES)
def test_resource_quantities_refused_by_model_and_crd(
    value: str, quantity: bool, non_negative: bool, positive: bool
) -> None:
    document = spec_with(placement={"resources": {"requests": {"cpu": value}}})
    error = _model_validates(document)
    assert (error is None) is non_negative
    assert _crd_validates(document) is non_negative
    if not non_negative:
        assert error is not None and "spec.placement.resources.requests" in error and "cpu" in error


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a100", True),
        ("NVIDIA-A100-SXM4-80GB", True),
        ("x.y_z", True),
        ("", True),
        ("-a", False),
        ("a b", False),
        ("a" * 64, False),
    ],
)
def test_label_values_refused_by_model_and_crd(value: str, valid: bool) -> None:
    import re

    assert (bool(re.match(LABEL_VALUE, value)) and len(value) <= 63) is valid
    for document in (
        spec_with(placement={"nodePool": {"nodeSelector": {"pool": value}}}),
        spec_with(queueName=value),
    ):
        assert (_model_validates(document) is None) is valid
        assert _crd_validates(document) is valid


@pytest.mark.parametrize("size", ["5GiGi", "1.2.3", "0", "-5Gi"])
def test_rlhf_validate_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec_with(storage={"size": size})))
    assert main(["validate", str(path)]) != 0
    output = capsys.readouterr()
    assert "storage.size" in output.out + output.err
