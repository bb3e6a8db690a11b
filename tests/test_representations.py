import pytest
import torch
from peft import LoraConfig, get_peft_model

from tli_lightning.errors import TLIError
from tli_lightning.loading import load_causal_lm
from tli_lightning.representations import hidden_state_at, tokenize_words, word_vectors

WORDS = ["maji", "mama mkwe", "water", "-anana", "haba na haba"]


def _count_block_calls(model):
    calls = [0] * len(model.model.layers)
    handles = [
        block.register_forward_pre_hook(lambda _m, _a, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, block in enumerate(model.model.layers)
    ]
    return calls, handles


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_truncated_forward_equals_full_hidden_states_and_skips_higher_blocks(tiny_dir, quantization):
    model, tokenizer = load_causal_lm(str(tiny_dir), quantization=quantization, compute_dtype="float32")
    batch = tokenize_words(tokenizer, WORDS)
    with torch.no_grad():
        full = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states
    head_calls = []
    model.lm_head.register_forward_pre_hook(lambda *_: head_calls.append(1))
    for layer in range(len(full)):
        calls, handles = _count_block_calls(model)
        with torch.no_grad():
            truncated = hidden_state_at(model, batch.input_ids, batch.attention_mask, layer)
        for handle in handles:
            handle.remove()
        torch.testing.assert_close(truncated, full[layer], rtol=1e-5, atol=1e-5)
        assert calls == [1] * layer + [0] * (len(calls) - layer), f"layer {layer}: blocks called {calls}"
    assert head_calls == []  # the LM head never runs
    torch.testing.assert_close(hidden_state_at(model, batch.input_ids, batch.attention_mask, -1), full[-1])


def test_truncation_works_through_a_peft_wrapper(tiny_dir):
    model, tokenizer = load_causal_lm(str(tiny_dir), quantization="nf4", compute_dtype="float32")
    model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1], init_lora_weights=False)
    )
    batch = tokenize_words(tokenizer, WORDS)
    with torch.no_grad():
        full = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states
        torch.testing.assert_close(hidden_state_at(model, batch.input_ids, batch.attention_mask, 2), full[2])


def test_pooling_excludes_special_tokens_unless_asked(tiny_float):
    model, tokenizer = tiny_float
    batch = tokenize_words(tokenizer, ["maji", "mama mkwe"])
    assert batch.input_ids[:, 0].tolist() == [tokenizer.bos_token_id] * 2
    assert not batch.word_mask[:, 0].any() and batch.pooling_mask(True)[:, 0].all()
    assert not (batch.word_mask & ~batch.attention_mask.bool()).any()  # padding never pooled
    with torch.no_grad():
        hidden = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states[2]
        plain = word_vectors(model, tokenizer, ["maji"], layer=2)
        with_bos = word_vectors(model, tokenizer, ["maji"], layer=2, include_special_tokens=True)
    n = int(batch.word_mask[0].sum())
    torch.testing.assert_close(plain[0], hidden[0, 1 : 1 + n].mean(0))
    torch.testing.assert_close(with_bos[0], hidden[0, : 1 + n].mean(0))


def test_template_pools_only_the_words_own_tokens(tiny_float):
    model, tokenizer = tiny_float
    framed = tokenize_words(tokenizer, ["mama mkwe", "maji"], template="The word {word} means")
    for row, word in enumerate(["mama mkwe", "maji"]):
        assert tokenizer.decode(framed.input_ids[row][framed.word_mask[row]]).strip() == word
        assert int(framed.word_mask[row].sum()) < int(framed.attention_mask[row].sum()) - 1


def test_all_layers_from_one_forward(tiny_float):
    model, tokenizer = tiny_float
    with torch.no_grad():
        every = word_vectors(model, tokenizer, WORDS, layer=None)
        assert every.shape == (5, len(WORDS), 128)
        torch.testing.assert_close(every[2], word_vectors(model, tokenizer, WORDS, layer=2))


def test_bad_template_and_out_of_range_layer(tiny_float):
    model, tokenizer = tiny_float
    with pytest.raises(TLIError, match="must contain"):
        tokenize_words(tokenizer, ["maji"], template="no placeholder")
    with pytest.raises(TLIError, match="layer 7 is out of range for a model with 4 blocks"):
        word_vectors(model, tokenizer, ["maji"], layer=7)


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_truncation_for_other_decoder_families(tmp_path, tiny_dir, family):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    config = AutoConfig.for_model(
        family,
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer = load_causal_lm(str(tmp_path), quantization="nf4", compute_dtype="float32")
    batch = tokenize_words(tokenizer, WORDS)
    with torch.no_grad():
        full = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states
        for layer in range(len(full)):
            torch.testing.assert_close(
                hidden_state_at(model, batch.input_ids, batch.attention_mask, layer), full[layer], rtol=1e-5, atol=1e-5
            )
