import bitsandbytes as bnb
import pytest
import torch

from tli_lightning.errors import TLIError
from tli_lightning.loading import load_causal_lm


@pytest.mark.parametrize("quantization", ["nf4", "fp4"])
def test_4bit_loading_is_real_bitsandbytes(tiny_dir, quantization):
    model, tokenizer = load_causal_lm(str(tiny_dir), quantization=quantization, compute_dtype="float32")
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_state.quant_type == quantization
    assert q_proj.weight.dtype == torch.uint8  # packed 4-bit storage
    ids = tokenizer(["maji"], return_tensors="pt")
    assert torch.isfinite(model(**ids).logits).all()


def test_unquantized_loading_keeps_plain_linear_in_the_requested_dtype(tiny_dir):
    model, tokenizer = load_causal_lm(str(tiny_dir), quantization="none", compute_dtype="bfloat16")
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert tokenizer.bos_token_id is not None


def test_tiny_is_built_by_the_real_loader_from_a_reserved_name(tiny_dir):
    model, _ = load_causal_lm("tiny", quantization="none")
    assert model.config.num_hidden_layers == 4 and model.config.hidden_size == 128


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(TLIError, match="model directory not found: .*nowhere"):  # no hub lookup for a path
        load_causal_lm(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TLIError, match="cannot load model"):
        load_causal_lm(str(tmp_path / "empty"))


def test_the_bitsandbytes_workaround_fails_loudly_if_its_flag_disappears(tiny_dir, monkeypatch):
    from tli_lightning import loading

    model, _ = load_causal_lm(str(tiny_dir), quantization="nf4", compute_dtype="float32")
    assert all(m.support_avx512bf16_for_cpu is False for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            del module.support_avx512bf16_for_cpu  # what a bitsandbytes without the attribute looks like
    with pytest.raises(RuntimeError, match="no longer has Linear4bit.support_avx512bf16_for_cpu"):
        loading._keep_4bit_weights_trainable(model)
