"""The CUDA kernels of csrc/, run on the host for the test suite (cuda_emulation.h says what is
emulated and what is checked).

``load()`` builds, once per source change, a second extension from the same sources: a copy of
csrc/ in which each kernel launch ``k<<<config>>>(args)`` and each ``__shared__`` declaration
is rewritten into a call of the emulation, compiled by the host compiler together with the
families' entries and CUDA glue (built with TCO_CUDA_EMULATION, so that they serve CPU tensors
in the namespace ``cnn_ops_cuda_emulated``, whose schemas are copied from ``cnn_ops``).
``EmulatedCuda`` is a dispatch mode that sends every ``cnn_ops`` call below autograd to its
twin there, so a test written for "cuda" runs unchanged on CPU tensors through the CUDA
kernels. Test-only: nothing of it is packaged.
"""

import ctypes
import os
import re
import shutil
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

NAMESPACE = "cnn_ops_cuda_emulated"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CSRC = REPO / "csrc"

_LAUNCH = re.compile(r"<<<")
_KERNEL_DECL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\(([^)]*)\)\s*)?(\w+)\s*\(")
_SHARED_EXTERN = re.compile(r"extern\s+__shared__\s+(?:__align__\((\d+)\)\s+)?([\w:]+(?:\s+[\w:]+)*?)\s+(\w+)\[\]\s*;")
_SHARED = re.compile(r"__shared__\s+([\w:]+(?:<[^;<>]*>)?)\s+([^;]+);")
_DECLARATOR = re.compile(r"^\s*(\w+)((?:\[[^\]]+\])*)\s*$")


def _strip_comments(text):
    """`text` without its comments (string literals in the kernels hold no comment markers);
    line numbers are kept."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _matching(text, start, open_char, close_char):
    """Index just past the bracket that closes the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_char:
            depth += 1
        elif text[i] == close_char:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_char}{close_char} from offset {start}")


def _split_top_level(text):
    """`text` split at the commas outside brackets."""
    parts, depth, begin = [], 0, 0
    for i, c in enumerate(text):
        if c in "(<[{":
            depth += 1
        elif c in ")>]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[begin:i])
            begin = i + 1
    parts.append(text[begin:])
    return [p.strip() for p in parts]


def kernels_declared(text):
    """{kernel name: __launch_bounds__ expression or None} of a CUDA source."""
    text = _strip_comments(text)
    return {m.group(2): m.group(1) for m in _KERNEL_DECL.finditer(text)}


def transform(text, file_label, bounds, source):
    """The CUDA source `text` (of the file `source`) rewritten for the host: launches and
    __shared__ declarations become calls of the emulation (cuda_emulation.h), on the lines they
    had; `bounds` maps kernel names to their __launch_bounds__ expressions."""
    text = _strip_comments(text)
    text = _SHARED_EXTERN.sub(
        lambda m: f"{m.group(2)}* {m.group(3)} = ::tco_emu::shared_extern<{m.group(2)}>"
        f"(\"{m.group(3)}\", {m.group(1) or 'alignof(' + m.group(2) + ')'});",
        text,
    )

    def shared(m):
        element = m.group(1)
        out = []
        for declarator in _split_top_level(m.group(2)):
            d = _DECLARATOR.match(declarator)
            if not d:
                raise ValueError(f"{file_label}: cannot rewrite the __shared__ declarator {declarator!r}")
            name, dims = d.groups()
            out.append(f"auto& {name} = ::tco_emu::shared_variable<{element}{dims}>(\"{name}\", __FILE__, __LINE__);")
        return " ".join(out)

    text = _SHARED.sub(shared, text)
    if "__shared__" in text:
        raise ValueError(f"{file_label}: a __shared__ declaration the rewrite does not understand")

    out, pos = [], 0
    for m in _LAUNCH.finditer(text):
        if m.start() < pos:
            continue
        # The kernel: an identifier, with template arguments if any, just before <<<.
        k_end = m.start()
        k_begin = k_end
        if text[k_begin - 1] == ">":
            depth = 0
            while True:
                k_begin -= 1
                depth += {">": 1, "<": -1}.get(text[k_begin], 0)
                if depth == 0:
                    break
        name_end = k_begin
        while k_begin > 0 and (text[k_begin - 1].isalnum() or text[k_begin - 1] == "_"):
            k_begin -= 1
        kernel, name = text[k_begin:k_end], text[k_begin:name_end]
        config_end = text.index(">>>", m.end())
        config = text[m.end():config_end]
        args_begin = text.index("(", config_end)
        args_end = _matching(text, args_begin, "(", ")")
        args = text[args_begin + 1:args_end - 1]
        bound = bounds.get(name)
        out.append(text[pos:k_begin])
        out.append(
            f"::tco_emu::launch(::tco_emu::Config({config}), \"{name}\", \"{file_label}\", "
            f"{'(' + bound + ')' if bound else 0}, [](const auto&... a) {{ {kernel}(a...); }}"
            + (f", {' '.join(args.split())}" if args.strip() else "") + ")"
            + "\n" * text.count("\n", k_begin, args_end)  # lines kept, for __LINE__ and messages
        )
        pos = args_end
    out.append(text[pos:])
    return f'#include "cuda_emulation.h"\n#line 1 "{source}"\n' + "".join(out)


def _write_if_changed(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate(dest):
    """Mirrors csrc/ into `dest`, rewriting the CUDA sources; returns (the sources to compile,
    {"file::kernel" of every __global__ kernel})."""
    sources, kernels = [], set()
    cuda_texts = {p: p.read_text() for p in CSRC.rglob("*") if p.suffix in (".cu", ".cuh")}
    bounds = {}
    for text in cuda_texts.values():
        bounds.update({k: v for k, v in kernels_declared(text).items() if v})
    for path in sorted(CSRC.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(CSRC)
        if path in cuda_texts:
            label = path.name
            text = transform(cuda_texts[path], label, bounds, path.relative_to(REPO))
            kernels.update(f"{label}::{k}" for k in kernels_declared(cuda_texts[path]))
            if path.suffix == ".cu":
                target = dest / rel.with_suffix(".cu.cpp")
                sources.append(target)
            else:
                target = dest / rel
            _write_if_changed(target, text)
        else:
            _write_if_changed(dest / rel, path.read_text())
    # The entries and CUDA glue of every family, and what they use; not the CPU backends,
    # the autograd or the Python module, which the product extension provides.
    for path in sorted(dest.rglob("*.cpp")):
        name = path.name
        if name.endswith(("_ops.cpp", "_common.cpp", "_cuda_ops.cpp")) and path not in sources:
            sources.append(path)
    return sources, kernels


_loaded = None


def load(verbose=False):
    """Builds (if needed) and loads the emulated extension; returns its library path."""
    global _loaded
    if _loaded is not None:
        return _loaded
    from torch.utils.cpp_extension import load as load_extension

    import torch_cnn_ops  # noqa: F401  (defines the cnn_ops schemas copied below)

    build = Path(os.environ.get("TCO_CUDA_EMULATION_BUILD", REPO / "build" / "cuda_emulation"))
    sources, kernels = generate(build / "csrc")
    canaries = HERE / "canaries.cu"
    canaries_text = canaries.read_text()
    sources.append(build / "canaries.cu.cpp")
    _write_if_changed(sources[-1], transform(canaries_text, canaries.name, {
        k: v for k, v in kernels_declared(canaries_text).items() if v}, canaries.relative_to(REPO)))
    cuda_include = _cuda_include()
    flags = [
        "-O2", "-std=c++20", "-DTCO_WITH_CUDA=1", "-DTCO_CUDA_EMULATION=1",
        # Own names for the library's C++ symbols, so that nothing is shared with the product
        # extension loaded in the same process.
        "-Dtco=tco_cuda_emulated", "-fno-gnu-unique",
        # The flags torch's CUDA builds give the kernels.
        "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
        "-Wno-attributes",
    ]
    if os.environ.get("TCO_CUDA_EMULATION_ASAN") == "1":
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    os.makedirs(build / "ninja", exist_ok=True)
    path = load_extension(
        name="tco_cuda_emulated",
        sources=[str(s) for s in sources] + [str(HERE / "emulation.cpp")],
        extra_cflags=flags,
        extra_include_paths=[str(HERE / "shim"), str(HERE), cuda_include],
        # The emulation's own CUDA runtime calls (emulation.cpp), even where a CUDA build of
        # torch has loaded the real libcudart, whose cudaGetLastError would otherwise answer.
        extra_ldflags=["-Wl,-Bsymbolic"],
        build_directory=str(build / "ninja"),
        is_python_module=False,
        verbose=verbose,
    )
    _define_schemas()
    _loaded = path
    _state["kernels"] = kernels
    _state["library"] = ctypes.CDLL(path)
    return path


def _cuda_include():
    """The CUDA toolkit's headers (types and half/bfloat16 conversions only: nothing of the
    runtime library is linked)."""
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent / "include")
    candidates += [Path("/usr/local/cuda/include")]
    for c in candidates:
        if (c / "cuda_runtime_api.h").exists():
            return str(c)
    raise RuntimeError("the CUDA emulation needs the CUDA toolkit's headers (set CUDA_HOME)")


_state = {}


def _define_schemas():
    """Gives the emulated namespace every schema of cnn_ops (its kernels are registered by the
    extension's glue)."""
    lib = torch.library.Library(NAMESPACE, "DEF")
    for qualified in torch._C._dispatch_get_all_op_names():
        if not qualified.startswith("cnn_ops::"):
            continue
        name, _, overload = qualified.partition(".")
        schema = torch._C._get_schema(name, overload)
        lib.define(str(schema).split("::", 1)[1])
    _state["schema_library"] = lib


def census():
    """{"file::kernel": launches so far} of this process."""
    lib = _state.get("library")
    if lib is None:
        return {}
    lib.tco_emu_census.restype = ctypes.c_size_t
    size = lib.tco_emu_census(None, 0)
    buffer = ctypes.create_string_buffer(size + 1)
    lib.tco_emu_census(buffer, size + 1)
    result = {}
    for line in buffer.value.decode().splitlines():
        name, count = line.rsplit(" ", 1)
        result[name] = int(count)
    return result


def kernels():
    """Every "file::kernel" declared __global__ in csrc/."""
    return set(_state.get("kernels", ()))


def run_canary(name, values):
    """Launches the canary kernel `name` (canaries.cu) on `values` (64 floats); returns (the
    emulation's error message, "" if none, and the output)."""
    load()
    lib = _state["library"]
    lib.tco_emu_canary.restype = ctypes.c_char_p
    x = torch.as_tensor(values, dtype=torch.float32).contiguous()
    out = torch.zeros(64, dtype=torch.float32)
    message = lib.tco_emu_canary(name.encode(), ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(out.data_ptr()))
    return message.decode(), out


def active():
    """Whether cnn_ops calls run through the emulated CUDA kernels now."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return any(isinstance(m, EmulatedCuda) for m in _get_current_dispatch_mode_stack())


class EmulatedCuda(TorchDispatchMode):
    """Runs every cnn_ops op through its emulated CUDA kernels (below autograd, so that the
    product's autograd, including double backward, calls the emulated passes)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # Tensor subclasses (FakeTensor in opcheck and tracing) keep the op: their own dispatch
        # gives it meaning, as it does without the emulation.
        if func.namespace == "cnn_ops" and all(t is torch.Tensor or t is torch.nn.Parameter for t in types):
            func = getattr(getattr(getattr(torch.ops, NAMESPACE), func._opname), func._overloadname)
        return func(*args, **(kwargs or {}))
