"""Found by the fuzz run (test_fuzz_routes.py): `POST /admin/models/smollm2-ocr/load` never answered. A pipeline has
no engine of its own; the scheduler's owner task raised building a backend for it and nobody answered the
request. Loading a pipeline by hand now loads the models it runs on; unloading it unloads them."""

from __future__ import annotations

import httpx
from server_process import ServerProcess

TIMEOUT = 60.0  # a first load of both parts takes a few seconds; no answer by then is the hang


def _loaded(url: str) -> set[str]:
    models = httpx.get(url + "/admin/models", timeout=10).json()["models"]
    return {model["name"] for model in models if model["state"] == "loaded"}


def test_loading_a_pipeline_loads_its_parts(capped_server: ServerProcess) -> None:
    url = capped_server.url
    response = httpx.post(url + "/admin/models/smollm2-ocr/load", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "smollm2-ocr" and body["loaded"] is True, body
    assert body["parts"] == ["rapidocr", "smollm2"] and body["load_seconds"] >= 0, body
    assert {"rapidocr", "smollm2"} <= _loaded(url)

    response = httpx.post(url + "/admin/models/smollm2-ocr/unload", timeout=TIMEOUT)
    unloaded = {"model": "smollm2-ocr", "unloaded": True, "parts": ["rapidocr", "smollm2"]}
    assert response.status_code == 200 and response.json() == unloaded, response.text
    assert not {"rapidocr", "smollm2"} & _loaded(url)
