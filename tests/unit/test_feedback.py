"""/feedback: parsing and checks of label bodies, the bearer token, the file's rows and key,
and how the token reaches the server pod (only ever as a secretKeyRef). Plain data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from modelworks.api.modeldeployment import ModelDeploymentSpec
from modelworks.builders.modeldeployment import ServerConfig, build_deployment
from modelworks.clients.objectstore import parse_s3
from modelworks.names import FEEDBACK_DESTINATION_ENV, FEEDBACK_TOKEN_ENV
from modelworks.serving.feedback import (
    CSV_TYPE,
    JSON_TYPE,
    MAX_ID_CHARS,
    MAX_LABELS,
    Endpoint,
    Labels,
    Refused,
    authorize,
    file_name,
    label_path,
    label_table,
    media_type,
    parse,
    read_body,
)


def body(*items: Any, **extra: Any) -> bytes:
    return json.dumps({"labels": list(items), **extra}).encode()


def item(inference_id: Any = "a", label: Any = 1) -> dict[str, Any]:
    return {"inference_id": inference_id, "label": label}


GOOD = [
    ("one number", body(item("a", 1)), Labels(("a",), (1.0,), True)),
    (
        "numbers: ints and floats",
        body(item("a", 0), item("b", 2.5), item("c/1", -1)),
        Labels(("a", "b", "c/1"), (0.0, 2.5, -1.0), True),
    ),
    (
        "strings",
        body(item("a", "churn"), item("b", "stay")),
        Labels(("a", "b"), ("churn", "stay"), False),
    ),
    ("a numeric string is a string", body(item("a", "1")), Labels(("a",), ("1",), False)),
    (
        "id at the limit",
        body(item("x" * MAX_ID_CHARS, 1)),
        Labels(("x" * MAX_ID_CHARS,), (1.0,), True),
    ),
    ("utf-8 BOM", b"\xef\xbb\xbf" + body(item("a", 1)), Labels(("a",), (1.0,), True)),
]


@pytest.mark.parametrize(("text", "data", "want"), GOOD, ids=[c[0] for c in GOOD])
def test_a_good_json_body_gives_its_labels(text: str, data: bytes, want: Labels) -> None:
    assert parse(data, JSON_TYPE) == want


MALFORMED = [
    ("not json", b"{labels", "body: not JSON"),
    ("not utf-8", b'{"labels": ["\xff"]}', "body: not UTF-8"),
    ("a list", b"[]", 'body: expected an object {"labels"'),
    ("no labels", b"{}", 'body: expected an object {"labels"'),
    ("unknown top field", body(item(), model="churn"), "body: unknown field 'model'"),
    ("labels not a list", b'{"labels": {"a": 1}}', "labels: expected a list"),
    ("empty", body(), "labels: empty"),
    ("item not object", body(item(), ["b", 1]), "labels[1]: expected an object"),
    ("unknown item field", body({**item(), "score": 1}), "labels[0]: unknown field 'score'"),
    ("no id", body({"label": 1}), "labels[0].inference_id: missing"),
    ("no label", body({"inference_id": "a"}), "labels[0].label: missing"),
    ("id a number", body(item(7, 1)), "labels[0].inference_id: expected a string, got int"),
    ("id null", body(item(None, 1)), "labels[0].inference_id: expected a string, got null"),
    ("id empty", body(item("", 1)), "labels[0].inference_id: empty"),
    ("id too long", body(item("x" * (MAX_ID_CHARS + 1))), "labels[0].inference_id: longer"),
    ("id control char", body(item("a\nb")), "labels[0].inference_id: contains control"),
    ("duplicate id", body(item("a"), item("b"), item("a")), "labels[2].inference_id: 'a' repeats labels[0]"),
    ("label null", body(item("a", None)), "labels[0].label: expected a number or a string, got null"),
    ("label bool", body(item("a", True)), "labels[0].label: expected a number or a string, got a boolean"),
    ("label list", body(item("a", [1])), "labels[0].label: expected a number or a string, got a list"),
    ("label NaN", b'{"labels": [{"inference_id": "a", "label": NaN}]}', "labels[0].label: not a finite"),
    ("label overflows", b'{"labels": [{"inference_id": "a", "label": 1e999}]}', "labels[0].label: not a finite"),
    ("label empty string", body(item("a", "")), "labels[0].label: a string label has 1 to"),
    (
        "string after number",
        body(item("a", 1), item("b", "x")),
        "labels[1].label: a string where labels[0].label is a number",
    ),
    (
        "number after string",
        body(item("a", "x"), item("b", 1)),
        "labels[1].label: a number where labels[0].label is a string",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "data", "reason"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_json_body_is_400_naming_the_item_and_field(
    text: str, data: bytes, reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        parse(data, JSON_TYPE)
    assert (refused.value.status, refused.value.reason) == (400, "malformed")
    assert refused.value.message.startswith(reason), refused.value.message


def test_more_labels_than_the_limit_is_413() -> None:
    many = body(*(item(f"id-{i}", 1) for i in range(MAX_LABELS + 1)))
    with pytest.raises(Refused) as refused:
        parse(many, JSON_TYPE)
    assert (refused.value.status, refused.value.reason) == (413, "too_large")
    assert f"at most {MAX_LABELS}" in refused.value.message
    assert len(parse(body(*(item(f"id-{i}", 1) for i in range(MAX_LABELS))), JSON_TYPE).ids) == (
        MAX_LABELS
    )


CSV_GOOD = [
    ("numbers", "inference_id,label\na,1\nb,0.5\n", Labels(("a", "b"), (1.0, 0.5), True)),
    ("columns swapped", "label,inference_id\n1,a\n", Labels(("a",), (1.0,), True)),
    ("strings", "inference_id,label\na,churn\nb,1\n", Labels(("a", "b"), ("churn", "1"), False)),
    ("crlf and blank lines", "inference_id,label\r\n\r\na,1\r\n", Labels(("a",), (1.0,), True)),
    ("quoted", 'inference_id,label\n"a,1",yes\n', Labels(("a,1",), ("yes",), False)),
]


@pytest.mark.parametrize(("text", "data", "want"), CSV_GOOD, ids=[c[0] for c in CSV_GOOD])
def test_a_good_csv_body_gives_its_labels(text: str, data: str, want: Labels) -> None:
    assert parse(data.encode(), CSV_TYPE) == want


CSV_MALFORMED = [
    ("empty", "", "line 1: expected the header inference_id,label"),
    ("no header", "a,1\n", "line 1: expected the header inference_id,label, got a,1"),
    ("extra column", "inference_id,label,x\n", "line 1: expected the header"),
    ("header only", "inference_id,label\n", "labels: empty"),
    ("short row", "inference_id,label\na,1\nb\n", "line 3: expected 2 fields, got 1"),
    ("empty id", "inference_id,label\n,1\n", "line 2.inference_id: empty"),
    ("duplicate id", "inference_id,label\na,1\na,0\n", "line 3.inference_id: 'a' repeats line 2"),
    ("empty label", "inference_id,label\na,\n", "line 2.label: a string label has 1 to"),
]


@pytest.mark.parametrize(
    ("text", "data", "reason"), CSV_MALFORMED, ids=[c[0] for c in CSV_MALFORMED]
)
def test_a_malformed_csv_body_is_400_naming_the_line(text: str, data: str, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        parse(data.encode(), CSV_TYPE)
    assert (refused.value.status, refused.value.reason) == (400, "malformed")
    assert refused.value.message.startswith(reason), refused.value.message


TOKEN = b"s3cr3t-t0ken"
AUTH = [
    ("no header", None, 401),
    ("empty", b"", 401),
    ("basic scheme", b"Basic dXNlcjpwYXNz", 401),
    ("bearer without token", b"Bearer ", 401),
    ("wrong token", b"Bearer nope", 403),
    ("a prefix of the token", b"Bearer s3cr3t", 403),
    ("the token and more", b"Bearer s3cr3t-t0ken-and-more", 403),
    ("right token", b"Bearer s3cr3t-t0ken", None),
    ("scheme in any case", b"bearer s3cr3t-t0ken", None),
]


@pytest.mark.parametrize(("text", "header", "status"), AUTH, ids=[c[0] for c in AUTH])
def test_the_bearer_token_is_checked(text: str, header: bytes | None, status: int | None) -> None:
    if status is None:
        authorize(header, TOKEN)
        return
    with pytest.raises(Refused) as refused:
        authorize(header, TOKEN)
    assert refused.value.status == status
    assert TOKEN.decode() not in refused.value.message
    headers = dict(refused.value.headers)
    assert (b"www-authenticate" in headers) == (status == 401)


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (None, JSON_TYPE),
        (b"application/json; charset=utf-8", JSON_TYPE),
        (b"Text/CSV", CSV_TYPE),
        (b"application/x-www-form-urlencoded", None),
    ],
)
def test_media_types(header: bytes | None, kind: str | None) -> None:
    if kind is not None:
        assert media_type(header) == kind
        return
    with pytest.raises(Refused) as refused:
        media_type(header)
    assert refused.value.status == 415


def test_the_file_has_the_contract_columns_and_its_hour_partition() -> None:
    import pyarrow as pa

    received = datetime(2026, 11, 30, 7, 5, 9, 123456, tzinfo=UTC)
    table = label_table(Labels(("a", "b"), (1.0, 0.0), True), received)
    assert table.schema == pa.schema(
        [
            ("inference_id", pa.string()),
            ("label", pa.float64()),
            ("time", pa.timestamp("ms", tz="UTC")),
        ]
    )
    assert table.column("time").to_pylist() == [received.replace(microsecond=123000)] * 2
    strings = label_table(Labels(("a",), ("churn",), False), received)
    assert strings.schema.field("label").type == pa.string()
    path = label_path(parse_s3("s3://capture/churn/"), received, "pod-1-abc")
    assert path == "capture/churn/feedback/date=2026-11-30/hour=07/pod-1-abc.parquet"
    assert label_path(parse_s3("s3://capture"), received, "n").startswith("capture/feedback/")
    assert file_name("churn-stable-7d9/x", "u") == "churn-stable-7d9_x-u"


@pytest.mark.parametrize(
    ("env", "configured"),
    [
        ({}, False),
        ({FEEDBACK_TOKEN_ENV: "t"}, False),
        ({FEEDBACK_DESTINATION_ENV: "s3://b/p"}, False),
        ({FEEDBACK_TOKEN_ENV: " ", FEEDBACK_DESTINATION_ENV: "s3://b/p"}, False),
        ({FEEDBACK_TOKEN_ENV: "t", FEEDBACK_DESTINATION_ENV: "file:///tmp"}, False),
        ({FEEDBACK_TOKEN_ENV: "t", FEEDBACK_DESTINATION_ENV: "s3://b/p"}, True),
    ],
)
def test_feedback_is_on_only_with_a_token_and_an_s3_destination(
    env: dict[str, str], configured: bool
) -> None:
    assert (Endpoint.from_env(env) is not None) == configured


SERVER = ServerConfig("modelworks:0.1.0", "IfNotPresent", "http://mlflow:5000")
CAPTURE = {"destination": "s3://capture/churn", "samplingPercent": 10}


def deployment(spec: dict[str, Any]) -> dict[str, Any]:
    obj = {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": spec,
    }
    parsed = ModelDeploymentSpec.model_validate(spec)
    return build_deployment(obj, parsed, SERVER, version="3", track="stable", replicas=1)


def every_env(node: Any) -> list[dict[str, Any]]:
    """Every env entry anywhere in a manifest (containers, init containers, ...)."""
    if isinstance(node, dict):
        found = list(node["env"]) if isinstance(node.get("env"), list) else []
        return found + [e for v in node.values() for e in every_env(v)]
    if isinstance(node, list):
        return [e for v in node for e in every_env(v)]
    return []


def ref(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


@pytest.mark.parametrize(
    ("token", "want"),
    [
        ({"secretName": "labels"}, ref(FEEDBACK_TOKEN_ENV, "labels", "token")),
        (
            {"secretName": "labels", "keys": {FEEDBACK_TOKEN_ENV: "feedback"}},
            ref(FEEDBACK_TOKEN_ENV, "labels", "feedback"),
        ),
    ],
)
def test_the_feedback_token_reaches_the_server_only_as_a_secret_key_ref(
    token: dict[str, Any], want: dict[str, Any]
) -> None:
    spec = {
        "model": {"name": "churn", "alias": "champion"},
        "dataCapture": {**CAPTURE, "feedback": {"token": token}},
    }
    dep = deployment(spec)
    env = every_env(dep)
    assert [e for e in env if e["name"] == FEEDBACK_TOKEN_ENV] == [want]
    assert {"name": FEEDBACK_DESTINATION_ENV, "value": "s3://capture/churn"} in env
    plain = [e for e in env if "value" in e and "TOKEN" in e["name"]]
    assert plain == []
    assert "secretKeyRef" in json.dumps(dep) and '"value": "labels"' not in json.dumps(dep)


def test_no_feedback_no_token_and_no_destination() -> None:
    names = {
        e["name"]
        for e in every_env(
            deployment({"model": {"name": "churn", "alias": "champion"}, "dataCapture": CAPTURE})
        )
    }
    assert FEEDBACK_TOKEN_ENV not in names and FEEDBACK_DESTINATION_ENV not in names


def chunks(*parts: bytes) -> Any:
    """An ASGI receive callable that hands out ``parts`` as one request body."""
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


@pytest.mark.parametrize(
    ("headers", "parts", "want"),
    [
        ([], (b"ab", b"cd"), b"abcd"),
        ([(b"content-length", b"4")], (b"abcd",), b"abcd"),
        ([(b"content-length", b"5")], (b"abcde",), 413),  # declared: refused before reading
        ([], (b"ab", b"cd", b"e"), 413),  # chunked: refused once past the limit
    ],
)
def test_the_body_is_read_up_to_the_limit(
    headers: list[tuple[bytes, bytes]], parts: tuple[bytes, ...], want: bytes | int
) -> None:
    import asyncio

    scope = {"headers": headers}
    if isinstance(want, bytes):
        assert asyncio.run(read_body(scope, chunks(*parts), 4)) == want
        return
    with pytest.raises(Refused) as refused:
        asyncio.run(read_body(scope, chunks(*parts), 4))
    assert (refused.value.status, refused.value.reason) == (want, "too_large")
