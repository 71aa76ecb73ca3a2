"""ingest.setup.kibana against the Kibana import double: headers, auth, multipart, errors, retries."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ingest.errors import ConfigError
from ingest.setup.kibana import (
    KibanaImportError,
    auth_header,
    import_saved_objects,
    import_url,
    multipart,
    ndjson_files,
)
from tests.kibana_double import KibanaDouble, _file_part

VIEW = {"type": "index-pattern", "id": "dv1", "attributes": {"title": "audit-*", "timeFieldName": "@timestamp"}, "references": []}
SEARCH = {
    "type": "search",
    "id": "s1",
    "attributes": {"title": "SSH logins"},
    "references": [{"type": "index-pattern", "id": "dv1", "name": "kibanaSavedObjectMeta.searchSourceJSON.index"}],
}


def write(tmp_path: Path, name: str, *objs: dict) -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return p


@pytest.fixture
def kb():
    with KibanaDouble(username="elastic", password="pw") as double:
        yield double


def test_basic_auth_import(kb: KibanaDouble, tmp_path: Path) -> None:
    files = [write(tmp_path, "a.ndjson", VIEW), write(tmp_path, "b.ndjson", SEARCH)]
    result = import_saved_objects(kb.url, files, username="elastic", password="pw")
    assert result.success and result.success_count == 2
    assert {(r["type"], r["id"]) for r in result.success_results} == {("index-pattern", "dv1"), ("search", "s1")}
    req = kb.requests[-1]
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"elastic:pw").decode()
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert [o["id"] for o in req.objects] == ["dv1", "s1"]  # both files in one upload, in order


def test_api_key_import(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"id1:key1").decode()
    with KibanaDouble(username=None, api_key=encoded) as kb:
        result = import_saved_objects(kb.url, [write(tmp_path, "a.ndjson", VIEW)], api_key=("id1", "key1"))
        assert result.success
        assert kb.requests[-1].headers["authorization"] == f"ApiKey {encoded}"
        # an already encoded key is sent as is
        import_saved_objects(kb.url, [write(tmp_path, "a.ndjson", VIEW)], api_key=encoded)


def test_wrong_password_is_401(kb: KibanaDouble, tmp_path: Path) -> None:
    with pytest.raises(KibanaImportError, match="401") as err:
        import_saved_objects(kb.url, [write(tmp_path, "a.ndjson", VIEW)], username="elastic", password="nope")
    assert err.value.status == 401


def test_no_auth_is_401(kb: KibanaDouble, tmp_path: Path) -> None:
    with pytest.raises(KibanaImportError) as err:
        import_saved_objects(kb.url, [write(tmp_path, "a.ndjson", VIEW)])
    assert err.value.status == 401


def test_space_goes_into_the_path(kb: KibanaDouble, tmp_path: Path) -> None:
    import_saved_objects(kb.url + "/", [write(tmp_path, "a.ndjson", VIEW)], username="elastic", password="pw", space="sec")
    assert kb.requests[-1].path == "/s/sec/api/saved_objects/_import"
    assert ("index-pattern", "dv1") in kb.objects("sec") and not kb.objects()


def test_missing_reference_fails_strict_and_is_reported_lax(kb: KibanaDouble, tmp_path: Path) -> None:
    f = write(tmp_path, "b.ndjson", SEARCH)
    with pytest.raises(KibanaImportError, match="search/s1: missing_references index-pattern/dv1") as err:
        import_saved_objects(kb.url, [f], username="elastic", password="pw")
    assert err.value.errors[0]["error"]["type"] == "missing_references"
    result = import_saved_objects(kb.url, [f], username="elastic", password="pw", strict=False)
    assert not result.success and result.success_count == 0 and len(result.errors) == 1


def test_retries_while_kibana_starts(kb: KibanaDouble, tmp_path: Path) -> None:
    kb.fail_next(503, times=3)
    slept: list[float] = []
    result = import_saved_objects(
        kb.url, [write(tmp_path, "a.ndjson", VIEW)], username="elastic", password="pw", sleep=slept.append
    )
    assert result.success and len(kb.requests) == 4
    assert slept == [0.5, 1.0, 2.0]


def test_gives_up_after_ready_timeout(kb: KibanaDouble, tmp_path: Path) -> None:
    kb.fail_next(503, times=100)
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(KibanaImportError) as err:
        import_saved_objects(
            kb.url, [write(tmp_path, "a.ndjson", VIEW)], username="elastic", password="pw",
            ready_timeout=5, sleep=sleep, clock=lambda: now[0],
        )
    assert err.value.status == 503 and now[0] <= 5


def test_500_is_not_retried(kb: KibanaDouble, tmp_path: Path) -> None:
    kb.fail_next(500)
    with pytest.raises(KibanaImportError) as err:
        import_saved_objects(kb.url, [write(tmp_path, "a.ndjson", VIEW)], username="elastic", password="pw")
    assert err.value.status == 500 and len(kb.requests) == 1


def test_unreachable_kibana(tmp_path: Path) -> None:
    with KibanaDouble() as kb:
        url = kb.url
    with pytest.raises(KibanaImportError, match="cannot reach Kibana"):
        import_saved_objects(url, [write(tmp_path, "a.ndjson", VIEW)], username="elastic", password="changeme",
                             ready_timeout=0, sleep=lambda s: None)


def test_bad_ndjson_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "x.ndjson"
    p.write_text(json.dumps(VIEW) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"line 2 .*x\.ndjson"):
        import_saved_objects("http://127.0.0.1:9", [p])
    p.write_text('{"title": "no type"}\n')
    with pytest.raises(ConfigError, match="not a saved object"):
        import_saved_objects("http://127.0.0.1:9", [p])


def test_ndjson_files_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ndjson_files(tmp_path)
    write(tmp_path, "b.ndjson", SEARCH)
    write(tmp_path, "a.ndjson", VIEW)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in ndjson_files(tmp_path)] == ["a.ndjson", "b.ndjson"]


# --- the double refuses what Kibana refuses (so the tests above can fail) ----------------------------
def _post(kb: KibanaDouble, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(kb.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("no_xsrf", 400, "kbn-xsrf"),
        ("no_overwrite", 400, "overwrite"),
        ("json_file", 400, "Invalid file extension .json"),
        ("not_multipart", 415, "Unsupported"),
        ("wrong_part", 400, "body.file"),
        ("wrong_path", 404, "Not Found"),
    ],
)
def test_double_refusals(kb: KibanaDouble, case: str, status: int, message: str) -> None:
    auth = "Basic " + base64.b64encode(b"elastic:pw").decode()
    ctype, body = multipart("objects.json" if case == "json_file" else "objects.ndjson", (json.dumps(VIEW) + "\n").encode())
    headers = {"kbn-xsrf": "true", "Authorization": auth, "Content-Type": ctype}
    path = "/api/saved_objects/_import" + ("" if case == "no_overwrite" else "?overwrite=true")
    if case == "no_xsrf":
        del headers["kbn-xsrf"]
    if case == "not_multipart":
        headers["Content-Type"] = "application/ndjson"
    if case == "wrong_part":
        body = body.replace(b'name="file"', b'name="upload"')
    if case == "wrong_path":
        path = "/api/saved_objects/import?overwrite=true"
    code, answer = _post(kb, path, headers, body)
    assert code == status and message in answer["message"], answer


def test_multipart_roundtrip() -> None:
    ctype, body = multipart("x.ndjson", b'{"a":1}\n{"b":2}\n', boundary="BOUND")
    assert ctype == "multipart/form-data; boundary=BOUND"
    assert _file_part(ctype, body) == ("x.ndjson", b'{"a":1}\n{"b":2}\n')


def test_helpers() -> None:
    assert import_url("http://k:5601/") == "http://k:5601/api/saved_objects/_import?overwrite=true"
    assert import_url("http://k:5601", space="default", overwrite=False) == "http://k:5601/api/saved_objects/_import"
    assert auth_header() is None
    assert auth_header(username="u", password="p") == "Basic dTpw"
