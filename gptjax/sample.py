"""Sample text from a trained model.

    python -m gptjax.sample --out_dir=out-shakespeare-char [--start=TEXT | --start=FILE:prompt.txt] ...
    python sample.py --init_from=gpt2 --start="Hello, I'm a language model,"      # the same, from a clone

Defaults as nanoGPT's sample.py: 10 samples of 500 new characters, temperature 0.8, top_k 200.
"""

from gptjax import environment, stopping

if __name__ == "__main__":  # before JAX loads: this may re-execute the program once (huge pages)
    environment.start_program(compilation_cache=True)
    stopping.exit_at_once_on_signal()  # nothing to save: Ctrl-C or SIGTERM ends it at once, in one line

import argparse
import sys
from pathlib import Path

import jax

from gptjax import checkpoint
from gptjax.errors import OptionParser, UsageError, program_name
from gptjax.generation import generate
from gptjax.tokenizers import IncrementalDecoder, utf8_transitions
from gptjax.trained import add_model_options, encode, load, read_prompt


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of argv (argv[0] is the program's name)."""
    parser = OptionParser(prog=program_name(argv[0]), description=__doc__.split("\n\n")[0])
    add_model_options(parser, "sample from")
    parser.add_argument("--start", default="\n", help="the prompt, or FILE:path to read it from a file")
    parser.add_argument("--num_samples", type=int, default=10)
    parser.add_argument("--max_new_tokens", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 is greedy; < 1 less random")
    parser.add_argument("--top_k", type=int, default=200, help="sample only among the k most likely")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus: the smallest set reaching p")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--overflow_context", type=int, default=None,
                        help="past block_size, rebuild the cache from this many tokens (default block_size)")
    parser.add_argument("--raw_distribution", action="store_true",
                        help="sample from the model's distribution as it is, even tokens whose bytes break a "
                             "character (printed as U+FFFD); by default a byte-level tokenizer's text stays valid")
    return parser.parse_args(argv[1:])


def main(argv: list[str]) -> None:
    environment.use_measured_xla_flags()
    checkpoint.quiet_from_now_on()  # orbax's noise about a damaged checkpoint: one line says it
    try:
        args = parse_args(argv)
        if args.num_samples < 1 or args.max_new_tokens < 1:
            raise UsageError("--num_samples and --max_new_tokens must be >= 1")
        model, vocab, _ = load(args.init_from, Path(args.out_dir), args.dtype, args.checkpoint)
        prompt = read_prompt(args.start)
        if not prompt:
            raise UsageError("the prompt is empty: pass --start with at least one character")
        prompt_ids = encode(vocab, prompt, "prompt")[None]
        utf8 = None if args.raw_distribution else utf8_transitions(vocab, model.cfg.vocab_size)

        text = IncrementalDecoder(vocab)  # a character split across tokens is printed whole

        def stream(tokens) -> None:  # one function for every sample, so generate compiles once
            sys.stdout.write(text(tokens))
            sys.stdout.flush()

        streaming = sys.stdout.isatty()
        for k in range(args.num_samples):
            if streaming:
                sys.stdout.write(prompt)
            out = generate(
                model, prompt_ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, rng=jax.random.fold_in(jax.random.key(args.seed), k),
                overflow_context=args.overflow_context, on_token=stream if streaming else None, utf8=utf8,
            )
            jax.effects_barrier()  # every streamed token is printed before the separator
            print(text.flush() if streaming else vocab.decode(out[0]))
            print("---------------", flush=True)
    except UsageError as e:
        sys.exit(f"{program_name(argv[0])}: error: {e}")


if __name__ == "__main__":
    main(sys.argv)
