// resshift serve: the page's behaviour. Vanilla JS, no dependencies, talks only to its own server.
//
// Flow: GET /v1/models fills the task and model selectors; the user picks an image (and, to inpaint,
// paints a mask at the image's natural resolution); Run posts a multipart form to the task's endpoint
// with an XMLHttpRequest (for upload progress); the image that comes back is shown beside the input
// with a before/after slider, zoom and pan, and offered for download under the server's file name.
// A server started with --api-key answers 401: the page then asks for the key in its key form, keeps it
// for the browser session (sessionStorage) and sends it as `Authorization: Bearer KEY`.
"use strict";

// UI task -> the models' `task` field, the endpoint, and the form fields only that endpoint takes.
const TASKS = {
  "upscale": { modelTask: "sr", endpoint: "/v1/upscale", label: "upscaling", suffix: "upscaled" },
  "inpaint": { modelTask: "inpaint", endpoint: "/v1/inpaint", label: "inpainting", suffix: "inpainted" },
  "restore-face": { modelTask: "face", endpoint: "/v1/restore-face", label: "face restoration",
                    suffix: "restored" },
};
const MAX_ZOOM = 32;
const KEY_STORAGE = "resshift-api-key";
const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  limits: {},
  input: null,        // {file, url, width, height, stem}
  result: null,       // {url, width, height}
  running: false,
  view: { zoom: 1, x: 0, y: 0 },
  fitted: true,       // the view still fits the result (refit on resize), until the user zooms or pans
  erase: false,
};

// ---------------------------------------------------------------- messages and progress

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

const progress = {
  timer: null,
  started: 0,
  show() {
    $("progress").hidden = false;
    this.upload(0);
  },
  upload(fraction) {
    const percent = Math.round(fraction * 100);
    $("progress").classList.remove("indeterminate");
    $("progress").querySelector(".fill").style.width = `${percent}%`;
    $("progress").querySelector(".bar").setAttribute("aria-valuenow", String(percent));
    $("progress-text").textContent = `Uploading… ${percent}%`;
  },
  processing() {
    if (this.timer !== null) return;
    $("progress").classList.add("indeterminate");
    $("progress").querySelector(".fill").style.width = "";
    $("progress").querySelector(".bar").removeAttribute("aria-valuenow");
    this.started = performance.now();
    const tick = () => {
      const seconds = Math.floor((performance.now() - this.started) / 1000);
      $("progress-text").textContent = `Processing… ${seconds} s`;
    };
    tick();
    this.timer = setInterval(tick, 250);
  },
  hide() {
    clearInterval(this.timer);
    this.timer = null;
    $("progress").hidden = true;
    $("progress").classList.remove("indeterminate");
  },
};

// ---------------------------------------------------------------- the API key

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// After a 401: show the key form (saying whether a key was sent and refused) and resolve once the user
// has entered a key, which is kept for this browser session.
function askForKey() {
  const refused = sessionStorage.getItem(KEY_STORAGE) !== null;
  sessionStorage.removeItem(KEY_STORAGE);
  $("key-message").textContent = refused
    ? "The server refused this key. Enter the key again."
    : "This server needs an API key (the one given to resshift serve --api-key). It is kept until you " +
      "close this tab.";
  const form = $("key-form");
  form.hidden = false;
  $("key-input").value = "";
  $("key-input").focus();
  return new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORAGE, key);
      form.hidden = true;
      form.onsubmit = null;
      resolve();
    };
  });
}

// ---------------------------------------------------------------- models and options

function currentTask() {
  return $("task").value;
}

function modelsFor(task) {
  return state.models.filter((m) => m.task === TASKS[task].modelTask);
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value) || null;
}

// GET /v1/models, asking for the API key as long as the server answers 401.
async function fetchModels() {
  for (;;) {
    const response = await fetch("/v1/models", { headers: { Accept: "application/json", ...authHeaders() } });
    if (response.status !== 401) return response;
    await askForKey();
  }
}

async function loadModels() {
  let response;
  try {
    response = await fetchModels();
  } catch (err) {
    showError("Could not reach the server to list its models. Is `resshift serve` still running?");
    return;
  }
  if (!response.ok) {
    showError(`Could not list the server's models (HTTP ${response.status}).`);
    return;
  }
  const data = await response.json();
  state.models = Array.isArray(data.models) ? data.models : [];
  state.limits = data.limits || {};

  const unavailable = [];
  for (const option of $("task").options) {
    const count = modelsFor(option.value).length;
    option.disabled = count === 0;
    option.title = count === 0 ? `No ${TASKS[option.value].label} model is loaded on this server` : "";
    if (count === 0) {
      option.textContent = `${option.textContent} (no model)`;
      unavailable.push(option.title);
    }
  }
  $("task").title = unavailable.join("\n");
  const first = [...$("task").options].find((o) => !o.disabled);
  if (!first) {
    showError("The server has no models loaded: start `resshift serve` with at least one --model.");
    return;
  }
  if ($("task").selectedOptions[0].disabled) $("task").value = first.value;
  onTaskChange();
}

function onTaskChange() {
  const task = currentTask();
  for (const el of document.querySelectorAll("[data-tasks]")) {
    el.hidden = !el.dataset.tasks.split(" ").includes(task);
  }
  const select = $("model");
  select.replaceChildren();
  const models = modelsFor(task);
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = task === "upscale" ? `${m.name} (×${m.scale}, ${m.steps} steps)`
                                            : `${m.name} (${m.steps} steps)`;
    option.title = m.description || "";
    select.append(option);
  }
  const preferred = models.find((m) => m.default) || models[0];
  if (preferred) select.value = preferred.name;
  onModelChange();
  setupMask();
  describeInput();
}

function onModelChange() {
  const model = currentModel();
  if (!model) {
    $("model-info").textContent = "";
    updateRunButton();
    return;
  }
  $("model-info").textContent = model.description || "";
  $("scale").value = String(model.scale);
  const steps = $("steps");
  steps.max = String(model.steps);
  steps.value = String(model.steps);
  steps.disabled = model.steps <= 1;
  steps.title = model.steps <= 1 ? "This model samples in a single step" : `1 to ${model.steps}`;
  describeInput();
  updateRunButton();
}

function updateRunButton() {
  $("run").disabled = state.running || !state.input || !currentModel();
}

// ---------------------------------------------------------------- choosing the input image

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function describeInput() {
  const info = $("input-info");
  if (!state.input) {
    info.textContent = "No image chosen.";
    return;
  }
  const { file, width, height } = state.input;
  let text = `${file.name || "pasted image"}: ${width}×${height}, ${formatBytes(file.size)}`;
  const scale = parseFloat($("scale").value);
  if (currentTask() === "upscale" && scale > 0) {
    text += ` → ${Math.round(width * scale)}×${Math.round(height * scale)}`;
  }
  info.textContent = text;
}

// Decodes a file or blob through an object URL: { img, url } (the caller owns the URL), or null after
// showing `failure` when the browser cannot read it.
async function decodeFile(file, failure) {
  const url = URL.createObjectURL(file);
  try {
    const img = await new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error("decode"));
      image.src = url;
    });
    return { img, url };
  } catch (err) {
    URL.revokeObjectURL(url);
    showError(failure);
    return null;
  }
}

async function chooseFile(file) {
  if (!file) return;
  clearError();
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image (${file.type}). Choose a PNG, JPEG or WebP file.`);
    return;
  }
  const maxMb = state.limits.max_upload_mb;
  if (maxMb && file.size > maxMb * 1024 * 1024) {
    showError(`${file.name} is ${formatBytes(file.size)}; this server accepts at most ${maxMb} MB.`);
    return;
  }
  const decoded = await decodeFile(file, `This browser cannot read ${file.name || "the image"}. ` +
                                         "Convert it to PNG or JPEG first.");
  if (!decoded) return;
  const { img, url } = decoded;
  const width = img.naturalWidth;
  const height = img.naturalHeight;
  const maxPixels = state.limits.max_pixels;
  if (maxPixels && width * height > maxPixels) {
    URL.revokeObjectURL(url);
    showError(`${file.name} is ${width}×${height} = ${(width * height).toLocaleString()} pixels; ` +
              `this server accepts at most ${Number(maxPixels).toLocaleString()}. Crop or shrink it first.`);
    return;
  }
  if (state.input) URL.revokeObjectURL(state.input.url);
  const stem = (file.name || "image").replace(/\.[^.]*$/, "") || "image";
  state.input = { file, url, width, height, stem };
  $("input-image").src = url;
  $("input-empty").hidden = true;
  $("input-wrap").hidden = false;
  layoutInput();
  setupMask(true);
  describeInput();
  updateRunButton();
}

// Show the input as large as its pane allows (small images are enlarged, so the brush is usable);
// the mask canvas follows the image's displayed box through CSS.
function layoutInput() {
  if (!state.input) return;
  const stage = $("input-stage");
  const width = stage.clientWidth - 12;
  const height = stage.clientHeight - 12;
  const k = Math.min(width / state.input.width, height / state.input.height);
  $("input-image").style.width = `${Math.max(1, Math.floor(state.input.width * k))}px`;
  $("input-image").style.height = `${Math.max(1, Math.floor(state.input.height * k))}px`;
}

function setupDropZone() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  zone.addEventListener("dragenter", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", (e) => {
    if (!zone.contains(e.relatedTarget)) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    chooseFile(e.dataTransfer.files[0]);
  });
  // A file dropped beside the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) chooseFile(file);
  });
}

// ---------------------------------------------------------------- the inpainting mask

const mask = {
  canvas: null,
  ctx: null,
  drawing: false,
  last: null,
};

// Show the canvas for inpainting; `reset` resizes it to the image's natural size (which clears it).
function setupMask(reset = false) {
  const canvas = $("mask-canvas");
  canvas.hidden = !(currentTask() === "inpaint" && state.input);
  if (!state.input) return;
  if (reset || canvas.width !== state.input.width || canvas.height !== state.input.height) {
    canvas.width = state.input.width;
    canvas.height = state.input.height;
  }
}

function canvasPoint(e) {
  const rect = mask.canvas.getBoundingClientRect();
  const sx = mask.canvas.width / rect.width;
  const sy = mask.canvas.height / rect.height;
  return { x: (e.clientX - rect.left) * sx, y: (e.clientY - rect.top) * sy, scale: sx };
}

function strokeTo(point) {
  const ctx = mask.ctx;
  ctx.globalCompositeOperation = state.erase ? "destination-out" : "source-over";
  ctx.strokeStyle = "#ff2020";
  ctx.fillStyle = "#ff2020";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = Number($("brush-size").value) * point.scale;
  const from = mask.last || point;
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(point.x + 0.01, point.y);   // a zero-length line draws nothing; nudge it into a dot
  ctx.stroke();
  mask.last = point;
}

function setBrushMode(erase) {
  state.erase = erase;
  $("brush-paint").setAttribute("aria-pressed", String(!erase));
  $("brush-erase").setAttribute("aria-pressed", String(erase));
}

// The mask as the server wants it: a PNG of the image's size, white where painted, black elsewhere.
// Returns null when nothing is painted.
async function maskBlob() {
  const { width, height } = mask.canvas;
  const painted = mask.ctx.getImageData(0, 0, width, height).data;
  const out = new ImageData(width, height);
  let any = false;
  for (let i = 0; i < painted.length; i += 4) {
    const v = painted[i + 3] > 0 ? 255 : 0;
    any = any || v > 0;
    out.data[i] = out.data[i + 1] = out.data[i + 2] = v;
    out.data[i + 3] = 255;
  }
  if (!any) return null;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(out, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// An uploaded mask is copied onto the canvas (white -> painted), so it can be touched up with the brush.
async function loadMaskFile(file) {
  if (!file) return;
  clearError();
  if (!state.input) {
    showError("Choose the image first, then its mask.");
    return;
  }
  const decoded = await decodeFile(file, `This browser cannot read the mask ${file.name}.`);
  if (!decoded) return;
  URL.revokeObjectURL(decoded.url);
  const { img } = decoded;
  const { width, height } = state.input;
  if (img.naturalWidth !== width || img.naturalHeight !== height) {
    showError(`The mask is ${img.naturalWidth}×${img.naturalHeight} but the image is ${width}×${height}; ` +
              "a mask must have the image's size.");
    return;
  }
  const scratch = document.createElement("canvas");
  scratch.width = width;
  scratch.height = height;
  const sctx = scratch.getContext("2d");
  sctx.drawImage(img, 0, 0);
  const src = sctx.getImageData(0, 0, width, height).data;
  const out = new ImageData(width, height);
  for (let i = 0; i < src.length; i += 4) {
    const luma = 0.299 * src[i] + 0.587 * src[i + 1] + 0.114 * src[i + 2];
    const on = luma >= 128 && src[i + 3] >= 128;
    out.data[i] = 255;
    out.data[i + 1] = out.data[i + 2] = 32;
    out.data[i + 3] = on ? 255 : 0;
  }
  mask.ctx.putImageData(out, 0, 0);
}

function setupMaskTools() {
  mask.canvas = $("mask-canvas");
  mask.ctx = mask.canvas.getContext("2d", { willReadFrequently: true });
  const canvas = mask.canvas;
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    mask.drawing = true;
    mask.last = null;
    strokeTo(canvasPoint(e));
  });
  canvas.addEventListener("pointermove", (e) => {
    if (mask.drawing) strokeTo(canvasPoint(e));
  });
  const stop = () => { mask.drawing = false; mask.last = null; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);

  $("brush-size").addEventListener("input", () => { $("brush-size-value").value = $("brush-size").value; });
  $("brush-paint").addEventListener("click", () => setBrushMode(false));
  $("brush-erase").addEventListener("click", () => setBrushMode(true));
  $("mask-clear").addEventListener("click", () => mask.ctx.clearRect(0, 0, canvas.width, canvas.height));
  $("mask-input").addEventListener("change", (e) => {
    loadMaskFile(e.target.files[0]);
    e.target.value = "";
  });
}

// ---------------------------------------------------------------- running a job

function readInt(id, what, min, max) {
  const raw = $(id).value.trim();
  const value = Number(raw);
  if (raw === "" || !Number.isInteger(value) || value < min || (max !== undefined && value > max)) {
    const range = max === undefined ? `${min} or more` : `${min} to ${max}`;
    throw new Error(`${what} must be a whole number, ${range}.`);
  }
  return value;
}

async function buildForm(task, model) {
  const form = new FormData();
  form.append("image", state.input.file, state.input.file.name || "image.png");
  form.append("model", model.name);
  form.append("steps", String(readInt("steps", "Steps", 1, model.steps)));
  form.append("seed", String(readInt("seed", "Seed", 0)));
  form.append("format", $("format").value);
  if (task === "upscale") {
    const scale = Number($("scale").value);
    if (!(scale > 0 && scale <= 16)) throw new Error("Scale must be a number above 0, at most 16.");
    form.append("scale", String(scale));
    form.append("tile", String(readInt("tile", "Tile size", 0)));
    form.append("color_fix", $("color-fix").value);
  } else if (task === "inpaint") {
    const blob = await maskBlob();
    if (!blob) throw new Error("Paint the area to fill on the input image first (or upload a mask).");
    form.append("mask", blob, `${state.input.stem}_mask.png`);
    form.append("mask_dilate", String(readInt("mask-dilate", "Grow mask", 0)));
  } else {
    form.append("resize", $("resize").checked ? "true" : "false");
  }
  return form;
}

// The file name from Content-Disposition (RFC 6266: filename*=UTF-8''... preferred), without any path.
function filenameFrom(header) {
  if (!header) return null;
  let name = null;
  let m = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (m) {
    try { name = decodeURIComponent(m[1].trim()); } catch (err) { name = null; }
  }
  if (!name) {
    m = /filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(header) || /filename\s*=\s*([^;]+)/i.exec(header);
    if (m) name = m[1].replace(/\\(.)/g, "$1").trim();
  }
  if (!name) return null;
  name = name.split(/[\\/]/).pop();
  return name || null;
}

async function errorText(xhr) {
  let text = "";
  try { text = await xhr.response.text(); } catch (err) { text = ""; }
  let message = text.trim() || xhr.statusText || "no details";
  try {
    const data = JSON.parse(text);
    if (typeof data.error === "string") {
      message = data.error;
    } else if (typeof data.detail === "string") {
      message = data.detail;
    } else if (Array.isArray(data.detail)) {
      message = data.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("\n");
    }
  } catch (err) { /* not JSON: keep the text */ }
  if (xhr.status === 503) {
    const retry = xhr.getResponseHeader("Retry-After");
    return `Server busy, retry in ${retry || "a few"} s.\n${message}`;
  }
  return `Error ${xhr.status}: ${message}`;
}

function send(endpoint, form) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", endpoint);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "blob";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.upload(e.loaded / e.total); };
    xhr.upload.onload = () => progress.processing();
    xhr.onprogress = () => progress.processing();
    xhr.onload = () => resolve(xhr);
    xhr.onerror = () => resolve(xhr);
    xhr.ontimeout = () => resolve(xhr);
    xhr.send(form);
  });
}

// send(), asking for the API key and sending again as long as the server answers 401.
async function sendWithKey(endpoint, form) {
  for (;;) {
    const xhr = await send(endpoint, form);
    if (xhr.status !== 401) return xhr;
    progress.hide();
    await askForKey();
    progress.show();
  }
}

async function run(event) {
  event.preventDefault();
  if (state.running || !state.input) return;
  clearError();
  const task = currentTask();
  const model = currentModel();
  if (!model) {
    showError("Choose a model.");
    return;
  }
  let form;
  try {
    form = await buildForm(task, model);
  } catch (err) {
    showError(err.message);
    return;
  }
  state.running = true;
  updateRunButton();
  $("run").textContent = "Running…";
  progress.show();
  try {
    const xhr = await sendWithKey(TASKS[task].endpoint, form);
    if (xhr.status === 0) {
      showError("The request did not reach the server (network error). Is `resshift serve` still running?");
    } else if (xhr.status >= 200 && xhr.status < 300) {
      const ext = $("format").value;
      const name = filenameFrom(xhr.getResponseHeader("Content-Disposition")) ||
                   `${state.input.stem}_${TASKS[task].suffix}.${ext}`;
      await showResult(xhr.response, name, xhr.getResponseHeader("X-Elapsed-Seconds"));
    } else {
      showError(await errorText(xhr));
    }
  } finally {
    progress.hide();
    state.running = false;
    $("run").textContent = "Run";
    updateRunButton();
  }
}

// ---------------------------------------------------------------- the result: compare, zoom, pan

async function showResult(blob, filename, elapsed) {
  const decoded = await decodeFile(blob, "The server answered with an image this browser cannot show; " +
                                         "try the PNG format.");
  if (!decoded) return;
  const { img, url } = decoded;
  if (state.result) URL.revokeObjectURL(state.result.url);
  state.result = { url, width: img.naturalWidth, height: img.naturalHeight };

  const content = $("compare-content");
  content.style.width = `${state.result.width}px`;
  content.style.height = `${state.result.height}px`;
  $("result-image").src = url;
  $("before-image").src = state.input.url;   // stretched by CSS to the result's size
  const link = $("download");
  link.href = url;
  link.download = filename;
  link.title = `Save as ${filename}`;
  const seconds = elapsed !== null && elapsed !== "" && !Number.isNaN(Number(elapsed))
    ? `, ${Number(elapsed).toFixed(1)} s` : "";
  $("result-info").textContent = `${state.result.width}×${state.result.height}${seconds}`;
  $("result-empty").hidden = true;
  $("compare-viewport").hidden = false;
  $("result-tools").hidden = false;
  fitView();
}

function fitScale() {
  const box = $("compare-viewport").getBoundingClientRect();
  return Math.min(box.width / state.result.width, box.height / state.result.height);
}

function render() {
  const { zoom, x, y } = state.view;
  $("compare-content").style.transform = `translate(${x}px, ${y}px) scale(${zoom})`;
  $("zoom-level").value = `${Math.round(zoom * 100)}%`;
  const split = Number($("compare-slider").value);   // 0 = all result, 100 = all input
  $("before-clip").style.clipPath = `inset(0 ${100 - split}% 0 0)`;
  $("divider").style.left = `${x + zoom * (state.result ? state.result.width : 0) * split / 100}px`;
}

function setView(zoom, x, y, fitted = false) {
  state.view = { zoom, x, y };
  state.fitted = fitted;
  render();
}

function centredView(zoom, fitted = false) {
  const box = $("compare-viewport").getBoundingClientRect();
  setView(zoom, (box.width - zoom * state.result.width) / 2, (box.height - zoom * state.result.height) / 2,
          fitted);
}

function fitView() {
  if (state.result) centredView(fitScale(), true);
}

// Zoom by `factor`, keeping the viewport point (cx, cy) fixed on the same image pixel.
function zoomAt(factor, cx, cy) {
  if (!state.result) return;
  const { zoom, x, y } = state.view;
  const minZoom = Math.min(1, fitScale()) / 4;
  const next = Math.min(MAX_ZOOM, Math.max(minZoom, zoom * factor));
  const k = next / zoom;
  setView(next, cx - (cx - x) * k, cy - (cy - y) * k);
}

function zoomAtCentre(factor) {
  const box = $("compare-viewport").getBoundingClientRect();
  zoomAt(factor, box.width / 2, box.height / 2);
}

function setupViewer() {
  const viewport = $("compare-viewport");
  viewport.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = viewport.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - box.left, e.clientY - box.top);
  }, { passive: false });

  let drag = null;
  viewport.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    viewport.setPointerCapture(e.pointerId);
    viewport.classList.add("panning");
    drag = { px: e.clientX, py: e.clientY, x: state.view.x, y: state.view.y };
  });
  viewport.addEventListener("pointermove", (e) => {
    if (!drag) return;
    setView(state.view.zoom, drag.x + e.clientX - drag.px, drag.y + e.clientY - drag.py);
  });
  const endDrag = () => { drag = null; viewport.classList.remove("panning"); };
  viewport.addEventListener("pointerup", endDrag);
  viewport.addEventListener("pointercancel", endDrag);
  viewport.addEventListener("dblclick", fitView);
  viewport.addEventListener("keydown", (e) => {
    const step = 40;
    const { zoom, x, y } = state.view;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (e.key === "+" || e.key === "=") zoomAtCentre(1.25);
    else if (e.key === "-") zoomAtCentre(0.8);
    else if (e.key === "0") fitView();
    else if (moves[e.key]) setView(zoom, x + moves[e.key][0], y + moves[e.key][1]);
    else return;
    e.preventDefault();
  });

  $("zoom-in").addEventListener("click", () => zoomAtCentre(1.25));
  $("zoom-out").addEventListener("click", () => zoomAtCentre(0.8));
  $("zoom-fit").addEventListener("click", fitView);
  $("zoom-one").addEventListener("click", () => { if (state.result) centredView(1); });
  $("compare-slider").addEventListener("input", render);
  $("pixelated").addEventListener("change", (e) => {
    document.body.classList.toggle("pixelated", e.target.checked);
  });
  window.addEventListener("resize", () => {
    layoutInput();
    if (state.result && state.fitted) fitView();
    else if (state.result) render();
  });
}

// ---------------------------------------------------------------- start

function init() {
  $("task").addEventListener("change", () => { clearError(); onTaskChange(); });
  $("model").addEventListener("change", onModelChange);
  $("scale").addEventListener("input", describeInput);
  $("seed-random").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  });
  $("controls").addEventListener("submit", run);
  setupDropZone();
  setupMaskTools();
  setupViewer();
  loadModels();
}

init();
