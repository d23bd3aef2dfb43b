// The apps page: the list at /apps/, one app's form at /apps/<id>.
// Talks only to the agent's own API (GET /api/apps, /api/run/ws), never to ComfyUI, so it
// works with --proxy none; output files arrive base64-inlined in the run's result.

const main = document.getElementById("main");

// Paths relative to the page: /apps/ and /apps/<id> both sit one level below the root.
const apiUrl = (path) => new URL(`../${path}`, location.href);

const IMAGE_TYPES = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp", gif: "image/gif", bmp: "image/bmp" };
const VIDEO_TYPES = { mp4: "video/mp4", webm: "video/webm", mov: "video/quicktime", mkv: "video/x-matroska" };
const AUDIO_TYPES = { flac: "audio/flac", wav: "audio/wav", mp3: "audio/mpeg", ogg: "audio/ogg", opus: "audio/ogg", m4a: "audio/mp4" };

const KIND_NAMES = { image: "picture", string: "text", select: "choice", number: "number" };

const ERROR_TITLES = {
  ParamError: "Please check the form",
  InputError: "An input could not be used",
  ExecutionError: "A step of the workflow failed",
  ExecutionInterrupted: "The run was interrupted",
  CallComfyUIPromptError: "ComfyUI refused the workflow",
  RunTimeout: "The run took too long",
  QueueFull: "The server is busy — try again in a moment",
  ComfyUIUnavailable: "ComfyUI is not ready yet — try again in a moment",
  ComfyUICrashed: "ComfyUI stopped during the run",
  ShuttingDown: "The server is restarting — try again in a moment",
  AppNotFound: "This app no longer exists",
  Unauthorized: "This server needs a token",
  ConnectionClosed: "The connection was lost",
};

// --- tiny DOM helper: elements from data, never HTML strings ----------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

let sequence = 0;
const uniqueId = (prefix) => `${prefix}-${++sequence}`;

class ApiFailure extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function fetchJson(path) {
  const response = await fetch(apiUrl(path), { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiFailure(response.status, body);
  return body;
}

// --- the list --------------------------------------------------------------------------

async function showList() {
  document.title = "Apps";
  const apps = await fetchJson("api/apps");
  const head = h("div", { class: "page-head" }, h("h1", {}, "Apps"),
    h("p", {}, apps.length ? "Pick an app, fill in its form and run it." : ""));
  if (!apps.length) {
    main.replaceChildren(head, h("div", { class: "empty" },
      h("p", {}, "No apps yet."),
      h("p", {}, "Put app files (", h("code", {}, "*.json"), ") in the agent's ",
        h("code", {}, "--apps"), " directory; they show up here within seconds.")));
    return;
  }
  main.replaceChildren(head, h("ul", { class: "app-grid" }, apps.map(appCard)));
}

function appCard(app) {
  const leaves = leafPanels(app.params).filter((panel) => !panel.hidden);
  const kinds = [...new Set(leaves.map((panel) => panel.type))];
  return h("li", {},
    h("a", { class: "app-card", href: encodeURIComponent(app.id) },
      h("h2", {}, app.title),
      h("p", {}, app.description || `${leaves.length} setting${leaves.length === 1 ? "" : "s"}`),
      h("div", { class: "chips" }, kinds.map((kind) => h("span", { class: "chip" }, KIND_NAMES[kind] || kind)))));
}

function leafPanels(panels) {
  return (panels || []).flatMap((panel) => (panel.type === "group" ? leafPanels(panel.children) : [panel]));
}

// --- one app: the form -----------------------------------------------------------------

async function showApp(appId) {
  const app = await fetchJson(`api/apps/${encodeURIComponent(appId)}`);
  document.title = `${app.title} · Apps`;
  const fields = new Map();
  const form = h("form", { class: "app-form card", id: "app-form", "aria-label": app.title });
  for (const panel of app.params) {
    const element = renderPanel(panel, fields);
    if (element) form.append(element);
  }
  const button = h("button", { type: "submit", class: "run" }, "Run");
  form.append(button);
  const output = h("section", { class: "output", "aria-label": "Result", "aria-live": "polite" },
    h("div", { class: "card placeholder" },
      h("strong", {}, "Your result appears here"),
      h("span", {}, fields.size ? "Adjust the settings, then press Run." : "Press Run to start.")));
  main.replaceChildren(
    h("a", { class: "back", href: "./" }, "← All apps"),
    h("div", { class: "page-head" }, h("h1", {}, app.title), app.description ? h("p", {}, app.description) : h("p", {}, "")),
    h("div", { class: "layout" }, form, output));
  const run = new Runner(app, form, fields, output, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run.start();
  });
}

function renderPanel(panel, fields) {
  if (panel.hidden) return null;
  if (panel.type === "group") {
    const group = h("fieldset", { class: "group" }, h("legend", {}, panel.title || "Settings"));
    if (panel.description) group.append(h("p", { class: "help" }, panel.description));
    for (const child of panel.children || []) {
      const element = renderPanel(child, fields);
      if (element) group.append(element);
    }
    return group;
  }
  const render = { string: textField, number: numberField, select: selectField, image: imageField }[panel.type];
  return render ? render(panel, fields) : null;
}

// A field: title label, control, help text and a place for its error.
function fieldShell(panel, id, control) {
  const help = panel.description ? h("p", { class: "help", id: `${id}-help` }, panel.description) : null;
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  return { element: h("div", { class: "field" }, h("label", { for: id }, panel.title || panel.name), control, help, error), help, error };
}

function describedBy(input, id, panel) {
  input.setAttribute("aria-describedby", [panel.description ? `${id}-help` : null, `${id}-error`].filter(Boolean).join(" "));
}

const asText = (value) => (value === undefined || value === null ? "" : String(value));

function textField(panel, fields) {
  const id = uniqueId("f");
  const input = h("textarea", { id, name: panel.name, rows: 3 });
  input.value = asText(panel.default);
  describedBy(input, id, panel);
  const shell = fieldShell(panel, id, input);
  fields.set(panel.name, { panel, input, error: shell.error, value: () => (input.value === asText(panel.default) ? undefined : input.value) });
  return shell.element;
}

function numberField(panel, fields) {
  const id = uniqueId("f");
  const step = panel.step ?? "any";
  const box = h("input", { id, name: panel.name, type: "number", inputmode: "decimal", min: panel.min, max: panel.max, step });
  box.value = asText(panel.default);
  describedBy(box, id, panel);
  const row = h("div", { class: "number-row" });
  if (panel.min !== undefined && panel.max !== undefined) {
    const sliderId = `${id}-slider`;
    const slider = h("input", { id: sliderId, type: "range", min: panel.min, max: panel.max, step, tabindex: -1 });
    slider.value = box.value || String(panel.min);
    slider.addEventListener("input", () => { box.value = slider.value; });
    box.addEventListener("input", () => { if (box.value !== "") slider.value = box.value; });
    row.append(h("label", { for: sliderId, class: "visually-hidden" }, `${panel.title || panel.name} (slider)`), slider);
  }
  row.append(box);
  const shell = fieldShell(panel, id, row);
  fields.set(panel.name, { panel, input: box, error: shell.error, value: () => (box.value === "" || box.value === asText(panel.default) ? undefined : box.value) });
  return shell.element;
}

function selectField(panel, fields) {
  const id = uniqueId("f");
  const select = h("select", { id, name: panel.name });
  const options = panel.options || [];
  const known = options.some((option) => asText(option) === asText(panel.default));
  if (!known) select.append(h("option", { value: "" }, panel.default === undefined ? "(as saved)" : `(as saved: ${asText(panel.default)})`));
  for (const option of options) {
    select.append(h("option", { value: asText(option), selected: asText(option) === asText(panel.default) }, asText(option)));
  }
  describedBy(select, id, panel);
  const shell = fieldShell(panel, id, select);
  fields.set(panel.name, { panel, input: select, error: shell.error, value: () => (select.value === "" || select.value === asText(panel.default) ? undefined : select.value) });
  return shell.element;
}

function imageField(panel, fields) {
  return panel.options?.length ? galleryField(panel, fields) : uploadField(panel, fields);
}

function galleryField(panel, fields) {
  const id = uniqueId("f");
  const gallery = h("div", { class: "gallery", role: "radiogroup", "aria-labelledby": `${id}-title` });
  for (const option of panel.options) {
    const value = asText(option);
    const isUrl = /^(https?:|data:image\/)/i.test(value);
    const name = value.split("/").pop().split("?")[0];
    gallery.append(h("label", { title: name },
      h("input", { type: "radio", name: panel.name, value, checked: value === asText(panel.default), "aria-label": name }),
      isUrl ? h("img", { src: value, alt: name, loading: "lazy" }) : h("span", {}, value)));
  }
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const help = panel.description ? h("p", { class: "help" }, panel.description) : null;
  fields.set(panel.name, {
    panel, input: gallery, error,
    value: () => {
      const checked = gallery.querySelector("input:checked");
      return checked && checked.value !== asText(panel.default) ? checked.value : undefined;
    },
  });
  return h("div", { class: "field" }, h("span", { class: "field-title", id: `${id}-title` }, panel.title || panel.name), gallery, help, error);
}

function uploadField(panel, fields) {
  const id = uniqueId("f");
  const input = h("input", { id, name: panel.name, type: "file", accept: "image/*" });
  describedBy(input, id, panel);
  const hint = h("div", { class: "drop-hint" }, h("strong", {}, "Choose a picture"), h("br"), "or drop it here");
  const zone = h("div", { class: "dropzone" }, hint, input);
  const note = h("p", { class: "file-name" }, panel.default ? `Saved picture: ${panel.default}` : "");
  let reading = Promise.resolve(undefined);
  input.addEventListener("change", () => {
    const file = input.files?.[0];
    if (!file) return;
    reading = new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
    // Never rejects: an unreadable file leaves the parameter unset, and says so.
    reading = reading.then((dataUrl) => {
      zone.replaceChildren(h("img", { src: dataUrl, alt: `Preview of ${file.name}` }), input);
      note.textContent = `${file.name} · ${formatBytes(file.size)}`;
      return dataUrl;
    }).catch(() => {
      note.textContent = `${file.name} could not be read`;
      return undefined;
    });
  });
  const shell = fieldShell(panel, id, h("div", {}, zone, note));
  fields.set(panel.name, { panel, input, error: shell.error, value: () => reading });
  return shell.element;
}

function formatBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(0)} KB`;
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

// --- one app: running it ---------------------------------------------------------------

class RunFailure extends Error {
  constructor(message) {
    super(message.data?.message || "RunFailed");
    this.detail = message.data?.error;
    this.taskId = message.task_id;
  }
}

class Runner {
  constructor(app, form, fields, output, button) {
    Object.assign(this, { app, form, fields, output, button });
    this.objectUrls = [];
  }

  async start() {
    if (this.button.disabled) return;
    for (const field of this.fields.values()) showFieldError(field, "");
    const params = {};
    for (const [name, field] of this.fields) {
      const value = await field.value();
      if (value !== undefined) params[name] = value;
    }
    this.objectUrls.forEach((url) => URL.revokeObjectURL(url));
    this.objectUrls = [];
    this.button.disabled = true;
    this.button.replaceChildren(h("span", { class: "spinner", "aria-hidden": "true" }), "Running…");
    const progress = new ProgressView(this.app.prompt);
    this.output.replaceChildren(progress.element);
    // On a phone the output sits below the form: bring the progress into view.
    if (window.matchMedia("(max-width: 820px)").matches) progress.element.scrollIntoView({ behavior: "smooth", block: "start" });
    const started = performance.now();
    try {
      const result = await runOverSocket(this.app.id, params, (map) => progress.update(map), (blob) => progress.preview(blob));
      progress.finish(`Done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      this.output.append(this.results(result.data), h("p", { class: "help task-id" }, `Task ${result.task_id}`));
    } catch (error) {
      progress.finish("Failed");
      this.output.append(this.failure(error));
    } finally {
      this.button.disabled = false;
      this.button.replaceChildren("Run");
    }
  }

  results(map) {
    const items = [];
    const order = [...new Set([...Object.keys(this.app.prompt), ...Object.keys(map)])];
    for (const nodeId of order) {
      const node = map[nodeId];
      if (!node) continue;
      (node.images || []).forEach((file, index) => items.push(this.fileFigure(file, node.results?.[index])));
      for (const text of node.outputs?.text || []) {
        items.push(h("figure", { class: "result" }, h("pre", { class: "text-output" }, asText(text)),
          h("figcaption", {}, h("span", {}, nodeTitle(this.app.prompt, nodeId)))));
      }
    }
    if (!items.length) return h("div", { class: "card" }, h("p", {}, "The run finished without output files."));
    return h("div", { class: "results" }, items);
  }

  fileFigure(file, base64) {
    const extension = (file.filename.split(".").pop() || "").toLowerCase();
    const mime = IMAGE_TYPES[extension] || VIDEO_TYPES[extension] || AUDIO_TYPES[extension] || "application/octet-stream";
    const caption = h("figcaption", {}, h("span", {}, file.filename));
    if (!base64) return h("figure", { class: "result" }, caption);
    const url = URL.createObjectURL(base64ToBlob(base64, mime));
    this.objectUrls.push(url);
    let media = null;
    if (IMAGE_TYPES[extension]) media = h("img", { src: url, alt: file.filename });
    else if (VIDEO_TYPES[extension]) media = h("video", { src: url, controls: true, loop: true, playsinline: true });
    else if (AUDIO_TYPES[extension]) media = h("audio", { src: url, controls: true });
    caption.append(h("a", { class: "download", href: url, download: file.filename }, "Download"));
    return h("figure", { class: "result" }, media, caption);
  }

  failure(error) {
    const name = error instanceof RunFailure ? error.message : "ConnectionClosed";
    const detail = error instanceof RunFailure ? error.detail : String(error);
    const lines = describeError(name, detail, this.app.prompt);
    if (name === "ParamError") {
      for (const problem of detail?.details?.errors || []) {
        const field = this.fields.get(problem.param);
        if (field) showFieldError(field, problem.reason);
      }
    }
    return h("div", { class: "card error", role: "alert" },
      h("h2", {}, ERROR_TITLES[name] || "The run failed"),
      lines.length > 1 ? h("ul", {}, lines.map((line) => h("li", {}, line))) : h("p", {}, lines[0] || name),
      error.taskId ? h("p", { class: "help task-id" }, `Task ${error.taskId}`) : null);
  }
}

function showFieldError(field, text) {
  field.error.textContent = text;
  field.error.hidden = !text;
  if (field.input.setAttribute) {
    if (text) field.input.setAttribute("aria-invalid", "true");
    else field.input.removeAttribute("aria-invalid");
  }
}

function describeError(name, detail, prompt) {
  if (typeof detail === "string") return [detail];
  if (!detail || typeof detail !== "object") return [];
  if (name === "ParamError") return (detail.details?.errors || []).map((e) => `${e.param}: ${e.reason}`);
  if (name === "CallComfyUIPromptError") {
    const lines = [detail.error?.message ? `${detail.error.message}${detail.error.details ? ` — ${detail.error.details}` : ""}` : "validation failed"];
    for (const [nodeId, node] of Object.entries(detail.node_errors || {})) {
      for (const problem of node.errors || []) {
        lines.push(`${nodeTitle(prompt, nodeId)}: ${problem.message}${problem.details ? ` (${problem.details})` : ""}`);
      }
    }
    return lines;
  }
  const where = detail.node_id ? `${nodeTitle(prompt, detail.node_id)}: ` : "";
  return [`${where}${detail.message || JSON.stringify(detail)}`];
}

function nodeTitle(prompt, nodeId) {
  const node = prompt[nodeId];
  const title = node?._meta?.title || node?.class_type || "node";
  return `${title} (#${nodeId})`;
}

function base64ToBlob(base64, mime) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new Blob([bytes], { type: mime });
}

function runOverSocket(appId, params, onProgress, onPreview) {
  return new Promise((resolve, reject) => {
    const url = apiUrl("api/run/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("previews", "1");
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    let settled = false;
    socket.addEventListener("open", () => socket.send(JSON.stringify({ app: appId, params })));
    socket.addEventListener("message", (event) => {
      if (event.data instanceof ArrayBuffer) {
        const preview = decodePreview(event.data);
        if (preview) onPreview(preview);
        return;
      }
      const message = JSON.parse(event.data);
      if (message.type === "progress") onProgress(message.data);
      else if (message.type === "result") { settled = true; resolve(message); }
      else if (message.type === "error") { settled = true; reject(new RunFailure(message)); }
    });
    socket.addEventListener("close", () => {
      if (!settled) {
        reject(new RunFailure({ data: { message: "ConnectionClosed", error: "The connection to the server closed before the run ended. Its result is kept; run it again or reload." } }));
      }
    });
  });
}

// A sampler preview as ComfyUI sends it (when started with --preview-method): a 4-byte
// event type, then for type 1 a 4-byte image type (1 JPEG, 2 PNG) and the image; for
// type 4 a 4-byte metadata length, JSON metadata and the image.
function decodePreview(buffer) {
  if (buffer.byteLength < 8) return null;
  const view = new DataView(buffer);
  const event = view.getUint32(0);
  if (event === 1) {
    const mime = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
    return new Blob([buffer.slice(8)], { type: mime });
  }
  if (event === 4) {
    const length = view.getUint32(4);
    let mime = "image/jpeg";
    try {
      mime = JSON.parse(new TextDecoder().decode(buffer.slice(8, 8 + length))).image_type || mime;
    } catch {
      return null;
    }
    return new Blob([buffer.slice(8 + length)], { type: mime });
  }
  return null;
}

// --- progress (the seed front end's rule) ----------------------------------------------

// A node counts done when value == max > 0, and so does everything it reads from once it
// started; a running node adds value/max. The overall share is over every node.
export function overallProgress(prompt, map) {
  const ids = Object.keys(prompt);
  const inputsOf = (id) => Object.values(prompt[id]?.inputs || {})
    .filter((value) => Array.isArray(value) && value.length === 2)
    .map((value) => String(value[0]));
  const done = new Set();
  const markDone = (id) => {
    if (!prompt[id] || done.has(id)) return;
    done.add(id);
    inputsOf(id).forEach(markDone);
  };
  for (const id of ids) {
    const node = map[id] || {};
    if ((node.max || 0) > 0) inputsOf(id).forEach(markDone);
    if ((node.max || 0) > 0 && node.value === node.max) markDone(id);
  }
  let sum = 0;
  let current = null;
  for (const id of ids) {
    const node = map[id] || {};
    if (done.has(id)) sum += 1;
    else if ((node.max || 0) > 0) {
      sum += (node.value || 0) / node.max;
      current = { id, value: node.value || 0, max: node.max };
    }
  }
  return { fraction: ids.length ? sum / ids.length : 0, current };
}

class ProgressView {
  constructor(prompt) {
    this.prompt = prompt;
    this.percent = h("strong", {}, "0%");
    this.state = h("span", { class: "progress-state" }, "Waiting for the server…");
    this.fill = h("div");
    this.bar = h("div", { class: "bar", role: "progressbar", "aria-label": "Overall progress", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0 }, this.fill);
    this.current = h("div", { class: "current" });
    this.previewSlot = h("div", { class: "preview", hidden: true });
    this.element = h("div", { class: "card progress" },
      h("div", { class: "progress-head" }, this.percent, this.state), this.bar, this.current, this.previewSlot);
  }

  preview(blob) {
    // Decode off-screen, then swap: frames arrive faster than a fresh <img> paints.
    const url = URL.createObjectURL(blob);
    const next = new Image();
    next.alt = "Preview of the picture being made";
    next.src = url;
    next.decode().then(() => {
      if (this.finished) return URL.revokeObjectURL(url);
      const previous = this.previewUrl;
      this.previewUrl = url;
      this.previewSlot.replaceChildren(next);
      this.previewSlot.hidden = false;
      if (previous) URL.revokeObjectURL(previous);
    }).catch(() => URL.revokeObjectURL(url));
  }

  update(map) {
    const { fraction, current } = overallProgress(this.prompt, map);
    this.show(Math.floor(fraction * 100));
    this.state.textContent = "Running";
    if (!current) {
      this.current.replaceChildren();
      return;
    }
    const steps = current.max > 1 ? `step ${current.value} of ${current.max}` : "working";
    const share = `${Math.round((current.value / current.max) * 100)}%`;
    this.current.replaceChildren(
      h("span", { class: "node" }, nodeTitle(this.prompt, current.id)), " · ",
      h("span", { class: "step" }, steps),
      h("div", { class: "bar small", "aria-hidden": "true" }, h("div")));
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    this.current.querySelector(".bar.small > div").style.width = share;
  }

  show(percent) {
    this.percent.textContent = `${percent}%`;
    this.fill.style.width = `${percent}%`;
    this.bar.setAttribute("aria-valuenow", String(percent));
  }

  finish(text) {
    this.finished = true;
    const done = text.startsWith("Done");
    if (done) this.show(100);
    else this.bar.classList.add("failed");
    this.state.replaceChildren(h("span", { class: done ? "done-line" : "failed-line" }, text));
    this.current.replaceChildren();
    this.previewSlot.replaceChildren();
    this.previewSlot.hidden = true;
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
  }
}

// --- start ---------------------------------------------------------------------------

async function boot() {
  const last = location.pathname.split("/").pop();
  try {
    if (last) await showApp(decodeURIComponent(last));
    else await showList();
  } catch (error) {
    main.replaceChildren(loadFailure(error));
  }
}

function loadFailure(error) {
  const status = error instanceof ApiFailure ? error.status : 0;
  let text = error instanceof ApiFailure ? (typeof error.body?.error === "string" ? error.body.error : error.message) : String(error);
  if (status === 401) text = "Open this page once with ?token=<your token> at the end of its address; the browser then remembers it.";
  return h("div", { class: "card error", role: "alert" },
    h("h2", {}, status === 404 ? "No such app" : status === 401 ? ERROR_TITLES.Unauthorized : "The page could not load"),
    h("p", {}, text),
    h("p", {}, h("a", { href: "./" }, "← All apps")));
}

boot();
