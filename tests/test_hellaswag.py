"""HellaSwag scoring: the file format, a model whose answers are known, transformers' scores of the
same endings, and the training program's records. GPT-2's real BPE (the tiktoken cache)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gpt2_tokenizer, tiny_run_args
from flax import nnx

import gptjax
from gptjax import hellaswag, loop
from gptjax.config import from_command_line
from gptjax.errors import UsageError

# Each context ends in a word that its true ending repeats, and nothing else does.
EXAMPLES = [
    hellaswag.Example("The flag was red and the sky was red", ("blue and wide.", "red red red", "a cat.", "green"), 1),
    hellaswag.Example("She said yes, yes", ("no thank you.", "maybe later today", "yes yes yes yes", "never."), 2),
    hellaswag.Example("one two three four", ("four four", "five six seven", "nine.", "ten and eleven"), 0),
]


def write_jsonl(path, examples) -> None:
    path.write_text("".join(json.dumps({"ctx": e.context, "endings": list(e.endings), "label": e.label,
                                        "activity_label": "made up"}) + "\n" for e in examples))


def test_examples_are_read_from_hellaswags_jsonl_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "hellaswag_val.jsonl"
    write_jsonl(path, EXAMPLES)
    assert hellaswag.read_examples(path) == EXAMPLES
    assert hellaswag.read_examples(path, limit=2) == EXAMPLES[:2]
    path.write_text(path.read_text() + "\n")  # a blank line at the end is no example, and no error
    assert hellaswag.read_examples(path) == EXAMPLES
    first = path.read_text().splitlines()[0]
    for bad in ('{"ctx": "x", "endings": ["a", "b", "c"], "label": 0}', '{"ctx": "x", "endings": ["a", "b", "c", 4], '
                '"label": 0}', '{"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 4}', "not json",
                '{"ctx": "x", "endings": ["a", "b", "c", "d"], "label": true}',
                '{"ctx": "caf\udce9", "endings": ["a", "b", "c", "d"], "label": 0}'):  # a Latin-1 é: not UTF-8
        path.write_bytes((first + "\n" + bad + "\n").encode("utf-8", "surrogateescape"))
        with pytest.raises(UsageError, match=rf"{path}, line 2: not a HellaSwag example"):
            hellaswag.read_examples(path)
    with pytest.raises(UsageError, match="config.hellaswag_file .*missing.jsonl does not exist: give the path of"):
        hellaswag.find_file(str(tmp_path / "missing.jsonl"), str(tmp_path))
    with pytest.raises(UsageError, match=f"config.hellaswag_file {tmp_path} is a folder: give the path of"):
        hellaswag.find_file(str(tmp_path), str(tmp_path))
    path.write_text("\n")
    with pytest.raises(UsageError, match=f"{path} holds no HellaSwag example"):
        hellaswag.read_examples(path)


@pytest.fixture(scope="module")
def encode():
    return gpt2_tokenizer().encode


@pytest.fixture(scope="module")
def copy_model() -> gptjax.GPT:
    """A GPT that predicts the token it has just read: every block and the position embeddings
    are zero, so the logits are ln_f(wte[token]) . wte, largest for the token itself."""
    model = gptjax.GPT(gptjax.GPTConfig(block_size=64, n_layer=1, n_head=1, n_embd=64), rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    zeroed = {path: jnp.zeros_like(p[...]) if path[0] in ("h", "wpe") else p[...]
              for path, p in nnx.to_flat_state(state)}
    zeroed[("wte", "embedding")] = zeroed[("wte", "embedding")] / 0.02  # unit-scale embeddings: sharp logits
    nnx.update(model, nnx.from_flat_state(zeroed))
    return model


def test_a_model_that_repeats_its_last_token_picks_the_endings_that_repeat_it(copy_model, encode):
    scores = hellaswag.evaluate(copy_model, EXAMPLES, encode)
    assert scores == {"acc_norm": 1.0, "acc": 1.0, "examples": 3}
    wrong = [hellaswag.Example(e.context, e.endings, (e.label + 1) % 4) for e in EXAMPLES]
    assert hellaswag.evaluate(copy_model, wrong, encode)["acc_norm"] == 0.0
    sums, counts = hellaswag.ending_losses(copy_model, EXAMPLES[:1], encode, batch_examples=2)
    assert counts.tolist() == [[len(encode(" " + ending)) for ending in EXAMPLES[0].endings]]


def test_ending_losses_equal_transformers_gpt2_on_the_same_tokens(tmp_path, encode):
    torch = pytest.importorskip("torch", reason="the HellaSwag parity test needs torch (pip install torch==2.13.0)")
    transformers = pytest.importorskip("transformers", reason="the HellaSwag parity test needs transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    reference = transformers.GPT2LMHeadModel(hf_config).eval()
    reference.save_pretrained(tmp_path)
    # block_size 32: the first example's rows are cut to their last 33 tokens, as the model would be
    examples = [hellaswag.Example(" ".join(["word"] * 40), EXAMPLES[0].endings, 0), *EXAMPLES]
    sums, counts = hellaswag.ending_losses(gptjax.from_pretrained(str(tmp_path)), examples, encode, batch_examples=3)
    for e, example in enumerate(examples):
        for i, (tokens, n_ending) in enumerate(hellaswag.render(example, encode, block_size=32)):
            with torch.no_grad():
                logits = reference(torch.tensor([tokens[:-1]])).logits[0]
            losses = torch.nn.functional.cross_entropy(logits, torch.tensor(tokens[1:]), reduction="none")
            expected = float(losses[-n_ending:].sum())
            assert counts[e, i] == n_ending
            np.testing.assert_allclose(sums[e, i] / n_ending, expected / n_ending, atol=1e-4)


def test_an_evaluation_run_records_hellaswag(tmp_path):
    gpt2_tokenizer()
    cfg = gptjax.GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=32)  # GPT-2's vocabulary
    gptjax.export_hf(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), tmp_path / "hf")
    write_jsonl(tmp_path / "hellaswag.jsonl", EXAMPLES)
    args = tiny_run_args(tmp_path, init_from=tmp_path / "hf", tokenizer="gpt2", eval_only=True, block_size=32,
                         hellaswag_interval=4, hellaswag_file=tmp_path / "hellaswag.jsonl", hellaswag_examples=2)
    config = from_command_line(["train.py", *args])  # the model's shape comes from the HF directory
    loop.train(config)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "hellaswag_acc_norm" in r]
    assert len(scored) == 1 and scored[0]["iter"] == 0 and 0 <= scored[0]["hellaswag_acc_norm"] <= 1

    config.hellaswag_interval = 3  # not a multiple of eval_interval
    with pytest.raises(UsageError, match="hellaswag_interval=3 must be a multiple of eval_interval=4"):
        loop.train(config)
    config.hellaswag_interval, config.tokenizer = 4, "char"
    with pytest.raises(UsageError, match="needs GPT-2's tokenizer"):
        loop.train(config)
