import re

import bitsandbytes as bnb
import lightning as L
import pytest
import torch

from tli_lightning.data import TLIDataModule
from tli_lightning.errors import TLIError
from tli_lightning.loading import load_causal_lm
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


def _trainable(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def _trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
    )
    return L.Trainer(**{**defaults, **kwargs})


def test_lora_only_on_the_chosen_blocks_and_modules(tiny_dir):
    module = _configured(tiny_dir)  # paper defaults: target 2 -> blocks 0 and 1, q_proj and v_proj
    trainable = _trainable(module)
    assert trainable and all("lora_" in n for n in trainable)
    assert _blocks_with(module, "lora_") == {0, 1}
    assert {re.search(r"\.(\w+_proj)\.lora", n).group(1) for n in trainable} == {"q_proj", "v_proj"}
    assert module.configure_model() is None and module.model is not None  # idempotent
    other = _configured(tiny_dir, adapt_layers=[1], target_layer=3, lora_target_modules=["o_proj"])
    assert _blocks_with(other, "lora_") == {1} and all("o_proj" in n for n in _trainable(other))
    every = _configured(tiny_dir, target_layer=-1)  # the lora_all arm: every block, loss at the final output
    assert _blocks_with(every, "lora_") == {0, 1, 2, 3}


def test_full_adaptation_trains_what_the_loss_reaches_and_nothing_else(tiny_dir):
    blocks = _configured(tiny_dir, adaptation="full", quantization="none", target_layer=2)
    assert _trainable(blocks) == {n for n, _ in blocks.named_parameters() if re.search(r"layers\.[01]\.", n)}
    early = _configured(tiny_dir, adaptation="full", quantization="none", adapt_layers="all", target_layer=2)
    assert _trainable(early) == _trainable(blocks) | {"model.model.embed_tokens.weight"}
    everything = _configured(tiny_dir, adaptation="full", quantization="none", adapt_layers="all", target_layer=-1)
    frozen = {n for n, _ in everything.named_parameters()} - _trainable(everything)
    assert frozen == {"model.lm_head.weight"}  # the loss reads the final normed state: the head never gets a gradient
    assert everything.trainable_parameters == sum(
        p.numel() for n, p in everything.named_parameters() if n != "model.lm_head.weight"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adaptation": "full"}, "4-bit weights cannot be; set --model.quantization none"),
        ({"adapt_layers": "all"}, "adapt_layers 'all' is for adaptation 'full'"),
        ({"lora_r": 0}, "lora_r must be at least 1, got 0"),
        ({"lora_dropout": 1.0}, "lora_dropout must be in [0, 1), got 1.0"),
        ({"lora_target_modules": []}, "lora_target_modules must name at least one module"),
        ({"learning_rate": 0.0}, "learning_rate must be positive, got 0.0"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0, got -1"),
        ({"temperature": 0.0}, "temperature must be positive, got 0.0"),
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
        ({"adapt_layers": [1, 2]}, "blocks [2] of this Llama model are at or above target_layer 2"),
        ({"adapt_layers": []}, "adapt_layers is empty"),
        (
            {"target_layer": 0},
            "target_layer 0 is hidden_states index 0, the embeddings of this Llama model (4 blocks), so no block is "
            "below it to adapt; set a target_layer of 1 to 4 (or -1), or train the embeddings with adapt_layers: all "
            "and adaptation: full",
        ),
    ],
)
def test_refused_once_the_model_is_known(tiny_dir, kwargs, message):
    with pytest.raises(TLIError, match=re.escape(message)):
        _configured(tiny_dir, **kwargs)


@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "64-true"])
def test_precisions_that_cast_the_module_are_refused_before_loading(tiny_dir, precision):
    with pytest.raises(TLIError, match=re.escape(f"precision '{precision}' is not supported")):
        _trainer(precision=precision).fit(TLIModule(model_name_or_path=str(tiny_dir)), TLIDataModule(reasoning_limit=3))


def test_float32_master_weights_over_bfloat16_ones_need_autocast(tiny_dir):
    module = TLIModule(model_name_or_path=str(tiny_dir), quantization="none", adaptation="full")
    with pytest.raises(TLIError, match=r"mixes dtypes, which needs autocast: use --trainer.precision bf16-mixed"):
        _trainer(precision="32-true").fit(module, TLIDataModule(reasoning_limit=3))


class DtypeProbe(L.Callback):
    """Records dtypes after Lightning's setup (train start) and the optimizer state after a step."""

    def on_train_start(self, trainer, pl_module):
        self.parameters = {n: p.dtype for n, p in pl_module.named_parameters()}
        self.buffers = {n: b.dtype for n, b in pl_module.named_buffers()}
        self.packed = {
            n: (m.weight.dtype, m.weight.data.clone())
            for n, m in pl_module.named_modules()
            if isinstance(m, bnb.nn.Linear4bit)
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        optimizer = trainer.optimizers[0]
        self.optimizer_state = {
            s.dtype
            for state in optimizer.state.values()
            for s in state.values()
            if torch.is_tensor(s) and s.numel() > 1
        }
        self.grads = {
            n
            for n, p in pl_module.named_parameters()
            if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0
        }


@pytest.mark.parametrize(
    ("precision", "arm"),
    [
        ("32-true", dict(quantization="nf4", compute_dtype="bfloat16")),  # the paper's QLoRA
        ("bf16-mixed", dict(quantization="nf4", compute_dtype="bfloat16")),
        ("bf16-mixed", dict(quantization="none", compute_dtype="bfloat16", adaptation="full")),  # float32 masters
        ("32-true", dict(quantization="none", compute_dtype="float32", adaptation="full")),
    ],
    ids=["lora_nf4-32-true", "lora_nf4-bf16-mixed", "full_bf16-bf16-mixed", "full_fp32-32-true"],
)
def test_dtypes_after_lightning_setup_for_every_allowed_precision(tiny_dir, precision, arm):
    probe = DtypeProbe()
    module = TLIModule(model_name_or_path=str(tiny_dir), lora_dropout=0.0, **arm)
    _trainer(precision=precision, callbacks=[probe]).fit(module, TLIDataModule(reasoning_limit=3))
    fresh, _ = load_causal_lm(str(tiny_dir), quantization=arm["quantization"], compute_dtype="bfloat16")
    assert all(d == torch.float32 for n, d in probe.buffers.items() if "inv_freq" in n) and probe.buffers
    if arm["quantization"] == "nf4":
        assert all(d == torch.float32 for n, d in probe.parameters.items() if "lora_" in n)
        assert probe.optimizer_state == {torch.float32}
        expected = {n: m.weight.data for n, m in fresh.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
        assert len(probe.packed) == len(expected) == 28
        for name, (dtype, data) in probe.packed.items():
            assert dtype == torch.uint8 and torch.equal(
                data, expected[name.removeprefix("model.base_model.model.").removesuffix(".base_layer")]
            )
    else:  # trained weights are float32 masters; frozen ones stay in compute_dtype
        assert {probe.parameters[n] for n in _trainable(module)} == {torch.float32}
        frozen = {d for n, d in probe.parameters.items() if n not in _trainable(module)}
        assert frozen == {getattr(torch, arm["compute_dtype"])}
    assert probe.grads  # the step trained something


def test_state_dict_holds_only_trainable_tensors_and_the_checkpoint_the_epochs_running_means(tiny_dir):
    module = _configured(tiny_dir)
    state = module.state_dict()
    assert set(state) == _trainable(module)
    module.load_state_dict({k: torch.zeros_like(v) for k, v in state.items()}, strict=False)
    assert all(float(v.abs().sum()) == 0 for v in module.state_dict().values())
    module.train_means["loss"].update(torch.tensor(0.5), weight=8)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    fresh = _configured(tiny_dir)
    fresh.on_load_checkpoint({**checkpoint, "state_dict": state})
    assert float(fresh.train_means["loss"].compute()) == 0.5  # a resumed epoch goes on averaging where it stopped


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


class MetricsProbe(L.Callback):
    def on_train_end(self, trainer, pl_module):
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_training_steps_log_the_learning_signal(tiny_dir):
    probe = MetricsProbe()
    _trainer(callbacks=[probe], max_steps=3).fit(
        TLIModule(model_name_or_path=str(tiny_dir)), TLIDataModule(reasoning_limit=3)
    )
    assert {"train/loss_step", "train/pos_sim_step", "train/hardest_neg_sim_step"} <= set(probe.metrics)
    m = probe.metrics
    # The mean of relu(margin - pos + neg) is at least relu of the means (relu is convex): the three logged
    # numbers belong to one batch's loss.
    assert m["train/loss_step"] >= max(0.0, 0.4 - m["train/pos_sim_step"] + m["train/hardest_neg_sim_step"]) - 1e-6
    assert m["train/loss_step"] > 0  # a random model does not meet the margin yet


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(tiny_dir):
    batch = {"source": ["maji", "moto", "jua"], "target": ["water", "fire", "sun"]}

    def run(checkpointing: bool):
        module = _configured(tiny_dir, lora_dropout=0.0, gradient_checkpointing=checkpointing)
        for p in module.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(p.numel()))
        calls = []
        # A module inside the block: transformers checkpoints a block's forward, so the block's own
        # hooks run once; what runs inside it runs again when the backward pass recomputes it.
        module.model.get_base_model().model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        module.contrastive(batch).loss.backward()
        return {n: p.grad for n, p in module.named_parameters() if p.requires_grad}, len(calls)

    (plain, plain_calls), (checkpointed, checkpointed_calls) = run(False), run(True)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # recomputed in the backward pass
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(quantization="none"), "LoRA and 4-bit weights with FSDP are not supported"),
        (dict(), "LoRA and 4-bit weights with FSDP are not supported"),  # LoRA on 4-bit weights
        (
            dict(quantization="none", adaptation="full", optimizer="adamw8bit", compute_dtype="float32"),
            "AdamW8bit does not take",
        ),
        (dict(adaptation="full", quantization="nf4"), "4-bit weights cannot be"),  # refused before any trainer
    ],
)
def test_fsdp_combinations_that_cannot_work_are_refused(tiny_dir, kwargs, message):
    from lightning.pytorch.strategies import ModelParallelStrategy

    with pytest.raises(TLIError, match=re.escape(message)):
        module = TLIModule(model_name_or_path=str(tiny_dir), **kwargs)
        strategy = ModelParallelStrategy(save_distributed_checkpoint=False)
        _trainer(strategy=strategy).fit(module, TLIDataModule(reasoning_limit=3))


def test_no_warmup_needs_no_step_count_before_training(tiny_dir):
    # LambdaLR evaluates step 0 when built: with warmup 0 that must not ask Lightning for the total step
    # count, which would build the train loader before a checkpoint's loader state is restored.
    module = TLIModule(model_name_or_path=str(tiny_dir), warmup_steps=0, compute_dtype="float32")
    module.configure_model()
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]  # no trainer attached: would raise
    assert scheduler.get_last_lr() == [module.hparams.learning_rate]
