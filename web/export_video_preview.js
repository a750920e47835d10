// Export Video node: what was saved (size, frames, duration, file size, download link), kept with the workflow.
//
// After a run ComfyUI's own preview shows the video; this adds the facts and a download link under it.
// The last saved file is kept in node.properties, so after reloading the workflow (when ComfyUI has no
// preview any more) this shows a player of its own. Only current front-end APIs: app, api, addDOMWidget.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "ExportVideo";
const WIDGET = "wan_video_preview";

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
  if (info.format === "gif" || info.format === "webp") {
    const img = document.createElement("img");
    img.src = viewUrl(info);
    return img;
  }
  const video = document.createElement("video");
  Object.assign(video, { controls: true, loop: true, muted: true, autoplay: true, playsInline: true });
  video.src = viewUrl(info);
  return video;
}

function render(node, info, withPlayer) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    if (typeof node.addDOMWidget !== "function") return; // a front end without DOM widgets
    const box = document.createElement("div");
    box.style.cssText = "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;color:var(--input-text,#ddd)";
    widget = node.addDOMWidget(WIDGET, WIDGET, box, { serialize: false, hideOnZoom: false, getMinHeight: () => 24 });
  }
  const box = widget.element;
  box.replaceChildren();
  const media = withPlayer ? player(info) : null;
  if (media) {
    media.style.cssText = "width:100%;max-height:320px;object-fit:contain;border-radius:4px";
    box.appendChild(media);
  }
  const line = document.createElement("div");
  line.textContent = describe(info) + (info.playable || info.first_frame ? "" : " (not playable in a browser)");
  const link = document.createElement("a");
  Object.assign(link, { href: viewUrl(info), download: info.filename, textContent: `Download ${info.filename}` });
  link.style.color = "var(--descrip-text,#8af)";
  box.append(line, link);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "WanVAE.ExportVideoPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const info = message?.wan_video?.[0];
      if (!info) return;
      this.properties = this.properties ?? {};
      this.properties.wan_video = info; // saved with the workflow
      render(this, info, false); // ComfyUI's own preview shows the video now; add the facts under it
    };
  },
  loadedGraphNode(node) {
    const info = node.type === NODE ? node.properties?.wan_video : null;
    if (info) render(node, info, true); // ComfyUI's preview is gone after a reload: show our own
  },
});
