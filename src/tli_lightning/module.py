"""``TLIModule``: a (4-bit) causal LM whose early blocks learn to align translation pairs.

The learning signal, in :meth:`TLIModule.training_step`: embed the batch's source and target
words at ``target_layer`` (a forward that stops there), and apply a contrastive loss so each
word's translation is closer than any other word of the batch.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import lightning as L
import torch
from peft import LoraConfig, get_peft_model
from torchmetrics import MeanMetric, MetricCollection

from tli_lightning.backbones import (
    blocks_of,
    decoder_of,
    embedding_modules,
    family_of,
    final_norm_of,
    lm_head_of,
    lora_targets,
    num_blocks,
)
from tli_lightning.errors import TLIError
from tli_lightning.layers import resolve_blocks, resolve_layer
from tli_lightning.loading import DType, Quantization, QuantStorage, load_causal_lm
from tli_lightning.losses import ContrastiveOutput, info_nce, triplet_hardest_negative
from tli_lightning.representations import hidden_state_at, masked_mean, tokenize_words

log = logging.getLogger(__name__)
# Precisions that leave the module's tensors alone. The "-true" half precisions cast every
# floating parameter and buffer (Lightning's HalfPrecision.convert_module): LoRA weights and their
# optimizer state, the rotary inv_freq buffer (XNLI log-likelihoods drift by up to 0.02 nats),
# and a float quant_storage's packed 4-bit weights.
PRECISIONS = ("32-true", "32", "bf16-mixed")


def _summary(out: ContrastiveOutput) -> dict[str, torch.Tensor]:
    return {
        "loss": out.loss.detach(),
        "pos_sim": out.positive.detach().mean(),
        "hardest_neg_sim": out.hardest_negative.detach().mean(),
    }


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TLIError(message)


class TLIModule(L.LightningModule):
    """The model: a (4-bit) causal LM with LoRA or full-rank training on its early blocks (hidden_states indices).

    Layer numbering follows ``hidden_states``: 0 = embeddings, i = output of block i-1, -1 = the final
    normed output. Blocks (what is adapted) are numbered 0..N-1.
    """

    def __init__(
        self,
        model_name_or_path: str = "tiny",
        quantization: Quantization = "nf4",
        compute_dtype: DType = "bfloat16",
        double_quant: bool = False,
        quant_storage: QuantStorage = "uint8",
        trust_remote_code: bool = False,
        adaptation: Literal["lora", "full"] = "lora",
        adapt_layers: list[int] | Literal["all"] | None = None,
        target_layer: int = 2,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | None = None,
        include_special_tokens: bool = False,
        word_template: str = "{word}",
        loss: Literal["triplet", "infonce"] = "triplet",
        margin: float = 0.4,
        temperature: float = 0.05,
        optimizer: Literal["adamw", "adamw8bit"] = "adamw",
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 50,
        gradient_checkpointing: bool = False,
        master_weights: bool = True,
    ) -> None:
        """

        Args:
            model_name_or_path: Hub id or local directory of a causal LM of a supported family (Llama,
                Mistral, Qwen2, Qwen3, Gemma-2, Gemma-3 text, Cohere, Phi-3, GPT-2, BLOOM); ``tiny`` builds
                the embedded 4-block demo model offline (random weights: the negative control), ``tiny-aligned``
                the same with alignment planted in its embeddings (the positive control).
            quantization: Load weights in 4-bit with bitsandbytes (``nf4``, ``fp4``) or not (``none``).
            compute_dtype: 4-bit compute dtype, and the dtype of every weight that is not 4-bit (so the
                trainable weights of ``full``; LoRA weights stay float32).
            double_quant: bitsandbytes double quantization of the 4-bit scales.
            quant_storage: Storage dtype of packed 4-bit weights.
            trust_remote_code: Allow model code from the hub (off by default).
            adaptation: ``lora`` (PEFT LoRA on ``adapt_layers``) or ``full`` (full-rank training of
                every parameter of ``adapt_layers``; needs ``quantization: none``).
            adapt_layers: Block indices to adapt; null = every block below ``target_layer``;
                ``all`` (``full`` only) = every parameter the loss reaches: the embedding step (token
                embeddings; GPT-2's position embeddings, BLOOM's embedding norm), every block below
                ``target_layer``, and the final norm when ``target_layer`` is -1. Nothing
                the loss cannot reach (the LM head, blocks above the target) is ever trainable.
            target_layer: The ``hidden_states`` index the loss reads (the TLI paper: 2). The
                training forward stops there: no higher block and no LM head runs.
            lora_r: LoRA rank.
            lora_alpha: LoRA scaling numerator (scale = alpha / r).
            lora_dropout: Dropout on the LoRA branch.
            lora_target_modules: Module names (within each adapted block) that get LoRA; null = the family's
                attention query and value: q_proj, v_proj (Llama, Mistral, Qwen2, Qwen3, Gemma-2/3, Cohere);
                qkv_proj (Phi-3, fused q/k/v); c_attn (GPT-2, fused); query_key_value (BLOOM, fused).
            include_special_tokens: Average BOS/EOS into the word vector too. Off by default: the
                BOS position carries a massive, nearly constant activation from block 1 on, so
                BOS-inclusive vectors all look alike (the paper's 0.99998 pilot artefact).
            word_template: Text around each word when embedding it (``{word}`` = the word alone,
                as the paper); only the word's own tokens are averaged.
            loss: ``triplet`` (hardest in-batch negative, the paper) or ``infonce`` (symmetric).
            margin: Triplet margin.
            temperature: InfoNCE temperature.
            optimizer: ``adamw`` (torch) or ``adamw8bit`` (bitsandbytes, for full fine-tuning memory).
            learning_rate: Peak learning rate.
            weight_decay: AdamW weight decay.
            warmup_steps: Linear warm-up steps, then linear decay to 0 at the last step.
            gradient_checkpointing: Recompute activations in backward (non-reentrant).
            master_weights: ``full`` only: hold the trained weights (and so their gradients and optimizer
                state) in float32 while the frozen ones stay in ``compute_dtype``. In bfloat16, an update
                smaller than half a weight's spacing (2e-5 against a weight of 0.02) rounds to no change:
                most of a full fine-tuning step would be lost. Off only to fit a bigger model, knowingly.
        """
        super().__init__()
        self.save_hyperparameters()
        _require(
            adaptation != "full" or quantization == "none",
            "adaptation 'full' trains the weights themselves, which 4-bit weights cannot be; set "
            "--model.quantization none (with --model.compute_dtype bfloat16 to save memory), "
            "or use --model.adaptation lora",
        )
        _require(
            adapt_layers != "all" or adaptation == "full",
            "adapt_layers 'all' is for adaptation 'full'; for LoRA list the blocks to adapt",
        )
        _require(lora_r >= 1, f"lora_r must be at least 1, got {lora_r}")
        _require(lora_alpha > 0, f"lora_alpha must be positive, got {lora_alpha}")
        _require(0 <= lora_dropout < 1, f"lora_dropout must be in [0, 1), got {lora_dropout}")
        _require(
            lora_target_modules is None or bool(lora_target_modules),
            "lora_target_modules must name at least one module, e.g. [q_proj, v_proj], or be null (the family's "
            "attention query and value)",
        )
        _require(learning_rate > 0, f"learning_rate must be positive, got {learning_rate}")
        _require(weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
        _require(warmup_steps >= 0, f"warmup_steps must be >= 0, got {warmup_steps}")
        _require(margin > 0, f"margin must be positive, got {margin}")
        _require(temperature > 0, f"temperature must be positive, got {temperature}")
        self.loss_name = loss
        self.model: torch.nn.Module | None = None
        self.tokenizer = None
        self.target_layer: int | None = None  # resolved against the model in configure_model
        self.trainable_parameters = 0
        # nan_strategy "disable": the default checks for NaNs with two host syncs per update, every step.
        self.train_means = MetricCollection(
            {name: MeanMetric(nan_strategy="disable") for name in ("loss", "pos_sim", "hardest_neg_sim")}
        )
        # Checkpoints hold only the trainable tensors (see state_dict), so loading is partial.
        self.strict_loading = False

    # ---- model ----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """What an adapter needs to be evaluated on the base it was trained on (saved beside every adapter)."""
        hp = self.hparams
        keys = (
            "model_name_or_path",
            "quantization",
            "compute_dtype",
            "double_quant",
            "quant_storage",
            "adaptation",
            "include_special_tokens",
            "word_template",
        )
        return {**{k: hp[k] for k in keys}, "target_layer": self.target_layer}

    def _check_trainer(self) -> None:
        """Precisions and strategies that cannot work are refused before the model loads."""
        if self._trainer is None:
            return
        precision = str(self.trainer.precision)
        _require(
            precision in PRECISIONS,
            f"precision {precision!r} is not supported; use --trainer.precision bf16-mixed (autocast) or 32-true "
            "(--model.compute_dtype sets the weights' dtype). '-true' half precisions cast every parameter and buffer "
            "(LoRA weights and their optimizer state, the rotary inv_freq buffer, packed 4-bit weights); fp16 "
            "autocast is untested with bitsandbytes here",
        )
        hp = self.hparams
        mixed_dtypes = hp.adaptation == "full" and hp.master_weights and hp.compute_dtype != "float32"
        _require(
            not mixed_dtypes or precision == "bf16-mixed",
            f"full-rank training with float32 master weights over {hp.compute_dtype} frozen weights mixes dtypes, "
            f"which needs autocast: use --trainer.precision bf16-mixed (not {precision}), or --model.compute_dtype "
            "float32",
        )
        from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

        strategy = self.trainer.strategy
        name = type(strategy).__name__
        _require(
            isinstance(strategy, (SingleDeviceStrategy, DDPStrategy, ModelParallelStrategy)),
            f"strategy {name} is not supported; use ddp (LoRA, or full fine-tuning that fits one device) or "
            "ModelParallelStrategy (FSDP2, full fine-tuning with sharded weights)",
        )
        if isinstance(strategy, ModelParallelStrategy):
            _require(
                self.hparams.adaptation == "full",
                # (Full-rank training on 4-bit weights is refused earlier, so this also covers 4-bit with FSDP.)
                "LoRA and 4-bit weights with FSDP are not supported (adapters would be saved from sharded tensors, "
                "and bitsandbytes' packed weights cannot be sharded); train LoRA with --trainer.strategy ddp "
                "(configs/multi_gpu/ddp.yaml: each process holds its own 4-bit copy)",
            )
            _require(
                self.hparams.optimizer != "adamw8bit",
                "bitsandbytes' AdamW8bit does not take FSDP's sharded (DTensor) parameters; use "
                "--model.optimizer adamw (configs/multi_gpu/fsdp.yaml sets it; give that config after the arm's)",
            )
            _require(
                not strategy._save_distributed_checkpoint,
                "ModelParallelStrategy saves sharded checkpoint folders by default, which runs cannot resume from; "
                "set --trainer.strategy.save_distributed_checkpoint false",
            )

    def configure_model(self) -> None:
        if self.model is not None:  # Lightning may call this more than once
            return
        self._check_trainer()
        hp = self.hparams
        # Without a trainer (a script, a benchmark), where the module was put: TLIModule().to("cuda").
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        model, self.tokenizer = load_causal_lm(
            hp.model_name_or_path,
            quantization=hp.quantization,
            compute_dtype=hp.compute_dtype,
            double_quant=hp.double_quant,
            quant_storage=hp.quant_storage,
            device=device,
            trust_remote_code=hp.trust_remote_code,
            # One bar, on the first process, and none where the trainer's progress bar is off.
            progress=self._trainer is None
            or (self.trainer.is_global_zero and self.trainer.progress_bar_callback is not None),
        )
        blocks_total = num_blocks(model)
        self.target_layer = resolve_layer(hp.target_layer, blocks_total)
        family = family_of(model).name
        _require(
            self.target_layer > 0 or (hp.adapt_layers == "all" and hp.adaptation == "full"),
            f"target_layer {hp.target_layer} is hidden_states index 0, the embeddings of this {family} model "
            f"({blocks_total} blocks), so no block is below it to adapt; set a target_layer of 1 to "
            f"{blocks_total} (or -1), or train the embeddings with adapt_layers: all and adaptation: full",
        )
        blocks = resolve_blocks(None if hp.adapt_layers == "all" else hp.adapt_layers, self.target_layer, blocks_total)
        _require(bool(blocks) or hp.adapt_layers == "all", "adapt_layers is empty: list at least one block to adapt")
        useless = [b for b in blocks if b >= self.target_layer]
        if useless:
            raise TLIError(
                f"blocks {useless} of this {family} model are at or above target_layer {hp.target_layer} "
                f"(hidden_states index {self.target_layer}, the output of block {self.target_layer - 1}) and would "
                f"get no gradient; adapt blocks 0 to {self.target_layer - 1}, or raise target_layer (at most "
                f"{blocks_total})"
            )
        # LoRA's random init depends on the seed alone, not on what drew from the RNG before (process
        # launching, loading): one process and several start from the same adapter.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed())
            model = self._adapt(model, blocks)
        if hp.gradient_checkpointing:
            # Reentrant checkpointing fails under DDP with LoRA parameters.
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if self.device_mesh is not None:
            self._shard(model)
        # from_pretrained returns eval mode; training needs LoRA dropout on (Lightning keeps modes as found).
        self.model = model.train()
        self.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info(
            "adapting blocks %s of %d (%s); %d trainable parameters",
            blocks,
            blocks_total,
            hp.adaptation,
            self.trainable_parameters,
        )

    def _adapt(self, model: torch.nn.Module, blocks: list[int]) -> torch.nn.Module:
        """LoRA on ``blocks`` (PEFT), or full-rank training of ``blocks`` (plus what ``all`` adds)."""
        hp = self.hparams
        if hp.adaptation == "lora":
            config = LoraConfig(
                r=hp.lora_r,
                lora_alpha=hp.lora_alpha,
                lora_dropout=hp.lora_dropout,
                layers_to_transform=blocks,
                bias="none",
                **lora_targets(model, hp.lora_target_modules),
            )
            return get_peft_model(model, config)
        model.requires_grad_(False)
        for b in blocks:
            blocks_of(model)[b].requires_grad_(True)
        if hp.adapt_layers == "all":
            # Everything else the loss reaches. (A tied LM head shares the embedding weight, so it trains with it.)
            for module in embedding_modules(model):
                module.requires_grad_(True)
            if self.target_layer == num_blocks(model):
                final_norm_of(model).requires_grad_(True)
        if hp.master_weights:
            for param in model.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()
        return model

    def _shard(self, model: torch.nn.Module) -> None:
        """FSDP2: each block its own shard group; the decoder and the LM head are the roots forwards enter through.

        The training step, the callbacks and XNLI scoring call the decoder (and the head) directly, not the
        whole causal LM, so those two, not the LM wrapper, are the FSDP roots. Parameters are sharded over
        every process (pure data parallelism; ModelParallelStrategy's data/tensor-parallel split, whose
        "auto" default is all tensor parallel on one node, is not used).
        """
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        decoder, head = decoder_of(model), lm_head_of(model)
        _require(
            head.weight is not decoder.get_input_embeddings().weight,
            "FSDP with tied input and output embeddings is not supported; use --trainer.strategy ddp",
        )
        strategy = self.trainer.strategy
        mesh = init_device_mesh(strategy.root_device.type, (strategy.world_size,))
        # One group per module whose parameters share a dtype (FSDP2 gathers a group as one buffer):
        # trained weights are float32 (master_weights), frozen ones compute_dtype.
        for block in blocks_of(model):
            fully_shard(block, mesh=mesh)
        fully_shard(decoder.get_input_embeddings(), mesh=mesh)
        fully_shard(decoder, mesh=mesh)
        fully_shard(head, mesh=mesh)
        # FSDP2 takes the first module to run forward as the root of what it reaches: run the whole
        # decoder once now, so a truncated training forward never becomes the root of a part of it.
        with torch.no_grad():
            decoder(input_ids=torch.zeros(1, 1, dtype=torch.long, device=strategy.root_device), use_cache=False)

    # ---- the learning signal ---------------------------------------------------------------

    def embed(self, words: list[str]) -> torch.Tensor:
        """Mean-pooled vectors of ``words`` at ``target_layer``, ``[len(words), hidden]``."""
        batch = tokenize_words(self.tokenizer, words, self.hparams.word_template).to(self.device)
        hidden = hidden_state_at(self.model, batch.input_ids, batch.attention_mask, self.target_layer)
        return masked_mean(hidden, batch.pooling_mask(self.hparams.include_special_tokens))

    def contrastive(self, batch: dict[str, list[str]]) -> ContrastiveOutput:
        vectors = self.embed(batch["source"] + batch["target"])  # one forward for both sides
        source, target = vectors.split(len(batch["source"]))
        if self.loss_name == "triplet":
            return triplet_hardest_negative(source, target, self.hparams.margin)
        return info_nce(source, target, self.hparams.temperature)

    def training_step(self, batch: dict[str, list[str]], batch_idx: int) -> torch.Tensor:
        out = self.contrastive(batch)
        size = len(batch["source"])
        values = _summary(out)
        # Each step: this process's batch, unsynchronised (no collective on the hot path).
        self.log_dict({f"train/{k}_step": v for k, v in values.items()}, on_step=True, on_epoch=False, batch_size=size)
        self.log("loss", values["loss"], prog_bar=True, logger=False, on_step=True, on_epoch=False, batch_size=size)
        self._finished_step = (values, size)
        return out.loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Each epoch: the mean over every batch of every process. Counted once the step is done, and
        # kept in checkpoints: a run resumed mid-epoch (even mid-step) reports what an uninterrupted one would.
        values, size = self._finished_step
        for name, value in values.items():
            self.train_means[name].update(value, weight=size)
        self.log_dict({f"train/{k}_epoch": m for k, m in self.train_means.items()}, on_step=False, on_epoch=True)

    def validation_step(self, batch: dict[str, list[str]], batch_idx: int) -> None:
        values = _summary(self.contrastive(batch))
        self.log_dict(
            {f"val/{k}": v for k, v in values.items()}, on_epoch=True, batch_size=len(batch["source"]), sync_dist=True
        )

    def test_step(self, batch: dict[str, list[str]], batch_idx: int) -> None:
        values = _summary(self.contrastive(batch))
        self.log_dict(
            {f"test/{k}": v for k, v in values.items()}, on_epoch=True, batch_size=len(batch["source"]), sync_dist=True
        )

    # ---- optimisation ------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "adamw8bit":
            import bitsandbytes as bnb

            optimizer = bnb.optim.AdamW8bit(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        else:
            # One fused kernel per step on a GPU instead of a few per parameter tensor.
            fused = all(p.device.type == "cuda" for p in params)
            optimizer = torch.optim.AdamW(
                params, lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=fused or None
            )
        warmup = hp.warmup_steps
        total: list[int] = []

        def linear_warmup_then_decay(step: int) -> float:
            # transformers' get_linear_schedule_with_warmup, except that the step count is read
            # when first needed: asking for it here would build the train dataloader before a
            # checkpoint's dataloader state is restored, and mid-epoch resume would replay batches.
            # (LambdaLR evaluates step 0 at construction: up to the end of warm-up no total is needed.)
            if step < warmup:
                return step / warmup
            if step == warmup:
                return 1.0
            if not total:
                total.append(max(int(self.trainer.estimated_stepping_batches), 1))
            return max(0.0, (total[0] - step) / max(1, total[0] - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_then_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- adapter-only checkpoints --------------------------------------------------------------

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> dict:
        """Only the trainable tensors: a LoRA checkpoint never holds the frozen base weights."""
        state = {} if destination is None else destination
        for name, param in self.named_parameters():
            if param.requires_grad:
                state[prefix + name] = param if keep_vars else param.detach()
        return state

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The epoch's running means, every process's share (all processes save together; rank 0 writes).
        synced = torch.distributed.is_available() and torch.distributed.is_initialized()
        means = {}
        for name, metric in self.train_means.items():
            with metric.sync_context(should_sync=synced):
                means[name] = {key: value.detach().cpu().clone() for key, value in metric.metric_state.items()}
        checkpoint["tli_train_means"] = means

    def on_train_epoch_start(self) -> None:
        # Not called when resuming inside an epoch: the restored running means go on.
        self.train_means.reset()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Rank 0 carries on the saved running means (they hold every process's share already).
        if (self._trainer is None or self.trainer.global_rank == 0) and "tli_train_means" in checkpoint:
            for name, states in checkpoint["tli_train_means"].items():
                for key, value in states.items():
                    setattr(self.train_means[name], key, value.to(self.device))
        if "state_dict" not in checkpoint:
            return  # ModelParallelStrategy loaded the weights into the sharded model itself
        # strict_loading is off (frozen weights are absent by design), so check what must be there.
        expected = {n for n, p in self.named_parameters() if p.requires_grad}
        missing = sorted(expected - set(checkpoint["state_dict"]))
        if missing:
            raise TLIError(
                f"checkpoint {self._trainer.ckpt_path if self._trainer else ''} lacks {len(missing)} trainable "
                f"tensors of this model (e.g. {missing[:2]}): it was saved with other adaptation settings. "
                "Resume with the settings it was saved with (the run's config.yaml), "
                "or start a new run without --ckpt_path"
            )
