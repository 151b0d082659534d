"""Kubernetes quantities and label values, as the API server checks them (issue 16, item 4).

One grammar for `rlhf validate` (pydantic) and the CRD (the same patterns land in the schema),
so a value the API server would refuse for ever (422 on every PVC or job create) is refused when
the run is applied, naming the field. QUANTITY is apimachinery's resource.ParseQuantity grammar,
as kubebuilder writes it for resource.Quantity:

    <quantity> ::= <signedNumber><suffix>;  <suffix> ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI> ::= Ki | Mi | Gi | Ti | Pi | Ei;  <decimalSI> ::= m | "" | k | M | G | T | P | E

The `cel` package the tests evaluate rules with has no quantity() library (Kubernetes 1.29+), so
"greater than zero" is a pattern too: a mantissa with a non-zero digit and no minus sign.
"""

from __future__ import annotations

import re

_SUFFIX = r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?"
QUANTITY = r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))" + _SUFFIX + "$"
# Requests and limits: the API server refuses negative ones.
NON_NEGATIVE_QUANTITY = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))" + _SUFFIX + "$"
# A claim's size, /dev/shm: more than zero.
POSITIVE_QUANTITY = r"^\+?(([0-9]*[1-9][0-9]*(\.[0-9]*)?)|([0-9]*\.[0-9]*[1-9][0-9]*))" + _SUFFIX + "$"
# metav1 label values (validation.IsValidLabelValue): <= 63, alphanumeric at both ends.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


def check_quantity(value: object, pattern: str = QUANTITY) -> object:
    """`value` unchanged, or a ValueError that says what a quantity is (pydantic names the field)."""
    if isinstance(value, str) and not re.match(pattern, value):
        what = {
            POSITIVE_QUANTITY: "a Kubernetes quantity greater than zero",
            NON_NEGATIVE_QUANTITY: "a non-negative Kubernetes quantity",
        }.get(pattern, "a Kubernetes quantity")
        raise ValueError(f"'{value}' is not {what} (e.g. 100Gi, 512Mi, 1.5, 500m)")
    return value
