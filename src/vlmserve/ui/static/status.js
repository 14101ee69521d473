// The status page: polls GET /admin/status every 2 s and redraws the tables (text only, never HTML).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;
  let timer = null;

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = cell instanceof Node ? wrap(cell) : VS.el("td", cell.text, cell.className);
      tr.append(td);
    }
    return tr;
  }

  function wrap(node) {
    const td = document.createElement("td");
    td.append(node);
    return td;
  }

  function emptyRow(tbody, columns, text) {
    const td = VS.el("td", text, "muted empty");
    td.colSpan = columns;
    const tr = document.createElement("tr");
    tr.append(td);
    tbody.replaceChildren(tr);
  }

  function stateBadge(state) {
    return VS.el("span", state, "state state-" + state);
  }

  function renderMemory(memory) {
    const share = memory.budget_bytes ? memory.used_bytes / memory.budget_bytes : 0;
    $("memory-bar").style.width = Math.min(100, share * 100).toFixed(1) + "%";
    $("memory-bar").classList.toggle("high", share > 0.85);
    $("memory-text").textContent = "RAM " + VS.bytes(memory.used_bytes) + " of " + VS.bytes(memory.budget_bytes) +
      " used (" + Math.round(share * 100) + "%) · machine " + VS.bytes(memory.machine_bytes);
    $("gpu-meters").replaceChildren(...(memory.gpus || []).map(gpuMeter));
  }

  function gpuMeter(gpu) {
    // one bar per GPU: what our models hold of its budget; the text adds what the whole device uses
    const share = gpu.budget_bytes ? gpu.models_bytes / gpu.budget_bytes : 0;
    const fill = VS.el("div", "", "meter-fill" + (share > 0.85 ? " high" : ""));
    fill.style.width = Math.min(100, share * 100).toFixed(1) + "%";
    const meter = VS.el("div", "", "meter");
    meter.setAttribute("aria-label", "GPU " + gpu.index + " budget use");
    meter.append(fill);
    const text = "GPU " + gpu.index + " (" + gpu.name + ") " + VS.bytes(gpu.models_bytes) + " of " +
      VS.bytes(gpu.budget_bytes) + " used (" + Math.round(share * 100) + "%) · device " +
      VS.bytes(gpu.used_bytes) + " of " + VS.bytes(gpu.total_bytes);
    const block = VS.el("div", "", "gpu-meter");
    block.append(VS.el("div", text, "muted"), meter);
    return block;
  }

  function memoryText(m) {
    if (!m.memory_bytes && !m.vram_bytes) return "–";
    const gpu = m.vram_bytes ? " + " + VS.bytes(m.vram_bytes) + " GPU" : "";
    return VS.bytes(m.memory_bytes) + gpu + (m.measured ? "" : " (est.)");
  }

  function unloadsIn(model) {
    if (model.pinned) return "pinned";
    if (model.in_flight > 0 && model.state === "loaded") return "in use"; // keep-alive starts when it is idle
    return model.expires_in_seconds === null ? "–" : VS.duration(model.expires_in_seconds);
  }

  function renderModels(models, queues) {
    const tbody = $("models");
    if (!models.length) return emptyRow(tbody, 7, "no models in the catalog");
    tbody.replaceChildren(...models.map((m) => {
      const tr = row([
        { text: m.name, className: "name" }, { text: m.engine }, stateBadge(m.state),
        { text: memoryText(m), className: "num" },
        { text: m.in_flight + " / " + m.parallel, className: "num" },
        { text: m.queued, className: "num" },
        { text: unloadsIn(m), className: "num" },
      ]);
      tr.dataset.model = m.name;
      tr.dataset.state = m.state;
      return tr;
    }));
    const waiting = Object.values(queues).reduce((a, b) => a + b, 0);
    $("queue-text").textContent = waiting ? waiting + " request(s) queued" : "no request queued";
  }

  function renderRequests(requests) {
    const tbody = $("requests");
    if (!requests.length) return emptyRow(tbody, 7, "no request yet");
    tbody.replaceChildren(...requests.map((r) => row([
      { text: new Date(r.ended_at * 1000).toLocaleTimeString(), className: "muted" },
      { text: r.method + " " + r.path, className: "mono" }, { text: r.model || "–" },
      { text: r.status, className: "num " + (r.status >= 400 ? "bad" : "ok") },
      { text: VS.ms(r.duration_ms), className: "num" }, { text: VS.ms(r.first_token_ms), className: "num" },
      { text: r.tokens_in || r.tokens_out ? r.tokens_in + " / " + r.tokens_out : "–", className: "num" },
    ])));
  }

  function progressBar(counts) {
    const meter = VS.el("div", null, "meter small");
    const done = VS.el("div", null, "meter-fill");
    const failed = VS.el("div", null, "meter-fill failed");
    const total = counts.total || 0;
    done.style.width = total ? (100 * counts.completed / total).toFixed(1) + "%" : "0%";
    failed.style.width = total ? (100 * counts.failed / total).toFixed(1) + "%" : "0%";
    meter.append(done, failed);
    return meter;
  }

  function renderBatches(batches) {
    const tbody = $("batches");
    if (!batches.length) return emptyRow(tbody, 6, "no batch yet");
    tbody.replaceChildren(...batches.map((b) => {
      const counts = b.request_counts || { total: 0, completed: 0, failed: 0 };
      return row([
        { text: b.id, className: "mono" }, { text: b.endpoint, className: "mono" }, stateBadge(b.status),
        progressBar(counts),
        { text: counts.completed + " / " + counts.failed + " / " + counts.total, className: "num" },
        { text: new Date(b.created_at * 1000).toLocaleString(), className: "muted" },
      ]);
    }));
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const status = await VS.getJSON("/admin/status");
      renderMemory(status.memory);
      renderModels(status.models, status.queues);
      renderRequests(status.recent_requests);
      renderBatches(status.batches);
      $("error").hidden = true;
      $("live").textContent = "live · updated " + new Date().toLocaleTimeString();
      $("live").className = "pill done";
      $("server-info").textContent = "vlmserve " + status.version + " · up " + VS.duration(status.uptime_seconds);
    } catch (err) {
      $("error").textContent = err.message;
      $("error").hidden = false;
      $("live").textContent = "not updating";
      $("live").className = "pill error";
    }
    timer = setTimeout(poll, POLL_MS);
  }

  VS.bindKeyField($("api-key"), poll);
  poll();
})();
