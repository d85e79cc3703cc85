"""environment.py: the programs' XLA flags, huge pages and compilation cache, set once, never over
the user's."""

import os
from importlib import metadata

import pytest
from conftest import run_program

from gptjax import environment

HUGE = environment.HUGE_PAGES_TUNABLE
GPU_ATOMICS = "{}={}".format(*next(iter(environment.GPU_ATOMICS_FLAG.items())))
# prints what a program's process sees after start_program(), then exits with code 3
PROBE = ("import os, sys; from gptjax import environment; pid = os.getpid(); environment.start_program(); "
         "print(os.environ.get('GLIBC_TUNABLES'), sys.stdin.read().strip(), sys.argv[1:]); sys.exit(3)")
applies = pytest.mark.skipif(environment.huge_pages_tunables({}) is None,
                             reason="no glibc >= 2.35 with transparent huge pages here")


def test_measured_xla_flags_are_added_but_never_override_the_users(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/somewhere")
    assert environment.use_measured_xla_flags() == ["--xla_cpu_experimental_ynn_fusion_type=-dot,-individual_dot"]
    assert os.environ["XLA_FLAGS"] == ("--xla_dump_to=/tmp/somewhere "
                                       "--xla_cpu_experimental_ynn_fusion_type=-dot,-individual_dot")
    assert environment.use_measured_xla_flags() == []  # once only
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
    environment.use_measured_xla_flags()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_the_gpu_atomics_flag_is_added_only_where_jaxlib_needs_it_and_never_over_the_users(monkeypatch):
    versions = ("0.10.1", "0.10.2", "0.11.0", "0.11.1", "0.12.0", "")
    needed = [environment.needs_gpu_atomics_flag(version, cuda_plugin=True) for version in versions]
    assert needed == [False, True, True, False, False, False]
    assert not environment.needs_gpu_atomics_flag("0.10.2", cuda_plugin=False)  # no GPU build: nothing to fix
    monkeypatch.setattr(environment, "needs_gpu_atomics_flag", lambda *_: True)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert GPU_ATOMICS in environment.use_measured_xla_flags()
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_extra_options=-their-option")
    environment.use_measured_xla_flags()
    flags = os.environ["XLA_FLAGS"]
    assert "--xla_backend_extra_options=-their-option" in flags and GPU_ATOMICS not in flags


@pytest.mark.skipif(not environment.needs_gpu_atomics_flag(metadata.version("jaxlib"), cuda_plugin=True),
                    reason="this jaxlib is not one that gets the GPU atomics flag")
def test_xla_compiles_with_the_gpu_atomics_flag_of_this_jaxlib():
    # XLA hands backend options to LLVM on every compile, a CPU's too, and LLVM ends the process on
    # an option it does not know: the flag is set only for the jaxlibs whose LLVM has it
    scatter = "import jax; print(jax.jit(lambda x: x.at[jax.numpy.array([0, 0])].add(1.0))(jax.numpy.zeros(2)))"
    result = run_program(["-c", scatter], env={"XLA_FLAGS": GPU_ATOMICS})
    assert result.returncode == 0 and result.stdout.strip() == "[2. 0.]", result.stderr
    unknown = run_program(["-c", scatter], env={"XLA_FLAGS": "--xla_backend_extra_options=-no-such-llvm-option"})
    assert unknown.returncode != 0 and "no-such-llvm-option" in unknown.stderr


def test_huge_pages_keep_the_users_tunables_and_defer_to_their_own_setting():
    if environment.huge_pages_tunables({}) is None:
        assert environment.huge_pages_tunables({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) is None
        return
    assert environment.huge_pages_tunables({}) == HUGE
    assert environment.huge_pages_tunables({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == (
        f"glibc.malloc.arena_max=2:{HUGE}")
    assert environment.huge_pages_tunables({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert environment.huge_pages_tunables({environment.HUGE_PAGES_OFF: "0"}) is None


@applies
def test_a_program_re_executes_once_with_huge_pages_keeping_arguments_input_and_exit_code():
    result = run_program(["-c", PROBE, "--a", "b c"], input="from stdin",
                         env={"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", environment.HUGE_PAGES_OFF: "1"})
    assert result.returncode == 3, result.stderr
    assert result.stdout == f"glibc.malloc.arena_max=2:{HUGE} from stdin ['--a', 'b c']\n"
    assert result.stderr == ""  # nothing a user must act on
    off = run_program(["-c", PROBE], env={environment.HUGE_PAGES_OFF: "0"}, input="")
    assert off.returncode == 3 and "hugetlb" not in off.stdout and "GLIBC_TUNABLES" not in off.stderr


def test_help_starts_with_nothing_but_the_help(tmp_path):
    for module in ("train.py", "-m gptjax.sample"):
        # XLA_FLAGS emptied: earlier tests' in-process main() calls leave the flags in this process's
        # environment; a new compilation cache folder, which a first run would mention
        env = {environment.HUGE_PAGES_OFF: "1", "XLA_FLAGS": "", "XDG_CACHE_HOME": str(tmp_path),
               "JAX_COMPILATION_CACHE_DIR": None}
        result = run_program([*module.split(), "--help"], env=env)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout.startswith(("Train a GPT.", "usage: python -m gptjax.sample"))


def test_the_compilation_cache_lives_in_the_users_cache_folder_unless_they_chose_or_turned_it_off(tmp_path):
    assert environment.compilation_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "gptjax/xla"
    assert environment.compilation_cache_dir({}) == environment.Path.home() / ".cache/gptjax/xla"
    assert environment.compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": "/theirs"}) is None
    assert environment.compilation_cache_dir({environment.COMPILATION_CACHE_OFF: "0"}) is None


def test_a_program_keeps_its_compiled_steps_for_the_next_run(tmp_path):
    # what train.py, sample.py and explain.py start with; JAX, imported after it, must use the cache
    probe = ("from gptjax import environment; environment.start_program(compilation_cache=True); "
             "import jax; jax.jit(lambda x: x * 2 + 1)(jax.numpy.arange(3)).block_until_ready(); "
             "print(jax.config.jax_compilation_cache_dir)")
    env = {"XDG_CACHE_HOME": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": None, "XLA_FLAGS": ""}
    result = run_program(["-c", probe], env=env)
    assert result.returncode == 0, result.stderr
    cache = tmp_path / "gptjax/xla"
    assert result.stdout.strip() == str(cache)
    # said once, when the folder is new: the one thing of the set-up a user may want to know
    assert result.stderr == (f"gptjax keeps compiled steps in {cache} for the next run "
                             f"({environment.COMPILATION_CACHE_OFF}=0 turns that off)\n")
    assert any(path.name.endswith("-cache") for path in cache.iterdir())  # the jitted function, compiled
    again = run_program(["-c", probe], env=env)
    assert again.returncode == 0 and again.stderr == ""
    off = run_program(["-c", probe], env={**env, environment.COMPILATION_CACHE_OFF: "0"})
    assert off.returncode == 0 and off.stdout.strip() == "None" and off.stderr == ""
