// Shared by both pages: the API key field (kept in localStorage), API calls with it, error text, formatting.
"use strict";

const VS = (() => {
  const KEY_STORAGE = "vlmserve.apiKey";

  function apiKey() {
    return localStorage.getItem(KEY_STORAGE) || "";
  }

  function bindKeyField(input, onChange) {
    input.value = apiKey();
    input.addEventListener("change", () => {
      const value = input.value.trim();
      if (value) localStorage.setItem(KEY_STORAGE, value);
      else localStorage.removeItem(KEY_STORAGE);
      if (onChange) onChange();
    });
  }

  function headers(extra) {
    const out = Object.assign({}, extra);
    const key = apiKey();
    if (key) out.Authorization = "Bearer " + key;
    return out;
  }

  // The message of an error body: OpenAI {"error": {"message", "type", "code"}}, Ollama {"error": "..."}.
  function errorText(body, status) {
    const error = body && body.error;
    if (typeof error === "string") return error;
    if (error && typeof error === "object") {
      const kind = error.code || error.type;
      return (error.message || "request failed") + (kind ? " (" + kind + ")" : "");
    }
    return "HTTP " + status;
  }

  async function responseError(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // not JSON: the status line is all there is
    }
    const error = new Error(response.status + ": " + errorText(body, response.status));
    error.status = response.status;
    return error;
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: headers({ Accept: "application/json" }) });
    if (!response.ok) throw await responseError(response);
    return response.json();
  }

  function bytes(n) {
    if (!n) return "0 MB";
    if (n >= 1024 ** 3) return (n / 1024 ** 3).toFixed(1) + " GB";
    return Math.round(n / 1024 ** 2) + " MB";
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
  }

  function duration(seconds) {
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
  }

  // A DOM element with text content only: nothing from the API is ever parsed as HTML.
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  return { apiKey, bindKeyField, headers, errorText, responseError, getJSON, bytes, ms, duration, el };
})();
