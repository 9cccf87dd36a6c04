"""Localise a parity failure: the first PyTorch module whose ONNX counterpart computes something else.

Every node of the ONNX graph is mapped to the PyTorch modules it computes: by its name scope (the dynamo
exporter's ``pkg.torch.onnx.name_scopes`` metadata, or the TorchScript exporter's node names such as
``/temporal/blocks/blocks.1/mlp/fc2/MatMul``) and by the named parameters it consumes (``blocks.1.mlp.fc2.weight``).
A module's ONNX value is the output of the last node (graph order) inside it. Those values become extra graph
outputs, one onnxruntime CPU run with graph optimisations disabled computes them as the file does, and each is
compared with the module's PyTorch output, in the order the modules complete (children before parents).

Exporters fold BatchNorm into the convolution before it, so a value may hold the output of a later module: the
TorchScript exporter leaves the BatchNorm without nodes, the dynamo exporter tags the fused Conv with the
BatchNorm's scope. A value is therefore compared with its module's output and with those of the modules that
complete right after it without nodes of their own (or that own the same node), and the best match counts.
Modules whose value cannot be the module's output are not compared rather than reported: modules called more
than once, non-tensor outputs, values consumed by nodes that map to no module, sizes that differ.

onnxsim drops node metadata, so a dynamo export loses its name scopes when simplified; `copy_name_scopes`
restores them from the unsimplified file by node name (onnxsim keeps the names of nodes it keeps). Without
scopes only the layers whose parameters keep their names can be compared.

Other runtimes (TensorRT, Core ML, ExecuTorch, PyTorch Lite) expose no intermediate values here; their parity
reports the final outputs only.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .metrics import TOLERANCES, Tolerance

__all__ = ["Localization", "localize_onnx", "onnx_node_modules", "copy_name_scopes", "localize_threshold"]

SCOPE_KEY = "pkg.torch.onnx.name_scopes"
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16 (onnx.TensorProto)
_CHUNK_BYTES = 1 << 30  # intermediate values fetched per onnxruntime run


@dataclass(frozen=True)
class Localization:
    """Where an ONNX graph first departs from its PyTorch module, if anywhere.

    ``error`` is max |onnx - torch| / max(1, max |torch|) at ``module`` (or the largest error found when nothing
    diverges); ``diverging`` lists the first few diverging modules in completion order.
    """

    module: str | None  # dotted PyTorch path ("" is the model's own top-level ops); None: nothing diverges
    onnx_node: str | None
    max_abs: float
    error: float
    threshold: float
    compared: int  # modules whose ONNX value was compared
    skipped: int  # modules with ONNX nodes whose value could not be compared
    diverging: tuple[str, ...]
    mapping: str  # what mapped nodes to modules: "name scopes", "parameter names" or "none"
    healed: tuple[str, ...] = ()  # modules that differ while a module around them agrees (see `localize_onnx`)
    largest_at: str | None = None  # the module with the largest error below the threshold, when none diverges

    @property
    def diverges(self) -> bool:
        return self.module is not None

    def describe(self) -> str:
        """One line for a parity report."""
        if self.module is None:
            at = f" at {self.largest_at or '(top-level ops)'}" if self.largest_at is not None else ""
            return (f"no module diverges (largest error {self.error:.1e}{at} <= {self.threshold:g}; "
                    f"{self.compared} modules compared by {self.mapping})")
        where = self.module or "(top-level ops)"
        return (f"first divergence at {where} (ONNX node {self.onnx_node}): max abs {self.max_abs:.2e}, "
                f"error {self.error:.2e} > {self.threshold:g}; {self.compared} modules compared by {self.mapping}")

    def to_dict(self) -> dict:
        return asdict(self)


def localize_threshold(tol: Tolerance) -> float:
    """Largest scale-aware error a module may show before it counts as diverging.

    fp32 (elementwise tolerances): max(rtol, atol) = 1e-3. Unperturbed exports of every tiny zoo model reach at
    most 2.2e-6 (both exporters, with and without onnxsim) and x3d-xs at full size (16 x 224 px) 1.3e-5, while a
    weight off by half gives 3e-2 to 5e-1. fp16/bf16 (judged by cosine): five times as much, 5e-2 for fp16,
    whose unperturbed tiny models reach 6.5e-3.
    """
    return max(tol.rtol, tol.atol) * (1 if tol.elementwise else 5)


# Node -> module mapping ---------------------------------------------------------------------------------------
def _unqualified(name: str) -> str:
    """The TorchScript exporter's scope name of a module: ``trunk.layer1.0`` -> ``layer1.0``."""
    atoms = name.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return name


def _callee(caller: str, component: str, callees: dict[str, list[str]]) -> str | None:
    """The module ``caller`` called under the scope name ``component`` (``relu_2``: a later call of ``relu``)."""
    options = callees.get(caller, [])
    for option in options:
        if _unqualified(option) == component:
            return option
    repeated = re.fullmatch(r"(.+)_(\d+)", component)
    if repeated:
        same = [option for option in options if _unqualified(option) == repeated[1]]
        if same:
            return same[int(repeated[2])] if int(repeated[2]) < len(same) else same[0]
    return None


def _torchscript_scope(name: str, callees: dict[str, list[str]]) -> str | None:
    """``/trunk/layer1/layer1.0/conv1/Conv`` -> ``trunk.layer1.0.conv1``; None if not such a name.

    The components are the modules on the call stack, each by its unqualified name, so the path follows the
    calls (``callees``: caller -> modules it called), not the attribute tree.
    """
    if not name.startswith("/"):
        return None
    path, resolved = "", False
    for component in name.split("/")[1:-1]:  # the last component is the op
        found = _callee(path, component, callees)
        if found is None:
            if resolved:
                break
            continue  # a wrapper around the model (the fp16 target's cast boundary): look past it
        path, resolved = found, True
    return path


def _dynamo_scope(value: str, modules: set[str]) -> str | None:
    """``['', 'temporal', 'temporal.blocks', ..., 'linear_8']`` -> the deepest known module of the list."""
    try:
        scopes = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None
    for scope in reversed(scopes[:-1]):  # the last entry is the op
        known = _known_suffix(scope, modules)
        if known is not None:
            return known
    return "" if scopes else None


def _known_suffix(name: str, known) -> str | None:
    """``name``, or the part of it after leading atoms that name a wrapper (``inner.trunk.conv1``), if known."""
    atoms = name.split(".")
    for i in range(len(atoms)):
        candidate = ".".join(atoms[i:])
        if candidate in known:
            return candidate
    return None


def _node_scope(node, modules: set[str], callees: dict[str, list[str]]) -> str | None:
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            return _dynamo_scope(prop.value, modules)
    return _torchscript_scope(node.name, callees)


def _param_owners(model: nn.Module) -> dict[str, str | None]:
    """Parameter and buffer names -> the module that holds them.

    Tensors equal to another one map to None: exporters keep one copy of equal initializers under one of the
    names (two LayerNorms' all-ones weights), so such a name does not tell which module uses it.
    """
    owners, seen = {}, Counter()
    for module_name, module in model.named_modules():
        for attr, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            digest = hashlib.sha1(tensor.detach().cpu().numpy().tobytes()).digest()
            key = (tuple(tensor.shape), str(tensor.dtype), digest)
            seen[key] += 1
            owners[f"{module_name}.{attr}" if module_name else attr] = (module_name, key)
    return {name: (module if seen[key] == 1 else None) for name, (module, key) in owners.items()}


def _dynamic_nodes(graph) -> list[bool]:
    """For each node, whether it depends on a graph input (False for constants and folded weights)."""
    dynamic_values = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    flags = []
    for node in graph.node:
        flag = any(name in dynamic_values for name in node.input if name)
        if flag:
            dynamic_values.update(node.output)
        flags.append(flag)
    return flags


def onnx_node_modules(graph, model: nn.Module, callees: dict[str, list[str]] | None = None
                      ) -> tuple[list[frozenset[str]], str]:
    """The PyTorch modules each node of ``graph`` computes (its scope and the owners of its named parameters).

    ``callees`` maps each module to the modules it called, in order (as `localize_onnx` records them); by
    default every module is assumed to call its children. Nodes that do not depend on the input map to nothing;
    an unnamed node between nodes of one module (such as one onnxsim rewrote) joins that module. Returns the
    sets and what the mapping came from: ``name scopes``, ``parameter names`` (onnxsim dropped the dynamo
    exporter's scopes) or ``none``.
    """
    modules = {name for name, _ in model.named_modules()}
    if callees is None:
        callees = {name: [f"{name}.{child}" if name else child for child, _ in module.named_children()]
                   for name, module in model.named_modules()}
    owners = _param_owners(model)
    dynamic = _dynamic_nodes(graph)
    scopes = [_node_scope(node, modules, callees) if dynamic[i] else None for i, node in enumerate(graph.node)]
    scoped = sum(scope is not None for scope in scopes)
    _fill_unscoped(graph, scopes, dynamic)
    result = []
    for i, node in enumerate(graph.node):
        found = set()
        if dynamic[i]:
            found = {owners[known] for name in node.input
                     if (known := _known_suffix(name, owners)) is not None and owners[known] is not None}
            if scopes[i] is not None:
                found.add(scopes[i])
        result.append(frozenset(found))
    named = sum(bool(s) for s in result)
    mapping = "name scopes" if scoped > named // 2 else "parameter names" if named else "none"
    return result, mapping


def _fill_unscoped(graph, scopes: list[str | None], dynamic: list[bool]) -> None:
    """Give an unscoped node the scope of its neighbours when all of them (producers, consumers) share one."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    consumers = defaultdict(list)
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(i)
    for i, node in enumerate(graph.node):
        if not dynamic[i] or scopes[i] is not None:
            continue
        near = [producer[name] for name in node.input if name in producer and dynamic[producer[name]]]
        near += [j for out in node.output for j in consumers[out]]
        around = {scopes[j] for j in near}
        if len(around) == 1 and None not in around and near:
            scopes[i] = around.pop()


# The PyTorch side -------------------------------------------------------------------------------------------
def _record_outputs(model: nn.Module, clip: torch.Tensor) -> tuple[list[str], dict[str, torch.Tensor], Counter,
                                                                  dict[str, list[str]]]:
    """Run ``model`` once and record, in completion order, every module's output on its first call (cloned:
    in-place ops later must not change it); also how often each module ran and which modules each one called."""
    order, outputs, calls, stack = [], {}, Counter(), [""]
    callees: dict[str, list[str]] = defaultdict(list)
    handles = []

    def enter(name):
        def record(module, args):
            if name:
                if name not in callees[stack[-1]]:
                    callees[stack[-1]].append(name)
                stack.append(name)
        return record

    def leave(name):
        def record(module, args, output):
            if name:
                stack.pop()
            calls[name] += 1
            if calls[name] == 1:
                order.append(name)
                if isinstance(output, torch.Tensor) and output.is_floating_point():
                    outputs[name] = output.detach().float().clone()
        return record

    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave(name)))
        with torch.no_grad():
            model(clip)
    finally:
        for handle in handles:
            handle.remove()
    return order, outputs, calls, dict(callees)


# The ONNX side ------------------------------------------------------------------------------------------------
def _value_types(onnx_model) -> dict[str, int]:
    import onnx
    try:
        inferred = onnx.shape_inference.infer_shapes(onnx_model)
    except Exception:  # noqa: BLE001 - shape inference is a help here, not a requirement
        inferred = onnx_model
    graph = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output, *graph.input]}


def _run_with_outputs(onnx_model, wanted: dict[str, int], types: dict[str, int], feed: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """The values named in ``wanted`` (name -> bytes), computed by onnxruntime on the CPU with graph
    optimisations disabled, so that they are what the file computes; in runs of about 1 GiB of outputs each."""
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    chunks, size = [[]], 0
    for name, nbytes in wanted.items():
        if chunks[-1] and size + nbytes > _CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += nbytes
    existing = {o.name for o in onnx_model.graph.output}
    values = {}
    for chunk in chunks:
        exposed = onnx.ModelProto()
        exposed.CopyFrom(onnx_model)
        exposed.graph.output.extend(onnx.helper.make_tensor_value_info(name, types[name], None)
                                    for name in chunk if name not in existing)
        session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values.update(zip(chunk, session.run(chunk, feed)))
        del session, exposed
    return values


def _error(value: np.ndarray, ref: torch.Tensor) -> tuple[float, float]:
    ref = ref.numpy().astype(np.float64)
    diff = np.abs(value.astype(np.float64).reshape(ref.shape) - ref)
    max_abs = float(diff.max(initial=0.0)) if np.isfinite(value).all() else np.inf
    return max_abs, max_abs / max(1.0, float(np.abs(ref).max(initial=0.0)))


def localize_onnx(model: nn.Module, onnx_path: Path, clip: torch.Tensor, tol: Tolerance | None = None,
                  threshold: float | None = None, scopes_from: Path | None = None) -> Localization:
    """Find the first module of ``model`` whose value in the ONNX file at ``onnx_path`` diverges on ``clip``.

    A module counts as diverging when its scale-aware error exceeds the threshold and no module around it agrees
    (error within a tenth of the threshold): a difference that an enclosing module does not show is a rewrite
    of the exporter or of onnxsim (a ReZero scale folded into the conv before it), not a wrong result. When
    the first diverging module already receives a wrong input, the node that computed that input is blamed
    (a class token or position embedding added by the module around it).

    Args:
        model: the PyTorch module the file was exported from, in eval mode (the reference).
        onnx_path: the exported (or simplified) graph; its single input takes ``clip``.
        clip: one input batch, shaped as the file expects.
        tol: the parity tolerance (fp32 when None); sets the threshold through `localize_threshold`.
        threshold: overrides the scale-aware error threshold.
        scopes_from: the unsimplified export of a simplified dynamo graph, to take name scopes from
            (`copy_name_scopes`); without them only layers whose parameters keep their names are compared.
    """
    import onnx
    onnx_model = onnx.load(str(onnx_path))
    if scopes_from is not None:
        copy_name_scopes(onnx_model, onnx.load(str(scopes_from), load_external_data=False))
    graph = onnx_model.graph
    threshold = localize_threshold(tol or TOLERANCES["fp32"]) if threshold is None else threshold
    order, reference, calls, callees = _record_outputs(model, clip)
    node_sets, mapping = onnx_node_modules(graph, model, callees)
    types = _value_types(onnx_model)
    plan, skipped = _plan(model, graph, node_sets, types, order, reference, calls)
    feed = {next(i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}): clip.numpy()}
    wanted = {graph.node[index].output[0]: 4 * reference[name].numel() for name, (index, _) in plan.items()}
    values = _run_with_outputs(onnx_model, wanted, types, feed)

    errors: dict[str, tuple[float, float, str]] = {}  # module -> (max abs, error, ONNX node)
    for name, (index, candidates) in plan.items():
        value = values[graph.node[index].output[0]]
        scores = [_error(value, reference[c]) for c in candidates if reference[c].numel() == value.size]
        if scores:
            errors[name] = (*min(scores, key=lambda s: s[1]), graph.node[index].name)
    skipped += len(plan) - len(errors)
    differ = [name for name, (_, error, _) in errors.items() if error > threshold]
    diverging = [name for name in differ
                 if all(errors[a][1] > threshold / 10 for a in _ancestors(name)[:-1] if a in errors)]
    healed = tuple(name for name in differ if name not in diverging)
    if diverging:
        first = diverging[0]
        source = _blame_input(model, onnx_model, node_sets, types, first, clip, feed, threshold)
        if source is not None:
            first, errors[first] = source[0], source[1:]
            diverging.insert(0, first)
        max_abs, error, node = errors[first]
        return Localization(first, node, max_abs, error, threshold, len(errors), skipped,
                            tuple(dict.fromkeys(diverging))[:5], mapping, healed[:5])
    agreeing = [name for name in errors if name not in healed]
    largest = max(agreeing, key=lambda name: errors[name][1], default=None)
    max_abs, error, _ = errors[largest] if largest is not None else (0.0, 0.0, "")
    return Localization(None, None, max_abs, error, threshold, len(errors), skipped, (), mapping, healed[:5],
                        largest)


def _plan(model: nn.Module, graph, node_sets: list[frozenset[str]], types: dict[str, int], order: list[str],
          reference: dict[str, torch.Tensor], calls: Counter) -> tuple[dict[str, tuple[int, list[str]]], int]:
    """Which node's output stands for each comparable module, and which PyTorch outputs it may equal.

    Returns ``{module: (node index, candidate modules)}`` in completion order and how many modules with nodes
    cannot be compared.
    """
    own = Counter(module for found in node_sets for module in found)
    last: dict[str, int] = {}
    for i, (node, found) in enumerate(zip(graph.node, node_sets)):
        if found and node.output and types.get(node.output[0]) in _FLOAT_TYPES:
            for module in found:
                for ancestor in _ancestors(module):
                    last[ancestor] = i
    unmapped_inputs = {name for node, found in zip(graph.node, node_sets) if not found for name in node.input}
    graph_outputs = {o.name for o in graph.output}
    position = {name: i for i, name in enumerate(order)}
    plan, skipped = {}, 0
    for name in order:
        if name not in last:
            continue
        index = last[name]
        value = graph.node[index].output[0]
        # A leaf's last node that uses its parameters is its output even if unmapped nodes consume it.
        leaf_owner = name in node_sets[index] and next(model.get_submodule(name).children(), None) is None
        if (calls[name] != 1 or name not in reference
                or (value in unmapped_inputs and value not in graph_outputs and not leaf_owner)):
            skipped += 1
            continue
        candidates = [name]  # then what the node may have absorbed: the next modules without nodes of their own
        for later in order[position[name] + 1:]:
            if own[later] and later not in node_sets[index]:
                break
            if later in reference:
                candidates.append(later)
        plan[name] = (index, candidates)
    return plan, skipped


def _blame_input(model: nn.Module, onnx_model, node_sets: list[frozenset[str]], types: dict[str, int],
                 module: str, clip: torch.Tensor, feed: dict[str, np.ndarray], threshold: float
                 ) -> tuple[str, float, float, str] | None:
    """If ``module`` receives a wrong input, the module whose node computed it: (module, max abs, error, node)."""
    graph = onnx_model.graph
    inside = [i for i, found in enumerate(node_sets) if any(_within(m, module) for m in found)]
    if not inside:
        return None
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    entries = [name for name in graph.node[inside[0]].input
               if name in producer and producer[name] not in inside and types.get(name) in _FLOAT_TYPES
               and node_sets[producer[name]]]
    received = _module_input(model, module, clip)
    if not entries or received is None:
        return None
    value = _run_with_outputs(onnx_model, {entries[0]: 4 * received.numel()}, types, feed)[entries[0]]
    if value.size != received.numel():
        return None
    max_abs, error = _error(value, received)
    if error <= threshold:
        return None
    source = producer[entries[0]]
    deepest = max(node_sets[source], key=lambda m: (m.count(".") + bool(m), m))
    return deepest, max_abs, error, graph.node[source].name


def _module_input(model: nn.Module, name: str, clip: torch.Tensor) -> torch.Tensor | None:
    """The first tensor argument of ``name``'s first call."""
    seen = []

    def record(module, args):
        if not seen:
            seen.append(next((a.detach().float().clone() for a in args if isinstance(a, torch.Tensor)), None))

    handle = model.get_submodule(name).register_forward_pre_hook(record)
    try:
        with torch.no_grad():
            model(clip)
    finally:
        handle.remove()
    return seen[0] if seen else None


def _within(path: str, module: str) -> bool:
    return not module or path == module or path.startswith(module + ".")


def _ancestors(path: str) -> list[str]:
    parts = path.split(".") if path else []
    return [""] + [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def copy_name_scopes(simplified, original) -> int:
    """Copy the dynamo exporter's name scopes from ``original`` to the nodes of ``simplified`` with the same name.

    Both are `onnx.ModelProto`; ``simplified`` is changed in place. Returns how many nodes got a scope.
    """
    scopes = {node.name: prop.value for node in original.graph.node for prop in node.metadata_props
              if prop.key == SCOPE_KEY and node.name}
    copied = 0
    for node in simplified.graph.node:
        if node.name in scopes and not any(p.key == SCOPE_KEY for p in node.metadata_props):
            entry = node.metadata_props.add()
            entry.key, entry.value = SCOPE_KEY, scopes[node.name]
            copied += 1
    return copied
