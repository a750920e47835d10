"""Opt-in: the nodes' preview in the real ComfyUI front end, in headless Chromium (classic and "Nodes 2.0" views).

    COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=...] [COMFYUI_FRONT_END_ROOT=.../static] [CHROMIUM=/usr/bin/chromium] \\
        python -m pytest tests/test_frontend.py

Needs Python playwright (no browser download: it drives the system's Chromium). A GIF shows as a picture, a
format no browser plays leaves no stale picture, the download link is not covered, and the player survives a
reload right after a run (the saved-file info marks the workflow changed, so the front end keeps it).
"""

import json
import os
import shutil
import time

import pytest
import torch

from reference import latents, write_vae_file
from test_real_comfyui import PACK, _http, comfy  # noqa: F401  (comfy: the server fixture)
from wan_vae import write_video
from wan_vae.files.latents import write_latent_file

if not os.environ.get("COMFYUI_PATH"):
    pytest.skip("set COMFYUI_PATH to a ComfyUI checkout to run against real ComfyUI", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Python playwright")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/lib/chromium/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium (set CHROMIUM)")

NODES_2_FROM = (1, 58)  # the "Nodes 2.0" view is checked from this front end on (the pinned 1.27 has a beta of it)
# The node's preview as the page shows it: media element, its state, the text, and whether the link is on top.
PREVIEW = """() => {
  const node = app.graph._nodes.find((n) => n.type === "ExportVideo");
  const widget = node?.widgets?.find((w) => w.name === "wan_video_preview");
  const box = widget?.element;
  if (!box || !box.isConnected) return null;
  const media = box.querySelector("img, video");
  const link = box.querySelector("a");
  const r = link.getBoundingClientRect();
  const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return {
    media: media ? media.tagName.toLowerCase() : null,
    src: media ? media.src : null,
    loaded: media ? (media.tagName === "IMG" ? media.complete && media.naturalWidth > 0 : media.readyState >= 1) : null,
    text: box.innerText,
    link_on_top: top === link || link.contains(top),
    page_text: document.body.innerText,
  };
}"""


def _history_count(url):
    return len(_http(f"{url}/history")[1])


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


def _open(browser, url, vue: bool):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.wait_for_function("window.app && window.app.graph && window.app.vueAppReady", timeout=120_000)
    page.wait_for_timeout(1000)
    for _ in range(4):  # start-up dialogs (the template browser of a first start)
        if not page.evaluate("() => [...document.querySelectorAll('[role=dialog]')].some((d) => d.getClientRects().length)"):
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(400)
    if vue:
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || '0'")
        if tuple(map(int, version.split(".")[:2])) < NODES_2_FROM:
            page.close()
            pytest.skip(f"front end {version}: its Nodes 2.0 beta draws the previous graph's nodes over a loaded one")
    page.evaluate("(on) => app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on)", vue)
    return page


def _queue(page, url):
    before = _history_count(url)
    page.evaluate("app.queuePrompt(0, 1)")
    deadline = time.time() + 300
    while _history_count(url) == before:
        assert time.time() < deadline, "the run did not finish"
        time.sleep(0.5)
    page.wait_for_timeout(1500)  # the executed message, then the media loading


def _set_format(page, fmt):
    page.evaluate("""(fmt) => { const n = app.graph._nodes.find((n) => n.type === "ExportVideo");
        n.widgets.find((w) => w.name === "format").value = fmt; }""", fmt)


@pytest.mark.parametrize("vue", [False, True], ids=["classic", "nodes2"])
def test_gif_preview_stale_pictures_and_reload(comfy, browser, vue, tmp_path):  # noqa: F811
    url = comfy["url"]
    write_latent_file(comfy["base"] / "input" / "wan_t2v_00001_.latent", latents("2.1", (1, 3, 6, 10)))
    workflow = json.loads((PACK / "example_workflows" / "wan21_latent_to_video.json").read_text())
    for node in workflow["nodes"]:
        if node["type"] == "ExportVideo":
            node["widgets_values"][1] = "gif"
    page = _open(browser, url, vue)
    page.evaluate("(wf) => app.loadGraphData(wf, true, true, 'frontend-test')", workflow)
    page.wait_for_timeout(1000)

    _queue(page, url)
    shown = page.evaluate(PREVIEW)
    page.screenshot(path=str(tmp_path / "gif.png"))
    assert shown and shown["media"] == "img" and ".gif" in shown["src"] and shown["loaded"], shown
    assert shown["link_on_top"], "the download link is covered"
    assert "failed to load" not in shown["page_text"].lower() and "invalid url" not in shown["page_text"].lower()

    _set_format(page, "prores-mov")
    _queue(page, url)
    shown = page.evaluate(PREVIEW)
    assert shown["media"] is None and ".mov" in shown["text"] and "not playable" in shown["text"], shown  # no stale GIF

    _set_format(page, "h264-mp4")
    _queue(page, url)
    page.reload()  # right after the run: the saved-file info must be in the restored workflow
    page.wait_for_function("window.app && window.app.graph && window.app.vueAppReady", timeout=120_000)
    page.wait_for_timeout(2000)
    shown = page.evaluate(PREVIEW)
    page.screenshot(path=str(tmp_path / "reload.png"))
    assert shown and shown["media"] == "video" and ".mp4" in shown["src"] and shown["loaded"], shown
    page.close()


@pytest.mark.parametrize("vue", [False, True], ids=["classic", "nodes2"])
def test_rgba_video_shows_over_a_checkerboard(comfy, browser, vue, tmp_path):  # noqa: F811
    """An RGBA VAE's video written as lossless WebP (alpha kept) plays over a checkerboard; an RGB one does not."""
    url = comfy["url"]
    write_latent_file(comfy["base"] / "input" / "wan_t2v_00001_.latent", latents("2.1", (1, 3, 6, 10)))
    workflow = json.loads((PACK / "example_workflows" / "wan21_latent_to_video.json").read_text())
    page = _open(browser, url, vue)
    page.evaluate("(wf) => app.loadGraphData(wf, true, true, 'frontend-test')", workflow)
    page.wait_for_timeout(1000)
    backgrounds = {}
    for vae in ("wan_2.1_rgba.safetensors", "wan_2.1_vae.safetensors"):
        page.evaluate("""(vae) => { const n = app.graph._nodes.find((n) => n.type === "LoadWanVAE");
            n.widgets.find((w) => w.name === "vae_name").value = vae; }""", vae)  # fmt: skip
        _set_format(page, "webp")
        _queue(page, url)
        shown = page.evaluate(PREVIEW)
        assert shown and shown["media"] == "img" and ".webp" in shown["src"] and shown["loaded"], (vae, shown)
        page.screenshot(path=str(tmp_path / f"{vae.removesuffix('.safetensors')}.png"))
        backgrounds[vae] = page.evaluate("""() => getComputedStyle(app.graph._nodes.find((n) => n.type === "ExportVideo")
            .widgets.find((w) => w.name === "wan_video_preview").element.querySelector("img")).backgroundImage""")  # fmt: skip
    assert "conic-gradient" in backgrounds["wan_2.1_rgba.safetensors"], backgrounds
    assert backgrounds["wan_2.1_vae.safetensors"] == "none", backgrounds
    page.close()


# Every node's box on the page, title included: the canvas's nodes in the classic view, the node elements in Nodes 2.0.
BOXES = """(vue) => {
  if (vue) return [...document.querySelectorAll(".lg-node[data-node-id], [data-node-id].lg-node")].map((e) => {
    const r = e.getBoundingClientRect();
    return { id: e.dataset.nodeId, x: r.left, y: r.top, w: r.width, h: r.height };
  });
  const ds = app.canvas.ds, title = LiteGraph.NODE_TITLE_HEIGHT;
  return app.graph._nodes.map((n) => ({ id: String(n.id), x: (n.pos[0] + ds.offset[0]) * ds.scale,
    y: (n.pos[1] - title + ds.offset[1]) * ds.scale, w: n.size[0] * ds.scale, h: (n.size[1] + title) * ds.scale }));
}"""
# Pictures on a node besides the saved video's player: the last progress preview Nodes 2.0 keeps in its store.
STRAY_PICTURES = """(id) => {
  const el = document.querySelector(`[data-node-id="${id}"]`);
  if (!el) return null;
  // progress pictures arrive as blobs; the player's media come from /view
  return [...el.querySelectorAll("img, video")].filter((m) => (m.src || "").startsWith("blob:")).map((m) => m.src);
}"""


def _overlaps(boxes):
    return [(a["id"], b["id"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a["x"] < b["x"] + b["w"] - 1 and b["x"] < a["x"] + a["w"] - 1 and a["y"] < b["y"] + b["h"] - 1 and b["y"] < a["y"] + a["h"] - 1]


@pytest.mark.parametrize("vue", [False, True], ids=["classic", "nodes2"])
@pytest.mark.parametrize("stem", ["wan21_latent_to_video", "wan22_5b_latent_to_video", "wan21_long_video", "wan21_i2v_core_nodes",
                                  "wan21_image_upscale2x", "wan21_video_upscale2x", "wan_wrapper_to_video",
                                  "wan21_latent_to_save_video", "wan21_load_video_to_latent", "wan21_alpha_to_video"])  # fmt: skip
def test_templates_lay_out_without_overlaps_before_and_after_a_run(comfy, browser, vue, stem, tmp_path):  # noqa: F811
    """No node (the Markdown note included) covers another, as loaded and after a run (the decode preview and the
    player grow the nodes), and after a run Wan Decode to Video shows its player only: no stale progress picture."""
    base = comfy["base"]
    for folder, name in (("diffusion_models", "wan2.1_i2v_480p_14B_fp16.safetensors"), ("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
                         ("clip_vision", "clip_vision_h.safetensors")):  # fmt: skip
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        if not (base / "models" / folder / name).exists():
            (base / "models" / folder / name).symlink_to(base / "models" / "vae" / "wan_2.1_vae.safetensors")
    from PIL import Image

    Image.new("RGB", (832, 480), (90, 120, 150)).save(base / "input" / "example.png")
    workflow = json.loads((PACK / "example_workflows" / f"{stem}.json").read_text())
    if "upscale2x" in stem:
        write_vae_file(base / "models" / "vae" / "Wan2.1_VAE_upscale2x_imageonly_real_v1.safetensors", "2.1", out_channels=12)
    if stem == "wan_wrapper_to_video":
        if not os.environ.get("COMFYUI_WRAPPER"):
            pytest.skip("set COMFYUI_WRAPPER to kijai's WanVideoWrapper: the template uses its VAE loader")
        for node in workflow["nodes"]:  # its loader builds the real widths only
            if node["type"] == "WanVideoVAELoader":
                node["widgets_values"][0] = "wan_2.1_real_size.safetensors"
    runnable = stem != "wan21_i2v_core_nodes"  # the I2V graph needs the real 14B model
    if stem == "wan21_alpha_to_video" and not (base / "models" / "vae" / "wan_alpha_2.1_vae_rgb_channel.safetensors").exists():
        from test_wan_alpha import write_pair

        write_pair(base / "models" / "vae")
    for name in (n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "LoadVideo"):
        write_video(torch.rand(9, 48, 80, 3), base / "input" / name, 16, overwrite=True)
    if runnable and stem != "wan21_load_video_to_latent":
        (latent,) = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "LoadLatent"]
        shape = {"wan21_long_video": (1, 6, 30, 52), "wan21_image_upscale2x": (1, 1, 6, 10)}.get(stem, (1, 3, 6, 10))  # progress
        write_latent_file(base / "input" / latent, latents("2.2" if "22" in stem else "2.1", shape))
    page = _open(browser, comfy["url"], vue)
    page.evaluate("(wf) => app.loadGraphData(wf, true, true, 'layout-test')", workflow)
    page.wait_for_timeout(1000)
    page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")  # every node on the page
    page.wait_for_timeout(1500)
    boxes = page.evaluate(BOXES, vue)
    page.screenshot(path=str(tmp_path / f"{stem}_before.png"))
    assert len(boxes) == len(workflow["nodes"]) and not _overlaps(boxes), _overlaps(boxes)
    if runnable:
        _queue(page, comfy["url"])
        page.wait_for_timeout(1500)
        boxes = page.evaluate(BOXES, vue)
        page.screenshot(path=str(tmp_path / f"{stem}_after.png"))
        assert not _overlaps(boxes), _overlaps(boxes)
        if vue:
            for node in workflow["nodes"]:
                if node["type"] in ("WanDecodeToVideo", "ExportVideo"):
                    assert page.evaluate(STRAY_PICTURES, str(node["id"])) == [], "a stale picture under the player"
    shots = os.environ.get("FRONTEND_SHOTS")  # a folder to keep the screenshots in (docs/frontend)
    if shots:
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || '0'")
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, os.path.join(shots, f"{png.stem}_{version}_{'nodes2' if vue else 'classic'}.png"))
    page.close()
