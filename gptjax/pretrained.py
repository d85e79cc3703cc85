"""GPT-2 in Hugging Face's format: load OpenAI's (or any local) GPT-2 weights, export ours, and
nanoGPT's model surgery (crop_block_size).

Our parameter names are nanoGPT's, which are GPT-2's: h.3.attn.c_attn.weight is our
h[3].attn.c_attn.kernel. GPT-2's Conv1D stores its weight as (in, out), the layout of an NNX
Linear kernel, so the weights load as they are; nanoGPT transposes them only because
torch.nn.Linear stores (out, in).
"""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from gptjax.errors import UsageError
from gptjax.model import GPT, GPTConfig
from gptjax.tokenizers import EOT, BPETokenizer, Tokenizer

GPT2_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
_APPROXIMATE_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # HF names of the tanh form
_LEAF_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


def _hf_name(path: tuple) -> str:
    """('h', 3, 'attn', 'c_attn', 'kernel') -> 'h.3.attn.c_attn.weight'."""
    *modules, leaf = (str(part) for part in path)
    return ".".join([*modules, _LEAF_NAMES[leaf]])


def _abstract(cfg: GPTConfig) -> tuple[nnx.GraphDef, list]:
    """The model's structure and (path, shape) of each parameter, without allocating it."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    return graphdef, nnx.to_flat_state(params)


def _build(cfg: GPTConfig, tensors: dict[str, np.ndarray], source: str, on_host: bool = False) -> GPT:
    """A GPT with cfg's shapes whose parameters come from tensors, by GPT-2 name (numpy arrays in
    host memory if on_host, else JAX arrays on the default device)."""
    graphdef, flat = _abstract(cfg)
    loaded = []
    for path, abstract in flat:
        name = _hf_name(path)
        if name not in tensors:
            raise UsageError(f"{source} lacks the tensor {name}")
        value = np.asarray(tensors[name])
        if value.shape != abstract.shape:
            raise UsageError(
                f"{source}: tensor {name} has shape {value.shape}, but the config needs {abstract.shape}"
            )
        value = value.astype(abstract.dtype) if on_host else jax.numpy.asarray(value, abstract.dtype)
        loaded.append((path, abstract.replace(value)))
    model = nnx.merge(graphdef, nnx.from_flat_state(loaded))
    model.eval()
    return model


def config_from_hf(hf: dict, **overrides) -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 config.json."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise UsageError(f"model_type {hf['model_type']!r} is not GPT-2, the one architecture gptjax loads")
    if missing := [key for key in ("n_positions", "vocab_size", "n_layer", "n_head", "n_embd") if key not in hf]:
        raise UsageError(f"no {', '.join(missing)}: not a GPT-2 config")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in (*_APPROXIMATE_GELUS, "gelu"):
        raise UsageError(f"activation_function {activation!r} is not a GELU gptjax implements")
    if abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        raise UsageError(f"layer_norm_epsilon {hf['layer_norm_epsilon']} is not GPT-2's 1e-5")
    if not hf.get("tie_word_embeddings", True):
        raise UsageError("the checkpoint's output head is not tied to wte, which GPT-2 (and gptjax) require")
    try:
        return GPTConfig(
            block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
            n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True,
            gelu_approximate=activation in _APPROXIMATE_GELUS, **overrides,
        )
    except ValueError as e:  # GPTConfig's own checks of the shape
        raise UsageError(str(e)) from None


def _read_tensors(directory: Path) -> dict[str, np.ndarray]:
    if (directory / "model.safetensors").exists():
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            tensors = load_file(directory / "model.safetensors")
        except SafetensorError as e:
            raise UsageError(f"{directory / 'model.safetensors'} cannot be read ({e}): it is cut short or damaged; "
                             "download or copy it again") from None
    elif (directory / "pytorch_model.bin").exists():
        try:
            import torch
        except ImportError:
            raise UsageError(
                f"{directory} has only pytorch_model.bin, which needs torch to read: install torch, "
                "or save the model as model.safetensors"
            ) from None
        try:
            state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several kinds for a file cut short
            raise UsageError(f"{directory / 'pytorch_model.bin'} cannot be read ({type(e).__name__}): it is cut short "
                             "or damaged; download or copy it again") from None
        tensors = {k: v.float().numpy() for k, v in state.items()}
    else:
        raise UsageError(f"{directory} has neither model.safetensors nor pytorch_model.bin")
    # GPT2LMHeadModel saves the body under "transformer."; GPT2Model saves it bare.
    return {k.removeprefix("transformer."): v for k, v in tensors.items()}


def _download(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UsageError(f"loading {name!r} needs huggingface_hub: pip install huggingface_hub safetensors") from None
    try:
        return Path(snapshot_download(name, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as e:  # offline and not cached, or the Hub refused: say what to do instead
        raise UsageError(
            f"could not get {name!r} from the Hugging Face Hub or its local cache ({type(e).__name__}): "
            "connect to the internet once, or pass a local directory holding config.json and model.safetensors"
        ) from None


def _directory(name_or_path: str) -> Path:
    directory = Path(name_or_path)
    if not directory.is_dir():
        if name_or_path not in GPT2_MODELS:
            raise UsageError(f"{name_or_path!r} is neither a directory nor one of {GPT2_MODELS}")
        directory = _download(name_or_path)
    if not (directory / "config.json").exists():
        raise UsageError(f"{directory.absolute()} has no config.json: it is not a Hugging Face model directory")
    return directory


def pretrained_config(name_or_path: str, **overrides) -> GPTConfig:
    """The GPTConfig of a pretrained model (as from_pretrained names it), from its config.json alone."""
    return _config_of(_directory(name_or_path), **overrides)


def _config_of(directory: Path, **overrides) -> GPTConfig:
    path = directory.absolute() / "config.json"
    try:
        return config_from_hf(json.loads(path.read_text()), **overrides)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON ({e})") from None
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None


def from_pretrained(name_or_path: str, *, on_host: bool = False, **overrides) -> GPT:
    """OpenAI's GPT-2 ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", from the Hugging Face Hub
    or its cache) or any local directory with a GPT-2 config.json and weights, as a GPT in eval
    mode. overrides set GPTConfig fields that do not change shapes (dropout, attention, dtype).
    on_host keeps the parameters as numpy arrays in host memory, to be placed shard by shard
    (sharding.place) rather than whole on one device."""
    directory = _directory(name_or_path)
    return _build(_config_of(directory, **overrides), _read_tensors(directory), str(directory), on_host)


def gpt2_format_problem(cfg: GPTConfig) -> str | None:
    """Why GPT-2's format cannot hold a model of cfg (the first architecture key it has not at
    GPT-2's value), or None if it can."""
    gpt2 = GPTConfig()
    for key in GPTConfig.ARCHITECTURE_FIELDS:
        if key in ("norm_scale", "zero_init_proj"):  # unused by LayerNorm; initialisation only
            continue
        if getattr(cfg, key) != getattr(gpt2, key):
            return f"GPT-2's format has no {key}={getattr(cfg, key)!r} (GPT-2: {getattr(gpt2, key)!r})"
    return None


def export_hf(model: GPT, directory: str | Path, tokenizer: Tokenizer | None = None) -> None:
    """Write config.json and model.safetensors that transformers.GPT2LMHeadModel loads, and with a
    BPE tokenizer trained by gptjax its tokenizer.json, which transformers.AutoTokenizer loads.

    A bias-free model is written with zero biases, which computes the same function."""
    from safetensors.numpy import save_file

    cfg = model.cfg
    problem = gpt2_format_problem(cfg)
    if problem:
        raise UsageError(f"cannot export to Hugging Face's GPT-2 format: {problem}")
    ours = {_hf_name(path): np.asarray(p[...], np.float32)
            for path, p in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    _, with_bias = _abstract(dataclasses.replace(cfg, bias=True))
    tensors = {f"transformer.{_hf_name(path)}": ours.get(_hf_name(path), np.zeros(p.shape, np.float32))
               for path, p in with_bias}
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
        "activation_function": "gelu_new" if cfg.gelu_approximate else "gelu",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
    }
    if tokenizer is not None and not isinstance(tokenizer, BPETokenizer):
        raise UsageError("export_hf writes a tokenizer only for the bpe tokenizer: leave it out for characters, "
                         "and use Hugging Face's own for GPT-2's (AutoTokenizer.from_pretrained('gpt2'))")
    if tokenizer is not None:
        hf_config |= {"bos_token_id": tokenizer.eot, "eos_token_id": tokenizer.eot}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    if tokenizer is not None:
        (directory / "tokenizer.json").write_text(tokenizer.serialized, encoding="utf-8")
        settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.block_size,
                    "bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
        (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")


def crop_block_size(model: GPT, block_size: int) -> GPT:
    """The same model with a shorter context: the first block_size position embeddings kept
    (nanoGPT's surgery for finetuning GPT-2 at less than 1024 tokens), its parameters in host
    memory if the model's were."""
    if not 1 <= block_size <= model.cfg.block_size:
        raise UsageError(f"block_size must be in [1, {model.cfg.block_size}] to crop, got {block_size}")
    problem = gpt2_format_problem(model.cfg)
    if problem:
        raise UsageError(f"crop_block_size crops GPT-2 models: {problem}")
    tensors = {_hf_name(path): np.asarray(p[...])
               for path, p in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    tensors["wpe.weight"] = tensors["wpe.weight"][:block_size]
    on_host = isinstance(model.wpe.embedding[...], np.ndarray)
    return _build(dataclasses.replace(model.cfg, block_size=block_size), tensors, "crop_block_size", on_host)
