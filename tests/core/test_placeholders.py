"""The placeholder grammar: what it reads, renders and refuses, and that the CRD's pattern
(`VALUE`) accepts exactly what the parser does."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar_operator.api.placeholders import (
    VALUE,
    MissingValue,
    Placeholder,
    PlaceholderError,
    Source,
    escape,
    parse,
    render,
)

WORKLOAD = {
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "labels": {"team": "payments", "empty": ""},
        "annotations": {"example.com/owner": "ana"},
    },
}


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("plain", "plain"),
        ("{{ workload.name }}", "web"),
        ("{{workload.namespace}}", "shop"),
        ("svc-{{ workload.name }}.{{ workload.namespace }}", "svc-web.shop"),
        ("{{ workload.kind }}", "Deployment"),
        ("{{ workload.labels['team'] }}", "payments"),
        ('{{ workload.labels["team"] }}', "payments"),
        ("{{ workload.annotations['example.com/owner'] }}", "ana"),
        ("{{ workload.labels['tier'] | default 'none' }}", "none"),
        ('{{ workload.labels["tier"]|default ""}}', ""),
        ("{{ workload.labels['empty'] | default 'x' }}", ""),  # present, though empty
        ("{{ workload.labels['team'] | default 'x' }}", "payments"),
        ("\\{{ workload.name }}", "{{ workload.name }}"),
        ("\\{{{ workload.name }}", "{web"),
        ("a { b } c }}", "a { b } c }}"),
        ('json: {"a": 1}', 'json: {"a": 1}'),
        ("back\\slash", "back\\slash"),
        ("line\n{{ workload.name }}\n", "line\nweb\n"),
        ("{", "{"),
        ("{\\{{ workload.name }}", "{{{ workload.name }}"),
    ],
)
def test_renders(text: str, rendered: str) -> None:
    assert render(parse(text), WORKLOAD) == rendered
    assert re.fullmatch(VALUE, text)


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("{{ workload.nam }}", 0, "unknown placeholder '{{ workload.nam }}'"),
        ("x {{ pod.name }}", 2, "unknown placeholder '{{ pod.name }}'"),
        ("{{ workload.name", 0, "without a closing '}}'"),
        ("{{ workload.labels[team] }}", 0, "unknown placeholder"),
        ("{{ workload.name | upper }}", 0, "the only filter is default 'value'"),
        ("{{ workload.name | default none }}", 0, "the only filter is default 'value'"),
        ("{{{ workload.name }}", 0, "unknown placeholder"),
        ("ok {{ workload.name }} {{ env.HOME }}", 23, "unknown placeholder '{{ env.HOME }}'"),
    ],
)
def test_refuses_saying_where_and_why(text: str, position: int, reason: str) -> None:
    with pytest.raises(PlaceholderError) as refused:
        parse(text)
    assert refused.value.position == position
    assert reason in refused.value.reason
    assert str(refused.value).startswith(f"at character {position + 1}: ")
    assert not re.fullmatch(VALUE, text)


def test_a_missing_value_without_a_default_names_the_placeholder() -> None:
    with pytest.raises(MissingValue, match=r"\{\{ workload.labels\['tier'\] \}\} has no value"):
        render(parse("{{ workload.labels['tier'] }}"), WORKLOAD)
    with pytest.raises(MissingValue):
        render(parse("{{ workload.annotations['a'] }}"), {"kind": "CronJob", "metadata": {}})


def test_parts() -> None:
    assert parse("a-{{ workload.labels['team'] | default 'x' }}-b") == (
        "a-",
        Placeholder(Source.LABELS, "team", "x"),
        "-b",
    )
    assert parse("\\{\\{") == ("{{",)
    assert parse("") == ()


ALPHABET = st.sampled_from(
    ["{", "}", "\\", "a", " ", "'", "|", "{{ workload.name }}", "{{ workload.labels['team'] }}"]
)
texts = st.lists(ALPHABET, max_size=12).map("".join)


@given(texts)
def test_the_crd_pattern_accepts_what_the_parser_reads(text: str) -> None:
    try:
        parse(text)
        parsed = True
    except PlaceholderError:
        parsed = False
    assert parsed == bool(re.fullmatch(VALUE, text))


@given(st.text())
def test_escaped_text_renders_as_itself(text: str) -> None:
    assert render(parse(escape(text)), WORKLOAD) == text
    assert re.fullmatch(VALUE, escape(text))
