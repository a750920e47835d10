// Export Video and Wan Decode to Video: the saved video on the node (player, size, frames, duration, file size,
// download link), kept with the workflow.
//
// The nodes send only `wan_video` (no `images`/`animated`), so this is the one preview on the node in every
// front end: ComfyUI's own player covered our link in the classic view, showed a GIF sent as `animated` as a
// broken video, and kept the previous run's picture after a run without one. The last saved file is kept in
// node.properties (marking the workflow changed, so it is saved and restored), and drawn again after a reload.
// Only current front-end APIs: app, api, addDOMWidget, the canvas's change events.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODES = ["ExportVideo", "WanDecodeToVideo"];
const WIDGET = "wan_video_preview";
const IMAGE_FORMATS = ["gif", "webp"]; // animated images: an <img> plays them
const CORE_IMAGE_WIDGET = "$$canvas-image-preview"; // the classic view's picture of node.imgs (1.27 to 1.58)
// RGBA videos (an RGBA VAE's) over a checkerboard, as image editors show transparency
const CHECKERBOARD =
  "background:repeating-conic-gradient(#808080 0% 25%,#b0b0b0 0% 50%) 50% / 16px 16px";

function viewUrl(info, filename = info.filename, subfolder = info.subfolder) {
  const query = new URLSearchParams({ filename, subfolder: subfolder ?? "", type: info.type ?? "output" });
  return api.apiURL(`/view?${query}`);
}

function humanBytes(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i++;
  }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function describe(info) {
  return [
    `${info.width}×${info.height}`,
    `${info.frames} frames`,
    `${Number(info.duration).toFixed(2)} s at ${Number(info.fps)} fps`,
    humanBytes(info.bytes),
    info.format,
  ].join(" · ");
}

function player(info) {
  if (info.first_frame) {
    const img = document.createElement("img");
    img.src = viewUrl(info, "frame_00001.png", [info.subfolder, info.filename].filter(Boolean).join("/"));
    return img;
  }
  if (!info.playable) return null;
  if (IMAGE_FORMATS.includes(info.format)) {
    const img = document.createElement("img");
    img.src = viewUrl(info);
    return img;
  }
  const video = document.createElement("video");
  Object.assign(video, { controls: true, loop: true, muted: true, autoplay: true, playsInline: true });
  video.src = viewUrl(info);
  return video;
}

function render(node, info) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    if (typeof node.addDOMWidget !== "function") return; // a front end without DOM widgets
    const box = document.createElement("div");
    box.style.cssText =
      "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;color:var(--input-text,#ddd);overflow:hidden";
    widget = node.addDOMWidget(WIDGET, WIDGET, box, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => widget.wanMinHeight ?? 40,
    });
  }
  const box = widget.element;
  box.replaceChildren();
  const media = player(info);
  if (media) {
    media.style.cssText =
      "width:100%;min-height:0;flex:1 1 auto;object-fit:contain;border-radius:4px" + (info.alpha ? `;${CHECKERBOARD}` : "");
    media.title = info.filename;
    box.appendChild(media);
  }
  const line = document.createElement("div");
  line.textContent = describe(info) + (media ? "" : " (not playable in a browser)");
  if (info.latent) line.textContent += ` · latent: ${info.latent}`;
  const link = document.createElement("a");
  Object.assign(link, { href: viewUrl(info), download: info.filename, textContent: `Download ${info.filename}` });
  link.style.cssText = "color:var(--descrip-text,#8af);flex:none";
  line.style.flex = "none";
  box.append(line, link);
  // Room for the player at the video's aspect ratio and the two lines under it; the node grows to fit.
  const width = Math.max(node.size?.[0] ?? 360, 360) - 20;
  widget.wanMinHeight = 48 + (media ? Math.min(360, Math.round((width * info.height) / Math.max(info.width, 1))) : 0);
  const wanted = node.computeSize?.();
  if (wanted && node.setSize) node.setSize([node.size[0], wanted[1]]);
  node.setDirtyCanvas?.(true, true);
}

function clearProgressPreview(node) {
  // Wan Decode to Video shows its newest frame while decoding, as samplers do; the front end keeps that picture
  // afterwards and (in the classic view) draws it over the player. The saved video replaces it.
  const previews = app.nodePreviewImages;
  if (previews && String(node.id) in previews) delete previews[String(node.id)];
  // Nodes 2.0 (front end 1.58) draws previews from its own store, which the line above does not reach; the
  // store is the front end's "nodeOutput" Pinia store, found through the Vue app (there is no extension API).
  const outputs = document.getElementById("vue-app")?.__vue_app__?.config?.globalProperties?.$pinia?._s?.get("nodeOutput");
  outputs?.revokePreviewsByLocatorId?.(String(node.id));
  const i = node.widgets?.findIndex((w) => w.name === CORE_IMAGE_WIDGET) ?? -1;
  if (i > -1) {
    node.widgets[i].onRemove?.(); // what the front end itself does when a node's images go away
    node.widgets.splice(i, 1);
  }
  node.imgs = undefined;
  node.imageIndex = null;
}

function markChanged() {
  // What the front end's own edits do: its change tracker compares the graph before and after, marks the
  // workflow modified and keeps the new state (so a reload restores it).
  const canvas = app.canvas;
  if (typeof canvas?.emitBeforeChange === "function" && typeof canvas?.emitAfterChange === "function") {
    canvas.emitBeforeChange();
    canvas.emitAfterChange();
  } else {
    app.graph?.change?.();
  }
}

function notice(event) {
  const { text, severity } = event.detail ?? {};
  if (!text) return;
  const toast = app.extensionManager?.toast;
  if (toast?.add) toast.add({ severity: severity === "warn" ? "warn" : "info", summary: "Wan VAE", detail: text, life: 15000 });
  else console.info(`Wan VAE: ${text}`);
}

app.registerExtension({
  name: "WanVAE.ExportVideoPreview",
  setup() {
    api.addEventListener("wan_vae.notice", notice);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.includes(nodeData?.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const info = message?.wan_video?.[0];
      if (!info) return;
      this.properties = this.properties ?? {};
      this.properties.wan_video = info; // saved with the workflow
      clearProgressPreview(this);
      render(this, info);
      markChanged();
    };
  },
  loadedGraphNode(node) {
    const info = NODES.includes(node.type) ? node.properties?.wan_video : null;
    if (info) render(node, info);
  },
});
