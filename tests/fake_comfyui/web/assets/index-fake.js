// What ComfyUI's editor does on load, in small: read the server's stats, open /ws next to
// the page, show progress and every output image the socket announces.
const $ = (id) => document.getElementById(id);
const body = document.body;

function show(event, detail) {
  const seen = (body.dataset.events || "").split(" ").filter(Boolean);
  if (!seen.includes(event)) seen.push(event);
  body.dataset.events = seen.join(" ");
  if (detail !== undefined) console.log(event, JSON.stringify(detail));
}

const scheme = location.protocol === "https:" ? "wss" : "ws";
const clientId = crypto.randomUUID();
body.dataset.clientId = clientId;
const socket = new WebSocket(`${scheme}://${location.host}/ws?clientId=${clientId}`);
socket.addEventListener("open", () => {
  body.dataset.ws = "open";
  $("ws").textContent = "open";
});
socket.addEventListener("close", () => {
  body.dataset.ws = "closed";
  $("ws").textContent = "closed";
});
socket.addEventListener("message", (event) => {
  if (typeof event.data !== "string") return;
  const { type, data } = JSON.parse(event.data);
  show(type);
  if (type === "status") {
    if (data.sid) $("sid").textContent = data.sid;
    const remaining = data.status.exec_info.queue_remaining;
    $("queue").textContent = remaining;
    if (remaining > 0) body.dataset.busySeen = "yes"; // some client's prompt was queued
  } else if (type === "executing") {
    $("node").textContent = data.node ?? "";
  } else if (type === "progress") {
    $("progress").max = data.max;
    $("progress").value = data.value;
  } else if (type === "executed") {
    for (const image of data.output.images ?? []) {
      const query = new URLSearchParams(image);
      const img = document.createElement("img");
      img.alt = image.filename;
      img.src = `./api/view?${query}`;
      img.addEventListener("load", () => show("image-loaded"));
      $("images").append(img);
    }
  }
});

const stats = await (await fetch("./api/system_stats")).json();
$("version").textContent = stats.system.comfyui_version;
body.dataset.version = stats.system.comfyui_version;
