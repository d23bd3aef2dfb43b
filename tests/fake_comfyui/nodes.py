"""The fake ComfyUI's node table.

Each node is one `NodeDef` row: its input spec (same dict shape as ComfyUI's `INPUT_TYPES()`,
so validation and `/object_info` behave like the real server), its return types, and an async
`run` function. Values flowing between nodes are small stand-ins (a flat-colour `Image` instead
of a tensor), but output nodes write real files. To add a node, write a run function and append
a `NodeDef` to `_DEFINITIONS`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from . import media

MAX_RESOLUTION = 16384
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
FAKE_CHECKPOINTS = (
    "sd15-full-random.safetensors",
    "tiny-sd15-random.safetensors",
    "v1-5-pruned-emaonly.safetensors",
)
SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_sde", "ddim")
SCHEDULERS = ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal")
KSAMPLER_STEP_DELAY = 0.02  # fast stand-in for a real sampling step
FAIL_AFTER_STEP_DELAY = 0.1  # the recorded custom node's pace


# --- values passed between nodes -----------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """Stands in for an IMAGE tensor [batch, height, width, 3] of one flat colour."""

    width: int
    height: int
    batch: int = 1
    rgb: tuple[int, int, int] = (0, 0, 0)

    def __str__(self) -> str:  # what ComfyUI's error report shows instead of str(tensor)
        r, g, b = self.rgb
        return f"FakeImage(batch={self.batch}, {self.width}x{self.height}, #{r:02x}{g:02x}{b:02x})"


@dataclass(frozen=True)
class Mask:
    width: int
    height: int


@dataclass(frozen=True)
class Latent:
    width: int  # in pixels, like the EmptyLatentImage inputs
    height: int
    batch: int = 1
    seed: int | None = None


@dataclass(frozen=True)
class Model:
    ckpt_name: str
    kind: str


@dataclass(frozen=True)
class Conditioning:
    text: str


@dataclass(frozen=True)
class Video:
    images: Image
    fps: float


@dataclass(frozen=True)
class Audio:
    sample_rate: int
    channels: int
    samples: int


# --- what a node sees while running -------------------------------------------------------------


@dataclass(frozen=True)
class NodeEnv:
    """Server-wide settings the nodes need."""

    output_dir: Path
    input_dir: Path
    temp_dir: Path
    previews: bool = False  # --preview-method other than none
    slow_delay: float = 0.2  # SlowCounter's default `delay`


class RunContext(Protocol):
    """The executor's handle for one running node."""

    env: NodeEnv
    node_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]

    async def progress(self, value: int, total: int, preview: bytes | None = None) -> None:
        """Report a ProgressBar step; raises if the prompt was interrupted."""

    async def sleep(self, seconds: float) -> None:
        """Wait without blocking the server."""

    def temp_suffix(self) -> str:
        """This node's random PreviewImage suffix, stable for the node across prompts."""


@dataclass
class NodeResult:
    outputs: tuple[Any, ...] = ()
    ui: dict[str, list[Any]] | None = None


InputTypes = dict[str, dict[str, tuple[Any, ...]]]
RunFn = Callable[[RunContext, dict[str, Any]], Awaitable[NodeResult]]
ValidateFn = Callable[[NodeEnv, dict[str, Any]], "bool | str"]
IsChangedFn = Callable[[NodeEnv, dict[str, Any]], object]


@dataclass(frozen=True)
class NodeDef:
    name: str
    input_types: Callable[[NodeEnv], InputTypes]
    returns: tuple[str, ...]
    run: RunFn
    output_node: bool = False
    category: str = "fake"
    display_name: str = ""
    description: str = ""
    python_module: str = "nodes"
    # Like VALIDATE_INPUTS: inputs it receives skip the min/max/list checks.
    validate: ValidateFn | None = None
    validate_inputs: tuple[str, ...] = ()
    # Like IS_CHANGED: its value is part of the cache key (LoadImage hashes the file).
    is_changed: IsChangedFn | None = None
    hidden: Mapping[str, str] = field(default_factory=dict)


def static_inputs(
    required: dict[str, tuple[Any, ...]], optional: dict[str, tuple[Any, ...]] | None = None
) -> Callable[[NodeEnv], InputTypes]:
    types: InputTypes = {"required": required}
    if optional:
        types["optional"] = optional
    return lambda _env: types


def int_input(
    default: int, lo: int, hi: int, step: int = 1, **extra: Any
) -> tuple[str, dict[str, Any]]:
    return ("INT", {"default": default, "min": lo, "max": hi, "step": step, **extra})


def float_input(
    default: float, lo: float, hi: float, step: float = 0.01
) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", {"default": default, "min": lo, "max": hi, "step": step})


def string_input(default: str = "", **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("STRING", {"default": default, **extra})


# --- file helpers --------------------------------------------------------------------------------


def _expand_prefix(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": f"{now.tm_mon:02}",
        "%day%": f"{now.tm_mday:02}",
        "%hour%": f"{now.tm_hour:02}",
        "%minute%": f"{now.tm_min:02}",
        "%second%": f"{now.tm_sec:02}",
    }.items():
        prefix = prefix.replace(key, value)
    return prefix


def _last_counter(folder: Path, filename: str) -> int:
    """Highest N among files named `<filename>_N...` (ComfyUI's counter rule), else 0."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    best = 0
    for name in names:
        head, rest = name[: len(filename) + 1], name[len(filename) + 1 :]
        if os.path.normcase(head[:-1]) != os.path.normcase(filename) or not head.endswith("_"):
            continue
        digits = re.match(r"\d+", rest)  # "00001_.png" (SaveImage) or "00001.gif" (VHS)
        best = max(best, int(digits.group()) if digits else 0)
    return best


def save_target(
    base: Path, prefix: str, width: int = 0, height: int = 0
) -> tuple[Path, str, int, str]:
    """(folder, file stem, next counter, subfolder) for a save node, as ComfyUI computes them."""
    if "%" in prefix:
        prefix = _expand_prefix(prefix, width, height)
    normalised = os.path.normpath(prefix)
    subfolder, filename = os.path.dirname(normalised), os.path.basename(normalised)
    folder = Path(os.path.abspath(base / subfolder))
    if os.path.commonpath((str(base), str(folder))) != str(base):
        raise Exception(  # ComfyUI raises a bare Exception here too
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {folder}\n         output_dir: {base}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder, filename, _last_counter(folder, filename) + 1, subfolder


def _png_text(ctx: RunContext) -> dict[str, str]:
    text = {"prompt": json.dumps(ctx.prompt)}
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        text[key] = json.dumps(value)
    return text


def _write_pngs(
    ctx: RunContext, images: Image, base: Path, prefix: str, kind: str
) -> list[dict[str, str]]:
    folder, stem, counter, subfolder = save_target(base, prefix, images.width, images.height)
    results = []
    for batch_number in range(images.batch):
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        data = media.png_bytes(images.width, images.height, images.rgb, _png_text(ctx))
        (folder / name).write_bytes(data)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


def resolve_input_file(env: NodeEnv, name: str) -> Path | None:
    """Path of an input-folder file named like LoadImage's `image` ("sub/x.png [input]")."""
    base = env.input_dir
    for tag, folder in (
        ("[input]", env.input_dir),
        ("[output]", env.output_dir),
        ("[temp]", env.temp_dir),
    ):
        if name.endswith(f" {tag}"):
            name, base = name[: -len(tag) - 1], folder
    path = Path(os.path.abspath(base / name))
    if os.path.commonpath((str(base), str(path))) != str(base) or not path.is_file():
        return None
    return path


def list_input_images(env: NodeEnv) -> list[str]:
    try:
        names = os.listdir(env.input_dir)
    except FileNotFoundError:
        return []
    return sorted(
        n for n in names if (env.input_dir / n).is_file() and n.lower().endswith(IMAGE_EXTENSIONS)
    )


def _errors_as(module: str, name: str) -> type[Exception]:
    """An exception class whose full type name matches what the real node raises, because
    execution_error reports `module.QualName` (e.g. kornia.core.exceptions.BaseError)."""
    return type(name, (Exception,), {"__module__": module, "__qualname__": name})


KorniaBaseError = _errors_as("kornia.core.exceptions", "BaseError")
UnidentifiedImageError = _errors_as("PIL", "UnidentifiedImageError")


def _color_from(seed: int) -> tuple[int, int, int]:
    value = (seed * 2654435761) & 0xFFFFFF
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


# --- run functions -------------------------------------------------------------------------------


async def _empty_image(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    color = i.get("color", 0)
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    return NodeResult((Image(i["width"], i["height"], i.get("batch_size", 1), rgb),))


async def _image_invert(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    image: Image = i["image"]
    r, g, b = image.rgb
    return NodeResult((replace(image, rgb=(255 - r, 255 - g, 255 - b)),))


async def _save_image(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    prefix = i.get("filename_prefix", "ComfyUI")
    return NodeResult(
        ui={"images": _write_pngs(ctx, i["images"], ctx.env.output_dir, prefix, "output")}
    )


async def _preview_image(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    prefix = "ComfyUI" + ctx.temp_suffix()
    return NodeResult(
        ui={"images": _write_pngs(ctx, i["images"], ctx.env.temp_dir, prefix, "temp")}
    )


async def _load_image(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    path = resolve_input_file(ctx.env, i["image"])
    if path is None:
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{i['image']}'")
    size = media.image_size(path.read_bytes())
    if size is None:
        raise UnidentifiedImageError(f"cannot identify image file '{path}'")
    return NodeResult((Image(size[0], size[1], 1, (128, 128, 128)), Mask(*size)))


def _load_image_valid(env: NodeEnv, i: dict[str, Any]) -> bool | str:
    if resolve_input_file(env, str(i.get("image"))) is None:
        return f"Invalid image file: {i.get('image')}"
    return True


def _load_image_changed(env: NodeEnv, i: dict[str, Any]) -> object:
    path = resolve_input_file(env, str(i.get("image")))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path else ""


async def _slow_counter(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    steps = i["steps"]
    delay = i.get("delay", ctx.env.slow_delay)
    for step in range(steps):
        await ctx.sleep(delay)
        await ctx.progress(step + 1, steps)
    return NodeResult((i["image"],))


async def _fail_after(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    ok_steps = i["ok_steps"]
    for step in range(ok_steps):
        await ctx.sleep(FAIL_AFTER_STEP_DELAY)
        await ctx.progress(step + 1, ok_steps + 1)
    raise RuntimeError(f"cref FailAfter: deliberate failure after {ok_steps} steps")


async def _canny(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    low, high = i["low_threshold"], i["high_threshold"]
    if low > high:
        raise KorniaBaseError(
            "Invalid input thresholds. low_threshold should be smaller than or equal to the "
            f"high_threshold. Got: {low}>{high}"
        )
    image: Image = i["image"]
    return NodeResult((replace(image, rgb=(255, 255, 255)),))


async def _checkpoint_loader(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    name = i["ckpt_name"]
    return NodeResult((Model(name, "MODEL"), Model(name, "CLIP"), Model(name, "VAE")))


async def _clip_text_encode(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    return NodeResult((Conditioning(i["text"]),))


async def _empty_latent(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    return NodeResult((Latent(i["width"], i["height"], i.get("batch_size", 1)),))


def _preview_jpeg(latent: Latent, step: int, steps: int) -> bytes:
    # latent2rgb previews are scaled to fit 512x512, like ComfyUI's max preview size
    scale = 512 / max(latent.width, latent.height)
    width, height = max(8, round(latent.width * scale)), max(8, round(latent.height * scale))
    return media.jpeg_gray(width, height, 40 + (180 * step) // max(1, steps))


async def _ksampler(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    latent: Latent = i["latent_image"]
    steps = i["steps"]
    for step in range(steps):
        await ctx.sleep(KSAMPLER_STEP_DELAY)
        preview = _preview_jpeg(latent, step + 1, steps) if ctx.env.previews else None
        await ctx.progress(step + 1, steps, preview)
    return NodeResult((replace(latent, seed=i["seed"]),))


async def _vae_decode(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    latent: Latent = i["samples"]
    rgb = _color_from(latent.seed or 0)
    return NodeResult((Image(latent.width, latent.height, latent.batch, rgb),))


async def _create_video(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    return NodeResult((Video(i["images"], float(i["fps"])),))


def _video_frames(images: Image) -> list[bytes]:
    level = sum(images.rgb) // 3
    return [
        media.jpeg_gray(images.width, images.height, (level + 40 * n) % 256)
        for n in range(images.batch)
    ]


async def _save_video(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    video: Video = i["video"]
    images = video.images
    prefix = i.get("filename_prefix", "video/ComfyUI")
    folder, stem, counter, subfolder = save_target(
        ctx.env.output_dir, prefix, images.width, images.height
    )
    name = f"{stem}_{counter:05}_.mp4"
    data = media.mp4_mjpeg(images.width, images.height, _video_frames(images), video.fps)
    (folder / name).write_bytes(data)
    entry = {"filename": name, "subfolder": subfolder, "type": "output"}
    return NodeResult(ui={"images": [entry], "animated": [True]})


async def _video_combine(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    """Shaped like VideoHelperSuite's VHS_VideoCombine, the usual source of `gifs` outputs."""
    images: Image = i["images"]
    fmt = i.get("format", "image/gif")
    frame_rate = float(i.get("frame_rate", 8.0))
    kind = "output" if i.get("save_output", True) else "temp"
    base = ctx.env.output_dir if kind == "output" else ctx.env.temp_dir
    folder, stem, counter, subfolder = save_target(base, i.get("filename_prefix", "AnimateDiff"))
    workflow = f"{stem}_{counter:05}.png"
    (folder / workflow).write_bytes(
        media.png_bytes(images.width, images.height, images.rgb, _png_text(ctx))
    )
    if fmt == "image/gif":
        name = f"{stem}_{counter:05}.gif"
        r, g, b = images.rgb
        inverted = (255 - r, 255 - g, 255 - b)
        colors = [images.rgb if n % 2 == 0 else inverted for n in range(min(images.batch, 4))]
        data = media.gif_bytes(
            images.width, images.height, colors, round(100 / frame_rate), i.get("loop_count", 0)
        )
    else:
        name = f"{stem}_{counter:05}.mp4"
        data = media.mp4_mjpeg(images.width, images.height, _video_frames(images), frame_rate)
    (folder / name).write_bytes(data)
    entry = {
        "filename": name,
        "subfolder": subfolder,
        "type": kind,
        "format": fmt,
        "frame_rate": frame_rate,
        "workflow": workflow,
        "fullpath": str(folder / name),
    }
    return NodeResult(
        outputs=((True, [str(folder / workflow), str(folder / name)]),), ui={"gifs": [entry]}
    )


async def _empty_audio(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    rate = i.get("sample_rate", 44100)
    return NodeResult((Audio(rate, i.get("channels", 2), round(i.get("duration", 60.0) * rate)),))


async def _save_audio(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    audio: Audio = i["audio"]
    folder, stem, counter, subfolder = save_target(
        ctx.env.output_dir, i.get("filename_prefix", "audio/ComfyUI")
    )
    name = f"{stem.replace('%batch_num%', '0')}_{counter:05}_.flac"
    (folder / name).write_bytes(
        media.flac_silence(audio.sample_rate, audio.channels, audio.samples)
    )
    return NodeResult(ui={"audio": [{"filename": name, "subfolder": subfolder, "type": "output"}]})


async def _preview_any(ctx: RunContext, i: dict[str, Any]) -> NodeResult:
    source = i.get("source")
    if isinstance(source, str):
        value = source
    elif isinstance(source, (int, float, bool)):
        value = str(source)
    elif source is None:
        value = "None"
    else:
        try:
            value = json.dumps(source)
        except TypeError:
            value = str(source)
    return NodeResult(ui={"text": [value]})


# --- the table -----------------------------------------------------------------------------------

_IMAGE = ("IMAGE",)
_SAVE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

_DEFINITIONS: list[NodeDef] = [
    NodeDef(
        "EmptyImage",
        static_inputs(
            {
                "width": int_input(512, 1, MAX_RESOLUTION),
                "height": int_input(512, 1, MAX_RESOLUTION),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": int_input(0, 0, 0xFFFFFF, display="color"),
            }
        ),
        _IMAGE,
        _empty_image,
        category="image",
    ),
    NodeDef(
        "ImageInvert", static_inputs({"image": _IMAGE}), _IMAGE, _image_invert, category="image"
    ),
    NodeDef(
        "SaveImage",
        static_inputs({"images": _IMAGE, "filename_prefix": string_input("ComfyUI")}),
        (),
        _save_image,
        output_node=True,
        category="image",
        display_name="Save Image",
        hidden=_SAVE_HIDDEN,
    ),
    NodeDef(
        "PreviewImage",
        static_inputs({"images": _IMAGE}),
        (),
        _preview_image,
        output_node=True,
        category="image",
        display_name="Preview Image",
        hidden=_SAVE_HIDDEN,
    ),
    NodeDef(
        "LoadImage",
        lambda env: {"required": {"image": (list_input_images(env), {"image_upload": True})}},
        ("IMAGE", "MASK"),
        _load_image,
        category="image",
        display_name="Load Image",
        validate=_load_image_valid,
        validate_inputs=("image",),
        is_changed=_load_image_changed,
    ),
    NodeDef(
        "SlowCounter",
        static_inputs(
            {"image": _IMAGE, "steps": int_input(10, 1, 10000)},
            {"delay": float_input(0.2, 0.0, 60.0)},
        ),
        _IMAGE,
        _slow_counter,
        category="cref",
        python_module="custom_nodes.cref_progress",
    ),
    NodeDef(
        "FailAfter",
        static_inputs({"image": _IMAGE, "ok_steps": int_input(3, 0, 10000)}),
        _IMAGE,
        _fail_after,
        category="cref",
        python_module="custom_nodes.cref_progress",
    ),
    NodeDef(
        "Canny",
        static_inputs(
            {
                "image": _IMAGE,
                "low_threshold": float_input(0.4, 0.01, 0.99),
                "high_threshold": float_input(0.8, 0.01, 0.99),
            }
        ),
        _IMAGE,
        _canny,
        category="image/preprocessors",
        python_module="comfy_extras.nodes_canny",
    ),
    NodeDef(
        "CheckpointLoaderSimple",
        static_inputs({"ckpt_name": (list(FAKE_CHECKPOINTS), {})}),
        ("MODEL", "CLIP", "VAE"),
        _checkpoint_loader,
        category="loaders",
        display_name="Load Checkpoint",
    ),
    NodeDef(
        "CLIPTextEncode",
        static_inputs(
            {"text": string_input(multiline=True, dynamicPrompts=True), "clip": ("CLIP",)}
        ),
        ("CONDITIONING",),
        _clip_text_encode,
        category="conditioning",
        display_name="CLIP Text Encode (Prompt)",
    ),
    NodeDef(
        "EmptyLatentImage",
        static_inputs(
            {
                "width": int_input(512, 16, MAX_RESOLUTION, 8),
                "height": int_input(512, 16, MAX_RESOLUTION, 8),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        ),
        ("LATENT",),
        _empty_latent,
        category="latent",
        display_name="Empty Latent Image",
    ),
    NodeDef(
        "KSampler",
        static_inputs(
            {
                "model": ("MODEL",),
                "seed": int_input(0, 0, 0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                "steps": int_input(20, 1, 10000),
                "cfg": (
                    "FLOAT",
                    {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01},
                ),
                "sampler_name": (list(SAMPLERS), {}),
                "scheduler": (list(SCHEDULERS), {}),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": float_input(1.0, 0.0, 1.0),
            }
        ),
        ("LATENT",),
        _ksampler,
        category="sampling",
    ),
    NodeDef(
        "VAEDecode",
        static_inputs({"samples": ("LATENT",), "vae": ("VAE",)}),
        _IMAGE,
        _vae_decode,
        category="latent",
        display_name="VAE Decode",
    ),
    NodeDef(
        "CreateVideo",
        static_inputs(
            {"images": _IMAGE, "fps": float_input(30.0, 1.0, 120.0, 1.0)}, {"audio": ("AUDIO",)}
        ),
        ("VIDEO",),
        _create_video,
        category="image/video",
        python_module="comfy_extras.nodes_video",
    ),
    NodeDef(
        "SaveVideo",
        static_inputs(
            {
                "video": ("VIDEO",),
                "filename_prefix": string_input("video/ComfyUI"),
                "format": (["auto", "mp4"], {"default": "auto"}),
                "codec": (["auto", "h264"], {"default": "auto"}),
            }
        ),
        (),
        _save_video,
        output_node=True,
        category="image/video",
        display_name="Save Video",
        python_module="comfy_extras.nodes_video",
        hidden=_SAVE_HIDDEN,
    ),
    NodeDef(
        "VHS_VideoCombine",
        static_inputs(
            {
                "images": _IMAGE,
                "frame_rate": float_input(8.0, 1.0, 120.0, 1.0),
                "loop_count": int_input(0, 0, 100),
                "filename_prefix": string_input("AnimateDiff"),
                "format": (["image/gif", "video/h264-mp4"], {}),
                "pingpong": ("BOOLEAN", {"default": False}),
                "save_output": ("BOOLEAN", {"default": True}),
            }
        ),
        ("VHS_FILENAMES",),
        _video_combine,
        output_node=True,
        category="Video Helper Suite",
        display_name="Video Combine",
        python_module="custom_nodes.ComfyUI-VideoHelperSuite",
        hidden=_SAVE_HIDDEN,
    ),
    NodeDef(
        "EmptyAudio",
        static_inputs(
            {
                "duration": float_input(60.0, 0.0, 0xFFFFFFFFFFFFFFFF),
                "sample_rate": ("INT", {"default": 44100}),
                "channels": int_input(2, 1, 2),
            }
        ),
        ("AUDIO",),
        _empty_audio,
        category="audio",
        python_module="comfy_extras.nodes_audio",
    ),
    NodeDef(
        "SaveAudio",
        static_inputs({"audio": ("AUDIO",), "filename_prefix": string_input("audio/ComfyUI")}),
        (),
        _save_audio,
        output_node=True,
        category="audio",
        display_name="Save Audio (FLAC)",
        python_module="comfy_extras.nodes_audio",
        hidden=_SAVE_HIDDEN,
    ),
    NodeDef(
        "PreviewAny",
        static_inputs({"source": ("*", {})}),
        (),
        _preview_any,
        output_node=True,
        category="utils",
        display_name="Preview Any",
        python_module="comfy_extras.nodes_preview_any",
    ),
]

NODES: dict[str, NodeDef] = {d.name: d for d in _DEFINITIONS}


def new_temp_suffix() -> str:
    # ComfyUI's PreviewImage alphabet really is "...stupvxyz" (no w)
    return "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))


def node_info(defn: NodeDef, env: NodeEnv) -> dict[str, Any]:
    """One node's entry in GET /object_info, in ComfyUI's V1 shape."""
    inputs = defn.input_types(env)
    if defn.hidden:
        inputs = {**inputs, "hidden": {k: (v,) for k, v in defn.hidden.items()}}
    return {
        "input": inputs,
        "input_order": {section: list(spec) for section, spec in inputs.items()},
        "output": list(defn.returns),
        "output_is_list": [False] * len(defn.returns),
        "output_name": list(defn.returns),
        "name": defn.name,
        "display_name": defn.display_name or defn.name,
        "description": defn.description,
        "python_module": defn.python_module,
        "category": defn.category,
        "output_node": defn.output_node,
    }
