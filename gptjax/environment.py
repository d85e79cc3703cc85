"""The process environment the programs run in: XLA's flags, glibc's huge pages and JAX's
compilation cache, set as measured to be faster unless the user set them
(docs/performance.md#huge-pages, docs/performance.md#xla-flags-on-the-cpu)."""

import importlib.util
import os
import platform
import re
import sys
from pathlib import Path

# XLA flags the programs set unless XLA_FLAGS already names them. XLA's CPU backend hands dot
# products to YNNPACK by default; its own dot emitter, with YNNPACK kept for reductions and
# elementwise work, trained and evaluated faster. GPUs ignore it.
MEASURED_XLA_FLAGS = {"--xla_cpu_experimental_ynn_fusion_type": "-dot,-individual_dot"}

# jaxlib 0.10.2 to 0.11.0 compile a GPU's float32 atomic add to a compare-and-swap loop
# (jax-ml/jax#38806, fixed in 0.11.1): the embedding gradient, a scatter-add of a batch's tokens
# into the table's rows, then queues on the rows of frequent tokens. This LLVM option brings back
# the native atomic (which flushes subnormals, as jaxlib did before and after).
GPU_ATOMICS_FLAG = {"--xla_backend_extra_options": "-nvptx-allow-ftz-atomics"}
GPU_ATOMICS_JAXLIB = ((0, 10, 2), (0, 11, 0))  # the first and last jaxlib that need it


def needs_gpu_atomics_flag(jaxlib_version: str, cuda_plugin: bool) -> bool:
    """Whether GPU_ATOMICS_FLAG applies: a CUDA plugin and a jaxlib between GPU_ATOMICS_JAXLIB."""
    release = re.match(r"(\d+)\.(\d+)\.(\d+)", jaxlib_version)
    version = tuple(int(part) for part in release.groups()) if release else ()
    return cuda_plugin and GPU_ATOMICS_JAXLIB[0] <= version <= GPU_ATOMICS_JAXLIB[1]


# glibc serves XLA's large step buffers with fresh mmap pages, faulted in 4 KiB at a time on every
# step; this tunable (glibc >= 2.35) has malloc ask for transparent huge pages for them instead.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
HUGE_PAGES_OFF = "GPTJAX_HUGE_PAGES"  # =0: leave glibc as it is
_SET_BY_GPTJAX = "GPTJAX_SET_GLIBC_TUNABLES"  # tells the re-executed process what its parent set

# JAX's persistent compilation cache: a second run of the same programs (a resume, the same recipe
# again, another sample) loads its compiled steps from disk instead of compiling them again.
COMPILATION_CACHE_OFF = "GPTJAX_COMPILATION_CACHE"  # =0: compile every run


def add_xla_flags(wanted: dict[str, str]) -> list[str]:
    """Add the flags `wanted` ({name: value}) to the XLA_FLAGS environment variable, keeping the
    user's own setting of any of them; returns the flags added. Takes effect only if called before
    JAX first uses a device."""
    flags = os.environ.get("XLA_FLAGS", "")
    added = [f"{name}={value}" for name, value in wanted.items() if name not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return added


def use_measured_xla_flags() -> list[str]:
    """add_xla_flags(MEASURED_XLA_FLAGS), and GPU_ATOMICS_FLAG where the installed jaxlib needs it."""
    from importlib import metadata  # here: JAX imports it anyway, a program's first process need not

    try:
        jaxlib_version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        jaxlib_version = ""
    cuda_plugin = any(importlib.util.find_spec(f"jax_cuda{major}_plugin") for major in (12, 13))
    atomics = GPU_ATOMICS_FLAG if needs_gpu_atomics_flag(jaxlib_version, cuda_plugin) else {}
    return add_xla_flags({**MEASURED_XLA_FLAGS, **atomics})


def _glibc_version() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    try:
        return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else ()
    except ValueError:
        return ()


def huge_pages_tunables(env: dict[str, str]) -> str | None:
    """The GLIBC_TUNABLES value that puts malloc's large allocations on transparent huge pages,
    keeping what env's GLIBC_TUNABLES holds; None where that does not apply: not Linux with glibc
    >= 2.35, huge pages off in the kernel, GPTJAX_HUGE_PAGES=0, or a hugetlb tunable already set
    (the user's own value wins, and a re-executed process stops there)."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if (sys.platform != "linux" or env.get(HUGE_PAGES_OFF) == "0" or "glibc.malloc.hugetlb" in tunables
            or _glibc_version() < (2, 35)):
        return None
    try:
        if "[never]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text():
            return None
    except OSError:
        return None
    return f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE


def compilation_cache_dir(env: dict[str, str]) -> Path | None:
    """Where the programs keep compiled steps: $XDG_CACHE_HOME/gptjax/xla (~/.cache/gptjax/xla);
    None when JAX_COMPILATION_CACHE_DIR is the user's own, GPTJAX_COMPILATION_CACHE=0, or there is
    no home directory."""
    if env.get(COMPILATION_CACHE_OFF) == "0" or "JAX_COMPILATION_CACHE_DIR" in env:
        return None
    try:
        base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    except RuntimeError:  # no home directory to be found
        return None
    return base / "gptjax" / "xla"


def start_program(compilation_cache: bool = False) -> None:
    """What every gptjax program does first when run as a program (never when its main() is called
    from Python): re-execute itself once with huge pages for large allocations (glibc reads its
    tunables only at start; os.execve keeps the process id, arguments, standard input and exit code;
    skipped under a debugger), set the measured XLA flags and, with compilation_cache (not for the
    programs that time compiling), JAX's compilation cache. It says nothing of them (settings()
    does; a training run records them in config.json), except, once, where the compiled steps go."""
    tunables = huge_pages_tunables(os.environ)
    if tunables is not None and sys.gettrace() is None and sys.executable:
        os.environ["GLIBC_TUNABLES"] = tunables
        os.environ[_SET_BY_GPTJAX] = HUGE_PAGES_TUNABLE
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, os.environ)
    os.environ.pop(_SET_BY_GPTJAX, None)
    use_measured_xla_flags()
    if compilation_cache and (cache := compilation_cache_dir(os.environ)) is not None:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)  # JAX reads it when first imported, after this
        asking_for_help = any(arg in ("-h", "--help") for arg in sys.argv[1:])
        if not cache.exists() and not asking_for_help and os.environ.get("JAX_PROCESS_ID", "0") == "0":
            print(f"gptjax keeps compiled steps in {cache} for the next run ({COMPILATION_CACHE_OFF}=0 turns "
                  "that off)", file=sys.stderr, flush=True)


def settings() -> dict[str, str | None]:
    """The environment variables that gptjax sets or reads to run faster, as they are now."""
    return {name: os.environ.get(name) for name in ("GLIBC_TUNABLES", "XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}


def describe() -> str:
    """The settings a measurement ran under, for the line above its numbers."""
    return ", ".join(f"{name}={value or '(unset)'}" for name, value in settings().items())
