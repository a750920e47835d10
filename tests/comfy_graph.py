"""A small stand-in for ComfyUI's executor: validate widget values like validate_inputs, run API workflows, check UI files.

ComfyUI is not on PyPI, so CI proves the node contract with this; the opt-in test with COMFYUI_PATH runs
the real thing.
"""

from __future__ import annotations

import os

from safetensors.torch import load_file

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
FRONTEND_ONLY = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")


def inputs_of(node_cls) -> dict[str, tuple]:
    """name -> spec for required then optional inputs, in declaration order (what widgets_values follows)."""
    types = node_cls.INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def check_value(name: str, value, spec) -> None:
    """ComfyUI's rules: COMBO values in the list; INT/FLOAT coerced and within min/max; BOOLEAN/STRING types."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        assert value in kind, f"{name}: {value!r} not in {kind[:10]}"
        return
    if kind in ("INT", "FLOAT"):
        number = int(value) if kind == "INT" else float(value)
        assert options.get("min", -float("inf")) <= number <= options.get("max", float("inf")), f"{name}: {value} outside range"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{name}: {value!r} is not a boolean"
    elif kind == "STRING":
        assert isinstance(value, str), f"{name}: {value!r} is not a string"


def run_api(workflow: dict, classes: dict, extra_pnginfo: dict | None = None) -> dict:
    """Execute an API-format workflow; returns node id -> (ui, result)."""
    done: dict[str, tuple] = {}

    def run(nid: str):
        if nid in done:
            return done[nid]
        node = workflow[nid]
        cls = classes[node["class_type"]]
        specs = inputs_of(cls)
        kwargs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                kwargs[name] = run(value[0])[1][value[1]]
            else:
                check_value(name, value, specs[name])
                kwargs[name] = value
        missing = set(cls.INPUT_TYPES().get("required", {})) - set(kwargs)
        assert not missing, f"node {nid}: required inputs missing: {missing}"
        hidden = cls.INPUT_TYPES().get("hidden", {})
        if "prompt" in hidden:
            kwargs["prompt"] = workflow
        if "extra_pnginfo" in hidden:
            kwargs["extra_pnginfo"] = extra_pnginfo
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        ui, result = (out.get("ui"), out["result"]) if isinstance(out, dict) else (None, out)
        assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES)
        done[nid] = (ui, result)
        return done[nid]

    for nid in workflow:
        run(nid)
    return done


def check_ui_workflow(graph: dict, classes: dict, core: tuple[str, ...] = ()) -> None:
    """Node types exist, widgets_values follow the inputs in order and are valid, links join matching types.
    Nodes of the `core` types are ComfyUI's own (their links are still checked; real ComfyUI checks the rest)."""
    nodes = {n["id"]: n for n in graph["nodes"]}
    for node in graph["nodes"]:
        if node["type"] in FRONTEND_ONLY or node["type"] in core:
            continue
        assert node["type"] in classes, f"unknown node type {node['type']}"
        cls = classes[node["type"]]
        widgets = [(name, spec) for name, spec in inputs_of(cls).items() if is_widget(spec)]
        values = node.get("widgets_values", [])
        # Saved before an optional input was added: the front end gives the missing trailing widgets their defaults.
        optional = set(cls.INPUT_TYPES().get("optional", {}))
        missing = [name for name, _ in widgets[len(values) :]]
        assert len(values) <= len(widgets) and set(missing) <= optional, (
            f"{node['type']}: {len(values)} widget values for {[w for w, _ in widgets]}")
        for (name, spec), value in zip(widgets, values):
            if isinstance(spec[0], list) and _names_a_file(spec[0], value):
                continue  # a model or latent the user provides: any file name is fine here
            check_value(name, value, spec)
        declared = {i["name"]: i["type"] for i in node.get("inputs", [])}
        for name, spec in inputs_of(cls).items():
            if not is_widget(spec) and (name in declared or name not in optional):
                # a socket saved before it took a union of types ("WAN_VAE" -> "WAN_VAE,VAE,WANVAE") still fits
                saved = set(str(declared.get(name)).split(","))
                fits = declared.get(name) == spec[0] or saved <= set(spec[0].split(","))
                assert fits, f"{node['type']}.{name}: socket type {declared.get(name)} != {spec[0]}"
        outs = [o["type"] for o in node.get("outputs", [])]
        # saved before an output was added at the end (Wan Decode to Video's VIDEO): the front end adds it on load
        assert outs and outs == list(cls.RETURN_TYPES)[: len(outs)], f"{node['type']}: outputs {outs} != {cls.RETURN_TYPES}"
    for link_id, src, src_slot, dst, dst_slot, kind in graph["links"]:
        out_type = nodes[src]["outputs"][src_slot]["type"]
        in_type = nodes[dst]["inputs"][dst_slot]["type"]
        assert out_type == kind and kind in in_type.split(","), f"link {link_id}: {out_type} -> {in_type} ({kind})"
        assert link_id in nodes[src]["outputs"][src_slot]["links"] and nodes[dst]["inputs"][dst_slot]["link"] == link_id


def _names_a_file(options: list, value) -> bool:
    """A combo of files (possibly empty here) and a file name for it."""
    looks_like_file = isinstance(value, str) and os.path.splitext(value)[1] != ""
    return looks_like_file and (not options or all(isinstance(o, str) and os.path.splitext(o)[1] for o in options))


class LoadLatentLikeComfyUI:
    """Core LoadLatent's behaviour (nodes.py): .latent files from the input folder, legacy files scaled by 1/0.18215."""

    input_dir = "input"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = sorted(f for f in os.listdir(cls.input_dir) if f.endswith(".latent"))
        return {"required": {"latent": (files,)}}

    def load(self, latent):
        tensors = load_file(os.path.join(self.input_dir, latent))
        multiplier = 1.0 if "latent_format_version_0" in tensors else 1.0 / 0.18215
        return ({"samples": tensors["latent_tensor"].float() * multiplier},)


class SaveImageLikeComfyUI:
    """Core SaveImage's contract: IMAGE [N, H, W, C] in [0, 1] saved as PNG files in the output folder."""

    output_dir = "output"
    RETURN_TYPES = ()
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}}

    def save(self, images, filename_prefix):
        from PIL import Image

        folder = os.path.join(self.output_dir, os.path.dirname(filename_prefix))
        os.makedirs(folder, exist_ok=True)
        saved = []
        for i, image in enumerate(images):
            name = f"{os.path.basename(filename_prefix)}_{i + 1:05}_.png"
            pixels = (image.clamp(0, 1) * 255).round().byte().numpy()
            Image.fromarray(pixels).save(os.path.join(folder, name))
            saved.append({"filename": name, "subfolder": os.path.dirname(filename_prefix), "type": "output"})
        return {"ui": {"images": saved}, "result": ()}
