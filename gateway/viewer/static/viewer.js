// The AiCOCO viewer: runs a model through the service's own routes and draws the answer.
//
// The service renders the slices (POST viewer/render), so the browser never parses DICOM or
// NIfTI and shows exactly the stack the model saw; this script only draws PNGs and the AiCOCO
// shapes on them. A model runs as a job (POST models/{name}/jobs), so a long run (a CT series
// through a volumetric model on a CPU) shows its stage and progress, survives a proxy's timeout,
// and can be cancelled. State lives in one object; every change ends in draw().
"use strict";

const PALETTE = ["#e8432e", "#4a90e2", "#50e3c2", "#f5a623", "#bd10e0", "#7ed321", "#f8e71c"];
const FILL_ALPHA = 0.35;
const MASK_ALPHA = 0.45;
const MAX_VIEW = 768;
const SKIPPED_NAMES = /^(\.|DICOMDIR$|Thumbs\.db$)/i;

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  defaultModel: null,
  files: [],
  entries: null,
  rendering: null,
  pictures: [],
  z: 0,
  result: null,
  summary: "",
  saved: false,
  hidden: new Set(),
  threshold: 0,
  window: "auto",
  job: null,
};
const POLL_MS = [100, 200, 300, 500];
const STAGES = {
  starting: "Starting",
  retrieve: "Retrieving the study",
  parse: "Checking the request",
  read: "Reading the images",
  preprocess: "Preparing the input",
  triton: "Running the model",
  postprocess: "Shaping the result",
  format: "Writing the answer",
  save: "Saving the answer",
  store: "Storing in the PACS",
};

// Requests.

class ServiceError extends Error {}

function errorMessage(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) {
      return `${body.error.message} (${body.error.code}, HTTP ${status})`;
    }
  } catch (_) {
    // not the service's JSON error: fall through
  }
  return `HTTP ${status} from the service: ${text.slice(0, 300) || "no body"}`;
}

// XMLHttpRequest rather than fetch: only it reports upload progress.
function keyHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function call(method, url, what) {
  let response;
  try {
    response = await fetch(url, { method, headers: keyHeaders() });
  } catch (_) {
    throw new ServiceError(`the service did not answer (${what}): is it running?`);
  }
  const text = await response.text();
  if (!response.ok) {
    throw new ServiceError(errorMessage(response.status, text));
  }
  return JSON.parse(text);
}

function post(url, form, what) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    for (const [name, value] of Object.entries(keyHeaders())) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        progress(`Uploading for ${what}`, event.loaded / event.total);
      }
    };
    xhr.upload.onload = () => progress(`Waiting for ${what}`, null);
    xhr.onload = () => {
      if (xhr.status === 200 || xhr.status === 202) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch (_) {
          reject(new ServiceError(`the service answered ${what} with something that is not JSON`));
        }
      } else {
        reject(new ServiceError(errorMessage(xhr.status, xhr.responseText)));
      }
    };
    xhr.onerror = () => reject(new ServiceError(`the service did not answer (${what}): is it running?`));
    xhr.send(form);
  });
}

function uploadForm(files, entries) {
  const form = new FormData();
  for (const file of files) {
    form.append("files", file, file.name);
  }
  form.append("images", JSON.stringify(entries));
  return form;
}

// Status line.

function progress(text, fraction) {
  $("progress-row").hidden = false;
  $("status").textContent = text;
  if (fraction === null) {
    $("progress").removeAttribute("value");
  } else {
    $("progress").value = fraction;
  }
}

function done(text) {
  $("progress-row").hidden = !text;
  $("status").textContent = text || "";
  $("progress").value = 1;
}

function showError(message) {
  $("error").hidden = false;
  $("error").textContent = message;
  done("");
  document.body.dataset.state = "error";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function guarded(work) {
  clearError();
  try {
    await work();
  } catch (error) {
    showError(error instanceof ServiceError ? error.message : `The viewer failed: ${error}`);
  }
}

// Models.

async function loadModels() {
  const response = await fetch("models");
  const text = await response.text();
  if (!response.ok) {
    throw new ServiceError(errorMessage(response.status, text));
  }
  const listing = JSON.parse(text);
  state.models = listing.models;
  state.defaultModel = listing.default_model;
  const select = $("model");
  select.replaceChildren();
  for (const model of state.models) {
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = `${model.name} (${model.task || "unknown task"})`;
    option.disabled = !model.ready;
    if (!model.ready) {
      option.textContent += " - not ready";
    }
    select.append(option);
  }
  select.value = state.defaultModel;
  describeModel();
}

function describeModel() {
  const model = state.models.find((m) => m.name === $("model").value);
  if (!model) {
    $("model-info").textContent = "";
    return;
  }
  const outputs = [...model.categories, ...model.regressions].map((c) => c.name).join(", ");
  $("model-info").textContent = model.ready
    ? `${model.task || "?"}: ${outputs || "no declared outputs"}`
    : `not ready: ${model.reason || model.state || "unknown"}`;
  updateRunButton();
}

function updateRunButton() {
  const model = state.models.find((m) => m.name === $("model").value);
  $("run").disabled = !(model && model.ready && state.files.length && state.rendering);
}

// Files.

function perFileEntries(files) {
  return files.map((file, i) => ({ id: `image-${i}`, file_name: file.name, index: i }));
}

async function chooseFiles(files) {
  const usable = files.filter((file) => !SKIPPED_NAMES.test(file.name));
  if (!usable.length) {
    throw new ServiceError("no image file among those chosen");
  }
  usable.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  state.files = usable;
  if (!state.saved) {
    setResult(null, null);
  }
  const count = usable.length === 1 ? usable[0].name : `${usable.length} files`;
  $("chosen").textContent = `Images: ${count}`;
  await loadImages();
}

// The entries a saved result names, or one per file; a single file of several slices (a
// NIfTI volume, a multi-frame DICOM) then gets one entry per slice so results land per slice.
async function loadImages() {
  state.entries = state.saved ? state.result.images.map(entryOf) : perFileEntries(state.files);
  state.rendering = null;
  await render();
  const single = !state.saved && state.files.length === 1 && state.entries.length === 1;
  if (single && state.rendering.depth > 1) {
    const name = state.files[0].name;
    state.entries = state.rendering.slices.map((s) => ({ id: `slice-${s.z}`, file_name: name, index: s.z }));
    state.rendering.slices.forEach((s) => {
      s.image_id = `slice-${s.z}`;
    });
  }
  updateRunButton();
}

function entryOf(image) {
  return { id: image.id, file_name: image.file_name, index: image.index };
}

async function render() {
  document.body.dataset.state = "rendering";
  const url = `viewer/render?window=${encodeURIComponent(state.window)}`;
  const rendering = await post(url, uploadForm(state.files, state.entries), "the images");
  const pictures = await Promise.all(rendering.slices.map((s) => decode(s.png)));
  // A new window keeps the slice; new images start in the middle of the stack.
  if (!state.rendering || state.rendering.depth !== rendering.depth) {
    state.z = Math.floor(rendering.depth / 2);
  }
  state.rendering = rendering;
  state.pictures = pictures;
  showStack();
  done(state.summary);
  document.body.dataset.state = state.result ? "ready" : "images";
}

function decode(base64) {
  const picture = new Image();
  picture.src = `data:image/png;base64,${base64}`;
  return picture.decode().then(() => picture);
}

function showStack() {
  const r = state.rendering;
  $("drop").hidden = true;
  $("view").hidden = false;
  $("controls").hidden = false;
  $("slice").max = String(r.depth - 1);
  $("slice").disabled = r.depth === 1;
  const select = $("window");
  select.replaceChildren();
  for (const name of ["auto", ...Object.keys(r.presets), "custom"]) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name.replace("_", " ");
    select.append(option);
  }
  select.value = state.window.includes(",") ? "custom" : state.window;
  for (const id of ["window", "center", "width"]) {
    $(id).disabled = r.rgb;
  }
  if (r.window) {
    $("center").value = String(Math.round(r.window.center * 10) / 10);
    $("width").value = String(Math.round(r.window.width * 10) / 10);
  }
  $("center").title = `values from ${r.value_range[0]} to ${r.value_range[1]}`;
  const scale = Math.min(MAX_VIEW / r.width, MAX_VIEW / r.height);
  $("view").width = Math.round(r.width * scale);
  $("view").height = Math.round(r.height * scale);
  draw();
}

// The result.

function setResult(result, model) {
  state.result = result;
  state.summary = result
    ? `${model}: ${result.annotations.length} annotation(s), ${result.objects.length} object(s)`
    : "";
  const link = $("download");
  if (link.href) {
    URL.revokeObjectURL(link.href);
  }
  if (result) {
    const blob = new Blob([JSON.stringify(result, null, 2)], { type: "application/json" });
    link.href = URL.createObjectURL(blob);
    link.download = `${model || "result"}.aicoco.json`;
  } else {
    link.removeAttribute("href");
  }
  link.hidden = !result;
  state.hidden.clear();
  state.threshold = 0;
  $("threshold").value = "0";
  listCategories();
  if (state.rendering) {
    draw();
  }
}

async function runModel() {
  const model = $("model").value;
  state.saved = false;
  document.body.dataset.state = "running";
  const url = `models/${encodeURIComponent(model)}/jobs`;
  const submitted = await post(url, uploadForm(state.files, state.entries), `model ${model}`);
  state.job = `jobs/${encodeURIComponent(submitted.id)}`;
  $("cancel").hidden = false;
  try {
    const ended = await follow(state.job, model);
    if (ended.state === "cancelled") {
      done("Cancelled");
      document.body.dataset.state = "images";
      return;
    }
    if (ended.state === "failed") {
      const error = ended.error;
      throw new ServiceError(`${error.message} (${error.code}, HTTP ${error.status})`);
    }
    setResult(await call("GET", `${state.job}/result`, `model ${model}'s result`), model);
  } finally {
    state.job = null;
    $("cancel").hidden = true;
  }
  done(state.summary);
  document.body.dataset.state = "ready";
}

// Polls the job until it ends, showing its place in the queue, its stage and its progress.
async function follow(job, model) {
  for (let poll = 0; ; poll += 1) {
    const status = await call("GET", job, `model ${model}`);
    if (["succeeded", "failed", "cancelled"].includes(status.state)) {
      return status;
    }
    showJob(status, model);
    await new Promise((wake) => setTimeout(wake, POLL_MS[Math.min(poll, POLL_MS.length - 1)]));
  }
}

function showJob(status, model) {
  if (status.state === "queued") {
    const ahead = status.queue_position;
    progress(`Model ${model}: queued${ahead ? `, ${ahead} ahead` : ""}`, null);
    return;
  }
  const stage = STAGES[status.stage] || status.stage || "Running";
  const work = status.progress;
  if (work && work.total > 0) {
    progress(`Model ${model}: ${stage}, ${work.unit} ${work.done} of ${work.total}`, work.done / work.total);
  } else {
    progress(`Model ${model}: ${stage}`, null);
  }
}

async function cancelJob() {
  if (state.job) {
    await call("DELETE", state.job, "the cancellation");
  }
}

async function openResult(file) {
  let result;
  try {
    result = JSON.parse(await file.text());
  } catch (error) {
    throw new ServiceError(`${file.name} is not JSON: ${error.message}`);
  }
  if (!result || !Array.isArray(result.images) || !result.images.length) {
    throw new ServiceError(`${file.name} is not an AiCOCO document: it has no "images" list`);
  }
  for (const key of ["annotations", "categories", "regressions", "objects"]) {
    result[key] = result[key] || [];
  }
  result.meta = result.meta || {};
  state.saved = true;
  setResult(result, file.name.replace(/\.json$/i, ""));
  const names = [...new Set(result.images.map((image) => image.file_name))];
  const have = new Set(state.files.map((f) => f.name));
  if (names.every((name) => have.has(name))) {
    state.files = state.files.filter((f) => names.includes(f.name));
    await loadImages();
    return;
  }
  state.rendering = null;
  state.files = [];
  $("view").hidden = true;
  $("controls").hidden = true;
  $("drop").hidden = false;
  document.body.dataset.state = "waiting-images";
  done(`Now choose the images this result is about: ${names.slice(0, 5).join(", ")}${names.length > 5 ? ", ..." : ""}`);
}

// Lookups over the result.

function categoriesById() {
  return new Map((state.result ? state.result.categories : []).map((c) => [c.id, c]));
}

function colourOf(category) {
  if (category.color) {
    return category.color;
  }
  const position = state.result.categories.indexOf(category);
  return PALETTE[position % PALETTE.length];
}

// The most specific category of an object: the one no other of its categories is a parent of.
function displayCategory(object, categories) {
  const own = (object.category_ids || []).map((id) => categories.get(id)).filter(Boolean);
  const parents = new Set(own.map((c) => c.supercategory_id).filter(Boolean));
  return own.find((c) => !parents.has(c.id)) || own[0] || null;
}

function listCategories() {
  const list = $("categories");
  list.replaceChildren();
  const result = state.result;
  if (!result) {
    $("threshold-row").hidden = true;
    return;
  }
  for (const category of result.categories) {
    const item = document.createElement("li");
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !state.hidden.has(category.id);
    box.dataset.categoryId = category.id;
    box.addEventListener("change", () => {
      if (box.checked) {
        state.hidden.delete(category.id);
      } else {
        state.hidden.add(category.id);
      }
      draw();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colourOf(category);
    label.append(box, swatch, category.name);
    item.append(label);
    list.append(item);
  }
  $("threshold-row").hidden = !result.objects.some((o) => typeof o.confidence === "number");
}

function describeResults(holder, list) {
  list.replaceChildren();
  if (!state.result || !holder) {
    return;
  }
  const categories = categoriesById();
  const regressions = new Map(state.result.regressions.map((r) => [r.id, r]));
  const lines = [];
  for (const id of holder.category_ids || []) {
    const category = categories.get(id);
    lines.push({ text: category ? category.name : id, colour: category && colourOf(category) });
  }
  for (const item of holder.regressions || []) {
    const regression = regressions.get(item.regression_id);
    const unit = regression && regression.unit ? ` ${regression.unit}` : "";
    const value = Number(item.value).toPrecision(4);
    lines.push({ text: `${regression ? regression.name : item.regression_id}: ${value}${unit}` });
  }
  if (holder.category_ids && !holder.category_ids.length && !lines.length) {
    lines.push({ text: "no category" });
  }
  for (const line of lines) {
    const item = document.createElement("li");
    if (line.colour) {
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = line.colour;
      item.append(swatch);
    }
    item.append(line.text);
    list.append(item);
  }
}

// Drawing.

function draw() {
  const r = state.rendering;
  if (!r) {
    return;
  }
  const canvas = $("view");
  const context = canvas.getContext("2d");
  const scale = canvas.width / r.width;
  const slice = r.slices[state.z];
  context.imageSmoothingEnabled = true;
  context.drawImage(state.pictures[state.z], 0, 0, canvas.width, canvas.height);
  const shapes = state.result ? drawAnnotations(context, slice.image_id, scale) : 0;
  canvas.dataset.z = String(state.z);
  canvas.dataset.imageId = slice.image_id;
  canvas.dataset.shapes = String(shapes);
  $("slice").value = String(state.z);
  $("slice-label").textContent = `${state.z + 1} / ${r.depth}  ${slice.file_name}${r.depth > 1 && state.files.length === 1 ? ` [${slice.index}]` : ""}`;
  const image = state.result && state.result.images.find((i) => i.id === slice.image_id);
  describeResults(image, $("image-results"));
  describeResults(state.result && state.result.meta, $("series-results"));
}

function drawAnnotations(context, imageId, scale) {
  const result = state.result;
  const categories = categoriesById();
  const objects = new Map(result.objects.map((o) => [o.id, o]));
  let shapes = 0;
  for (const annotation of result.annotations) {
    if (annotation.image_id !== imageId) {
      continue;
    }
    const object = objects.get(annotation.object_id) || {};
    const category = displayCategory(object, categories);
    if (category && state.hidden.has(category.id)) {
      continue;
    }
    if (typeof object.confidence === "number" && object.confidence < state.threshold) {
      continue;
    }
    const colour = category ? colourOf(category) : PALETTE[0];
    for (const box of annotation.bbox || []) {
      drawBox(context, box, scale, colour);
      shapes += 1;
    }
    const segmentation = annotation.segmentation;
    if (Array.isArray(segmentation)) {
      for (const polygon of segmentation) {
        drawPolygon(context, polygon, scale, colour);
        shapes += 1;
      }
    } else if (segmentation && segmentation.counts) {
      drawMask(context, segmentation, colour);
      shapes += 1;
    }
  }
  return shapes;
}

// Box corners are pixel edges; rounded to whole canvas pixels, a 2-pixel line stays crisp.
function drawBox(context, box, scale, colour) {
  const [x1, y1, x2, y2] = box.map((v) => Math.round(v * scale));
  context.strokeStyle = colour;
  context.lineWidth = 2;
  context.strokeRect(x1, y1, x2 - x1, y2 - y1);
}

// Polygon vertices are pixel indices: a vertex sits at its pixel's centre.
function drawPolygon(context, polygon, scale, colour) {
  context.beginPath();
  for (let i = 0; i < polygon.length; i += 2) {
    const x = (polygon[i] + 0.5) * scale;
    const y = (polygon[i + 1] + 0.5) * scale;
    if (i === 0) {
      context.moveTo(x, y);
    } else {
      context.lineTo(x, y);
    }
  }
  context.closePath();
  context.globalAlpha = FILL_ALPHA;
  context.fillStyle = colour;
  context.fill();
  context.globalAlpha = 1;
  context.strokeStyle = colour;
  context.lineWidth = 1.5;
  context.stroke();
}

// COCO's uncompressed RLE: runs over the pixels in column-major order, background first.
function drawMask(context, rle, colour) {
  const [height, width] = rle.size;
  const mask = new OffscreenCanvas(width, height);
  const maskContext = mask.getContext("2d");
  const pixels = maskContext.createImageData(width, height);
  const [red, green, blue] = rgbOf(colour);
  let position = 0;
  rle.counts.forEach((run, i) => {
    if (i % 2 === 1) {
      for (let p = position; p < position + run; p += 1) {
        const offset = ((p % height) * width + Math.floor(p / height)) * 4;
        pixels.data[offset] = red;
        pixels.data[offset + 1] = green;
        pixels.data[offset + 2] = blue;
        pixels.data[offset + 3] = Math.round(MASK_ALPHA * 255);
      }
    }
    position += run;
  });
  maskContext.putImageData(pixels, 0, 0);
  context.imageSmoothingEnabled = false;
  context.drawImage(mask, 0, 0, context.canvas.width, context.canvas.height);
  context.imageSmoothingEnabled = true;
}

function rgbOf(colour) {
  const hex = colour.replace("#", "");
  const full = hex.length === 3 ? [...hex].map((c) => c + c).join("") : hex;
  return [0, 2, 4].map((i) => parseInt(full.slice(i, i + 2), 16) || 0);
}

// Navigation.

function goTo(z) {
  const r = state.rendering;
  if (!r) {
    return;
  }
  const clamped = Math.max(0, Math.min(r.depth - 1, z));
  if (clamped !== state.z) {
    state.z = clamped;
    draw();
  }
}

function onKey(event) {
  if (!state.rendering || event.target.matches("input, select, textarea")) {
    return;
  }
  const steps = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -10, PageDown: 10 };
  if (event.key in steps) {
    goTo(state.z + steps[event.key]);
  } else if (event.key === "Home") {
    goTo(0);
  } else if (event.key === "End") {
    goTo(state.rendering.depth - 1);
  } else {
    return;
  }
  event.preventDefault();
}

// Drag and drop, folders included.

async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) {
    return [...transfer.files];
  }
  const files = [];
  async function walk(entry) {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) {
          break;
        }
        for (const child of batch) {
          await walk(child);
        }
      }
    }
  }
  for (const entry of entries) {
    await walk(entry);
  }
  return files;
}

// Wiring.

function setUp() {
  // The key lives in this tab only (sessionStorage), never in the page's URL or a cookie.
  $("api-key").value = sessionStorage.getItem("aicoco-api-key") || "";
  $("api-key").addEventListener("change", () => sessionStorage.setItem("aicoco-api-key", $("api-key").value.trim()));
  $("model").addEventListener("change", describeModel);
  $("files").addEventListener("change", (event) => guarded(() => chooseFiles([...event.target.files])));
  $("folder").addEventListener("change", (event) => guarded(() => chooseFiles([...event.target.files])));
  $("result-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) {
      guarded(() => openResult(file));
    }
  });
  $("run").addEventListener("click", () => guarded(runModel));
  $("cancel").addEventListener("click", () => guarded(cancelJob));
  $("slice").addEventListener("input", (event) => goTo(Number(event.target.value)));
  $("view").addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      goTo(state.z + Math.sign(event.deltaY));
    },
    { passive: false },
  );
  document.addEventListener("keydown", onKey);
  $("window").addEventListener("change", (event) => {
    if (event.target.value === "custom") {
      return;
    }
    state.window = event.target.value;
    guarded(render);
  });
  const custom = () => {
    const center = Number($("center").value);
    const width = Number($("width").value);
    if (Number.isFinite(center) && width > 0) {
      state.window = `${center},${width}`;
      guarded(render);
    }
  };
  $("center").addEventListener("change", custom);
  $("width").addEventListener("change", custom);
  $("threshold").addEventListener("input", (event) => {
    state.threshold = Number(event.target.value);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    draw();
  });
  const drop = document.body;
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    $("drop").classList.add("over");
  });
  drop.addEventListener("dragleave", () => $("drop").classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    $("drop").classList.remove("over");
    const transfer = event.dataTransfer;
    guarded(async () => chooseFiles(await droppedFiles(transfer)));
  });
  guarded(async () => {
    await loadModels();
    document.body.dataset.state = "idle";
  });
}

setUp();
