"""Lone UTF-16 surrogates (`"\\ud800"` as a JSON escape) and invalid UTF-8: a 400 at the edge, in each surface's
error format, never a 500 when the text is later encoded for an engine, a tokenizer or the database."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from server_process import ServerProcess

LONE = "\\ud800"  # written into the raw body: json.dumps would escape the backslash
MESSAGE = "invalid Unicode"


def _post_raw(server: ServerProcess, path: str, body: str) -> httpx.Response:
    return httpx.post(server.url + path, content=body.encode(), headers={"content-type": "application/json"},
                      timeout=60)  # fmt: skip


def _assert_refused(response: httpx.Response, path: str) -> None:
    assert response.status_code == 400, (path, response.status_code, response.text)
    body: dict[str, Any] = response.json()
    if path.startswith("/v1/"):
        assert body["error"]["type"] == "invalid_request_error", body
        assert MESSAGE in body["error"]["message"], body
    else:
        assert isinstance(body["error"], str) and MESSAGE in body["error"], body


CASES = [
    ("/v1/chat/completions", '{"model": "smollm2", "messages": [{"role": "user", "content": "%s"}]}'),
    ("/v1/chat/completions", '{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "stop": ["%s"]}'),
    ("/v1/chat/completions", '{"model": "smollm2%s", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/v1/chat/completions",
     '{"model": "smollm2", "messages": [{"role": "user", "content": [{"type": "text", "text": "%s"}]}]}'),
    ("/v1/completions", '{"model": "smollm2", "prompt": "%s", "max_tokens": 2}'),
    ("/v1/completions", '{"model": "smollm2", "prompt": "hi", "stop": "%s", "max_tokens": 2}'),
    ("/v1/embeddings", '{"model": "all-minilm", "input": "%s"}'),
    ("/v1/embeddings", '{"model": "all-minilm", "input": ["ok", "%s"]}'),
    ("/api/chat", '{"model": "smollm2", "messages": [{"role": "user", "content": "%s"}], "stream": false}'),
    ("/api/chat", '{"model": "smollm2%s", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/api/generate", '{"model": "smollm2", "prompt": "%s", "stream": false}'),
    ("/api/generate", '{"model": "smollm2", "prompt": "hi", "system": "%s", "stream": false}'),
    ("/api/generate", '{"model": "smollm2", "prompt": "hi", "options": {"stop": ["%s"]}, "stream": false}'),
    ("/api/embed", '{"model": "all-minilm", "input": "%s"}'),
    ("/api/embeddings", '{"model": "all-minilm", "prompt": "%s"}'),
    ("/api/show", '{"model": "smollm2%s"}'),
    ("/admin/keys", '{"name": "%s"}'),
    ("/analyze", '{"prompt": "%s", "image_base64": "aGk="}'),
]  # fmt: skip


@pytest.mark.parametrize(("path", "template"), CASES)
def test_lone_surrogate_in_a_json_field_is_a_400(capped_server: ServerProcess, path: str, template: str) -> None:
    _assert_refused(_post_raw(capped_server, path, template % LONE), path)


def test_every_json_route_refuses_lone_surrogates(capped_server: ServerProcess) -> None:
    """The mechanism, not a list of fields: every route that takes a JSON body parses it the same way."""
    schema = httpx.get(capped_server.url + "/openapi.json").json()
    checked = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if "application/json" not in operation.get("requestBody", {}).get("content", {}):
                continue
            concrete = path.replace("{", "").replace("}", "")  # any value for path parameters
            response = httpx.request(method, capped_server.url + concrete, content=b'{"x": "\\udfff"}',
                                     headers={"content-type": "application/json"}, timeout=60)  # fmt: skip
            _assert_refused(response, concrete)
            checked.append(concrete)
    assert {"/v1/chat/completions", "/api/chat", "/admin/keys", "/v1/batches"} <= set(checked)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_invalid_utf8_bytes_are_a_400(capped_server: ServerProcess, path: str) -> None:
    # CESU-8 of a surrogate and a stray byte: the standard library decodes the first with 'surrogatepass'
    for raw in (b"\xed\xa0\x80", b"\xff"):
        body = b'{"model": "smollm2", "messages": [{"role": "user", "content": "' + raw + b'"}]}'
        response = httpx.post(capped_server.url + path, content=body, headers={"content-type": "application/json"})
        _assert_refused(response, path)


@pytest.mark.parametrize("path", ["/process", "/analyze/upload", "/v1/audio/transcriptions", "/v1/files"])
def test_lone_surrogate_in_a_form_field_is_a_400(capped_server: ServerProcess, path: str) -> None:
    # a multipart charset of unicode_escape turns the bytes '\ud800' into a lone surrogate
    boundary = "edgeb"
    parts = []
    for name in ("message", "prompt", "model", "purpose"):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{LONE}\r\n')
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nxx\r\n')
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nxx\r\n')
    body = "".join(parts) + f"--{boundary}--\r\n"
    content_type = f"multipart/form-data; boundary={boundary}; charset=unicode_escape"
    response = httpx.post(capped_server.url + path, content=body.encode(), headers={"content-type": content_type},
                          timeout=60)  # fmt: skip
    _assert_refused(response, path)
