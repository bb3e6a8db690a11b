"""Load a Hugging Face causal LM and its tokenizer, optionally 4-bit quantized (bitsandbytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tli_lightning.errors import TLIError
from tli_lightning.tiny_model import TINY, TINY_ALIGNED, embedded_model_dir

Quantization = Literal["nf4", "fp4", "none"]
DType = Literal["float32", "bfloat16", "float16"]
QuantStorage = Literal["uint8", "bfloat16", "float16", "float32"]


def quantization_config(
    quantization: Quantization,
    compute_dtype: DType = "bfloat16",
    double_quant: bool = False,
    quant_storage: QuantStorage = "uint8",
) -> BitsAndBytesConfig | None:
    """The one ``BitsAndBytesConfig`` used for training and evaluation alike (never mix NF4 and FP4)."""
    if quantization == "none":
        return None
    if quantization not in ("nf4", "fp4"):
        raise TLIError(f"quantization must be nf4, fp4 or none, got {quantization!r}")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_quant_storage=getattr(torch, quant_storage),
    )


def resolve_model_path(model_name_or_path: str) -> str:
    """``tiny``/``tiny-aligned`` -> the embedded model's directory; anything else is passed to ``from_pretrained``."""
    embedded = embedded_model_dir(model_name_or_path)
    return str(embedded) if embedded is not None else model_name_or_path


def check_model_source(model_name_or_path: str) -> str:
    """The local directory or hub id to load, refused at once if it cannot be loaded from here.

    A hub id that is not in the local cache is asked for once, with no retries: huggingface_hub
    retries an uncached file for about a minute when the hub is unreachable, and a mistyped id
    would cost that minute before its error. ``tiny`` must be resolved first
    (:func:`resolve_model_path`). Returns the path with ``~`` expanded.
    """
    path = model_name_or_path
    if path.startswith("~"):  # from_pretrained would take it for a hub id
        path = str(Path(path).expanduser())
    local = Path(path)
    if local.is_file():
        raise TLIError(f"{path} is a file; give the model's directory (the one holding config.json) or a hub id")
    if local.is_dir() or path in (TINY, TINY_ALIGNED):
        return path
    if path.startswith(("/", "./", "../", ".")) or path.count("/") > 1:
        raise TLIError(f"model directory not found: {path} (a local path; hub ids look like owner/name)")
    _check_hub_id(path)
    return path


def _check_hub_id(repo_id: str) -> None:
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError as error:
        raise TLIError(f"{repo_id!r} is neither a local directory nor a valid hub id: {error}") from None
    if isinstance(cached, str):
        return  # in the cache: from_pretrained falls back on it quickly if the hub is unreachable
    if huggingface_hub.is_offline_mode():
        raise TLIError(
            f"model {repo_id!r} is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set: download it "
            "where the hub is reachable, or give a local directory"
        )
    try:
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo_id, "config.json"))
    except GatedRepoError:
        return  # from_pretrained says how to get access
    except RepositoryNotFoundError:
        raise TLIError(
            f"model {repo_id!r}: no such model on the hub (or a private one: log in with `hf auth login`); "
            "a local directory needs a path such as ./my_model"
        ) from None
    except Exception as error:  # httpx's network errors, the hub's HTTP errors: each means no model to load
        raise TLIError(
            f"model {repo_id!r} is not in the local Hugging Face cache and the hub did not answer "
            f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); check the id and the network, "
            "or give a local directory"
        ) from None


def load_causal_lm(
    model_name_or_path: str,
    *,
    quantization: Quantization = "none",
    compute_dtype: DType = "float32",
    double_quant: bool = False,
    quant_storage: QuantStorage = "uint8",
    device: torch.device | str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer onto one device (each DDP rank loads its own copy).

    ``compute_dtype`` is the 4-bit compute dtype, and the weight dtype when not quantized.
    ``progress=False`` hides transformers' weight-loading bar.
    """
    path = check_model_source(resolve_model_path(model_name_or_path))
    device = torch.device(device) if device is not None else torch.device("cpu")
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    if not progress:
        transformers_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, compute_dtype),
            quantization_config=quantization_config(quantization, compute_dtype, double_quant, quant_storage),
            # One explicit device, never "auto": "auto" is model parallelism and breaks DDP.
            device_map={"": device},
            trust_remote_code=trust_remote_code,
        )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # ValueError: a directory that holds no model (no config.json)
        hint = "" if Path(path).exists() else " (not a local directory; is the hub reachable from here?)"
        raise TLIError(f"cannot load model {model_name_or_path!r}{hint}: {error}") from error
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
    model.config.use_cache = False
    if quantization != "none":
        _keep_4bit_weights_trainable(model)
    return model, tokenizer


def _keep_4bit_weights_trainable(model: torch.nn.Module) -> None:
    # bitsandbytes (0.50) repacks a Linear4bit's weights for a faster CPU kernel on its first
    # eval-mode forward on AVX512-BF16 CPUs, and never undoes it; that kernel has no autograd,
    # so later training silently loses the gradient through every frozen 4-bit layer (LoRA
    # below the last adapted block stops learning). Evaluation between epochs would trigger it.
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            if not hasattr(module, "support_avx512bf16_for_cpu"):
                # Setting a flag bitsandbytes no longer reads would silently bring the bug back.
                raise RuntimeError(
                    f"bitsandbytes {bnb.__version__} no longer has Linear4bit.support_avx512bf16_for_cpu, which "
                    "tli_lightning sets to keep CPU training's gradients through 4-bit layers; install "
                    "bitsandbytes==0.50.2 (tested), or check whether the new version still repacks weights "
                    "on eval-mode forwards and update tli_lightning.loading._keep_4bit_weights_trainable"
                )
            module.support_avx512bf16_for_cpu = False
