"""Every supported model family (tli_lightning.backbones) on a tiny random model of its own architecture.

Per family (tests/families.py): the truncated forward equals a full forward's ``hidden_states`` at every
layer; the LM-head step equals the model's own logits; ``zeroshot`` equals lm-eval's own scores (a golden
file per family, tests/golden/lm_eval_tiny_xnli_<family>.json, written by tools/make_lm_eval_golden.py
--family); and (slow) the family's recipe trains through the CLI in NF4, its adapter loads with
``PeftModel`` and ``scan`` reports the family's layers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from families import BLOCKS, FAMILIES, build_family, fingerprint

from cli_helpers import REPO, fit_probed, run_main

GOLDEN = Path(__file__).resolve().parent / "golden"
TOLERANCE = 1e-4  # nats, per candidate
WORDS = ["maji", "mama mkwe", "water", "-anana", "haba na haba"]
# The recipe of each family: configs/families/<stem>.yaml after the TLI arm (Llama: the arm alone).
OVERLAYS = {
    "llama": None,
    "mistral": "mistral_7b",
    "qwen2": "qwen2_5_7b",
    "qwen3": "qwen3_8b",
    "gemma2": "gemma2_9b",
    "gemma3": "gemma3_1b",
    "cohere": "aya_expanse_8b",
    "phi3": "phi3_mini",
    "gpt2": "mgpt",
    "bloom": "bloom_7b1",
}
ARM = REPO / "configs" / "lugha_llama_8b" / "tli_lora_early.yaml"


def _directory(family: str) -> Path:
    from tli_lightning.tiny_model import cache_dir

    return build_family(family, cache_dir())


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny(request, _isolated_cache):
    from tli_lightning.loading import load_causal_lm

    directory = _directory(request.param)
    model, tokenizer = load_causal_lm(str(directory), quantization="none", compute_dtype="float32", progress=False)
    return request.param, directory, model, tokenizer


def test_the_seam_and_the_tiny_models_cover_the_same_families():
    import transformers

    from tli_lightning.backbones import FAMILIES as SEAM

    tiny_types = {getattr(transformers, config).model_type for config, _ in FAMILIES.values()}
    assert tiny_types == {t for family in SEAM for t in family.model_types}
    assert set(OVERLAYS) == set(FAMILIES)
    shipped = {p.stem for p in (REPO / "configs" / "families").glob("*.yaml")}
    assert shipped == {stem for stem in OVERLAYS.values() if stem}


def test_an_unknown_family_is_refused_in_one_line_naming_the_known_ones(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from tli_lightning.backbones import FAMILIES as SEAM
    from tli_lightning.tiny_model import demo_tokenizer

    tokenizer = demo_tokenizer()
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    GPTNeoXForCausalLM(config).save_pretrained(tmp_path / "neox")
    tokenizer.save_pretrained(tmp_path / "neox")
    code, _, err = run_main(
        ["scan", "--model", str(tmp_path / "neox"), "--lexicon", "demo", "--limit", "4", "--no-progress"]
        + ["--output", str(tmp_path / "scan.json")]
    )
    # The base line comes first (every command names its base); then exactly one error line, no traceback.
    error = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and len(error) == 1 and "Traceback" not in err, err[-2000:]
    assert error[0].startswith("error: GPTNeoXForCausalLM (model_type 'gpt_neox') is not a supported model family")
    assert all(family.name in error[0] for family in SEAM)


def test_truncated_forward_equals_full_hidden_states_at_every_layer(tiny):
    from tli_lightning.backbones import blocks_of, lm_head_of
    from tli_lightning.representations import all_hidden_states, hidden_state_at, tokenize_words

    family, _, model, tokenizer = tiny
    batch = tokenize_words(tokenizer, WORDS)
    with torch.no_grad():
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    assert len(full.hidden_states) == BLOCKS + 1
    blocks = blocks_of(model)
    calls = [0] * len(blocks)
    hooks = [
        b.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)) for i, b in enumerate(blocks)
    ]
    hooks.append(lm_head_of(model).register_forward_pre_hook(lambda *_: pytest.fail("the LM head ran")))
    try:
        for layer in [*range(BLOCKS + 1), -1]:
            calls[:] = [0] * len(blocks)
            with torch.no_grad():
                truncated = hidden_state_at(model, batch.input_ids, batch.attention_mask, layer)
            torch.testing.assert_close(truncated, full.hidden_states[layer], rtol=1e-5, atol=1e-5)
            ran = layer % (BLOCKS + 1)
            assert calls == [1] * ran + [0] * (BLOCKS - ran), f"{family}, layer {layer}: blocks called {calls}"
        with torch.no_grad():
            every = all_hidden_states(model, batch.input_ids, batch.attention_mask)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(every) == BLOCKS + 1
    for ours, theirs in zip(every, full.hidden_states):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_the_lm_head_step_gives_the_models_own_logits(tiny):
    from tli_lightning.backbones import decoder_of, lm_head_of, output_logits

    family, _, model, tokenizer = tiny
    ids = tokenizer(["maji ya moto, sahihi? Ndiyo, water"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = decoder_of(model)(input_ids=ids, use_cache=False).last_hidden_state
        expected = model(input_ids=ids).logits
        torch.testing.assert_close(output_logits(model, hidden), expected, rtol=1e-5, atol=1e-5)
        if family in ("gemma2", "cohere"):  # soft-capping 0.5 / logit scale 0.25: the head alone is off
            assert (lm_head_of(model)(hidden) - expected).abs().max() > 0.1


def test_lora_defaults_to_the_familys_attention_query_and_value(tiny):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    from tli_lightning.backbones import family_of, lora_targets

    family, _, model, _ = tiny
    targets = lora_targets(model)
    assert targets["target_modules"] == list(family_of(model).query_value)
    assert PEFT_DEFAULTS.get(model.config.model_type, targets["target_modules"]) == targets["target_modules"]
    assert targets["fan_in_fan_out"] == (family == "gpt2")  # GPT-2's Conv1D stores weights transposed


def test_help_gives_every_familys_default_lora_targets():
    from tli_lightning.backbones import FAMILIES as SEAM

    code, help_text, _ = run_main(["fit", "--help"])
    assert code == 0
    section = " ".join(help_text[help_text.index("  --model.lora_target_modules ") :].split())
    for family in SEAM:
        assert all(name in section[:500] for name in family.query_value), family.name
    assert "default: null" in section[:500]


@pytest.mark.parametrize("language", ["sw", "en"])
def test_zeroshot_equals_lm_evals_own_scores(tiny, language):
    from tli_lightning.xnli import XNLIExample, candidate_templates, candidates
    from tli_lightning.zeroshot import score_xnli

    family, directory, model, tokenizer = tiny
    path = GOLDEN / f"lm_eval_tiny_xnli_{family}.json"
    golden = json.loads(path.read_text(encoding="utf-8"))
    if fingerprint(directory) != golden["model_fingerprint"]:
        pytest.fail(f"the tiny {family} recipe changed; regenerate {path.name} with `{golden['regenerate']}`")
    rows = golden["languages"][language]["examples"]
    examples = [XNLIExample(r["premise"], r["hypothesis"], r["label"]) for r in rows]
    for example, row in zip(examples, rows):
        assert [" " + c for c in candidates(example, candidate_templates(language))] == row["continuations"]
    theirs = torch.tensor([r["loglikelihoods"] for r in rows], dtype=torch.float64)
    ours = score_xnli(model, tokenizer, examples, language, batch_size=4)  # several batches, mixed lengths
    difference = (ours - theirs).abs().max().item()
    assert difference <= TOLERANCE, f"{family} {language}: max |dLL| vs lm-eval {difference:.2e}"
    assert ours.argmax(1).tolist() == [r["prediction"] for r in rows]


def test_target_layer_0_is_refused_in_the_familys_numbers(tmp_path):
    code, _, err = run_main(
        [
            "fit",
            f"--model.model_name_or_path={_directory('gpt2')}",
            "--model.target_layer=0",
            "--data.reasoning_limit=3",
        ]
        + ["--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"]
    )
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(error) == 1, err[-2000:]
    assert "target_layer 0 is hidden_states index 0, the embeddings of this GPT-2 model (3 blocks)" in error[0]
    assert "set a target_layer of 1 to 3 (or -1), or train the embeddings with adapt_layers: all" in error[0]


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_familys_recipe_trains_through_the_cli_and_its_adapter_loads(tmp_path, family, _isolated_cache):
    from peft import PeftModel

    from tli_lightning.backbones import lora_targets
    from tli_lightning.loading import load_causal_lm

    directory = _directory(family)
    configs = [ARM] + ([REPO / "configs" / "families" / f"{OVERLAYS[family]}.yaml"] if OVERLAYS[family] else [])
    result, found = fit_probed(configs, tmp_path, [f"--model.model_name_or_path={directory}"])
    assert result.returncode == 0, result.stderr[-4000:]
    base, _ = load_causal_lm(str(directory), quantization="nf4", compute_dtype="float32", progress=False)
    targets = lora_targets(base)["target_modules"]
    # Blocks 0-1 (target layer 2), each LoRA target an A and a B; every one got a gradient; NF4 weights.
    assert found["trainable"] == found["gradients"] == 2 * len(targets) * 2
    assert found["packed"] > 0 and found["precision"] == "bf16-mixed"

    run = next((tmp_path / "checkpoints").glob("*/version_0"))
    adapter = run / "adapter_epoch01"
    loaded = PeftModel.from_pretrained(base, str(adapter))
    lora_b = {n: p for n, p in loaded.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 2 * len(targets) and all(p.abs().sum() > 0 for p in lora_b.values())  # trained, loaded
    assert {int(re.search(r"\.(\d+)\.", n).group(1)) for n in lora_b} == {0, 1}

    scan_json = tmp_path / "scan" / "scan.json"
    code, out, err = run_main(
        ["scan", "--adapter", str(adapter), "--lexicon", "demo", "--limit", "8", "--output", str(scan_json)]
        + ["--no-progress"]
    )
    assert code == 0, err[-2000:]
    report = json.loads(scan_json.read_text())
    assert report["layers"] == list(range(BLOCKS + 1))
    assert f"{BLOCKS} blocks: layers 0 (embeddings) to {BLOCKS}" in out


@pytest.mark.parametrize("target_layer", [0, 2])
def test_full_training_of_all_trains_the_familys_embedding_step_and_the_blocks_below(tiny, target_layer):
    from tli_lightning.module import TLIModule

    family, directory, _, _ = tiny
    module = TLIModule(
        model_name_or_path=str(directory),
        quantization="none",
        compute_dtype="float32",
        adaptation="full",
        adapt_layers="all",
        target_layer=target_layer,
    )
    module.configure_model()
    trainable = {n.removeprefix("model.") for n, p in module.named_parameters() if p.requires_grad}
    blocks = {int(m.group(1)) for n in trainable if (m := re.search(r"\.(?:layers|h)\.(\d+)\.", n))}
    assert blocks == set(range(target_layer))
    before_blocks = {n.split(".")[-2] for n in trainable if not re.search(r"\.(?:layers|h)\.\d+\.", n)}
    # The token embeddings and what the family adds before block 0; never the final norm or a separate LM head.
    expected = {"gpt2": {"wte", "wpe"}, "bloom": {"word_embeddings", "word_embeddings_layernorm"}}
    assert before_blocks == expected.get(family, {"embed_tokens"})


def test_the_help_names_each_familys_default_lora_targets():
    # module.py's docstring is the --help text and repeats the seam's table by hand: keep the two in step.
    import inspect

    from tli_lightning.backbones import FAMILIES
    from tli_lightning.module import TLIModule

    doc = " ".join(inspect.getdoc(TLIModule.__init__).split())
    table = doc.split("lora_target_modules:", 1)[1].split(" include_special_tokens:", 1)[0]
    segments = [segment.strip() for segment in table.split(";")]
    for family in FAMILIES:
        targets = ", ".join(family.query_value)
        named = [s for s in segments if targets + " (" in s and family.name.split("-")[0] in s]
        assert named, f"{family.name}: {targets} not listed in the help of lora_target_modules: {table}"
