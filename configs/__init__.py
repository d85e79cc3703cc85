"""The recipes: `--config NAME` runs configs/NAME.py (shipped in the package as gptjax.configs)."""
