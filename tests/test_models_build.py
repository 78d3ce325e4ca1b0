import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_models_load_with_auto_classes_and_give_finite_loss(tiny_llama_dir, tiny_neox_dir):
    for path in (tiny_llama_dir, tiny_neox_dir):
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path))
        assert (path / "model.safetensors").exists()
        ids = tok("def load(fp):\n    return json.loads(fp.read())", return_tensors="pt").input_ids
        loss = model(ids, labels=ids).loss
        assert torch.isfinite(loss) and loss.item() > 0


def test_bpe_and_unigram_tokenizers_mark_word_starts_differently(bpe_tokenizer_dir, unigram_tokenizer_dir):
    text = "import json as decoder"
    bpe = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir)).tokenize(text)
    uni = AutoTokenizer.from_pretrained(str(unigram_tokenizer_dir)).tokenize(text)
    assert any(t.startswith("Ġ") for t in bpe) and not any("▁" in t for t in bpe)
    assert any(t.startswith("▁") for t in uni) and not any("Ġ" in t for t in uni)
