"""wgsyncd.coerce: config values reach their field's real type, whatever the annotation's spelling."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from wgsyncd import coerce
from wgsyncd.state import Secret


@dataclass
class Sample:
    flag: bool = False
    ratio: float = 1.0
    count: int = 1
    names: tuple[str, ...] = ()
    path: str | None = None
    label: str = ""
    token: Secret | None = None


def test_field_types_are_real_types_not_strings() -> None:
    types = coerce.field_types(Sample)
    assert types["flag"] is bool and types["names"] == tuple[str, ...]
    assert types["token"] == Secret | None


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("flag", "on", True),
        ("flag", False, False),
        ("ratio", "2.5", 2.5),
        ("count", 3.0, 3),
        ("names", "wg0, wg1 wg2", ("wg0", "wg1", "wg2")),
        ("names", ["wg0"], ("wg0",)),
        ("path", "", None),  # an empty environment variable unsets an optional field
        ("path", "/x", "/x"),
        ("label", "", ""),  # ... and is an empty string for a plain one
        ("token", "", None),
    ],
)
def test_values_become_the_field_type(field: str, value: object, want: object) -> None:
    got = coerce.to_type(coerce.field_types(Sample)[field], value)
    assert got == want and type(got) is type(want)


def test_a_secret_stays_wrapped() -> None:
    got = coerce.to_type(Secret | None, "hunter2")
    assert isinstance(got, Secret) and got.reveal() == "hunter2" and "hunter2" not in repr(got)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        (bool, "maybe", "expected true or false"),
        (float, "nan", "expected a finite number"),
        (float, True, "expected a number"),
        (int, 2.5, "expected a whole number"),
        (tuple[str, ...], [1], "expected a list of strings"),
        (str, 5, "expected a string"),
    ],
)
def test_wrong_values_say_what_was_expected_not_the_value(kind: object, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as exc:
        coerce.to_type(kind, value)
    assert str(value) not in str(exc.value)
