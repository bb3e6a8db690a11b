import re

import lightning as L
import pytest
import torch

from tli_lightning.data import TLIDataModule
from tli_lightning.errors import TLIError
from tli_lightning.module import TLIModule


def _configured(tiny_dir, **kwargs) -> TLIModule:
    kwargs.setdefault("compute_dtype", "float32")
    module = TLIModule(model_name_or_path=str(tiny_dir), **kwargs)
    module.configure_model()
    return module


def _blocks_with(module, pattern: str) -> set[int]:
    found = set()
    for name, _ in module.named_parameters():
        match = re.search(r"layers\.(\d+)\.", name)
        if match and pattern in name:
            found.add(int(match.group(1)))
    return found


def test_lora_only_on_the_chosen_blocks_and_modules(tiny_dir):
    module = _configured(tiny_dir)  # paper defaults: target 2 -> blocks 0 and 1, q_proj and v_proj
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert _blocks_with(module, "lora_") == {0, 1}
    assert {re.search(r"\.(\w+_proj)\.lora", n).group(1) for n in trainable} == {"q_proj", "v_proj"}
    assert module.configure_model() is None and module.model is not None  # idempotent
    other = _configured(tiny_dir, adapt_layers=[1], target_layer=3, lora_target_modules=["o_proj"])
    assert _blocks_with(other, "lora_") == {1} and all("o_proj" in n for n, p in other.named_parameters() if p.requires_grad)


def test_full_adaptation_trains_every_parameter_of_the_chosen_blocks_only(tiny_dir):
    module = _configured(tiny_dir, adaptation="full", quantization="none", target_layer=2)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    in_blocks = {n for n, _ in module.named_parameters() if re.search(r"layers\.[01]\.", n)}
    assert trainable == in_blocks
    whole = _configured(tiny_dir, adaptation="full", quantization="none", adapt_layers="all", target_layer=-1)
    assert all(p.requires_grad for p in whole.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adaptation": "full"}, "4-bit weights cannot be; set --model.quantization none"),
        ({"adapt_layers": "all"}, "adapt_layers 'all' is for adaptation 'full'"),
    ],
)
def test_refused_at_construction(kwargs, message):
    with pytest.raises(TLIError, match=re.escape(message)):
        TLIModule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_layer": 5}, "layer 5 is out of range for a model with 4 blocks"),
        ({"adapt_layers": [7]}, "adapt_layers [7] are not blocks of this model"),
        ({"adapt_layers": [1, 2]}, "blocks [2] are at or above target_layer 2"),
        ({"adaptation": "full", "quantization": "none", "adapt_layers": "all"}, "at or above target_layer 2"),
        ({"target_layer": 0}, "at or above target_layer 0"),
    ],
)
def test_refused_once_the_model_is_known(tiny_dir, kwargs, message):
    with pytest.raises(TLIError, match=re.escape(message)):
        _configured(tiny_dir, **kwargs)


def test_16_true_with_4bit_weights_is_refused(tiny_dir):
    trainer = L.Trainer(precision="16-true", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(TLIError, match="precision '16-true' does not work with 4-bit weights"):
        trainer.fit(TLIModule(model_name_or_path=str(tiny_dir)), TLIDataModule())


def test_state_dict_holds_only_trainable_tensors(tiny_dir):
    module = _configured(tiny_dir)
    state = module.state_dict()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    module.load_state_dict({k: torch.zeros_like(v) for k, v in state.items()}, strict=False)
    assert all(float(v.abs().sum()) == 0 for v in module.state_dict().values())


def test_gradient_reaches_block_0_through_frozen_4bit_block_1_after_an_eval_pass(tiny_dir):
    # Guards the bitsandbytes CPU repacking workaround in loading.py: without it, an eval-mode
    # forward (what the callbacks do) silently cuts the gradient through frozen 4-bit layers.
    module = _configured(tiny_dir, lora_dropout=0.0)
    batch = {"source": ["maji", "moto", "jua"], "target": ["water", "fire", "sun"]}
    for p in module.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)  # LoRA B starts at 0; make every path carry gradient

    def grads():
        module.zero_grad()
        module.contrastive(batch).loss.backward()
        return {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}

    module.train()
    before = grads()
    module.eval()
    with torch.no_grad():
        module.contrastive(batch)
    module.train()
    after = grads()
    assert any("layers.0." in n and g.abs().sum() > 0 for n, g in after.items())
    for name in before:
        torch.testing.assert_close(after[name], before[name])


def test_training_step_logs_the_learning_signal(tiny_dir):
    module = _configured(tiny_dir)
    out = module.contrastive({"source": ["maji", "moto"], "target": ["water", "fire"]})
    assert out.loss.requires_grad and out.positive.shape == (2,) and out.hardest_negative.shape == (2,)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir):
    batch = {"source": ["maji", "moto", "jua"], "target": ["water", "fire", "sun"]}

    def grads(checkpointing: bool):
        torch.manual_seed(0)
        module = _configured(tiny_dir, lora_dropout=0.0, gradient_checkpointing=checkpointing)
        for p in module.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(p.numel()))
        module.contrastive(batch).loss.backward()
        return {n: p.grad for n, p in module.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad)
