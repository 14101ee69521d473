// The playground: pick a model, attach an image, stream an answer from /v1/chat/completions (SSE over fetch).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MODEL_STORAGE = "vlmserve.model";
  let models = [];
  let image = null; // {dataUrl, name} of the attached image
  let controller = null; // AbortController of the request in flight

  // --- models ---------------------------------------------------------------------------------------------

  async function loadModels() {
    hideError();
    try {
      models = (await VS.getJSON("/v1/models")).data;
    } catch (err) {
      showError(err.message);
      return;
    }
    const select = $("model");
    select.replaceChildren();
    const chatModels = models.filter((m) => !m.capabilities || m.capabilities.includes("completion") ||
      m.capabilities.includes("vision"));
    for (const model of chatModels) {
      const option = VS.el("option", model.id);
      option.value = model.id;
      select.append(option);
    }
    const saved = localStorage.getItem(MODEL_STORAGE);
    if (saved && chatModels.some((m) => m.id === saved)) select.value = saved;
    showCapabilities();
  }

  function selectedModel() {
    return models.find((m) => m.id === $("model").value);
  }

  function showCapabilities() {
    const model = selectedModel();
    const box = $("caps");
    box.replaceChildren();
    if (!model) return;
    localStorage.setItem(MODEL_STORAGE, model.id);
    box.append(VS.el("span", model.engine, "tag engine"));
    for (const cap of model.capabilities || []) box.append(VS.el("span", cap, "tag"));
    const noVision = image && !(model.capabilities || []).includes("vision");
    $("drop").classList.toggle("warn", Boolean(noVision));
  }

  // --- image: drop, file picker, paste ----------------------------------------------------------------------

  function attach(file) {
    if (!file || !file.type.startsWith("image/")) {
      showError("That is not an image file.");
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      image = { dataUrl: reader.result, name: file.name || "pasted image" };
      $("thumb-img").src = image.dataUrl;
      $("thumb-name").textContent = image.name + " · " + sizeText(file.size);
      $("thumb").hidden = false;
      $("drop-hint").hidden = true;
      hideError();
      showCapabilities();
    };
    reader.readAsDataURL(file);
  }

  function sizeText(n) {
    return n < 1024 * 1024 ? Math.max(1, Math.round(n / 1024)) + " KB" : (n / 1024 / 1024).toFixed(1) + " MB";
  }

  function clearImage() {
    image = null;
    $("file").value = "";
    $("thumb").hidden = true;
    $("drop-hint").hidden = false;
    showCapabilities();
  }

  function bindImageInputs() {
    const drop = $("drop");
    $("pick").addEventListener("click", () => $("file").click());
    $("file").addEventListener("change", (event) => attach(event.target.files[0]));
    $("clear-image").addEventListener("click", clearImage);
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      attach(event.dataTransfer.files[0]);
    });
    document.addEventListener("paste", (event) => {
      const item = [...(event.clipboardData ? event.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
      if (item) {
        event.preventDefault();
        attach(item.getAsFile());
      }
    });
  }

  // --- the request ------------------------------------------------------------------------------------------

  function requestBody() {
    const prompt = $("prompt").value.trim();
    let content = prompt;
    if (image) {
      content = [{ type: "text", text: prompt || "What is in this image?" },
        { type: "image_url", image_url: { url: image.dataUrl } }];
    }
    const body = {
      model: $("model").value, messages: [{ role: "user", content }],
      stream: true, stream_options: { include_usage: true },
    };
    const maxTokens = parseInt($("max-tokens").value, 10);
    if (maxTokens > 0) body.max_tokens = maxTokens;
    return body;
  }

  // Splits the SSE byte stream into `data:` payloads; calls onData with each parsed JSON object.
  async function readEvents(response, onData) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data && data !== "[DONE]") onData(JSON.parse(data));
      }
    }
  }

  async function send() {
    if (controller) return;
    if (!$("prompt").value.trim() && !image) {
      showError("Type a prompt or attach an image.");
      return;
    }
    const run = { started: performance.now(), first: null, pieces: 0, usage: null };
    controller = new AbortController();
    setRunning(true);
    $("output").textContent = "";
    hideError();
    resetStats();
    let outcome = "done";
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", body: JSON.stringify(requestBody()), signal: controller.signal,
        headers: VS.headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      });
      if (!response.ok) throw await VS.responseError(response);
      await readEvents(response, (chunk) => {
        if (chunk.error) throw new Error(VS.errorText(chunk, 200)); // in-band error after the first byte
        if (chunk.usage) run.usage = chunk.usage;
        const text = chunk.choices && chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
        if (text) {
          if (run.first === null) run.first = performance.now();
          run.pieces += 1;
          $("output").textContent += text;
          showStats(run, performance.now());
        }
      });
    } catch (err) {
      outcome = err.name === "AbortError" ? "stopped" : "error";
      if (outcome === "error") showError(err.message);
    } finally {
      showStats(run, performance.now());
      controller = null;
      setRunning(false, outcome);
    }
  }

  // --- stats and state ------------------------------------------------------------------------------------

  function showStats(run, now) {
    $("stat-total").textContent = VS.ms(now - run.started);
    if (run.first === null) return;
    $("stat-ttft").textContent = VS.ms(run.first - run.started);
    const tokens = run.usage ? run.usage.completion_tokens : run.pieces;
    // decoding rate after the first token; a one-chunk answer (OCR) has no such span, so the whole request counts
    const seconds = (run.pieces > 1 ? now - run.first : now - run.started) / 1000;
    if (tokens && seconds > 0) $("stat-tps").textContent = (tokens / seconds).toFixed(1);
    if (run.usage) $("stat-usage").textContent = run.usage.prompt_tokens + " / " + run.usage.completion_tokens;
  }

  function resetStats() {
    for (const id of ["stat-ttft", "stat-tps", "stat-total", "stat-usage"]) $(id).textContent = "–";
  }

  function setRunning(running, outcome) {
    $("send").disabled = running;
    $("stop").disabled = !running;
    const pill = $("run-state");
    pill.textContent = running ? "streaming…" : outcome;
    pill.className = "pill " + (running ? "busy" : outcome);
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }

  function hideError() {
    $("error").hidden = true;
  }

  VS.bindKeyField($("api-key"), loadModels);
  bindImageInputs();
  $("model").addEventListener("change", showCapabilities);
  $("send").addEventListener("click", send);
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send();
  });
  loadModels();
})();
